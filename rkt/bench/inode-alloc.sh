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
# This script shows it on fresh loop-mounted filesystems (nothing else writes to them):
#   nj+burst   ext4 without a journal, 3000 inodes deleted just before the runs
#   j+burst    the same filesystem with a journal
#   nj         ext4 without a journal, no deletions before the runs
#   nj+aged    (with AGED=1) no journal, the deletions synced and 65 s old before the runs
# each with RUNS sequential `rkt run`s and `crun run`s (crun's --root on the same filesystem),
# and with perf (if installed) the share of rkt's CPU samples under find_inode_bit().
# Usage: bench/inode-alloc.sh [RKT] [RUNS] [BURST]   (as root; needs what startup.sh needs)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
RKT=$(realpath "${1:-/var/cache/coreos-rs/target/release/rkt}")
N=${2:-30}
BURST=${3:-3000}
T=$(mktemp -d)
trap 'drop_fs "$T/fs" 2>/dev/null || true; rm -rf "$T"' EXIT
WRAP=()
if mountpoint -q /sys/fs/cgroup/unified; then
  WRAP=(unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified; exec "$0" "$@"')
fi
echo "/ journal: $(cat /sys/fs/ext4/"$(basename "$(findmnt -n -o SOURCE /)")"/journal_task 2>/dev/null || echo unknown)"

conditions="nj+burst j+burst nj"
[ "${AGED:-0}" = 1 ] && conditions="$conditions nj+aged"
for cond in $conditions; do
  for rt in rkt crun; do
    kind=ext4-nj; [ "${cond%%+*}" = j ] && kind=ext4-j
    F="$T/fs"
    make_fs "$kind" "$F"
    make_image "$F/img"
    warm_rkt "$RKT" "$F/rkt" "$F/img/layout"
    case $cond in
      *+burst) delete_burst "$F" "$BURST" ;;
      *+aged) delete_burst "$F" "$BURST"; sync; sleep 65 ;;
    esac
    if [ "$rt" = rkt ]; then
      cmd="rkt=$RKT --dir $F/rkt run --net=none layout --exec /bin/true"
    else
      cmd="crun=${WRAP[*]@Q} crun --root $F/crun run --bundle $F/img/bundle c{i}"
    fi
    echo -n "$cond: "
    if [ "$rt" = rkt ] && [ "${cond#*+}" = burst ] && command -v perf >/dev/null; then
      perf record -q -o "$T/perf.data" -F 5000 -a -g -- \
        python3 "$HERE/timeit.py" seq "$N" "$cmd" 2>/dev/null
      perf script -i "$T/perf.data" -F comm,ip,sym 2>/dev/null | python3 -c '
import sys
comm = sys.argv[1]; total = hit = 0
for block in sys.stdin.read().split("\n\n"):
    lines = block.strip().split("\n")
    if not lines or not lines[0].strip() or lines[0].split()[0] != comm:
        continue
    total += 1
    hit += any(l.split()[1:2] == ["find_inode_bit"] for l in lines[1:])
print(f"    perf: {hit} of {total} rkt CPU samples ({100 * hit / max(total, 1):.0f} %) under find_inode_bit()")
' "$(basename "$RKT" | cut -c1-15)"
    else
      python3 "$HERE/timeit.py" seq "$N" "$cmd"
    fi
    drop_fs "$F"
  done
done
