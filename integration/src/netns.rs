//! A named network namespace (`ip netns`), removed on drop.

use crate::cmd;
use anyhow::Context;
use nix::sched::{CloneFlags, setns};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

/// A network namespace at `/run/netns/<name>`, with its loopback up.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    handle: File,
    /// Whether this value created the namespace (and so deletes it).
    owned: bool,
}

impl NetNs {
    /// Creates the namespace `name` and brings its loopback up.
    pub fn create(name: &str) -> anyhow::Result<NetNs> {
        cmd::run("ip", &["netns", "add", name])?;
        let handle = match File::open(Self::path_of(name)) {
            Ok(handle) => handle,
            Err(e) => {
                cmd::run_quiet("ip", &["netns", "del", name]);
                return Err(e).with_context(|| format!("opening netns {name}"));
            }
        };
        let ns = NetNs {
            name: name.to_owned(),
            handle,
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, e.g. for `systemd-nspawn --network-namespace-path`.
    pub fn path(&self) -> PathBuf {
        Self::path_of(&self.name)
    }

    fn path_of(name: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(name)
    }

    /// Runs `ip -n <ns> args...`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        cmd::run("ip", &full)
    }

    /// Runs `f` on a new thread that has joined this namespace, so every
    /// socket `f` creates lives here (e.g. build a current-thread tokio
    /// runtime inside `f` to talk to a server in this namespace).
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> anyhow::Result<R> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(self.handle.as_fd(), CloneFlags::CLONE_NEWNET)
                        .with_context(|| format!("entering netns {}", self.name))?;
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow::anyhow!("closure in netns {} panicked", self.name))?
        })
    }

    /// Starts a thread that joins this namespace and runs `f` (e.g. a test
    /// server answering inside a host), for as long as it likes.
    pub fn spawn_thread<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<R>>> {
        let handle = self
            .handle
            .try_clone()
            .context("duplicating the netns handle")?;
        let name = self.name.clone();
        Ok(std::thread::spawn(move || {
            setns(handle.as_fd(), CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering netns {name}"))?;
            Ok(f())
        }))
    }

    /// The raw fd of the namespace, for `setns` in a child before `exec`.
    pub(crate) fn raw_fd(&self) -> i32 {
        self.handle.as_raw_fd()
    }

    /// Deletes namespaces of `kind` whose owning test process is gone.
    pub(crate) fn reap_stale(kind: &str) {
        let Ok(entries) = std::fs::read_dir("/run/netns") else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = crate::names::owner(kind, &name)
                && crate::names::owner_is_dead(pid)
            {
                cmd::run_quiet("ip", &["netns", "del", &name]);
            }
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if self.owned {
            cmd::run_quiet("ip", &["netns", "del", &self.name]);
        }
    }
}
