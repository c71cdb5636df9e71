//! Test helpers: hand-built OCI layouts (busybox-static plus test layers), and running the rkt binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

pub fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A tar being built entry by entry, with raw names so tests can write hostile paths.
#[derive(Default)]
pub struct TarBuilder {
    out: Vec<u8>,
}

impl TarBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn header(name: &str, kind: tar::EntryType, size: u64, mode: u32, link: &str) -> tar::Header {
        let mut h = tar::Header::new_old();
        {
            let raw = h.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        h
    }

    pub fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        let h = Self::header(name, tar::EntryType::Regular, data.len() as u64, mode, "");
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        let h = Self::header(name, tar::EntryType::Directory, 0, 0o755, "");
        self.out.extend_from_slice(h.as_bytes());
        self
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = Self::header(name, tar::EntryType::Symlink, 0, 0o777, target);
        self.out.extend_from_slice(h.as_bytes());
        self
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let h = Self::header(name, tar::EntryType::Link, 0, 0o644, target);
        self.out.extend_from_slice(h.as_bytes());
        self
    }

    pub fn chardev(&mut self, name: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(name, tar::EntryType::Char, 0, 0o666, "");
        let _ = h.set_device_major(major);
        let _ = h.set_device_minor(minor);
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip to memory");
    e.finish().expect("gzip to memory")
}

/// The busybox rootfs layer: /bin/busybox, applet links, passwd/group, empty mount points.
pub fn busybox_layer() -> Vec<u8> {
    let busybox =
        std::fs::read("/bin/busybox").expect("busybox-static must be installed (/bin/busybox)");
    let mut t = TarBuilder::new();
    for d in [
        "bin/", "etc/", "proc/", "sys/", "dev/", "tmp/", "root/", "home/",
    ] {
        t.dir(d);
    }
    t.file("bin/busybox", &busybox, 0o755);
    for a in [
        "sh", "echo", "cat", "ls", "id", "pwd", "hostname", "true", "false", "sleep", "env", "dd",
        "touch", "grep", "mount", "wc", "head", "ps", "mkdir", "rm", "yes", "timeout", "stat",
        "readlink", "nc", "ping", "ip", "seq", "tr", "sort", "cut", "kill",
    ] {
        t.symlink(&format!("bin/{a}"), "busybox");
    }
    t.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\nuser:x:1000:1000:user:/home:/bin/sh\n",
        0o644,
    );
    t.file(
        "etc/group",
        b"root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
        0o644,
    );
    t.finish()
}

/// Writes an OCI image layout with the given (uncompressed) layers and exec config; returns `dir`.
pub fn write_layout(
    dir: &Path,
    tag: &str,
    layers: &[Vec<u8>],
    exec_config: serde_json::Value,
) -> PathBuf {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("create layout");
    let put = |bytes: &[u8]| -> String {
        let d = sha(bytes);
        std::fs::write(blobs.join(&d), bytes).expect("write blob");
        d
    };
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(format!("sha256:{}", sha(l)));
        let gz = gzip(l);
        let d = put(&gz);
        layer_descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{d}"), "size": gz.len()}));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": exec_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids}
    }))
    .expect("json");
    let cd = put(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{cd}"), "size": config.len()},
        "layers": layer_descs
    }))
    .expect("json");
    let md = put(&manifest);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{md}"),
        "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("json"),
    )
    .expect("write index");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("write oci-layout");
    dir.to_path_buf()
}

/// A test environment: a temp dir with an rkt `--dir` and a busybox layout named `busybox`.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub layout: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("rkt");
        let layout = write_layout(
            &tmp.path().join("busybox"),
            "latest",
            &[busybox_layer()],
            json!({"Env": ["PATH=/bin", "FOO=from-image"], "Cmd": ["/bin/sh", "-c", "echo hello from busybox"], "WorkingDir": "/root"}),
        );
        Self { tmp, dir, layout }
    }

    pub fn image(&self) -> String {
        format!("oci:{}:latest", self.layout.display())
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rkt"));
        c.arg("--dir").arg(&self.dir).args(args);
        c.stdin(Stdio::null());
        c
    }

    pub fn rkt(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running rkt")
    }

    /// Runs rkt, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.rkt(args);
        assert!(o.status.success(), "rkt {args:?} failed: {}", show(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `rkt run --net=none <busybox> --exec /bin/sh -- -c <script>` plus extra app flags.
    pub fn sh(&self, pod_flags: &[&str], app_flags: &[&str], script: &str) -> Output {
        let image = self.image();
        let mut args = vec!["run", "--net=none"];
        args.extend_from_slice(pod_flags);
        args.push(&image);
        args.extend_from_slice(&["--exec", "/bin/sh"]);
        args.extend_from_slice(app_flags);
        args.extend_from_slice(&["--", "-c", script]);
        self.rkt(&args)
    }
}

pub fn show(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Polls `f` until it returns Some, failing after `secs` seconds.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A snapshot of a directory tree (paths, kinds, contents) to prove nothing changed.
pub fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    fn walk(base: &Path, p: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(p).expect("read_dir").flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path
                .strip_prefix(base)
                .expect("prefix")
                .display()
                .to_string();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            let desc = if meta.file_type().is_symlink() {
                format!(
                    "link:{}",
                    std::fs::read_link(&path).expect("readlink").display()
                )
            } else if meta.is_dir() {
                walk(base, &path, out);
                "dir".into()
            } else if meta.is_file() {
                format!(
                    "file:{}",
                    String::from_utf8_lossy(&std::fs::read(&path).expect("read"))
                )
            } else {
                format!("special:{:?}", meta.file_type())
            };
            out.push((rel, desc));
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// Kills a background `rkt run` (and so its pod) if the test fails before it ends.
pub struct KillOnPanic {
    pid: i32,
    armed: bool,
}

impl KillOnPanic {
    pub fn new(child: &std::process::Child) -> Self {
        Self {
            pid: child.id() as i32,
            armed: true,
        }
    }

    /// The process was waited for: its pid may be reused, never signal it.
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if self.armed && std::thread::panicking() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
