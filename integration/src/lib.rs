//! The multi-host test harness: hosts in network namespaces and machines
//! running real systemd, for every component's tests.
//!
//! - [`Network`] and [`Host`]: Linux network namespaces joined by a bridge
//!   in a private "switch" namespace, one IPv4 address per host, link cuts
//!   ([`Host::partition`]) and silent drops between two hosts
//!   ([`Network::block`]).
//! - [`Process`]: a child process (in a host or not) with its output captured
//!   to files, `kill -9` and restart.
//! - [`Machine`]: real systemd booted with `systemd-nspawn` on an overlay of
//!   `/`, reachable over its system bus, optionally attached to a [`Host`]'s
//!   network.
//!
//! Everything is cleaned up on drop, also when a test panics, and anything a
//! killed test process left behind is reaped by the next harness user (names
//! carry the owner's pid). All of it needs root, which CI has.
//!
//! The harness is test infrastructure, so its errors are `anyhow` errors with
//! context rather than a typed enum.

mod cmd;
mod machine;
mod names;
mod netns;
mod network;
mod poll;
mod process;

pub use machine::{Machine, MachineOptions};
pub use netns::NetNs;
pub use network::{Host, Network};
pub use poll::poll_until;
pub use process::{Process, Spawn};

use std::path::PathBuf;

/// Path of one of the workspace's binaries (`etcd`, `etcdctl`, `rkt`, ...),
/// built into the same target directory as the running test.
///
/// `cargo test`/`cargo nextest run --workspace` build every binary of the
/// workspace before running tests. `COREOS_RS_BIN_DIR` overrides the lookup.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("COREOS_RS_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            // A test binary lives in <target>/<profile>/deps/.
            let exe = std::env::current_exe()?;
            let deps = exe
                .parent()
                .ok_or_else(|| anyhow::anyhow!("test binary {} has no parent", exe.display()))?;
            let profile = if deps.ends_with("deps") {
                deps.parent().unwrap_or(deps)
            } else {
                deps
            };
            profile.to_path_buf()
        }
    };
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "binary {name} not found at {} (build the workspace's binaries first)",
        path.display()
    );
    Ok(path)
}
