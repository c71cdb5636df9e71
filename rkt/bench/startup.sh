#!/bin/bash
# Startup benchmark: wall time of `rkt run <busybox> --exec /bin/true` (image fetched, tree
# rendered) against `runc run` and `crun run` of the equivalent bundle, same machine, same run.
#
# Fairness: every block of measurements starts on a fresh, empty filesystem that holds all the
# runtimes' state (rkt's --dir, runc's and crun's --root) and the bundle, so that no runtime
# pays for inodes another one (or an earlier round) deleted (see inode-alloc.sh for why that
# matters on this VM). Each round measures, on fresh filesystems of each kind:
#   seq    RUNS runs of each command in a row, the commands one after the other (the order
#          rotates from round to round)
#   inter  RUNS iterations, each running every command once
# Usage: bench/startup.sh [RKT] [RUNS] [ROUNDS] [BASE_RKT]   (as root)
#   FS_KINDS="ext4-nj ext4-j tmpfs" picks the filesystems (default "ext4-nj tmpfs").
#   BASE_RKT (optional) is another rkt build measured alongside, e.g. the previous commit's.
# Needs busybox-static, umoci, runc, crun, python3, e2fsprogs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
RKT=$(realpath "${1:-/var/cache/coreos-rs/target/release/rkt}")
N=${2:-30}
ROUNDS=${3:-3}
BASE=${4:+$(realpath "$4")}
FS_KINDS=${FS_KINDS:-ext4-nj tmpfs}
OUT=${OUT:-$(mktemp /tmp/rkt-startup.XXXXXX)}
T=$(mktemp -d)
trap 'drop_fs "$T/fs" 2>/dev/null || true; rm -rf "$T"' EXIT

# crun 1.8 refuses the hybrid cgroup layout (v1 controllers plus cgroup2 at
# /sys/fs/cgroup/unified): there it runs in a private mount namespace with the cgroup2 mount
# removed, and that wrapper is timed alone too, so crun's figure can be read net of it.
WRAP=()
if mountpoint -q /sys/fs/cgroup/unified; then
  WRAP=(unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified; exec "$0" "$@"')
fi

echo "rkt: $RKT${BASE:+, baseline: $BASE}; $N runs, $ROUNDS rounds, filesystems: $FS_KINDS; raw times: $OUT"
for round in $(seq "$ROUNDS"); do
  for kind in $FS_KINDS; do
    for mode in seq inter; do
      F="$T/fs"
      make_fs "$kind" "$F"
      make_image "$F/img"
      warm_rkt "$RKT" "$F/rkt" "$F/img/layout"
      [ -n "$BASE" ] && warm_rkt "$BASE" "$F/rkt-base" "$F/img/layout"
      B="$F/img/bundle"
      cmds=("rkt-none=$RKT --dir $F/rkt run --net=none layout --exec /bin/true"
            "rkt-host=$RKT --dir $F/rkt run --net=host layout --exec /bin/true")
      [ -n "$BASE" ] && cmds+=("base-none=$BASE --dir $F/rkt-base run --net=none layout --exec /bin/true")
      cmds+=("runc=runc --root $F/runc run --bundle $B r{i}")
      if [ ${#WRAP[@]} -gt 0 ]; then
        cmds+=("crun+wrap=${WRAP[*]@Q} crun --root $F/crun run --bundle $B c{i}"
               "wrap-alone=${WRAP[*]@Q} true")
      else
        cmds+=("crun=crun --root $F/crun run --bundle $B c{i}")
      fi
      # Rotate the order each round, so that no runtime always runs first (or last).
      k=$(( (round - 1) % ${#cmds[@]} ))
      cmds=("${cmds[@]:k}" "${cmds[@]:0:k}")
      echo "== round $round, $kind, $mode"
      TIMEIT_TAG="$kind/$round" python3 "$HERE/timeit.py" "$mode" "$N" --raw "$OUT" "${cmds[@]}"
      drop_fs "$F"
    done
  done
done
echo "== summary (medians of the rounds' medians, ms)"
python3 "$HERE/timeit.py" summary "$OUT"
