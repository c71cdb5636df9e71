//! coreos-cloudinit: fetch user-data from a datasource and validate or apply it; or serve the web validator.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use cloudinit::apply::UnitNames;
use cloudinit::apply::users::ShadowAccounts;
use cloudinit::datasource::{DEFAULT_EC2_URL, PROC_CMDLINE};
use cloudinit::run::{Settings, Source};
use cloudinit::systemd::DbusSystemd;

/// The original's usage line when no datasource is given (printed without a trailing newline).
const NO_SOURCE: &str = "Provide at least one of --from-file, --from-configdrive, --from-ec2-metadata, --from-url or --from-proc-cmdline";

#[derive(Parser, Debug)]
#[command(
    name = "coreos-cloudinit",
    version,
    about = "Apply or validate a CoreOS cloud-config"
)]
struct Flags {
    /// Read user-data from this file.
    #[arg(long)]
    from_file: Option<PathBuf>,
    /// Download user-data from this URL.
    #[arg(long)]
    from_url: Option<String>,
    /// Read user-data and metadata from this config-drive directory.
    #[arg(long)]
    from_configdrive: Option<PathBuf>,
    /// Read user-data and metadata from an EC2-style metadata service at this URL.
    #[arg(long, num_args = 0..=1, default_missing_value = DEFAULT_EC2_URL)]
    from_ec2_metadata: Option<String>,
    /// Download user-data from the cloud-config-url= kernel parameter.
    #[arg(long)]
    from_proc_cmdline: bool,
    /// The kernel command line file read by --from-proc-cmdline (for tests).
    #[arg(long, default_value = PROC_CMDLINE)]
    proc_cmdline_path: PathBuf,
    /// Use the datasources of an OEM platform (only ec2-compat in this build).
    #[arg(long)]
    oem: Option<String>,
    /// Only validate the user-data, print findings and exit 1 if there are any.
    #[arg(long)]
    validate: bool,
    /// Exit 0 even if something failed.
    #[arg(long)]
    ignore_failure: bool,
    /// Directory for scripts and state.
    #[arg(long, default_value = "/var/lib/coreos-cloudinit")]
    workspace: PathBuf,
    /// Name of the authorized_keys.d entry for ssh_authorized_keys.
    #[arg(long, default_value = cloudinit::apply::DEFAULT_SSH_KEY_NAME)]
    ssh_key_name: String,
    /// Seconds to wait for a datasource (the original's 5 minutes by default).
    #[arg(long, default_value_t = 300)]
    datasource_timeout: u64,
    /// Write every file under this directory instead of / (for tests and images).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Unit that receives the coreos.etcd2 drop-in.
    #[arg(long, default_value = "etcd2.service")]
    etcd2_unit: String,
    /// Unit that receives the coreos.fleet drop-in.
    #[arg(long, default_value = "fleet.service")]
    fleet_unit: String,
    /// Unit that receives the coreos.locksmith drop-in and reboot_strategy side effects.
    #[arg(long, default_value = "locksmithd.service")]
    locksmith_unit: String,
    /// Unit restarted when the update group or server changes.
    #[arg(long, default_value = "update-engine.service")]
    update_engine_unit: String,
    /// Convert a platform network config into networkd units (debian, packet, vmware): not implemented here.
    #[arg(long, value_name = "KIND")]
    convert_netconf: Option<String>,
    /// Serve the web validator (PUT /validate, GET /health, GET /) on this address instead of running once.
    #[arg(long, value_name = "ADDR")]
    serve_validator: Option<String>,
    /// More logging (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    let level = match flags.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("starting runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(real_main(flags)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

async fn real_main(flags: Flags) -> anyhow::Result<ExitCode> {
    if let Some(addr) = &flags.serve_validator {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!("validator listening on {}", listener.local_addr()?);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let on_signal = shutdown.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            on_signal.cancel();
        });
        cloudinit::web::serve(listener, shutdown)
            .await
            .context("serving the validator")?;
        return Ok(ExitCode::SUCCESS);
    }

    if let Some(kind) = &flags.convert_netconf {
        anyhow::bail!("--convert-netconf={kind} is not implemented in this build");
    }
    let mut sources = Vec::new();
    if let Some(oem) = &flags.oem {
        sources.extend(cloudinit::run::oem_sources(oem)?);
    }
    if let Some(p) = &flags.from_file {
        sources.push(Source::File(p.clone()));
    }
    if let Some(u) = &flags.from_url {
        sources.push(Source::Url(u.clone()));
    }
    if let Some(p) = &flags.from_configdrive {
        sources.push(Source::ConfigDrive(p.clone()));
    }
    if let Some(u) = &flags.from_ec2_metadata {
        sources.push(Source::Ec2(u.clone()));
    }
    if flags.from_proc_cmdline {
        sources.push(Source::ProcCmdline(flags.proc_cmdline_path.clone()));
    }
    if sources.is_empty() {
        eprint!("{NO_SOURCE}");
        return Ok(ExitCode::from(2));
    }
    let settings = Settings {
        sources,
        timeout: Duration::from_secs(flags.datasource_timeout),
        validate: flags.validate,
        ignore_failure: flags.ignore_failure,
        workspace: flags.workspace,
        ssh_key_name: flags.ssh_key_name,
        root: flags.root.clone(),
        units: UnitNames {
            etcd2: flags.etcd2_unit,
            fleet: flags.fleet_unit,
            locksmith: flags.locksmith_unit,
            update_engine: flags.update_engine_unit,
            ..UnitNames::default()
        },
    };
    if !settings.validate && flags.root != std::path::Path::new("/") {
        tracing::warn!(
            "--root={} redirects file writes (and useradd/chpasswd --root) only; the hostname and unit commands still go to the running systemd",
            flags.root.display()
        );
    }
    let outcome = if settings.validate {
        cloudinit::run::validate_only(&settings).await?
    } else {
        let accounts = ShadowAccounts::new(&flags.root);
        let systemd = DbusSystemd::connect()
            .await
            .context("connecting to systemd")?;
        cloudinit::run::run(&settings, &systemd, &accounts).await?
    };
    if settings.validate {
        for entry in &outcome.findings {
            println!("{entry}");
        }
    }
    for failure in &outcome.failures {
        tracing::error!("{failure}");
    }
    Ok(ExitCode::from(u8::try_from(outcome.exit_code).unwrap_or(1)))
}
