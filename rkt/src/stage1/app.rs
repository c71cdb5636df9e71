//! The last steps of an app process, after fork: its own mount namespace, pivot_root into its
//! rootfs, user and capabilities, working directory, environment, then exec.

use std::ffi::CString;
use std::path::Path;

use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};

use super::caps;
use super::cgroup::PodCgroup;
use super::sys::Sys;
use crate::error::{Error, IoContext, Result};
use crate::pod::manifest::RuntimeApp;

/// Exit code of an app whose setup failed before exec.
pub const EXIT_SETUP_FAILED: i32 = 126;
/// Exit code of an app whose executable could not be run.
pub const EXIT_EXEC_FAILED: i32 = 127;

/// A uid/gid resolved from the app's `user`/`group` against its own /etc/passwd and /etc/group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub home: Option<String>,
}

/// Resolves `user` and `group` (names or numbers; empty group = the user's primary group).
pub fn resolve_identity(user: &str, group: &str, passwd: &str, groups: &str) -> Result<Identity> {
    let pw_entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && (f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user)));
    let uid = match user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => pw_entry
            .as_ref()
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| {
                Error::Stage1(format!(
                    "user {user:?} not found in the image's /etc/passwd"
                ))
            })?,
    };
    let gid = if group.is_empty() {
        pw_entry
            .as_ref()
            .and_then(|f| f[3].parse().ok())
            .unwrap_or(0)
    } else if let Ok(n) = group.parse::<u32>() {
        n
    } else {
        groups
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && f[0] == group)
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| {
                Error::Stage1(format!(
                    "group {group:?} not found in the image's /etc/group"
                ))
            })?
    };
    let home = pw_entry
        .as_ref()
        .and_then(|f| f.get(5))
        .map(|s| s.to_string());
    Ok(Identity { uid, gid, home })
}

/// Finds an executable the way execvp would, with the app's own PATH.
fn lookup(exe: &str, path_var: Option<&str>) -> Result<String> {
    if exe.contains('/') {
        return Ok(exe.to_string());
    }
    let path = path_var.unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':') {
        let cand = Path::new(dir).join(exe);
        if let Ok(m) = std::fs::metadata(&cand)
            && m.is_file()
        {
            return Ok(cand.to_string_lossy().into_owned());
        }
    }
    Err(Error::Stage1(format!("{exe:?} not found in PATH {path}")))
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Stage1(format!("nul byte in {s:?}")))
}

/// Where one of the app's output streams goes, as init set it up.
#[derive(Clone, Copy, Debug)]
pub enum Redirect {
    /// Keep the stream init has (rkt run's).
    Inherit,
    /// The app's `/dev/null`.
    Null,
    /// The write end of init's log pipe.
    Pipe(std::os::fd::RawFd),
}

