//! `flock(2)` locks on files and directories: how pods and trees tell "in use" from "free" without a daemon.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use crate::error::{IoContext, Result};

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct FileLock {
    inner: Flock<File>,
}

impl FileLock {
    /// The raw fd holding the lock (handed to stage1 as `RKT_LOCK_FD`).
    pub fn raw_fd(&self) -> i32 {
        self.inner.as_raw_fd()
    }

    /// Converts the lock in place to shared (or exclusive), blocking.
    pub fn convert(self, exclusive: bool) -> Result<FileLock> {
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        let fd = self.inner.as_raw_fd();
        self.inner
            .relock(arg)
            .ctx("converting lock", format!("/proc/self/fd/{fd}"))?;
        Ok(self)
    }
}

/// How to lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

fn open_lockable(path: &Path, create_file: bool) -> Result<File> {
    let is_dir = path.is_dir();
    let flags = if is_dir {
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
    } else if create_file {
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_CLOEXEC
    } else {
        OFlag::O_RDONLY | OFlag::O_CLOEXEC
    };
    let fd: OwnedFd =
        nix::fcntl::open(path, flags, Mode::from_bits_truncate(0o644)).ctx("opening lock", path)?;
    Ok(File::from(fd))
}

/// Takes a lock, waiting for it.
pub fn lock(path: &Path, mode: LockMode) -> Result<FileLock> {
    let file = open_lockable(path, true)?;
    let arg = match mode {
        LockMode::Shared => FlockArg::LockShared,
        LockMode::Exclusive => FlockArg::LockExclusive,
    };
    let inner = Flock::lock(file, arg)
        .map_err(|(_, e)| e)
        .ctx("locking", path)?;
    Ok(FileLock { inner })
}

/// Tries to take a lock; `Ok(None)` when someone else holds a conflicting one.
pub fn try_lock(path: &Path, mode: LockMode) -> Result<Option<FileLock>> {
    let file = open_lockable(path, true)?;
    let arg = match mode {
        LockMode::Shared => FlockArg::LockSharedNonblock,
        LockMode::Exclusive => FlockArg::LockExclusiveNonblock,
    };
    match Flock::lock(file, arg) {
        Ok(inner) => Ok(Some(FileLock { inner })),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(e).ctx("locking", path),
    }
}
