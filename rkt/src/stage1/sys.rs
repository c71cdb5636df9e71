//! The operating-system seam of stage1: mounts, namespaces, pivot_root and the hostname, behind a
//! small trait so rootfs assembly can be unit-tested with a recording fake.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::error::{IoContext, Result};

/// The system calls stage1 makes that change the world outside the process.
pub trait Sys {
    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    fn unshare(&self, flags: CloneFlags) -> Result<()>;
    /// Makes the current directory the root (`pivot_root(".", ".")`, then detaches the old root).
    fn pivot_to_cwd(&self) -> Result<()>;
    fn sethostname(&self, name: &str) -> Result<()>;
}

/// The real thing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Linux;

impl Sys for Linux {
    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).ctx("mounting", target)
    }

    fn unshare(&self, flags: CloneFlags) -> Result<()> {
        nix::sched::unshare(flags).map_err(|source| crate::error::Error::Sys {
            op: "unshare",
            path: format!("{flags:?}").into(),
            source,
        })
    }

    fn pivot_to_cwd(&self) -> Result<()> {
        nix::unistd::pivot_root(".", ".").ctx("pivot_root", ".")?;
        nix::mount::umount2(".", MntFlags::MNT_DETACH).ctx("detaching old root", ".")?;
        nix::unistd::chdir("/").ctx("chdir", "/")
    }

    fn sethostname(&self, name: &str) -> Result<()> {
        nix::unistd::sethostname(name).ctx("sethostname", name)
    }
}
