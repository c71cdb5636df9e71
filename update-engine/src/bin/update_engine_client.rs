//! `update_engine_client`: talks to update_engine over D-Bus (flags and
//! exit codes as the original; the work is in the library).

use anyhow::bail;
use clap::Parser;
use update_engine::client;
use update_engine::dbus::Bus;

#[derive(Parser, Debug)]
#[command(
    name = "update_engine_client",
    about = "Talks to update_engine over D-Bus"
)]
struct Args {
    /// Print the current status.
    #[arg(long)]
    status: bool,
    /// Initiate an update check and return.
    #[arg(long = "check_for_update")]
    check_for_update: bool,
    /// Initiate an update and wait until it completes.
    #[arg(long)]
    update: bool,
    /// Reset the status to IDLE after an update.
    #[arg(long = "reset_status")]
    reset_status: bool,
    /// Print every status update signal.
    #[arg(long = "watch_for_updates")]
    watch_for_updates: bool,
    /// D-Bus address instead of the system bus.
    #[arg(long = "dbus_address", env = "UPDATE_ENGINE_DBUS_ADDRESS")]
    dbus_address: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse_from(update_engine::daemon::gflags_args(std::env::args()));
    let bus = args
        .dbus_address
        .clone()
        .map(Bus::Address)
        .unwrap_or(Bus::System);
    let mut out = std::io::stdout();
    let code = if args.update {
        client::update(&bus, client::UPDATE_POLL_INTERVAL, &mut out).await?
    } else if args.check_for_update {
        client::check_for_update(&bus, &mut out).await?
    } else if args.reset_status {
        client::reset_status(&bus, &mut out).await?
    } else if args.watch_for_updates {
        client::watch(&bus, &mut out).await?
    } else if args.status {
        client::status(&bus, &mut out).await?
    } else {
        bail!(
            "no command given: use -status, -check_for_update, -update, -reset_status or -watch_for_updates"
        );
    };
    std::process::exit(code);
}
