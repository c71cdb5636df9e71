//! Machines: real systemd booted in a container with `systemd-nspawn`.
//!
//! The recipe, for a Debian host whose systemd is installed but not PID 1:
//! an overlay whose lower dir is `/` and whose upper/work dirs are private
//! (so the machine runs the host's binaries, including this workspace's);
//! a fresh `/etc/machine-id`; the host's services that would bind ports or
//! do background work masked; the container in cgroups of its own (in the
//! `systemd` and `unified` hierarchies on a hybrid host, or the v2 root);
//! then `systemd-nspawn --keep-unit --register=no --boot`. The container's
//! system bus is reached from the host at
//! `/proc/<container pid 1>/root/run/dbus/system_bus_socket`.
//!
//! A reboot is the real thing: PID 1 goes through `reboot.target`, nspawn
//! exits with status 133 and the harness boots the same overlay again, so
//! files on disk survive and `/run` does not.

use crate::poll::poll_until;
use crate::process::{Process, Spawn};
use crate::{Host, NetNs, cmd, names};
use anyhow::Context;
use nix::mount::{MntFlags, umount2};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const KIND: &str = "im";
/// Where machines keep their overlays; on the root file system, which
/// overlayfs accepts as an upper dir.
const STATE_ROOT: &str = "/var/tmp/coreos-rs-harness";
/// Host units that must not start inside a machine: they bind ports the
/// tests use, or do background work that slows boots down.
const MASKED_UNITS: &[&str] = &[
    "etcd.service",
    "postgresql.service",
    "docker.service",
    "containerd.service",
    "ssh.service",
    "cron.service",
    "systemd-timesyncd.service",
    "getty@.service",
    "console-getty.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "man-db.timer",
    "systemd-pstore.service",
];
/// How long a boot (or a power-off) may take on a loaded 2-core machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// How to boot a [`Machine`].
#[derive(Debug, Default, Clone)]
pub struct MachineOptions {
    /// Join this network namespace (a harness [`Host`]'s) instead of a
    /// private network with only a loopback.
    pub netns: Option<Arc<NetNs>>,
}

impl MachineOptions {
    /// Boot the machine inside `host`'s network: it has the host's address.
    pub fn on_host(host: &Host) -> MachineOptions {
        MachineOptions {
            netns: Some(host.netns_arc()),
        }
    }
}

/// A booted machine. Dropping it powers it off and removes everything.
#[derive(Debug)]
pub struct Machine {
    name: String,
    dir: PathBuf,
    cgroups: Vec<PathBuf>,
    options: MachineOptions,
    nspawn: Option<Process>,
    leader: u32,
}

impl Machine {
    /// Boots a machine with a private network and waits until systemd has
    /// finished starting up.
    pub fn boot() -> anyhow::Result<Machine> {
        Machine::boot_with(MachineOptions::default())
    }

