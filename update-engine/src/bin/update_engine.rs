//! `update_engine`: the update daemon (flags, logging, signals; the work is
//! in the library).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use update_engine::config::ConfigPaths;
use update_engine::dbus::Bus;
use update_engine::engine::{EngineSettings, split_partition_device, usr_device_from_mountinfo};
use update_engine::schedule::Schedule;

#[derive(Parser, Debug)]
#[command(name = "update_engine", about = "A/B partition OS updates over Omaha")]
struct Args {
    /// Accepted for compatibility with the original's unit file (always true).
    #[arg(long)]
    foreground: bool,
    /// Accepted for compatibility with the original's unit file (always true).
    #[arg(long)]
    logtostderr: bool,
    /// Config files searched for keys, in priority order (comma-separated).
    #[arg(
        long,
        env = "UPDATE_ENGINE_CONFIG_FILES",
        value_delimiter = ',',
        default_value = "/etc/coreos/update.conf,/usr/share/coreos/update.conf,/usr/share/coreos/release"
    )]
    config_files: Vec<PathBuf>,
    #[arg(
        long,
        env = "UPDATE_ENGINE_PREFS_DIR",
        default_value = "/var/lib/update_engine/prefs"
    )]
    prefs_dir: PathBuf,
    /// Boot disk; detected from the device mounted at /usr when unset.
    #[arg(long, env = "UPDATE_ENGINE_DISK")]
    disk: Option<PathBuf>,
    /// Booted USR partition number; detected with --disk when unset.
    #[arg(long, env = "UPDATE_ENGINE_USR_PARTITION")]
    usr_partition: Option<u32>,
    #[arg(
        long,
        env = "UPDATE_ENGINE_PUBLIC_KEY",
        default_value = "/usr/share/update_engine/update-payload-key.pub.pem"
    )]
    public_key: PathBuf,
    #[arg(long, default_value = "/etc/machine-id")]
    machine_id_file: PathBuf,
    #[arg(long, default_value = "/proc/sys/kernel/random/boot_id")]
    boot_id_file: PathBuf,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "/etc/oem-release,/usr/share/oem/oem-release"
    )]
    oem_release_files: Vec<PathBuf>,
    /// D-Bus address to serve on instead of the system bus.
    #[arg(long, env = "UPDATE_ENGINE_DBUS_ADDRESS")]
    dbus_address: Option<String>,
    /// Seconds between start-up and the first check (default 7 min).
    #[arg(long, default_value_t = 420)]
    first_check_delay_secs: u64,
    /// Seconds between checks (default 45 min).
    #[arg(long, default_value_t = 2700)]
    check_interval_secs: u64,
    /// Random ± seconds added to each interval (default 10 min).
    #[arg(long, default_value_t = 600)]
    check_fuzz_secs: u64,
    /// Longest backoff after failures (default 4 h).
    #[arg(long, default_value_t = 14400)]
    max_backoff_secs: u64,
    /// Seconds of stable running before the booted slot is marked good.
    #[arg(long, default_value_t = 45)]
    setgoodroot_delay_secs: u64,
    /// Only check when asked over D-Bus.
    #[arg(long)]
    no_periodic_checks: bool,
}

fn read_trimmed(path: &PathBuf) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}

fn settings(args: Args) -> anyhow::Result<(EngineSettings, Bus)> {
    let (disk, usr_partition) = match (args.disk, args.usr_partition) {
        (Some(d), Some(p)) => (d, p),
        (disk, part) => {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
                .context("reading /proc/self/mountinfo")?;
            let Some(dev) = usr_device_from_mountinfo(&mountinfo) else {
                bail!("/usr is not a separate mount; pass --disk and --usr-partition");
            };
            let Some((d, p)) = split_partition_device(&dev) else {
                bail!(
                    "cannot tell the disk and partition of /usr device {dev}; pass --disk and --usr-partition"
                );
            };
            (disk.unwrap_or(d), part.unwrap_or(p))
        }
    };
    let oem = args
        .oem_release_files
        .iter()
        .find_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            update_engine::config::parse_value(&text, "ID")
        })
        .unwrap_or_default();
    let settings = EngineSettings {
        config: ConfigPaths {
            files: args.config_files,
        },
        prefs_dir: args.prefs_dir,
        disk,
        active_partition: usr_partition,
        public_key: args.public_key,
        machine_id: read_trimmed(&args.machine_id_file)?,
        boot_id: read_trimmed(&args.boot_id_file)?,
        oem,
        schedule: Schedule {
            first_check_delay: Duration::from_secs(args.first_check_delay_secs),
            interval: Duration::from_secs(args.check_interval_secs),
            fuzz: Duration::from_secs(args.check_fuzz_secs),
            max_backoff: Duration::from_secs(args.max_backoff_secs),
            setgoodroot_delay: Duration::from_secs(args.setgoodroot_delay_secs),
            periodic: !args.no_periodic_checks,
        },
    };
    let bus = args.dbus_address.map(Bus::Address).unwrap_or(Bus::System);
    Ok((settings, bus))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse_from(update_engine::daemon::gflags_args(std::env::args()));
    let (settings, bus) = settings(args)?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!("installing the SIGTERM handler: {e}");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.cancel();
    });
    update_engine::daemon::run(settings, bus, shutdown)
        .await
        .context("update_engine")
}
