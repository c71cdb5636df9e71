//! Pod cgroups on v1, v2 and the hybrid layout (v1 controllers plus a cgroup2 mount at
//! `/sys/fs/cgroup/unified`). A pod gets `rkt-<uuid>/` below the caller's own cgroup in every
//! hierarchy it uses, with a `stage1` leaf for its init and one `app-<name>` leaf per app.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::unistd::{ForkResult, Pid};

use crate::error::{Error, Result};
use crate::pod::manifest::Resources;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// cfs period used for `--cpu` (the kernel's default, 100 ms).
const CFS_PERIOD_US: u64 = 100_000;
/// v1 controllers a pod joins: the ones its limits use. Where cpuacct shares a hierarchy with
/// cpu (`cpu,cpuacct`, systemd's layout) the pod is accounted there too; a cpuacct mounted on
/// its own is left alone: rkt reads no accounting, and its three directories per pod (created,
/// joined, removed on every start) were a fifth of the pod's cgroup work.
const V1_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// Which cgroup layout the host has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Only cgroup2 at /sys/fs/cgroup.
    Unified,
    /// v1 controller hierarchies (with or without a cgroup2 mount at /sys/fs/cgroup/unified).
    Legacy,
}

/// Detects the host's layout.
pub fn layout() -> Layout {
    if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
        Layout::Unified
    } else {
        Layout::Legacy
    }
}

/// The caller's own cgroup path for a v1 controller (or `""` for v2), from the text of
/// /proc/self/cgroup.
fn own_path(text: &str, controller: &str) -> String {
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or("/"),
        );
        let hit = if controller.is_empty() {
            ctrls.is_empty()
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        if hit {
            return path.to_string();
        }
    }
    "/".to_string()
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value)
        .map_err(|e| Error::Cgroup(format!("writing {value:?} to {}: {e}", path.display())))
}

/// A pod's cgroups: one directory per hierarchy.
#[derive(Clone, Debug)]
pub struct PodCgroup {
    /// Pod directories, one per hierarchy, with the controllers each one has.
    dirs: Vec<(PathBuf, Vec<String>)>,
    /// The leaves in each pod directory: `stage1` and `app-<name>`.
    leaves: Vec<String>,
    layout: Layout,
}

impl PodCgroup {
    /// Creates the pod's cgroups and the per-app leaves with their limits.
    pub fn create(uuid: &str, apps: &[(String, Resources)]) -> Result<Self> {
        let layout = layout();
        let name = format!("rkt-{uuid}");
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut dirs = Vec::new();
        match layout {
            Layout::Legacy => {
                for c in V1_CONTROLLERS {
                    let mount = Path::new(CGROUP_ROOT).join(c);
                    if !mount.join("cgroup.procs").exists() {
                        continue;
                    }
                    let dir = mount
                        .join(own_path(&own, c).trim_start_matches('/'))
                        .join(&name);
                    dirs.push((dir, vec![c.to_string()]));
                }
                // The hybrid layout's cgroup2 mount tracks the pod too (no controllers there).
                let unified = Path::new(CGROUP_ROOT).join("unified");
                if unified.join("cgroup.procs").exists() {
                    let dir = unified
                        .join(own_path(&own, "").trim_start_matches('/'))
                        .join(&name);
                    dirs.push((dir, Vec::new()));
                }
            }
            Layout::Unified => {
                let wants_limits = apps.iter().any(|(_, r)| !r.is_empty());
                let root = Path::new(CGROUP_ROOT);
                let own_dir = root.join(own_path(&own, "").trim_start_matches('/'));
                // Controllers can be enabled below our own cgroup only if it is delegated to us
                // (no processes of its own); otherwise pods go below a `rkt` cgroup at the root.
                let base = if !wants_limits || enable_controllers(&own_dir) {
                    own_dir
                } else {
                    let fallback = root.join("rkt");
                    fs::create_dir_all(&fallback).map_err(|e| {
                        Error::Cgroup(format!("creating {}: {e}", fallback.display()))
                    })?;
                    enable_controllers(root);
                    if !enable_controllers(&fallback) {
                        return Err(Error::Cgroup(format!(
                            "cannot enable the memory, cpu and pids controllers below {} or {}",
                            own_path(&own, ""),
                            fallback.display()
                        )));
                    }
                    fallback
                };
                dirs.push((
                    base.join(&name),
                    vec!["memory".into(), "cpu".into(), "pids".into()],
                ));
            }
        }
        let leaves = std::iter::once("stage1".to_string())
            .chain(apps.iter().map(|(n, _)| format!("app-{n}")))
            .collect();
        let cg = Self {
            dirs,
            leaves,
            layout,
        };
        let res = cg.populate(apps);
        if let Err(e) = res {
            cg.destroy();
            return Err(e);
        }
        Ok(cg)
    }

