//! `coreos-up`: brings up a local cluster from an embedded default
//! configuration, with the daemons this workspace has built so far, and
//! says plainly which ones do not exist yet.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// Where the local cluster keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/tmp/coreos-up";
/// The client URL of the local etcd (etcd's own default port).
pub const ETCD_CLIENT_URL: &str = "http://127.0.0.1:2379";
/// The peer URL of the local etcd (etcd's own default port).
pub const ETCD_PEER_URL: &str = "http://127.0.0.1:2380";
/// How long a daemon may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Validated settings of a bring-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where data dirs and logs go.
    pub state_dir: PathBuf,
    /// Where the workspace's binaries are.
    pub bin_dir: PathBuf,
}

/// A component of the stack and whether this bring-up can start it.
struct Component {
    name: &'static str,
    binary: &'static str,
    /// Why it is not started, if it is not.
    missing: Option<&'static str>,
}

/// The stack, in start order. Components whose daemons do not exist yet
/// say so instead of pretending to run.
const COMPONENTS: &[Component] = &[
    Component {
        name: "etcd",
        binary: "etcd",
        missing: None,
    },
    Component {
        name: "fleet",
        binary: "fleetd",
        missing: Some("fleetd is not written yet"),
    },
    Component {
        name: "flannel",
        binary: "flanneld",
        missing: Some("flanneld is not written yet"),
    },
    Component {
        name: "locksmith",
        binary: "locksmithd",
        missing: Some("locksmithd is not written yet"),
    },
];

/// Starts every available component, reports the rest, and runs until
/// `shutdown` is cancelled; then stops what it started.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.state_dir)
        .with_context(|| format!("creating {}", settings.state_dir.display()))?;
    let mut children: Vec<(&str, Child)> = Vec::new();
    for component in COMPONENTS {
        if let Some(why) = component.missing {
            println!("{:<10} not started: {why}", component.name);
            continue;
        }
        let binary = settings.bin_dir.join(component.binary);
        if !binary.is_file() {
            println!(
                "{:<10} not started: {} is not built (run `cargo build --workspace --bins`)",
                component.name,
                binary.display()
            );
            continue;
        }
        let child = match component.name {
            "etcd" => start_etcd(&settings, &binary).await?,
            other => anyhow::bail!("no start recipe for {other}"),
        };
        children.push((component.name, child));
    }
    if children.is_empty() {
        anyhow::bail!("nothing could be started");
    }
    println!(
        "\nlocal cluster up; Ctrl-C stops it (state in {})",
        settings.state_dir.display()
    );
    tokio::select! {
        () = shutdown.cancelled() => {}
        (name, status) = first_exit(&mut children) => {
            anyhow::bail!("{name} exited unexpectedly ({status})");
        }
    }
    for (name, child) in &mut children {
        stop(name, child).await;
    }
    Ok(())
}

async fn start_etcd(settings: &Settings, binary: &Path) -> anyhow::Result<Child> {
    let data_dir = settings.state_dir.join("etcd");
    let log = settings.state_dir.join("etcd.log");
    let child = Command::new(binary)
        .args(["--name", "coreos-up", "--data-dir"])
        .arg(&data_dir)
        .args([
            "--listen-client-urls",
            ETCD_CLIENT_URL,
            "--advertise-client-urls",
            ETCD_CLIENT_URL,
        ])
        .args([
            "--listen-peer-urls",
            ETCD_PEER_URL,
            "--initial-advertise-peer-urls",
            ETCD_PEER_URL,
        ])
        .args(["--initial-cluster", &format!("coreos-up={ETCD_PEER_URL}")])
        .stdin(Stdio::null())
        .stdout(log_file(&log)?)
        .stderr(log_file(&log)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    wait_ready("127.0.0.1:2379", "/health")
        .await
        .with_context(|| format!("etcd did not become healthy; see {}", log.display()))?;
    let etcdctl = settings.bin_dir.join("etcdctl");
    println!(
        "{:<10} running: client {ETCD_CLIENT_URL}, data {}",
        "etcd",
        data_dir.display()
    );
    println!(
        "{:<10}   try: {} set /message hi; {} get /message",
        "",
        etcdctl.display(),
        etcdctl.display()
    );
    Ok(child)
}

fn log_file(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Polls `GET path` on `addr` until it answers 200.
async fn wait_ready(addr: &str, path: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            let mut answer = Vec::new();
            if stream.write_all(request.as_bytes()).await.is_ok()
                && stream.read_to_end(&mut answer).await.is_ok()
                && answer.starts_with(b"HTTP/1.")
                && answer.get(9..12) == Some(b"200")
            {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{addr}{path} not ready after {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn first_exit<'a>(children: &mut [(&'a str, Child)]) -> (&'a str, String) {
    let waits = children.iter_mut().map(|(name, child)| {
        Box::pin(async move {
            let status = child
                .wait()
                .await
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            (*name, status)
        })
    });
    futures::future::select_all(waits).await.0
}

/// SIGTERM, then SIGKILL after a grace period.
async fn stop(name: &str, child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(_) => println!("{name:<10} stopped"),
        Err(_) => {
            let _ = child.kill().await;
            println!("{name:<10} killed after 10s");
        }
    }
}
