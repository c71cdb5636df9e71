//! The pod's init: PID 1 of the pod's pid namespace. It enters the pod's mount, UTS, IPC and
//! (unless `--net=host`) network namespaces, assembles each app's rootfs, starts the apps, forwards
//! SIGTERM to them, reaps every process, and records each app's exit code in the pod directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use super::cgroup::{PodCgroup, fork_into};
use super::sys::Sys;
use super::{app, logs, rootfs};
use crate::error::{Error, Result};
use crate::pod::manifest::{Output, PodManifest};
use crate::timefmt::now_ns;

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

/// Installs a handler (without SA_RESTART, so blocking waits return EINTR) for stop signals.
pub(crate) fn catch_stop_signals() -> Result<()> {
    let act = SigAction::new(
        SigHandler::Handler(on_terminate),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(sig, &act) }
            .map_err(|e| Error::Stage1(format!("installing {sig} handler: {e}")))?;
    }
    Ok(())
}

pub(crate) fn take_terminate() -> bool {
    TERMINATE.swap(false, Ordering::SeqCst)
}

/// Blocks the signals a stage1 process waits for (children exiting, stop requests) so that
/// `sigwait` gets each of them exactly once, with no window between checking and waiting.
pub(crate) fn block_wait_set() -> Result<SigSet> {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set.thread_block()
        .map_err(|e| Error::Stage1(format!("blocking signals: {e}")))?;
    Ok(set)
}

/// Whether `sigwait` returned a stop request.
pub(crate) fn is_stop(sig: nix::Result<Signal>) -> bool {
    matches!(sig, Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP))
}

/// What init needs, prepared by stage1 before the fork.
pub struct InitPlan<'a> {
    pub sys: &'a dyn Sys,
    pub pod_dir: &'a Path,
    pub manifest: &'a PodManifest,
    /// The rendered tree of each app, in app order.
    pub trees: Vec<PathBuf>,
    pub cgroup: Option<&'a PodCgroup>,
    pub private_net: bool,
    /// Pipes to the stage1 parent while it sets up the host side of the network:
    /// (write end of "ready", read end of "go").
    pub net_sync: Option<(&'a std::os::fd::OwnedFd, &'a std::os::fd::OwnedFd)>,
    /// Where the parent writes the pod's network attachment.
    pub network_info: PathBuf,
}

/// Runs init; returns the process exit code (0, or 254 when the pod could not be set up).
pub fn run(plan: &InitPlan<'_>) -> i32 {
    match run_inner(plan) {
        Ok(()) => 0,
        Err(e) => {
            let msg = format!("stage1: {e}");
            eprintln!("rkt: {msg}");
            let _ = std::fs::write(plan.pod_dir.join("stage1-error"), msg);
            // Take down any app already started.
            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
            254
        }
    }
}

