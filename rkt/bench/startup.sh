#!/bin/bash
# Startup benchmark: median wall time of `rkt run <busybox> --exec /bin/true` (image already
# fetched) against `runc run` and `crun run` of the equivalent bundle, same machine, same run.
# Usage: bench/startup.sh [path/to/rkt] [runs]   (as root; needs busybox-static, umoci, runc, crun)
set -euo pipefail
RKT=${1:-/var/cache/coreos-rs/target/release/rkt}
N=${2:-30}
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

"$RKT" --dir "$W/rkt" fetch "oci:$L:latest" >/dev/null
"$RKT" --dir "$W/rkt" run --net=none "oci:$L:latest" >/dev/null # render the tree once

stats() { sort -n | awk '{a[NR]=$1; s+=$1} END {printf "min %.1f ms, median %.1f ms, mean %.1f ms (n=%d)\n", a[1], (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2), s/NR, NR}'; }
time_ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N); echo "scale=3; ($t1-$t0)/1000000" | bc; }

# The stored image is named after the layout directory: layout:latest.
echo "rkt run --net=none --exec /bin/true: $(for i in $(seq "$N"); do time_ms "$RKT" --dir "$W/rkt" run --net=none layout --exec /bin/true; done | stats)"
echo "rkt run --net=host --exec /bin/true: $(for i in $(seq "$N"); do time_ms "$RKT" --dir "$W/rkt" run --net=host layout --exec /bin/true; done | stats)"
cd "$W/bundle"
echo "runc run: $(for i in $(seq "$N"); do time_ms runc run "rb$i"; done | stats)"
echo "crun run (private mntns, unified unmounted): $(for i in $(seq "$N"); do time_ms unshare -m --propagation private sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; crun run cb$i"; done | stats)"
# What the crun line pays for its workaround alone (unshare + sh + umount, no container), for
# reading the crun median net of it.
echo "crun's wrapper alone (no crun): $(for i in $(seq "$N"); do time_ms unshare -m --propagation private sh -c "umount /sys/fs/cgroup/unified 2>/dev/null; true"; done | stats)"
"$RKT" --dir "$W/rkt" gc --grace-period=0s >/dev/null
