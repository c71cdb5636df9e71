#!/bin/bash
# Interleaved startup comparison: each iteration runs rkt NEW and rkt BASE (--net=none and
# --net=host), runc, crun and crun's wrapper alone, one after the other, so that all see the same
# load; the stores are warmed once and kept for the whole run.
# Usage: bench/compare.sh NEW_RKT BASE_RKT [runs]   (as root; needs busybox-static, umoci, runc, crun)
set -euo pipefail
NEW=$1
BASE=$2
N=${3:-30}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
# A busybox OCI layout, made the way the tests make it.
mkdir -p "$W/rootfs/bin" "$W/rootfs/etc" "$W/rootfs/proc" "$W/rootfs/sys" "$W/rootfs/dev" "$W/rootfs/tmp"
cp /bin/busybox "$W/rootfs/bin/"
for a in sh true; do ln -s busybox "$W/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$W/rootfs/etc/passwd"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$W/rootfs" -cf "$W/layer.tar" .
DIFF=$(sha256sum "$W/layer.tar" | cut -d' ' -f1); gzip -n "$W/layer.tar"
LD=$(sha256sum "$W/layer.tar.gz" | cut -d' ' -f1); LS=$(stat -c%s "$W/layer.tar.gz")
L="$W/layout"; mkdir -p "$L/blobs/sha256"; mv "$W/layer.tar.gz" "$L/blobs/sha256/$LD"
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/true"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$DIFF" > "$W/cfg"
CD=$(sha256sum "$W/cfg" | cut -d' ' -f1); CS=$(stat -c%s "$W/cfg"); mv "$W/cfg" "$L/blobs/sha256/$CD"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' "$CD" "$CS" "$LD" "$LS" > "$W/man"
MD=$(sha256sum "$W/man" | cut -d' ' -f1); MS=$(stat -c%s "$W/man"); mv "$W/man" "$L/blobs/sha256/$MD"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "$MD" "$MS" > "$L/index.json"
echo -n '{"imageLayoutVersion":"1.0.0"}' > "$L/oci-layout"

# The equivalent runtime bundle (umoci gives pid/net/ipc/uts/mnt namespaces), nested in our cgroup.
umoci unpack --image "$L:latest" "$W/bundle" >/dev/null
python3 - "$W/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
c["linux"]["cgroupsPath"] = "/rktbench"
json.dump(c, open(p, "w"))
PY

stats() { sort -n | awk '{a[NR]=$1} END {printf "min %.1f ms, median %.1f ms (n=%d)\n", a[1], (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2), NR}'; }
time_ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N); echo "scale=3; ($t1-$t0)/1000000" | bc; }
for b in new base; do
  bin=$NEW; [ "$b" = base ] && bin=$BASE
  "$bin" --dir "$W/rkt-$b" fetch "oci:$L:latest" >/dev/null
  "$bin" --dir "$W/rkt-$b" run --net=none layout --exec /bin/true >/dev/null # render the tree once
done
mkdir "$W/times"
cd "$W/bundle"
for i in $(seq "$N"); do
  for b in new base; do
    bin=$NEW; [ "$b" = base ] && bin=$BASE
    time_ms "$bin" --dir "$W/rkt-$b" run --net=none layout --exec /bin/true >> "$W/times/rkt-$b-none"
    time_ms "$bin" --dir "$W/rkt-$b" run --net=host layout --exec /bin/true >> "$W/times/rkt-$b-host"
  done
  time_ms runc run "ir$i" >> "$W/times/runc"
  time_ms unshare -m --propagation private sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; crun run ic$i" >> "$W/times/crun"
  time_ms unshare -m --propagation private sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; true" >> "$W/times/wrapper"
done
for f in rkt-new-none rkt-new-host rkt-base-none rkt-base-host runc crun wrapper; do
  echo "$f: $(stats < "$W/times/$f")"
done
for b in new base; do
  bin=$NEW; [ "$b" = base ] && bin=$BASE
  "$bin" --dir "$W/rkt-$b" gc --grace-period=0s >/dev/null
done
