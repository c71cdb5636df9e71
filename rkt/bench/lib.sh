# Helpers shared by the rkt benchmarks (sourced; as root).

# make_image DIR: a busybox OCI layout at DIR/layout (made the way the tests make it) and the
# equivalent runtime bundle at DIR/bundle (umoci gives pid/net/ipc/uts/mnt namespaces; the
# container runs /bin/true in a cgroup nested below ours).
make_image() {
  local W=$1
  mkdir -p "$W/rootfs/bin" "$W/rootfs/etc" "$W/rootfs/proc" "$W/rootfs/sys" "$W/rootfs/dev" "$W/rootfs/tmp"
  cp /bin/busybox "$W/rootfs/bin/"
  for a in sh true; do ln -s busybox "$W/rootfs/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$W/rootfs/etc/passwd"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$W/rootfs" -cf "$W/layer.tar" .
  local DIFF LD LS CD CS MD MS L="$W/layout"
  DIFF=$(sha256sum "$W/layer.tar" | cut -d' ' -f1); gzip -n "$W/layer.tar"
  LD=$(sha256sum "$W/layer.tar.gz" | cut -d' ' -f1); LS=$(stat -c%s "$W/layer.tar.gz")
  mkdir -p "$L/blobs/sha256"; mv "$W/layer.tar.gz" "$L/blobs/sha256/$LD"
  printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/true"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$DIFF" > "$W/cfg"
  CD=$(sha256sum "$W/cfg" | cut -d' ' -f1); CS=$(stat -c%s "$W/cfg"); mv "$W/cfg" "$L/blobs/sha256/$CD"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' "$CD" "$CS" "$LD" "$LS" > "$W/man"
  MD=$(sha256sum "$W/man" | cut -d' ' -f1); MS=$(stat -c%s "$W/man"); mv "$W/man" "$L/blobs/sha256/$MD"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "$MD" "$MS" > "$L/index.json"
  echo -n '{"imageLayoutVersion":"1.0.0"}' > "$L/oci-layout"
  rm -rf "$W/rootfs"
  umoci unpack --image "$L:latest" "$W/bundle" >/dev/null
  python3 - "$W/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
c["linux"]["cgroupsPath"] = "/rktbench"
json.dump(c, open(p, "w"))
PY
}

# make_fs KIND DIR: mounts a fresh, empty filesystem at DIR.
#   ext4-nj  a new 4 GiB ext4 without a journal (like this VM's /), loop-mounted with discard
#   ext4-j   the same with a journal (mke2fs's default)
#   tmpfs    a tmpfs (where runc and crun keep their state by default)
make_fs() {
  local kind=$1 dir=$2
  mkdir -p "$dir"
  case $kind in
    ext4-nj|ext4-j)
      local img="$dir.img" opts=()
      [ "$kind" = ext4-nj ] && opts=(-O ^has_journal)
      rm -f "$img"; truncate -s 4G "$img"
      mkfs.ext4 -q -F "${opts[@]}" "$img"
      mount -o loop,discard "$img" "$dir"
      ;;
    tmpfs) mount -t tmpfs -o size=2g tmpfs "$dir" ;;
    *) echo "unknown filesystem kind $kind" >&2; return 1 ;;
  esac
}

# drop_fs DIR: unmounts what make_fs mounted (and deletes its image file).
drop_fs() {
  umount "$1" 2>/dev/null || umount -l "$1"
  rm -f "$1.img"
}

# delete_burst DIR N: creates and deletes N files in DIR/burst, as an `rm -rf` of a previous
# run's scratch tree does: afterwards the filesystem holds N recently deleted inodes.
delete_burst() {
  python3 - "$1/burst" "$2" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
os.mkdir(d)
for i in range(n):
    open(f"{d}/{i}", "w").close()
for i in range(n):
    os.unlink(f"{d}/{i}")
os.rmdir(d)
PY
}

# warm_rkt RKT DIR LAYOUT: fetches the image into the store at DIR and runs it once (renders
# the tree), so that the timed runs start with the image fetched and the tree rendered.
warm_rkt() {
  "$1" --dir "$2" fetch "oci:$3:latest" >/dev/null
  "$1" --dir "$2" run --net=none layout --exec /bin/true >/dev/null
}
