//! A child process with its output captured to files, which can be killed
//! with SIGKILL and started again with the same command line.

use crate::netns::NetNs;
use crate::poll::poll_until;
use anyhow::Context;
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::ffi::{CString, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// What to run: a command line, its environment and where.
#[derive(Debug, Clone)]
pub struct Spawn {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    netns: Option<Arc<NetNs>>,
    cgroup_procs: Vec<CString>,
    log_dir: Option<PathBuf>,
}

impl Spawn {
    /// A spawn of `program` with no arguments.
    pub fn new(program: impl Into<PathBuf>) -> Spawn {
        Spawn {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            cwd: None,
            netns: None,
            cgroup_procs: Vec::new(),
            log_dir: None,
        }
    }

    /// Appends an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Spawn {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Spawn {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (on top of the test's environment).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Spawn {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Spawn {
        self.cwd = Some(dir.into());
        self
    }

    /// Where stdout/stderr are written (`<dir>/stdout`, `<dir>/stderr`);
    /// default: a fresh temporary directory kept while the process lives.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Spawn {
        self.log_dir = Some(dir.into());
        self
    }

    pub(crate) fn in_netns(mut self, ns: Arc<NetNs>) -> Spawn {
        self.netns = Some(ns);
        self
    }

    /// Starts the process inside these cgroups (their `cgroup.procs` files).
    pub(crate) fn in_cgroups(mut self, procs: Vec<PathBuf>) -> Spawn {
        self.cgroup_procs = procs
            .into_iter()
            .filter_map(|p| CString::new(p.into_os_string().into_encoded_bytes()).ok())
            .collect();
        self
    }

    fn command(&self, log_dir: &Path) -> anyhow::Result<Command> {
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_dir.join(name))
                .with_context(|| format!("opening {}/{name}", log_dir.display()))
        };
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(open("stdout")?)
            .stderr(open("stderr")?);
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        if let Some(ns) = &self.netns {
            let fd = ns.raw_fd();
            // SAFETY: setns is a single async-signal-safe system call, and the
            // fd stays open in the parent (held by the Arc) until after spawn.
            unsafe {
                cmd.pre_exec(move || {
                    setns(BorrowedFd::borrow_raw(fd), CloneFlags::CLONE_NEWNET)
                        .map_err(std::io::Error::from)
                });
            }
        }
        if !self.cgroup_procs.is_empty() {
            let procs = self.cgroup_procs.clone();
            // SAFETY: only open/write/close between fork and exec (no
            // allocation: the paths were built before the fork).
            unsafe {
                cmd.pre_exec(move || {
                    for path in &procs {
                        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                        if fd < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        // Writing 0 moves the writing process itself.
                        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                        libc::close(fd);
                        if written != 1 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        Ok(cmd)
    }
}

/// A running (or exited) child process. Dropping it kills it.
#[derive(Debug)]
pub struct Process {
    spec: Spawn,
    child: Child,
    log_dir: PathBuf,
    _temp_logs: Option<TempLogDir>,
}

/// A temporary log directory, removed on drop.
#[derive(Debug)]
struct TempLogDir(PathBuf);

impl Drop for TempLogDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Process {
    /// Starts `spec` in the test's own namespaces (see [`crate::Host::spawn`]
    /// to start it inside a host).
    pub fn start(spec: Spawn) -> anyhow::Result<Process> {
        let (log_dir, temp) = match &spec.log_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                (dir.clone(), None)
            }
            None => {
                let dir = std::env::temp_dir().join(crate::names::unique("log"));
                std::fs::create_dir_all(&dir)?;
                (dir.clone(), Some(TempLogDir(dir)))
            }
        };
        let child = spec
            .command(&log_dir)?
            .spawn()
            .with_context(|| format!("starting {}", spec.program.display()))?;
        Ok(Process {
            spec,
            child,
            log_dir,
            _temp_logs: temp,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stdout so far (across restarts).
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.log_dir.join("stdout")).unwrap_or_default()
    }

    /// Everything the process wrote to stderr so far (across restarts).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log_dir.join("stderr")).unwrap_or_default()
    }

    /// Waits until stdout or stderr contains `needle`, or fails (with the
    /// output in the error) if the process exits or `timeout` passes first.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let mut exited = None;
        let found = poll_until(needle, timeout, Duration::from_millis(20), || {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return Some(true);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                exited = Some(status);
                return Some(false);
            }
            None
        });
        match (found, exited) {
            (Ok(true), _) => Ok(()),
            (_, Some(status)) => anyhow::bail!(
                "{} exited ({status}) before printing {needle:?}; stderr: {}",
                self.spec.program.display(),
                self.stderr()
            ),
            (Err(e), _) => Err(e.context(format!("stderr: {}", self.stderr()))),
            (Ok(false), None) => unreachable!("poll returned false only when exited"),
        }
    }

    /// Whether the process has exited, without waiting.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let child = &mut self.child;
        poll_until("process exit", timeout, Duration::from_millis(10), || {
            child.try_wait().ok().flatten()
        })
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        kill(Pid::from_raw(self.child.id() as i32), signal)?;
        Ok(())
    }

    /// `kill -9`, and reaps the process.
    pub fn kill9(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.signal(Signal::SIGKILL)?;
        Ok(self.child.wait()?)
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        match self.wait_timeout(grace) {
            Ok(status) => Ok(status),
            Err(_) => self.kill9(),
        }
    }

    /// Starts the same command line again (in the same place, appending to
    /// the same logs) after killing the current process if it still runs.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9()?;
        self.child = self
            .spec
            .command(&self.log_dir)?
            .spawn()
            .with_context(|| format!("restarting {}", self.spec.program.display()))?;
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}