/// Runs in the forked app process; only returns on error. `out` is [stdout, stderr].
pub fn exec(
    sys: &dyn Sys,
    rootfs: &Path,
    app: &RuntimeApp,
    cgroup: Option<&PodCgroup>,
    pid_file: &Path,
    out: [Redirect; 2],
) -> Error {
    match exec_inner(sys, rootfs, app, cgroup, pid_file, out) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

fn exec_inner(
    sys: &dyn Sys,
    rootfs: &Path,
    app: &RuntimeApp,
    cgroup: Option<&PodCgroup>,
    pid_file: &Path,
    out: [Redirect; 2],
) -> Result<Never> {
    if let Some(cg) = cgroup {
        cg.join(&format!("app-{}", app.name))?;
    }
    // /proc here is still the host's: it names us by our host pid, which `rkt enter` needs.
    // One file, one write: the pid, then the start time (see `Pod::app_pid`).
    if let Ok(me) = std::fs::read_link("/proc/self") {
        let record = format!("{}\n{}\n", me.to_string_lossy(), crate::timefmt::now_ns());
        let _ = std::fs::write(pid_file, record);
    }
    sys.unshare(CloneFlags::CLONE_NEWNS)?;
    nix::unistd::chdir(rootfs).ctx("chdir", rootfs)?;
    sys.pivot_to_cwd()?;

    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let id = resolve_identity(&app.app.user, &app.app.group, &passwd, &groups)?;
    let cwd = if app.app.working_directory.is_empty() {
        "/"
    } else {
        app.app.working_directory.as_str()
    };
    if !Path::new(cwd).is_dir() && !app.app.read_only_root_fs {
        std::fs::create_dir_all(cwd).ctx("creating working directory", cwd)?;
    }

    let keep = caps::mask(&app.app.capabilities);
    caps::drop_bounding(keep)?;
    let mut gids: Vec<Gid> = vec![Gid::from_raw(id.gid)];
    gids.extend(app.app.supplementary_gids.iter().map(|g| Gid::from_raw(*g)));
    nix::unistd::setgroups(&gids).ctx("setgroups", "/")?;
    nix::unistd::setresgid(
        Gid::from_raw(id.gid),
        Gid::from_raw(id.gid),
        Gid::from_raw(id.gid),
    )
    .ctx("setgid", id.gid.to_string())?;
    nix::unistd::setresuid(
        Uid::from_raw(id.uid),
        Uid::from_raw(id.uid),
        Uid::from_raw(id.uid),
    )
    .ctx("setuid", id.uid.to_string())?;
    if id.uid == 0 {
        caps::set_process(keep)?;
    }
    nix::unistd::chdir(cwd).ctx("chdir to working directory", cwd)?;

    if !app.app.interactive {
        let null = nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
        )
        .ctx("opening", "/dev/null")?;
        nix::unistd::dup2_stdin(&null).ctx("redirecting stdin", "/dev/null")?;
    }
    let mut env: Vec<(String, String)> = app
        .app
        .environment
        .iter()
        .map(|nv| (nv.name.clone(), nv.value.clone()))
        .collect();
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), id.home.clone().unwrap_or_else(|| "/".into())));
    }
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    let first = app
        .app
        .exec
        .first()
        .ok_or_else(|| Error::Stage1(format!("app {} has nothing to execute", app.name)))?;
    let exe = lookup(first, path_var.as_deref())?;
    let argv = app
        .app
        .exec
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<Vec<_>>>()?;
    let envp = env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}")))
        .collect::<Result<Vec<_>>>()?;
    let exe_c = cstring(&exe)?;
    // Last, so that errors in the app's setup still reach rkt's stderr; a copy of that stderr
    // (closed by a successful exec) takes the error of a failed one there too.
    // SAFETY: fcntl on the standard error descriptor.
    let saved = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    redirect(out)?;
    let e = nix::unistd::execve(&exe_c, &argv, &envp).unwrap_err();
    if saved >= 0 {
        // SAFETY: `saved` is the descriptor duplicated above.
        unsafe { libc::dup2(saved, 2) };
    }
    Err(Error::Stage1(format!("executing {exe}: {e}")))
}

fn redirect(out: [Redirect; 2]) -> Result<()> {
    for (target, r) in [(1, out[0]), (2, out[1])] {
        let what = if target == 1 { "stdout" } else { "stderr" };
        let fd = match r {
            Redirect::Inherit => continue,
            Redirect::Pipe(fd) => fd,
            Redirect::Null => {
                let null = nix::fcntl::open(
                    "/dev/null",
                    nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .ctx("opening", "/dev/null")?;
                // Close-on-exec: only the duplicate on the standard stream reaches the app.
                std::os::fd::IntoRawFd::into_raw_fd(null)
            }
        };
        // SAFETY: dup2 onto a standard stream; `fd` is open (init's pipe or the one just opened).
        if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(Error::Stage1(format!(
                "redirecting {what}: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nuser:x:1000:100::/home/user:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:\nnogroup:x:65534:\n";

    #[test]
    fn resolves_names_and_numbers() {
        assert_eq!(resolve_identity("root", "", PASSWD, GROUP).unwrap().uid, 0);
        let u = resolve_identity("user", "", PASSWD, GROUP).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.home.as_deref()),
            (1000, 100, Some("/home/user"))
        );
        let n = resolve_identity("nobody", "users", PASSWD, GROUP).unwrap();
        assert_eq!((n.uid, n.gid), (65534, 100));
        assert_eq!(
            resolve_identity("4242", "77", PASSWD, GROUP).unwrap(),
            Identity {
                uid: 4242,
                gid: 77,
                home: None
            }
        );
        assert!(resolve_identity("ghost", "", PASSWD, GROUP).is_err());
        assert!(resolve_identity("root", "ghosts", PASSWD, GROUP).is_err());
    }
}