fn run_inner(plan: &InitPlan<'_>) -> Result<()> {
    let sys = plan.sys;
    // First of all: as PID 1 of its namespace, init ignores a SIGTERM it has no handler for, and
    // `rkt stop` may come as soon as the pid file exists. A stop during setup is acted on below.
    catch_stop_signals()?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| Error::Stage1(format!("prctl: {e}")))?;
    if let Some(cg) = plan.cgroup {
        cg.join("stage1")?;
    }
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if plan.private_net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    sys.unshare(flags)?;
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    sys.sethostname(&plan.manifest.stage1.hostname)?;
    stage1_tmpfs(sys, plan)?;
    if plan.private_net {
        super::net::loopback_up()?;
    }
    if let Some((ready, go)) = plan.net_sync {
        nix::unistd::write(ready, b"r")
            .map_err(|e| Error::Stage1(format!("signalling stage1: {e}")))?;
        let mut b = [0u8; 1];
        match nix::unistd::read(go, &mut b) {
            Ok(1) => {}
            _ => {
                return Err(Error::Stage1(
                    "stage1 did not set up the pod network".into(),
                ));
            }
        }
        let bytes = std::fs::read(&plan.network_info)
            .map_err(|e| Error::Stage1(format!("reading {}: {e}", plan.network_info.display())))?;
        let attachments: Vec<super::net::Attachment> = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Stage1(format!("parsing {}: {e}", plan.network_info.display())))?;
        for a in &attachments {
            super::net::configure_pod_side(a)?;
        }
    }
    let mut roots = Vec::new();
    for (a, tree) in plan.manifest.apps.iter().zip(&plan.trees) {
        roots.push(rootfs::setup(sys, tree, plan.pod_dir, plan.manifest, a)?);
    }

    let set = block_wait_set()?;
    let mut running: HashMap<Pid, String> = HashMap::new();
    // Apps that log get pipes here; the logger thread starts once every app is forked (forking a
    // threaded process is not safe), and nothing of this is done for pods that do not log.
    let mut sinks = Vec::new();
    let mut sources = Vec::new();
    for (a, root) in plan.manifest.apps.iter().zip(&roots) {
        let dir = plan.pod_dir.join("apps").join(&a.name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Stage1(format!("creating {}: {e}", dir.display())))?;
        let mut out = [app::Redirect::Inherit; 2];
        let mut write_ends = Vec::new();
        for (i, (mode, stream)) in [
            (a.app.stdout, logs::Stream::Stdout),
            (a.app.stderr, logs::Stream::Stderr),
        ]
        .into_iter()
        .enumerate()
        {
            out[i] = match mode {
                Output::Inherit => app::Redirect::Inherit,
                Output::Null => app::Redirect::Null,
                Output::Log => {
                    if write_ends.is_empty() {
                        let log = logs::LogFile::open(
                            logs::log_path(plan.pod_dir, &a.name),
                            logs::rotated_path(plan.pod_dir, &a.name),
                            logs::LOG_CAP,
                        )
                        .map_err(|e| {
                            Error::Stage1(format!("opening the log of app {}: {e}", a.name))
                        })?;
                        sinks.push(log);
                    }
                    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                        .map_err(|e| Error::Stage1(format!("log pipe for {}: {e}", a.name)))?;
                    sources.push(logs::Source::new(r, stream, sinks.len() - 1));
                    let raw = std::os::fd::AsRawFd::as_raw_fd(&w);
                    write_ends.push(w);
                    app::Redirect::Pipe(raw)
                }
            };
        }
        let into = plan
            .cgroup
            .and_then(|cg| cg.v2_leaf(&format!("app-{}", a.name)));
        // SAFETY: stage1 is single-threaded; the child only execs or exits.
        match unsafe { fork_into(into.as_ref()) } {
            Ok(ForkResult::Child) => {
                // Apps start with default dispositions (init's handler would swallow a SIGTERM
                // that lands before exec) and then with no signal blocked.
                for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
                    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
                    // SAFETY: restoring the default disposition.
                    let _ = unsafe { sigaction(sig, &dfl) };
                }
                let _ = SigSet::empty().thread_set_mask();
                let e = app::exec(sys, root, a, plan.cgroup, &dir.join("pid"), out);
                eprintln!("rkt: app {}: {e}", a.name);
                let code = if matches!(e, Error::Stage1(ref m) if m.starts_with("executing") || m.contains("not found in PATH"))
                {
                    app::EXIT_EXEC_FAILED
                } else {
                    app::EXIT_SETUP_FAILED
                };
                // SAFETY: leaving the forked child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            Ok(ForkResult::Parent { child }) => {
                running.insert(child, a.name.clone());
                // Only the app holds its write ends now: the logger sees EOF when it is gone.
                drop(write_ends);
            }
            Err(e) => return Err(Error::Stage1(format!("forking app {}: {e}", a.name))),
        }
    }

    let logger = if sources.is_empty() {
        None
    } else {
        // Spawned with the wait signals blocked, so they all still reach `set.wait()`.
        Some(
            std::thread::Builder::new()
                .name("logger".into())
                .spawn(move || logs::run(sinks, sources))
                .map_err(|e| Error::Stage1(format!("starting the logger: {e}")))?,
        )
    };
    let mut terminating = false;
    let stop = |terminating: &mut bool| {
        if !*terminating {
            *terminating = true;
            let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
        }
    };
    'pod: loop {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => record(plan.pod_dir, &mut running, pid, code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    record(plan.pod_dir, &mut running, pid, 128 + sig as i32)
                }
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => break 'pod,
                Err(e) => return Err(Error::Stage1(format!("waiting for apps: {e}"))),
            }
        }
        if running.is_empty() {
            break;
        }
        // A stop that came before the signals were blocked.
        if take_terminate() {
            stop(&mut terminating);
        }
        if is_stop(set.wait()) {
            stop(&mut terminating);
        }
    }
    // Orphans the apps left behind die with the pod.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    // Their pipes close as they die: the logger has then written everything and returns.
    if let Some(t) = logger
        && t.join().is_err()
    {
        return Err(Error::Stage1("the logger thread panicked".into()));
    }
    Ok(())
}

/// Mounts the pod's stage1 rootfs: a small tmpfs, seen only in the pod's mount namespace, for
/// the pod's `/etc` files and the mount points of the apps' rootfs. These live as long as the pod
/// and nothing outside reads them, so they need not be inodes on the host filesystem: on an ext4
/// without a journal every inode allocation scans past the inodes deleted in the last minutes (see
/// BENCHMARKS.md), which made each such file cost up to a millisecond.
fn stage1_tmpfs(sys: &dyn Sys, plan: &InitPlan<'_>) -> Result<()> {
    let root = super::stage1_rootfs(plan.pod_dir);
    std::fs::create_dir_all(&root)
        .map_err(|e| Error::Stage1(format!("creating {}: {e}", root.display())))?;
    sys.mount(
        Some("tmpfs"),
        &root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755,size=4m"),
    )?;
    let etc = root.join("etc");
    std::fs::create_dir(&etc)
        .map_err(|e| Error::Stage1(format!("creating {}: {e}", etc.display())))?;
    super::write_etc(&etc, plan.manifest)
}

fn record(pod_dir: &Path, running: &mut HashMap<Pid, String>, pid: Pid, code: i32) {
    if let Some(name) = running.remove(&pid) {
        let dir = pod_dir.join("apps").join(&name);
        // One file, one write: the exit code, then the time (see `Pod::app_exit_code`).
        let _ = std::fs::write(dir.join("exit"), format!("{code}\n{}\n", now_ns()));
    }
}
