#!/bin/bash
# Import benchmark: time and disk use to fetch and render a ~100 MB image (busybox plus 100 MB of
# incompressible data in a second layer). Usage: bench/import.sh [path/to/rkt]   (as root)
set -euo pipefail
RKT=${1:-/var/cache/coreos-rs/target/release/rkt}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/l1/bin" "$W/l2/data"
cp /bin/busybox "$W/l1/bin/"; ln -s busybox "$W/l1/bin/true"
head -c 100M /dev/urandom > "$W/l2/data/blob"
L="$W/layout"; mkdir -p "$L/blobs/sha256"; LAYERS=""; DIFFS=""
for l in l1 l2; do
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$W/$l" -cf "$W/$l.tar" .
  D=$(sha256sum "$W/$l.tar" | cut -d' ' -f1); gzip -n -1 "$W/$l.tar"
  G=$(sha256sum "$W/$l.tar.gz" | cut -d' ' -f1); S=$(stat -c%s "$W/$l.tar.gz"); mv "$W/$l.tar.gz" "$L/blobs/sha256/$G"
  LAYERS="$LAYERS${LAYERS:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$G\",\"size\":$S}"
  DIFFS="$DIFFS${DIFFS:+,}\"sha256:$D\""
done
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/true"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$DIFFS" > "$W/cfg"
CD=$(sha256sum "$W/cfg" | cut -d' ' -f1); CS=$(stat -c%s "$W/cfg"); mv "$W/cfg" "$L/blobs/sha256/$CD"
printf '{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' "$CD" "$CS" "$LAYERS" > "$W/man"
MD=$(sha256sum "$W/man" | cut -d' ' -f1); MS=$(stat -c%s "$W/man"); mv "$W/man" "$L/blobs/sha256/$MD"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s}]}' "$MD" "$MS" > "$L/index.json"
echo -n '{"imageLayoutVersion":"1.0.0"}' > "$L/oci-layout"
echo "layout: $(du -sh "$L" | cut -f1)"
t0=$(date +%s%N); "$RKT" --dir "$W/rkt" fetch "oci:$L" >/dev/null; t1=$(date +%s%N)
echo "fetch (copy + verify blobs): $(( (t1-t0)/1000000 )) ms"
t0=$(date +%s%N); "$RKT" --dir "$W/rkt" image render --rootfs-only layout "$W/out" >/dev/null; t1=$(date +%s%N)
echo "first render (unpack both layers into the tree cache, verify diff ids) + copy out: $(( (t1-t0)/1000000 )) ms"
t0=$(date +%s%N); "$RKT" --dir "$W/rkt" run --net=none layout >/dev/null; t1=$(date +%s%N)
echo "run with the tree cached: $(( (t1-t0)/1000000 )) ms"
echo "store: blobs $(du -sh "$W/rkt/cas/blobs" | cut -f1), tree cache $(du -sh "$W/rkt/cas/tree" | cut -f1), per-pod overlay $(du -sh "$W/rkt/pods" | cut -f1)"