    fn populate(&self, apps: &[(String, Resources)]) -> Result<()> {
        let wants_limits = apps.iter().any(|(_, r)| !r.is_empty());
        for (dir, ctrls) in &self.dirs {
            fs::create_dir_all(dir)
                .map_err(|e| Error::Cgroup(format!("creating {}: {e}", dir.display())))?;
            if self.layout == Layout::Unified && !enable_controllers(dir) && wants_limits {
                return Err(Error::Cgroup(format!(
                    "cannot enable the memory, cpu and pids controllers in {}",
                    dir.display()
                )));
            }
            for leaf in &self.leaves {
                let l = dir.join(leaf);
                fs::create_dir_all(&l)
                    .map_err(|e| Error::Cgroup(format!("creating {}: {e}", l.display())))?;
            }
            for (app, res) in apps {
                let l = dir.join(format!("app-{app}"));
                let has = |c: &str| ctrls.iter().any(|x| x == c);
                if let Some(m) = res.memory_bytes
                    && has("memory")
                {
                    match self.layout {
                        Layout::Legacy => write(&l.join("memory.limit_in_bytes"), &m.to_string())?,
                        Layout::Unified => {
                            write(&l.join("memory.max"), &m.to_string())?;
                            let _ = write(&l.join("memory.swap.max"), "0");
                        }
                    }
                }
                if let Some(milli) = res.cpu_millis
                    && has("cpu")
                {
                    let quota = (milli * CFS_PERIOD_US / 1000).max(1000);
                    match self.layout {
                        Layout::Legacy => {
                            write(&l.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                            write(&l.join("cpu.cfs_quota_us"), &quota.to_string())?;
                        }
                        Layout::Unified => {
                            write(&l.join("cpu.max"), &format!("{quota} {CFS_PERIOD_US}"))?
                        }
                    }
                }
                if let Some(p) = res.pids
                    && has("pids")
                {
                    write(&l.join("pids.max"), &p.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Every pod-level directory (recorded in the pod dir for cleanup after a crash).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(d, _)| d.clone()).collect()
    }

    /// Whether a pod directory is in the cgroup2 hierarchy (the unified layout, or the hybrid
    /// layout's tracking-only `unified` mount).
    fn is_v2(&self, ctrls: &[String]) -> bool {
        self.layout == Layout::Unified || ctrls.is_empty()
    }

    /// The mount point of the cgroup2 hierarchy the pod uses.
    fn v2_mount(&self) -> PathBuf {
        match self.layout {
            Layout::Unified => PathBuf::from(CGROUP_ROOT),
            Layout::Legacy => Path::new(CGROUP_ROOT).join("unified"),
        }
    }

    /// Opens `leaf` in the pod's cgroup2 directory, for [`fork_into`]; `None` without one.
    pub fn v2_leaf(&self, leaf: &str) -> Option<OwnedFd> {
        let (dir, _) = self.dirs.iter().find(|(_, c)| self.is_v2(c))?;
        fs::File::open(dir.join(leaf)).ok().map(OwnedFd::from)
    }

    /// Moves the calling process into `leaf` (`stage1` or `app-<name>`) in every hierarchy.
    ///
    /// The caller must be single-threaded (a freshly forked child). In the v1 hierarchies it
    /// writes its own thread to `tasks`, which, unlike `cgroup.procs`, does not take the kernel's
    /// global threadgroup lock, whose first writer waits for an RCU grace period (5-15 ms here).
    /// In cgroup2 only `cgroup.procs` can move it, so it is skipped where [`fork_into`] already
    /// started the process in `leaf`.
    pub fn join(&self, leaf: &str) -> Result<()> {
        for (dir, ctrls) in &self.dirs {
            let target = dir.join(leaf);
            if self.is_v2(ctrls) {
                if own_v2_dir(&self.v2_mount()).as_deref() != Some(target.as_path()) {
                    write(&target.join("cgroup.procs"), "0")?;
                }
            } else {
                write(&target.join("tasks"), "0")?;
            }
        }
        Ok(())
    }

    /// The directory of an app leaf in the hierarchy holding `controller`.
    pub fn leaf_dir(&self, leaf: &str, controller: &str) -> Option<PathBuf> {
        self.dirs
            .iter()
            .find(|(_, c)| c.iter().any(|x| x == controller))
            .map(|(d, _)| d.join(leaf))
    }

    /// Removes the pod's cgroups (after its processes are gone).
    pub fn destroy(&self) {
        for (dir, _) in &self.dirs {
            // The leaves are known: remove them without listing the directory (a cgroup
            // directory lists dozens of control files). Whatever is left (a leaf still busy)
            // goes through the listing and retrying path.
            for leaf in &self.leaves {
                let _ = fs::remove_dir(dir.join(leaf));
            }
            if fs::remove_dir(dir).is_err() {
                remove_cgroup_dir(dir);
            }
        }
    }
}

/// The calling process's directory in the cgroup2 hierarchy mounted at `mount`.
fn own_v2_dir(mount: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(path.trim_start_matches('/')))
}

/// `clone3(2)`'s flag (linux/sched.h; libc's constant is too narrow).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone3(2)`'s argument block (linux/sched.h), all fields 64-bit.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Forks like `fork(2)`, with the child starting in the cgroup2 directory `cgroup` when given
/// (`clone3` with `CLONE_INTO_CGROUP`), so that it need not write to `cgroup.procs` (see
/// [`PodCgroup::join`]). Falls back to `fork(2)` where the kernel cannot do that.
///
/// # Safety
/// As for `fork(2)`, and more: the caller must be single-threaded, and the child must not rely
/// on libc's fork handlers (it only sets itself up and execs or exits, as stage1's children do).
pub unsafe fn fork_into(cgroup: Option<&OwnedFd>) -> nix::Result<ForkResult> {
    if let Some(fd) = cgroup {
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: fd.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM or a new stack behaves like fork(2); `args` outlives
        // the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match ret {
            0 => return Ok(ForkResult::Child),
            pid if pid > 0 => {
                return Ok(ForkResult::Parent {
                    child: Pid::from_raw(pid as i32),
                });
            }
            // Older kernels (ENOSYS, E2BIG) or a cgroup that cannot take the child: plain fork,
            // and the child joins by writing cgroup.procs.
            _ => {}
        }
    }
    // SAFETY: forwarded to the caller.
    unsafe { nix::unistd::fork() }
}

/// Enables whichever of memory, cpu and pids `dir` has available for its children (v2).
fn enable_controllers(dir: &Path) -> bool {
    let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = ["memory", "cpu", "pids"]
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    !wanted.is_empty() && write(&dir.join("cgroup.subtree_control"), &wanted.join(" ")).is_ok()
}

/// Removes a cgroup directory and its children, retrying briefly while the last tasks exit.
fn remove_cgroup_dir(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_micros(500))
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "leaving cgroup behind");
                return;
            }
        }
    }
}

/// Removes the cgroups a pod recorded in `<pod>/cgroups` (used by gc after a crash).
pub fn cleanup_recorded(pod_dir: &Path) {
    if let Ok(text) = fs::read_to_string(pod_dir.join("cgroups")) {
        for line in text.lines().filter(|l| l.starts_with(CGROUP_ROOT)) {
            remove_cgroup_dir(Path::new(line));
        }
    }
}
