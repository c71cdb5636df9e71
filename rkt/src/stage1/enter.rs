//! `rkt enter`: runs a command inside a running app's namespaces (pid, mount, net, uts, ipc) and
//! cgroups, with the app's environment and capabilities.

use std::ffi::CString;
use std::fs::File;

use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::ForkResult;

use super::caps;
use crate::error::{Error, IoContext, Result};
use crate::pod::{Pod, PodState};

/// How long `enter` waits for a just-started app.
const APP_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `cmd` (default `/bin/sh`) in `app` (or the pod's only app); returns its exit code.
pub fn enter(pod: &Pod, app: Option<&str>, cmd: &[String]) -> Result<i32> {
    if pod.state != PodState::Running {
        return Err(Error::PodState {
            uuid: pod.uuid.clone(),
            state: pod.state.as_str().into(),
            why: "only a running pod can be entered".into(),
        });
    }
    let manifest = pod.manifest()?;
    let app = match app {
        Some(name) => manifest
            .app(name)
            .ok_or_else(|| Error::Usage(format!("pod {} has no app {name:?}", pod.uuid)))?,
        None if manifest.apps.len() == 1 => &manifest.apps[0],
        None => {
            return Err(Error::Usage(format!(
                "pod {} has several apps: choose one with --app",
                pod.uuid
            )));
        }
    };
    // A pod reads as running from the moment its stage1 holds the lock; its apps start a few
    // milliseconds later (the app writes its pid record itself).
    let deadline = std::time::Instant::now() + APP_START_TIMEOUT;
    let pid = loop {
        if let Some(pid) = pod.app_pid(&app.name) {
            break pid;
        }
        if pod.app_exit_code(&app.name).is_some() || std::time::Instant::now() >= deadline {
            return Err(Error::Stage1(format!(
                "app {} has no pid record in {}",
                app.name,
                pod.dir.join("apps").join(&app.name).display()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    if pod.app_exit_code(&app.name).is_some() {
        return Err(Error::Stage1(format!("app {} has exited", app.name)));
    }

    // Join the app's cgroups while the host's /sys/fs/cgroup is still visible.
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ctx("reading", format!("/proc/{pid}/cgroup"))?;
    for line in cg.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("/"),
        );
        let base = if ctrls.is_empty() {
            if std::path::Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
                "/sys/fs/cgroup/unified".to_string()
            } else {
                "/sys/fs/cgroup".to_string()
            }
        } else {
            format!("/sys/fs/cgroup/{}", ctrls.trim_start_matches("name="))
        };
        let _ = std::fs::write(format!("{base}{path}/cgroup.procs"), "0");
    }

    let ns = |kind: &str| -> Result<File> {
        let p = format!("/proc/{pid}/ns/{kind}");
        File::open(&p).ctx("opening namespace", p)
    };
    let files = [
        (ns("ipc")?, CloneFlags::CLONE_NEWIPC),
        (ns("uts")?, CloneFlags::CLONE_NEWUTS),
        (ns("net")?, CloneFlags::CLONE_NEWNET),
        (ns("pid")?, CloneFlags::CLONE_NEWPID),
        (ns("mnt")?, CloneFlags::CLONE_NEWNS),
    ];
    for (f, flag) in &files {
        nix::sched::setns(f, *flag).ctx("entering namespace", format!("{flag:?}"))?;
    }
    nix::unistd::chdir("/").ctx("chdir", "/")?;

    let argv: Vec<String> = if cmd.is_empty() {
        vec!["/bin/sh".into()]
    } else {
        cmd.to_vec()
    };
    let env: Vec<CString> = app
        .app
        .environment
        .iter()
        .filter_map(|nv| CString::new(format!("{}={}", nv.name, nv.value)).ok())
        .collect();
    let cargv = argv
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| Error::Usage(format!("nul byte in {a:?}"))))
        .collect::<Result<Vec<_>>>()?;
    let keep = caps::mask(&app.app.capabilities);
    // SAFETY: the CLI is single-threaded; the child only sets capabilities and execs.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            let res = caps::drop_bounding(keep).and_then(|_| caps::set_process(keep));
            if let Err(e) = res {
                eprintln!("enter: {e}");
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(126) }
            }
            match exec_path(&argv[0], app) {
                Ok(exe) => {
                    let Err(e) = nix::unistd::execve(&exe, &cargv, &env);
                    eprintln!("enter: executing {}: {e}", argv[0]);
                }
                Err(e) => eprintln!("enter: {e}"),
            }
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    return Err(Error::Stage1(format!(
                        "waiting for the entered command: {e}"
                    )));
                }
            }
        },
        Err(e) => Err(Error::Stage1(format!("fork: {e}"))),
    }
}

fn exec_path(exe: &str, app: &crate::pod::manifest::RuntimeApp) -> Result<CString> {
    let found = if exe.contains('/') {
        exe.to_string()
    } else {
        let path = app
            .app
            .environment
            .iter()
            .find(|nv| nv.name == "PATH")
            .map(|nv| nv.value.clone())
            .unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        path.split(':')
            .map(|d| format!("{d}/{exe}"))
            .find(|p| std::path::Path::new(p).is_file())
            .ok_or_else(|| Error::Stage1(format!("{exe:?} not found in PATH {path}")))?
    };
    CString::new(found).map_err(|_| Error::Usage(format!("nul byte in {exe:?}")))
}
