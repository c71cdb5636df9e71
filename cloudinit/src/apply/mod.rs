//! Applying a cloud-config, in the original's order, under a root prefix and behind the systemd and accounts
//! seams.
//!
//! Order: hostname; users; `ssh_authorized_keys` for core; write_files, then /etc/oem-release,
//! /etc/coreos/update.conf, /etc/hosts and /run/flannel/options.env; /etc/environment; units (the user's, then
//! the etcd/etcd2/fleet/locksmith drop-ins, then the update side effects). A failing section is reported and
//! skipped; the rest still applies. Each file is written atomically, so nothing is left half-written.

pub mod files;
pub mod system_files;
pub mod units;
pub mod users;

use std::path::{Path, PathBuf};

use crate::config::{CloudConfig, DropIn, EnvSection, Unit, WriteFile, decode_content};
use crate::metadata::Metadata;
use crate::schema;
use crate::systemd::Systemd;
use crate::validate::{is_under_usr, matches_pattern};

pub use users::Accounts;

/// Errors of one apply step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A value in the config cannot be applied.
    #[error("{0}")]
    Invalid(String),
    /// A helper program failed.
    #[error("{0}")]
    Command(String),
    /// systemd refused.
    #[error(transparent)]
    Systemd(#[from] crate::systemd::Error),
}

/// The systemd unit names the generated drop-ins and side effects target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitNames {
    /// `coreos.etcd` (0.4) drop-in target.
    pub etcd: String,
    /// `coreos.etcd2` drop-in target.
    pub etcd2: String,
    /// `coreos.fleet` drop-in target.
    pub fleet: String,
    /// `coreos.locksmith` drop-in target and reboot_strategy side effects.
    pub locksmith: String,
    /// Restarted when update group or server changes.
    pub update_engine: String,
}

impl Default for UnitNames {
    /// CoreOS's names, which cloud-configs in the wild refer to.
    fn default() -> UnitNames {
        UnitNames {
            etcd: "etcd.service".into(),
            etcd2: "etcd2.service".into(),
            fleet: "fleet.service".into(),
            locksmith: "locksmithd.service".into(),
            update_engine: "update-engine.service".into(),
        }
    }
}

/// Everything apply needs from the outside world.
pub struct Env<'a> {
    /// Every file is written under this directory (`/` on a real machine).
    pub root: PathBuf,
    /// The systemd seam.
    pub systemd: &'a dyn Systemd,
    /// The accounts seam.
    pub accounts: &'a dyn Accounts,
    /// Name of the authorized_keys.d file for `ssh_authorized_keys` (`--ssh-key-name`).
    pub ssh_key_name: String,
    /// Unit names for the generated drop-ins.
    pub units: UnitNames,
    /// Addresses for /etc/environment.
    pub metadata: Metadata,
}

impl<'a> Env<'a> {
    /// An environment with the original's defaults for everything but the seams.
    pub fn new(root: &Path, systemd: &'a dyn Systemd, accounts: &'a dyn Accounts) -> Env<'a> {
        Env {
            root: root.to_path_buf(),
            systemd,
            accounts,
            ssh_key_name: DEFAULT_SSH_KEY_NAME.to_string(),
            units: UnitNames::default(),
            metadata: Metadata::default(),
        }
    }
}

/// Default name of the authorized_keys.d entry, as the original's `--ssh-key-name`.
pub const DEFAULT_SSH_KEY_NAME: &str = "coreos-cloudinit";

/// What went wrong during apply; empty when everything applied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// One message per failed section or item.
    pub failures: Vec<String>,
}

impl Report {
    fn fail(&mut self, message: String) {
        tracing::error!("{message}");
        self.failures.push(message);
    }

