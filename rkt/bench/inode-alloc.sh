#!/bin/bash
# Why `rkt run` slowed down run after run in the old sequential benchmark: on ext4 *without a
# journal* (this VM's / has none: /sys/fs/ext4/vda/journal_task reads <none>), the inode
# allocator will not reuse an inode deleted in the last 60 s (360 s while its inode-table block
# is dirty): find_inode_bit() scans the group's bitmap from the start and, for every free bit,
# recently_deleted() looks the inode up in the buffer cache and checks its dtime
# (fs/ext4/ialloc.c, RECENTCY_MIN/RECENTCY_DIRTY, since Linux 5.8). After a burst of deletions
# (the old script's `rm -rf` of the previous round's scratch tree) every new inode pays for
# the whole run of recently deleted ones before the first usable free bit, and that run grows
# as new inodes use up the holes between them. With a journal the check is skipped.
#
# This script shows it on fresh loop-mounted filesystems (nothing else writes to them), all
# mounted at once and measured interleaved (every iteration runs every case once, so load from
# other processes hits all cases alike):
#   nj+burst   ext4 without a journal, BURST inodes deleted just before the runs
#   j+burst    the same with a journal
#   nj         ext4 without a journal, no deletions before the runs
# for RUNS `rkt run`s and `crun run`s (crun's --root on the same filesystem). The deletions are
# made in the runtime's state directory: ext4 puts a directory's inodes in its parent's block
# group, and the scan is per group (the old script deleted its previous scratch directory, a
# sibling in /tmp). Then, with perf installed, RUNS more rkt runs per journal mode under
# `perf record -a -g`: the share of rkt's CPU samples under find_inode_bit(). With AGED=1 also
#   nj+aged    no journal, the deletions synced and 65 s old before the runs.
# Usage: bench/inode-alloc.sh [RKT] [RUNS] [BURST] [BASE_RKT]   (as root; needs what startup.sh
# needs). BASE_RKT (optional), e.g. the previous commit's build, runs alongside rkt in every case.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
RKT=$(realpath "${1:-/var/cache/coreos-rs/target/release/rkt}")
N=${2:-30}
BURST=${3:-3000}
BASE=${4:+$(realpath "$4")}
T=$(mktemp -d)
MOUNTED=()
cleanup() { for m in "${MOUNTED[@]}"; do drop_fs "$m" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT
WRAP=()
if mountpoint -q /sys/fs/cgroup/unified; then
  WRAP=(unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified; exec "$0" "$@"')
fi
echo "/ journal: $(cat /sys/fs/ext4/"$(basename "$(findmnt -n -o SOURCE /)")"/journal_task 2>/dev/null || echo unknown)"

# setup CASE: a fresh filesystem for CASE at $T/CASE, the image fetched and rendered, the
# deletions (if any) made in rkt's and crun's state directories.
setup() {
  local c=$1 kind=ext4-nj F="$T/$1"
  [ "${c%%+*}" = j ] && kind=ext4-j
  make_fs "$kind" "$F"; MOUNTED+=("$F")
  make_image "$F/img"
  warm_rkt "$RKT" "$F/rkt" "$F/img/layout"
  [ -n "$BASE" ] && warm_rkt "$BASE" "$F/rkt-base" "$F/img/layout"
  mkdir -p "$F/crun"
  case $c in
    *+burst|*+aged)
      for d in "$F/rkt" "$F/crun" ${BASE:+"$F/rkt-base"}; do delete_burst "$d" "$BURST"; done ;;
  esac
}

cases="nj+burst j+burst nj"
[ "${AGED:-0}" = 1 ] && cases="$cases nj+aged"
for c in $cases; do setup "$c"; done
if [ "${AGED:-0}" = 1 ]; then sync; sleep 65; for c in nj+burst j+burst; do
  # The burst cases must be fresh: redo them after the wait.
  drop_fs "$T/$c"; setup "$c"; done
fi
cmds=()
for c in $cases; do cmds+=("rkt:$c=$RKT --dir $T/$c/rkt run --net=none layout --exec /bin/true"); done
[ -n "$BASE" ] && for c in $cases; do cmds+=("base:$c=$BASE --dir $T/$c/rkt-base run --net=none layout --exec /bin/true"); done
for c in $cases; do cmds+=("crun:$c=${WRAP[*]@Q} crun --root $T/$c/crun run --bundle $T/$c/img/bundle c{i}"); done
echo "== interleaved, $N iterations"
python3 "$HERE/timeit.py" inter "$N" "${cmds[@]}"
for c in $cases; do drop_fs "$T/$c"; done
MOUNTED=()

if command -v perf >/dev/null; then
  comm=$(basename "$RKT" | cut -c1-15)
  for c in nj+burst j+burst; do
    setup "$c"
    perf record -q -o "$T/perf.data" -F 5000 -a -g -- \
      python3 "$HERE/timeit.py" seq "$N" "rkt:$c=$RKT --dir $T/$c/rkt run --net=none layout --exec /bin/true" >/dev/null 2>&1
    perf script -i "$T/perf.data" -F comm,ip,sym 2>/dev/null | python3 -c '
import sys
comm, case = sys.argv[1], sys.argv[2]; total = hit = 0
for block in sys.stdin.read().split("\n\n"):
    lines = block.strip().split("\n")
    if not lines or not lines[0].strip() or lines[0].split()[0] != comm:
        continue
    total += 1
    hit += any(l.split()[1:2] == ["find_inode_bit"] for l in lines[1:])
print(f"perf, {case}: {hit} of {total} rkt CPU samples ({100 * hit / max(total, 1):.0f} %) under find_inode_bit()")
' "$comm" "$c"
    drop_fs "$T/$c"; MOUNTED=()
  done
fi
