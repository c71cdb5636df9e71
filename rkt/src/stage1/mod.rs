//! The built-in stage1: runs a prepared pod in the calling process. It creates the pod's cgroups,
//! forks the pod's init into a new pid namespace (see `init`), keeps the pod lock for the pod's
//! whole life, forwards SIGTERM, and returns the pod's exit code once init is gone.

pub mod app;
pub mod caps;
pub mod cgroup;
pub mod enter;
pub mod init;
pub mod logs;
pub mod net;
pub mod rootfs;
pub mod sys;

use std::fs;
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::ForkResult;

use crate::error::{Error, IoContext, Result};
use crate::image::tree::Tree;
use crate::lock::FileLock;
use crate::pod::{Pod, PodManifest};
use net::NetMode;

/// Where init assembles the pod: `<pod>/stage1/rootfs`, with a tmpfs mounted on it in the pod's
/// own mount namespace (see [`init`]), holding the pod's `/etc` files and the app rootfs mount
/// points (`opt/stage2/<app>/rootfs`).
pub fn stage1_rootfs(pod_dir: &std::path::Path) -> PathBuf {
    pod_dir.join("stage1/rootfs")
}

/// Writes the pod's hosts, hostname and resolv.conf into `etc` (an existing directory).
pub fn write_etc(etc: &std::path::Path, manifest: &PodManifest) -> Result<()> {
    let host = &manifest.stage1.hostname;
    let mut hosts = format!(
        "127.0.0.1\tlocalhost localhost.localdomain {host}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    );
    for e in &manifest.stage1.hosts_entries {
        hosts.push_str(e);
        hosts.push('\n');
    }
    fs::write(etc.join("hosts"), hosts).ctx("writing", etc.join("hosts"))?;
    fs::write(etc.join("hostname"), format!("{host}\n")).ctx("writing", etc.join("hostname"))?;
    let resolv = if manifest.stage1.dns.is_empty() {
        fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
    } else {
        let mut s = String::new();
        for d in &manifest.stage1.dns {
            s.push_str(&format!("nameserver {d}\n"));
        }
        if !manifest.stage1.dns_search.is_empty() {
            s.push_str(&format!(
                "search {}\n",
                manifest.stage1.dns_search.join(" ")
            ));
        }
        s
    };
    fs::write(etc.join("resolv.conf"), resolv).ctx("writing", etc.join("resolv.conf"))
}

/// Waits for init to be in its network namespace, attaches it, and lets it go on.
fn connect(
    pod: &Pod,
    network: &net::Network,
    pid: i32,
    ready_r: std::os::fd::OwnedFd,
    go_w: std::os::fd::OwnedFd,
) -> Result<()> {
    use std::io::{Read, Write};
    let mut ready = fs::File::from(ready_r);
    let mut byte = [0u8; 1];
    if ready
        .read(&mut byte)
        .ctx("waiting for pod init", "net sync")?
        != 1
    {
        let msg = fs::read_to_string(pod.dir.join("stage1-error"))
            .unwrap_or_else(|_| "pod init exited early".into());
        return Err(Error::Stage1(msg));
    }
    let attachment = net::attach(&net::IpRoute2, &pod.rkt_dir(), network, &pod.uuid, pid)?;
    let dir = pod.dir.join("net");
    fs::create_dir_all(&dir).ctx("creating", &dir)?;
    let json = serde_json::to_vec(&[&attachment]).map_err(|source| Error::Json {
        what: "network info".into(),
        source,
    })?;
    fs::write(dir.join("info.json"), json).ctx("writing", dir.join("info.json"))?;
    fs::File::from(go_w)
        .write_all(b"g")
        .ctx("releasing pod init", "net sync")
}

/// Records what the pod's later readers need: its start time, its cgroups (for gc after a crash),
/// init's pid and ours.
fn record_started(pod: &Pod, cgroup: &cgroup::PodCgroup, init_pid: i32) -> Result<()> {
    let started = pod.dir.join("started");
    fs::write(&started, crate::timefmt::now_ns().to_string()).ctx("writing", &started)?;
    let paths: Vec<String> = cgroup
        .paths()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let cgroups = pod.dir.join("cgroups");
    fs::write(&cgroups, paths.join("\n")).ctx("writing", &cgroups)?;
    let _ = fs::write(pod.dir.join("pid"), init_pid.to_string());
    let _ = fs::write(pod.dir.join("ppid"), std::process::id().to_string());
    Ok(())
}

/// Runs the pod (already renamed into `run/`, locked by `lock`) and returns its exit code: the
/// first non-zero app exit code in app order, or 0.
pub fn run(pod: &Pod, lock: FileLock, manifest: &PodManifest, trees: Vec<Tree>) -> Result<i32> {
    let net = NetMode::parse(&manifest.stage1.net)?;
    let network = match (&net, &manifest.stage1.network) {
        (NetMode::Named(_), Some(n)) => Some(n.clone()),
        (NetMode::Named(n), None) => {
            return Err(Error::Stage1(format!(
                "network {n:?} was not resolved at prepare time"
            )));
        }
        _ => None,
    };
    let resources: Vec<_> = manifest
        .apps
        .iter()
        .map(|a| (a.name.clone(), a.app.resources.clone()))
        .collect();
    let cgroup = cgroup::PodCgroup::create(&pod.uuid, &resources)?;
    let tree_paths: Vec<PathBuf> = trees.iter().map(|t| t.rootfs.clone()).collect();
    let sys = sys::Linux;
    // Init waits for the host side of its network: it says "ready" once in its netns, we answer "go".
    let sync = if network.is_some() {
        let (ready_r, ready_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx("pipe", "net sync")?;
        let (go_r, go_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ctx("pipe", "net sync")?;
        Some((ready_r, ready_w, go_r, go_w))
    } else {
        None
    };
    // Only init goes into the new pid namespace: children forked later (iproute2) stay in ours.
    let own_pid_ns = fs::File::open("/proc/self/ns/pid").ctx("opening", "/proc/self/ns/pid")?;
    let res = (|| {
        sys::Sys::unshare(&sys, CloneFlags::CLONE_NEWPID)?;
        let into = cgroup.v2_leaf("stage1");
        // SAFETY: rkt is single-threaded here; the child runs init and exits.
        match unsafe { cgroup::fork_into(into.as_ref()) } {
            Ok(ForkResult::Child) => {
                // Only the stage1 parent holds the pod lock: if it dies, init dies (pdeathsig) and
                // the pod reads as exited.
                let _ = nix::unistd::close(lock.raw_fd());
                let net_sync = sync.as_ref().map(|(_, w, r, _)| (w, r));
                let plan = init::InitPlan {
                    net_sync,
                    sys: &sys,
                    pod_dir: &pod.dir,
                    manifest,
                    trees: tree_paths.clone(),
                    cgroup: Some(&cgroup),
                    private_net: net != NetMode::Host,
                    network_info: pod.dir.join("net/info.json"),
                };
                let code = init::run(&plan);
                // SAFETY: leaving the forked child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            Ok(ForkResult::Parent { child }) => {
                nix::sched::setns(&own_pid_ns, CloneFlags::CLONE_NEWPID).ctx(
                    "restoring the pid namespace for children",
                    "/proc/self/ns/pid",
                )?;
                Ok(child)
            }
            Err(e) => Err(Error::Stage1(format!("forking pod init: {e}"))),
        }
    })();
    let child = match res {
        Ok(c) => c,
        Err(e) => {
            cgroup.destroy();
            return Err(e);
        }
    };
    // Init sets the pod up meanwhile (on the other CPU, where there is one).
    if let Err(e) = record_started(pod, &cgroup, child.as_raw()) {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        cgroup.destroy();
        return Err(e);
    }
    if let (Some((ready_r, ready_w, go_r, go_w)), Some(network)) = (sync, network.as_ref()) {
        drop(ready_w);
        drop(go_r);
        if let Err(e) = connect(pod, network, child.as_raw(), ready_r, go_w) {
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            cgroup.destroy();
            return Err(e);
        }
    }
    init::catch_stop_signals()?;
    let set = init::block_wait_set()?;
    let status = loop {
        match waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                cgroup.destroy();
                return Err(Error::Stage1(format!("waiting for pod init: {e}")));
            }
        }
        // A stop that came before the signals were blocked, or one that comes now.
        if init::take_terminate() || init::is_stop(set.wait()) {
            let _ = kill(child, Signal::SIGTERM);
        }
    };
    let _ = set.thread_unblock();
    cgroup.destroy();
    drop(trees);
    if status == 254 {
        let msg = fs::read_to_string(pod.dir.join("stage1-error"))
            .unwrap_or_else(|_| "pod setup failed".into());
        drop(lock);
        return Err(Error::Stage1(msg));
    }
    let mut code = 0;
    for a in &manifest.apps {
        match pod.app_exit_code(&a.name) {
            Some(0) => {}
            Some(c) => {
                code = c;
                break;
            }
            // The app was never reaped: the pod was killed around it.
            None => {
                code = if status != 0 { status } else { 137 };
                break;
            }
        }
    }
    drop(lock);
    Ok(code)
}