    /// Whether everything applied.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Applies `config` to the machine described by `env`.
pub async fn apply(config: &CloudConfig, env: &Env<'_>) -> Report {
    let mut report = Report::default();
    let root = env.root.as_path();

    if let Some(hostname) = config.hostname.as_ref().filter(|h| !h.is_empty()) {
        tracing::info!("setting hostname to {hostname}");
        if let Err(e) = env.systemd.set_hostname(hostname).await {
            report.fail(format!("hostname: {e}"));
        }
    }

    for user in &config.users {
        if user.name.is_empty() {
            tracing::warn!("skipping a user without a name");
            continue;
        }
        if let Err(e) = apply_user(root, env, user) {
            report.fail(format!("user {}: {e}", user.name));
        }
    }

    if !config.ssh_authorized_keys.is_empty() {
        tracing::info!(
            "authorizing {} ssh keys for core",
            config.ssh_authorized_keys.len()
        );
        if let Err(e) =
            users::authorize_keys(root, "core", &env.ssh_key_name, &config.ssh_authorized_keys)
        {
            report.fail(format!("ssh_authorized_keys: {e}"));
        }
    }

    let mut environment_written = false;
    for file in &config.write_files {
        environment_written |= files::under_root(Path::new("/"), &file.path)
            .is_ok_and(|p| p == Path::new("/etc/environment"));
        if let Err(e) = write_file(root, file) {
            report.fail(format!("write_files {}: {e}", file.path));
        }
    }
    write_generated(root, config, &mut report);

    if !environment_written && let Err(e) = merge_environment(root, &env.metadata) {
        report.fail(format!("/etc/environment: {e}"));
    }

    let user = |unit: &Unit| units::Planned {
        unit: unit.clone(),
        generated: false,
    };
    let generated = |unit: Unit| units::Planned {
        unit,
        generated: true,
    };
    let mut all_units: Vec<units::Planned> = config.coreos.units.iter().map(user).collect();
    let coreos = &config.coreos;
    for (label, section, fields, name) in [
        ("etcd", &coreos.etcd, schema::ETCD, &env.units.etcd),
        ("etcd2", &coreos.etcd2, schema::ETCD2, &env.units.etcd2),
        ("fleet", &coreos.fleet, schema::FLEET, &env.units.fleet),
        (
            "locksmith",
            &coreos.locksmith,
            schema::LOCKSMITH,
            &env.units.locksmith,
        ),
    ] {
        match check_section(section, fields) {
            Ok(()) => all_units.extend(dropin_unit(section, name).map(generated)),
            Err(e) => report.fail(format!("coreos.{label}: {e}")),
        }
    }
    all_units.extend(update_units(config, &env.units).into_iter().map(generated));
    units::process(root, env.systemd, &all_units, &mut report).await;
    report
}

fn apply_user(root: &Path, env: &Env<'_>, user: &crate::config::User) -> Result<(), Error> {
    if env.accounts.exists(&user.name)? {
        if let Some(hash) = user.passwd.as_ref().filter(|p| !p.is_empty()) {
            tracing::info!("setting password of {}", user.name);
            env.accounts.set_password(&user.name, hash)?;
        }
    } else {
        tracing::info!("creating user {}", user.name);
        env.accounts.create(user)?;
    }
    if !user.ssh_authorized_keys.is_empty() {
        users::authorize_keys(
            root,
            &user.name,
            &env.ssh_key_name,
            &user.ssh_authorized_keys,
        )?;
    }
    if user.deprecated_imports {
        tracing::warn!(
            "user {}: remote ssh key imports are deprecated and not performed",
            user.name
        );
    }
    Ok(())
}

/// Writes one write_files entry; every check happens before anything touches the disk.
fn write_file(root: &Path, file: &WriteFile) -> Result<(), Error> {
    if file.path.is_empty() {
        return Err(Error::Invalid("no path".into()));
    }
    if is_under_usr(&file.path) {
        return Err(Error::Invalid(
            "file cannot be written to a read-only filesystem".into(),
        ));
    }
    let mode = match &file.permissions {
        None => 0o644,
        Some(p) if matches_pattern(schema::PERMISSIONS_RE, p) => {
            u32::from_str_radix(p, 8).map_err(|_| Error::Invalid(format!("invalid value {p}")))?
        }
        Some(p) => return Err(Error::Invalid(format!("invalid value {p} for permissions"))),
    };
    if let Some(enc) = &file.encoding
        && !matches_pattern(schema::ENCODING_RE, enc)
    {
        return Err(Error::Invalid(format!("invalid value {enc} for encoding")));
    }
    let data = decode_content(&file.content, file.encoding.as_deref())
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let owner = match file.owner.as_deref().filter(|o| !o.is_empty()) {
        Some(o) => Some(files::resolve_owner(root, o)?),
        None => None,
    };
    let target = files::under_root(root, &file.path)?;
    tracing::info!("writing file {}", target.display());
    files::write_atomic(&target, &data, mode, owner)
}

fn write_generated(root: &Path, config: &CloudConfig, report: &mut Report) {
    let coreos = &config.coreos;
    let put = |path: &str, content: Option<String>, report: &mut Report| {
        let Some(content) = content else { return };
        let result = files::under_root(root, path).and_then(|p| {
            tracing::info!("writing file {}", p.display());
            files::write_atomic(&p, content.as_bytes(), 0o644, None)
        });
        if let Err(e) = result {
            report.fail(format!("{path}: {e}"));
        }
    };
    put(
        "/etc/oem-release",
        system_files::oem_release(&coreos.oem),
        report,
    );
    match system_files::update_settings(&coreos.update) {
        Ok(settings) if !settings.is_empty() => match system_files::update_conf(root, &settings) {
            Ok(text) => put("/etc/coreos/update.conf", Some(text), report),
            Err(e) => report.fail(format!("/etc/coreos/update.conf: {e}")),
        },
        Ok(_) => {}
        Err(e) => report.fail(format!("coreos.update: {e}")),
    }
    match config.manage_etc_hosts.as_deref() {
        None | Some("") => {}
        Some("localhost") => {
            let hostname = config
                .hostname
                .clone()
                .filter(|h| !h.is_empty())
                .or_else(|| {
                    nix::unistd::gethostname()
                        .ok()
                        .map(|h| h.to_string_lossy().into_owned())
                });
            match hostname {
                Some(h) => put("/etc/hosts", Some(format!("127.0.0.1 {h}\n")), report),
                None => report.fail("manage_etc_hosts: unable to determine the hostname".into()),
            }
        }
        Some(other) => report.fail(format!("Invalid option to manage_etc_hosts: {other}")),
    }
    match check_section(&coreos.flannel, schema::FLANNEL) {
        Ok(()) => put(
            "/run/flannel/options.env",
            system_files::flannel_env(&coreos.flannel),
            report,
        ),
        Err(e) => report.fail(format!("coreos.flannel: {e}")),
    }
}

fn merge_environment(root: &Path, metadata: &Metadata) -> Result<(), Error> {
    let settings = metadata.environment();
    if settings.is_empty() {
        return Ok(());
    }
    let path = files::under_root(root, "/etc/environment")?;
    let existing = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(Error::Io { path, source }),
    };
    let merged = system_files::merge_env_lines(&existing, &settings);
    files::write_atomic(&path, merged.as_bytes(), 0o644, None)
}