    /// Boots a machine with `options`.
    pub fn boot_with(options: MachineOptions) -> anyhow::Result<Machine> {
        reap_stale();
        let name = names::unique(KIND);
        let dir = Path::new(STATE_ROOT).join(&name);
        for sub in ["upper", "work", "merged"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}/{sub}", dir.display()))?;
        }
        let mut machine = Machine {
            name,
            dir,
            cgroups: Vec::new(),
            options,
            nspawn: None,
            leader: 0,
        };
        machine.prepare_root()?;
        machine.cgroups = create_cgroups(&machine.name)?;
        machine.start()?;
        Ok(machine)
    }

    /// The machine's name (its hostname too).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host-side pid of the machine's PID 1 (systemd).
    pub fn leader_pid(&self) -> u32 {
        self.leader
    }

    /// The machine's root file system as seen from the host.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.leader))
    }

    /// The D-Bus address of the machine's system bus.
    pub fn system_bus_address(&self) -> String {
        format!(
            "unix:path=/proc/{}/root/run/dbus/system_bus_socket",
            self.leader
        )
    }

    /// Connects to the machine's system bus (as root).
    pub async fn system_bus(&self) -> anyhow::Result<zbus::Connection> {
        let address = self.system_bus_address();
        zbus::connection::Builder::address(address.as_str())
            .build()
            .await
            .with_context(|| format!("connecting to the system bus of {}", self.name))
    }

    /// Writes a file inside the machine (parents created), as root.
    pub fn write_file(&self, path: &str, contents: impl AsRef<[u8]>) -> anyhow::Result<()> {
        let target = self.inside(path)?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, contents)
            .with_context(|| format!("writing {path} in {}", self.name))
    }

    /// Reads a file inside the machine.
    pub fn read_file(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let target = self.inside(path)?;
        std::fs::read(&target).with_context(|| format!("reading {path} in {}", self.name))
    }

    /// Copies a host file into the machine, keeping its permissions.
    pub fn copy_in(&self, host_path: &Path, path: &str) -> anyhow::Result<()> {
        let target = self.inside(path)?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(host_path, &target).with_context(|| {
            format!("copying {} to {path} in {}", host_path.display(), self.name)
        })?;
        Ok(())
    }

    /// Runs a command inside the machine (all its namespaces) to completion.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let leader = self.leader.to_string();
        let mut full = vec!["-t", leader.as_str(), "-a", program];
        full.extend_from_slice(args);
        std::process::Command::new("nsenter")
            .args(&full)
            .output()
            .with_context(|| format!("running {program} in {}", self.name))
    }

    /// `systemctl is-system-running` inside the machine.
    pub fn system_state(&self) -> anyhow::Result<String> {
        let out = self.exec("systemctl", &["is-system-running"])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Powers the machine off (systemd's clean shutdown) and waits for it.
    pub fn poweroff(&mut self) -> anyhow::Result<()> {
        let Some(nspawn) = self.nspawn.as_mut() else {
            return Ok(());
        };
        // SIGRTMIN+4 asks systemd to power off.
        let poweroff = Signal::try_from(libc::SIGRTMIN() + 4)?;
        let _ = kill(Pid::from_raw(self.leader as i32), poweroff);
        nspawn
            .wait_timeout(BOOT_TIMEOUT)
            .context("waiting for power-off")?;
        self.nspawn = None;
        Ok(())
    }

    /// Reboots the machine through systemd and waits until it is up again.
    pub fn reboot(&mut self) -> anyhow::Result<()> {
        let nspawn = self.nspawn.as_mut().context("machine is powered off")?;
        // SIGINT is ctrl-alt-del for systemd: reboot.target.
        kill(Pid::from_raw(self.leader as i32), Signal::SIGINT)?;
        let status = nspawn
            .wait_timeout(BOOT_TIMEOUT)
            .context("waiting for reboot")?;
        anyhow::ensure!(
            status.code() == Some(133),
            "nspawn exited with {status}, not a reboot"
        );
        self.nspawn = None;
        self.start()
    }

    /// The output nspawn and the machine's console printed so far.
    pub fn console(&self) -> String {
        self.nspawn
            .as_ref()
            .map(|p| format!("{}{}", p.stdout(), p.stderr()))
            .unwrap_or_default()
    }

    fn inside(&self, path: &str) -> anyhow::Result<PathBuf> {
        let relative = path.trim_start_matches('/');
        anyhow::ensure!(
            !relative.split('/').any(|c| c == ".."),
            "path {path} leaves the machine's root"
        );
        Ok(self.root().join(relative))
    }

    fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }

    fn prepare_root(&self) -> anyhow::Result<()> {
        let merged = self.merged();
        let options = format!(
            "lowerdir=/,upperdir={},workdir={}",
            self.dir.join("upper").display(),
            self.dir.join("work").display()
        );
        cmd::run(
            "mount",
            &[
                "-t",
                "overlay",
                "overlay",
                "-o",
                &options,
                &merged.to_string_lossy(),
            ],
        )?;
        let machine_id = format!("{:032x}\n", rand_u128());
        std::fs::write(merged.join("etc/machine-id"), machine_id)?;
        // systemd takes the hostname from /etc/hostname, which would be the host's.
        std::fs::write(merged.join("etc/hostname"), format!("{}\n", self.name))?;
        let units = merged.join("etc/systemd/system");
        std::fs::create_dir_all(&units)?;
        for unit in MASKED_UNITS {
            let link = units.join(unit);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("/dev/null", &link)
                .with_context(|| format!("masking {unit}"))?;
        }
        Ok(())
    }

    fn start(&mut self) -> anyhow::Result<()> {
        let merged = self.merged();
        let mut spec = Spawn::new("systemd-nspawn")
            .args([
                "--keep-unit",
                "--register=no",
                "--console=passive",
                "--boot",
                "-D",
            ])
            .arg(&merged)
            .args(["-M", &self.name])
            .log_dir(self.dir.join("console"));
        spec = match &self.options.netns {
            Some(ns) => spec.arg(format!("--network-namespace-path={}", ns.path().display())),
            None => spec.arg("--private-network"),
        };
        let procs: Vec<PathBuf> = self
            .cgroups
            .iter()
            .map(|c| c.join("cgroup.procs"))
            .collect();
        let nspawn = Process::start(spec.in_cgroups(procs))?;
        let nspawn_pid = nspawn.pid();
        self.nspawn = Some(nspawn);
        self.leader = poll_until(
            "the machine's PID 1",
            BOOT_TIMEOUT,
            Duration::from_millis(20),
            || {
                let leader = children_of(nspawn_pid).into_iter().next()?;
                let exe = std::fs::read_link(format!("/proc/{leader}/exe")).ok()?;
                exe.ends_with("systemd").then_some(leader)
            },
        )
        .with_context(|| format!("booting {}: {}", self.name, self.console()))?;
        let mut last = String::new();
        poll_until(
            "systemd to finish starting up",
            BOOT_TIMEOUT,
            Duration::from_millis(50),
            || {
                last = self.system_state().unwrap_or_default();
                matches!(last.as_str(), "running" | "degraded").then_some(())
            },
        )
        .with_context(|| {
            format!(
                "booting {} (last state {last:?}): {}",
                self.name,
                self.console()
            )
        })?;
        if last == "degraded" {
            let failed = self.exec("systemctl", &["--failed", "--no-legend"])?;
            tracing::warn!(
                "machine {} booted degraded: {}",
                self.name,
                String::from_utf8_lossy(&failed.stdout)
            );
        }
        Ok(())
    }

    fn teardown(&mut self) {
        if self.nspawn.is_some() && self.poweroff_quickly().is_err() {
            // PID 1 dying takes the whole container with it.
            let _ = kill(Pid::from_raw(self.leader as i32), Signal::SIGKILL);
            if let Some(mut nspawn) = self.nspawn.take() {
                let _ = nspawn.kill9();
            }
        }
        self.nspawn = None;
        remove_machine_dir(&self.dir);
        for cgroup in &self.cgroups {
            remove_cgroup(cgroup);
        }
    }

    fn poweroff_quickly(&mut self) -> anyhow::Result<()> {
        let Some(nspawn) = self.nspawn.as_mut() else {
            return Ok(());
        };
        let poweroff = Signal::try_from(libc::SIGRTMIN() + 4)?;
        kill(Pid::from_raw(self.leader as i32), poweroff)?;
        nspawn.wait_timeout(Duration::from_secs(20))?;
        self.nspawn = None;
        Ok(())
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The direct children of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    children
}

/// Creates the machine's cgroups: one in each hierarchy systemd inside the
/// container will look at.
fn create_cgroups(name: &str) -> anyhow::Result<Vec<PathBuf>> {
    let root = Path::new("/sys/fs/cgroup");
    let hierarchies: Vec<PathBuf> = if root.join("cgroup.controllers").exists() {
        vec![root.to_path_buf()] // pure cgroup v2
    } else {
        ["systemd", "unified"]
            .iter()
            .map(|h| root.join(h))
            .filter(|p| p.exists())
            .collect()
    };
    anyhow::ensure!(
        !hierarchies.is_empty(),
        "no systemd cgroup hierarchy under /sys/fs/cgroup"
    );
    let mut created = Vec::new();
    for hierarchy in hierarchies {
        let cgroup = hierarchy.join(name);
        std::fs::create_dir_all(&cgroup)
            .with_context(|| format!("creating cgroup {}", cgroup.display()))?;
        created.push(cgroup);
    }
    Ok(created)
}

/// Removes a cgroup tree bottom-up, killing anything still in it.
fn remove_cgroup(cgroup: &Path) {
    if let Ok(entries) = std::fs::read_dir(cgroup) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup(&entry.path());
            }
        }
    }
    for _ in 0..100 {
        let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
        for pid in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if std::fs::remove_dir(cgroup).is_ok() || !cgroup.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::warn!("could not remove cgroup {}", cgroup.display());
}

fn remove_machine_dir(dir: &Path) {
    let merged = dir.join("merged");
    if let Err(e) = umount2(&merged, MntFlags::MNT_DETACH) {
        tracing::debug!("unmounting {}: {e}", merged.display());
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Removes the overlays and cgroups of machines whose test process is gone.
fn reap_stale() {
    let Ok(entries) = std::fs::read_dir(STATE_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = names::owner(KIND, &name) else {
            continue;
        };
        if !names::owner_is_dead(pid) {
            continue;
        }
        for cgroup in ["systemd", "unified", ""] {
            let path = Path::new("/sys/fs/cgroup").join(cgroup).join(&name);
            if path.exists() {
                remove_cgroup(&path);
            }
        }
        remove_machine_dir(&entry.path());
    }
}

/// 128 random bits from the kernel, for machine ids.
fn rand_u128() -> u128 {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    u128::from_ne_bytes(bytes)
}
