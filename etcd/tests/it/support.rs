//! Test harness: our server in-process or as a binary, Debian's etcd as a reference, and an HTTP helper.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd::ctl::client::{self, Response};
use tokio_util::sync::CancellationToken;

/// A free local port (bound then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

/// Sends a request to `addr` (host:port).
pub fn req(addr: &str, method: &str, target: &str, form: Option<&str>) -> Response {
    client::request(addr, method, target, form, Some(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("{method} {target} on {addr}: {e}"))
}

/// Polls until `/health` answers 200.
pub fn wait_healthy(addr: &str, deadline: Duration) {
    let end = Instant::now() + deadline;
    loop {
        if let Ok(r) = client::request(
            addr,
            "GET",
            "/health",
            None,
            Some(Duration::from_millis(500)),
        ) && r.status == 200
        {
            return;
        }
        assert!(Instant::now() < end, "server at {addr} not healthy in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Our server, run in-process on a port-0 listener.
pub struct Ours {
    pub addr: String,
    token: CancellationToken,
    rt: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl Ours {
    pub fn start() -> Self {
        Self::start_with_peer("http://127.0.0.1:22380")
    }

    /// Starts with the given advertised peer URL (member ids derive from it).
    pub fn start_with_peer(peer: &str) -> Self {
        Self::start_with(peer, |_| {})
    }

    /// Starts with the given peer URL and a last change to the validated settings.
    pub fn start_with(peer: &str, tweak: impl FnOnce(&mut etcd::Settings)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = std_listener.local_addr().expect("addr").to_string();
        std_listener.set_nonblocking(true).expect("nonblocking");
        let args: Vec<std::ffi::OsString> = [
            "etcd".to_string(),
            "--name=n1".into(),
            format!("--data-dir={}", dir.path().join("data").display()),
            format!("--listen-client-urls=http://{addr}"),
            format!("--advertise-client-urls=http://{addr}"),
            format!("--initial-advertise-peer-urls={peer}"),
            "--initial-cluster-token=t1".into(),
        ]
        .into_iter()
        .map(Into::into)
        .collect();
        let flags = match etcd::config::parse(args).expect("flags") {
            etcd::config::Invocation::Run(f) => f,
            etcd::config::Invocation::Version => panic!("unexpected --version"),
        };
        let mut settings = flags.settings().expect("settings");
        tweak(&mut settings);
        let token = CancellationToken::new();
        let t = token.clone();
        rt.spawn(async move {
            let l = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            if let Err(e) = etcd::run(settings, vec![l], t).await {
                panic!("server failed: {e}");
            }
        });
        wait_healthy(&addr, Duration::from_secs(10));
        Ours {
            addr,
            token,
            rt: Some(rt),
            _dir: dir,
        }
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// A server process (ours or Debian's), killed on drop.
pub struct Proc {
    pub addr: String,
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Proc {
    /// Debian's etcd 3.4 on unique ports (this peer port), with the v2 API on.
    pub fn debian_with_peer_port(p: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = free_port();
        let addr = format!("127.0.0.1:{c}");
        let child = Command::new("/usr/bin/etcd")
            .args([
                "--name",
                "n1",
                "--enable-v2=true",
                "--data-dir",
                &dir.path().join("data").display().to_string(),
                "--listen-client-urls",
                &format!("http://{addr}"),
                "--advertise-client-urls",
                &format!("http://{addr}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{p}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{p}"),
                "--initial-cluster",
                &format!("n1=http://127.0.0.1:{p}"),
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "t1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /usr/bin/etcd (apt-get install etcd-server)");
        let me = Proc { addr, child, dir };
        wait_healthy(&me.addr, Duration::from_secs(30));
        me
    }

    /// Our etcd binary on a unique port, with the data dir in `dir`.
    pub fn ours_in(dir: tempfile::TempDir, port: u16) -> Self {
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_etcd"))
            .args([
                "-name",
                "n1",
                "-data-dir",
                &dir.path().join("data").display().to_string(),
                "-listen-client-urls",
                &format!("http://{addr}"),
                "-advertise-client-urls",
                &format!("http://{addr}"),
                // Nobody dials a lone member's peer port: any free one.
                "-listen-peer-urls",
                "http://127.0.0.1:0",
                // Small, so restarts go through snapshots and log purging too.
                "-snapshot-count",
                "50",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start our etcd");
        let me = Proc { addr, child, dir };
        wait_healthy(&me.addr, Duration::from_secs(10));
        me
    }

    /// Kills with SIGKILL and returns the data dir.
    pub fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `bin` (an etcdctl, v3 API) with `args` and reads its output until it holds `lines` lines (or 10 s
/// passed), then kills it: for `watch`, which never ends by itself.
pub fn watch_lines<S: AsRef<std::ffi::OsStr>>(
    bin: &str,
    endpoint: &str,
    args: &[S],
    lines: usize,
) -> String {
    use std::io::BufRead;
    let mut child = Command::new(bin)
        .args(args)
        .env("ETCDCTL_API", "3")
        .env("ETCDCTL_ENDPOINTS", endpoint)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < lines {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => got.push(l),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    got.join("\n")
}