/// Checks a section's constrained values (e.g. etcd2 `proxy`, locksmith `window_start`); an invalid section is
/// skipped as a whole rather than configuring a daemon with a value it will reject.
fn check_section(section: &EnvSection, fields: &'static [schema::Field]) -> Result<(), Error> {
    for setting in &section.settings {
        if let Some(pattern) = schema::field(fields, setting.key).and_then(|f| f.valid)
            && !matches_pattern(pattern, &setting.value)
        {
            return Err(Error::Invalid(format!(
                "invalid value {} for {}",
                setting.value, setting.key
            )));
        }
    }
    Ok(())
}

fn dropin_unit(section: &EnvSection, name: &str) -> Option<Unit> {
    let content = system_files::env_dropin(section)?;
    Some(Unit {
        name: name.to_string(),
        runtime: true,
        drop_ins: vec![DropIn {
            name: "20-cloudinit.conf".into(),
            content,
        }],
        ..Default::default()
    })
}

fn update_units(config: &CloudConfig, names: &UnitNames) -> Vec<Unit> {
    let update = &config.coreos.update;
    let mut out = Vec::new();
    if system_files::update_settings(update).is_err() {
        return out;
    }
    match update.reboot_strategy.as_deref() {
        Some("off") => out.push(Unit {
            name: names.locksmith.clone(),
            runtime: true,
            mask: true,
            command: Some("stop".into()),
            ..Default::default()
        }),
        Some(_) => out.push(Unit {
            name: names.locksmith.clone(),
            runtime: true,
            command: Some("restart".into()),
            ..Default::default()
        }),
        None => {}
    }
    if update.group.as_deref().is_some_and(|g| !g.is_empty())
        || update.server.as_deref().is_some_and(|s| !s.is_empty())
    {
        out.push(Unit {
            name: names.update_engine.clone(),
            command: Some("restart".into()),
            ..Default::default()
        });
    }
    out
}
