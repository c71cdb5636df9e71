//! One run of coreos-cloudinit: choose a datasource, fetch, dispatch on the user-data kind, validate or apply.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::apply::{self, Accounts, UnitNames};
use crate::datasource::{self, Datasource};
use crate::metadata::Metadata;
use crate::systemd::Systemd;
use crate::userdata::{self, Kind};
use crate::validate;

/// Where user-data may come from, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--from-file`
    File(PathBuf),
    /// `--from-url`
    Url(String),
    /// `--from-configdrive`
    ConfigDrive(PathBuf),
    /// `--from-ec2-metadata`
    Ec2(String),
    /// `--from-proc-cmdline`, reading the given file (normally `/proc/cmdline`).
    ProcCmdline(PathBuf),
}

impl Source {
    fn open(&self) -> Arc<dyn Datasource> {
        match self {
            Source::File(p) => Arc::new(datasource::LocalFile::new(p)),
            Source::Url(u) => Arc::new(datasource::Url::new(u)),
            Source::ConfigDrive(p) => Arc::new(datasource::ConfigDrive::new(p)),
            Source::Ec2(u) => Arc::new(datasource::Ec2Metadata::new(u)),
            Source::ProcCmdline(p) => Arc::new(datasource::ProcCmdline::new(p)),
        }
    }
}

/// The sources an `--oem` preset stands for, or an error naming the presets this build lacks.
pub fn oem_sources(oem: &str) -> Result<Vec<Source>, Error> {
    match oem {
        "ec2-compat" => Ok(vec![
            Source::Ec2(datasource::DEFAULT_EC2_URL.to_string()),
            Source::ConfigDrive(PathBuf::from("/media/configdrive")),
        ]),
        "gce" | "digitalocean" | "rackspace-onmetal" | "azure" | "cloudsigma" | "packet"
        | "vmware" => Err(Error::Unsupported(format!(
            "--oem={oem}: this platform's datasource is not implemented"
        ))),
        other => Err(Error::Unsupported(format!("--oem={other}: unknown oem"))),
    }
}

/// Validated settings for one run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sources to poll (at least one).
    pub sources: Vec<Source>,
    /// Overall datasource timeout.
    pub timeout: Duration,
    /// Only validate and report.
    pub validate: bool,
    /// Exit 0 even when something failed.
    pub ignore_failure: bool,
    /// Where scripts are saved (`/var/lib/coreos-cloudinit`).
    pub workspace: PathBuf,
    /// authorized_keys.d entry name.
    pub ssh_key_name: String,
    /// Root prefix for every file written.
    pub root: PathBuf,
    /// Unit names for generated drop-ins.
    pub units: UnitNames,
}

/// Errors that end a run early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answered before the timeout.
    #[error("No datasources available in time")]
    NoDatasource,
    /// A feature of the original this build does not have.
    #[error("{0}")]
    Unsupported(String),
    /// Fetching failed.
    #[error(transparent)]
    Datasource(#[from] datasource::Error),
    /// Decompressing failed.
    #[error(transparent)]
    UserData(#[from] userdata::Error),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Validator findings (with `--validate`) or problems logged while applying.
    pub findings: Vec<validate::Entry>,
    /// Apply failures and other errors.
    pub failures: Vec<String>,
    /// The process exit code the original would use.
    pub exit_code: i32,
}

/// Picks the first available source and fetches its (decompressed) user-data.
async fn fetch(settings: &Settings) -> Result<(Arc<dyn Datasource>, Vec<u8>), Error> {
    let sources: Vec<Arc<dyn Datasource>> = settings.sources.iter().map(Source::open).collect();
    let source = datasource::select(sources, settings.timeout)
        .await
        .ok_or(Error::NoDatasource)?;
    tracing::info!(
        "Fetching user-data from datasource of type {:?}",
        source.kind()
    );
    let raw = userdata::decompress(&source.user_data().await?)?;
    Ok((source, raw))
}

/// `--validate`: fetches the user-data and reports every finding; exit code 1 if there is any.
pub async fn validate_only(settings: &Settings) -> Result<Outcome, Error> {
    let (_, raw) = fetch(settings).await?;
    let findings = validate::validate(&raw).entries;
    for entry in &findings {
        tracing::info!("{entry}");
    }
    let exit_code = i32::from(!findings.is_empty());
    Ok(Outcome {
        findings,
        failures: Vec::new(),
        exit_code,
    })
}

/// Runs once: fetch user-data, then apply it (use [`validate_only`] for `--validate`).
pub async fn run(
    settings: &Settings,
    systemd: &dyn Systemd,
    accounts: &dyn Accounts,
) -> Result<Outcome, Error> {
    if settings.validate {
        return validate_only(settings).await;
    }
    let (source, raw) = fetch(settings).await?;
    let mut outcome = Outcome {
        findings: Vec::new(),
        failures: Vec::new(),
        exit_code: 0,
    };

    let metadata = match source.metadata().await {
        Ok(m) => m,
        Err(e) => {
            outcome.failures.push(format!("fetching metadata: {e}"));
            Metadata::default()
        }
    }
    .with_env_fallback(|name| std::env::var(name).ok());

    let text = String::from_utf8_lossy(&raw).into_owned();
    let text = metadata.substitute(&text);
    match userdata::kind_of(&text) {
        Kind::Empty => tracing::info!("Fetched user-data is empty"),
        Kind::Ignition => tracing::info!("Detected an Ignition config. Exiting..."),
        Kind::Unknown => outcome
            .failures
            .push("Unrecognized user-data format".to_string()),
        Kind::Script => {
            if let Err(e) = run_script(settings, systemd, &text).await {
                outcome.failures.push(format!("running script: {e}"));
            }
        }
        Kind::CloudConfig => {
            let clean = text.replace('\r', "");
            outcome.findings = validate::validate(clean.as_bytes()).entries;
            for entry in &outcome.findings {
                tracing::warn!("{entry}");
            }
            match crate::CloudConfig::parse(&clean) {
                Err(e) => outcome.failures.push(format!("parsing cloud-config: {e}")),
                Ok(mut config) => {
                    metadata.merge_into(&mut config);
                    let mut env = apply::Env::new(&settings.root, systemd, accounts);
                    env.ssh_key_name = settings.ssh_key_name.clone();
                    env.units = settings.units.clone();
                    env.metadata = metadata.clone();
                    outcome
                        .failures
                        .extend(apply::apply(&config, &env).await.failures);
                }
            }
        }
    }
    if !outcome.failures.is_empty() && !settings.ignore_failure {
        outcome.exit_code = 1;
    }
    Ok(outcome)
}

/// Saves a `#!` script under the workspace and runs it as a transient unit.
async fn run_script(settings: &Settings, systemd: &dyn Systemd, text: &str) -> Result<(), String> {
    let dir = apply::files::under_root(&settings.root, &settings.workspace.to_string_lossy())
        .map_err(|e| e.to_string())?
        .join("scripts");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let name = format!("{stamp}");
    let path = dir.join(&name);
    apply::files::write_atomic(&path, text.as_bytes(), 0o700, None).map_err(|e| e.to_string())?;
    let in_machine = settings.workspace.join("scripts").join(&name);
    let unit = format!("coreos-cloudinit-{name}.service");
    tracing::info!("running script {} as {unit}", in_machine.display());
    systemd
        .start_transient(
            &unit,
            &[
                "/bin/bash".to_string(),
                in_machine.to_string_lossy().into_owned(),
            ],
        )
        .await
        .map_err(|e| e.to_string())
}
