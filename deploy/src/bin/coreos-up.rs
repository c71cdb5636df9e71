//! `coreos-up`: brings up a local cluster with an embedded default
//! configuration. No flags are needed; `--state-dir` moves its data.

use anyhow::Context;
use clap::Parser;
use deploy::up::{DEFAULT_STATE_DIR, Settings};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    version,
    about = "bring up a local cluster of this workspace's daemons"
)]
struct Args {
    /// Where data dirs and logs go.
    #[arg(long, env = "COREOS_UP_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Don't build the workspace's binaries first (when run by `cargo run`).
    #[arg(long)]
    no_build: bool,
    /// More logging (-v, -vv).
    #[arg(short, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let level = ["warn", "info", "debug"][usize::from(args.verbose.min(2))];
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();

    let exe = std::env::current_exe().context("locating coreos-up")?;
    let bin_dir = exe
        .parent()
        .context("coreos-up has no directory")?
        .to_path_buf();
    // Under `cargo run`, build the daemons first so one command is enough.
    if let (Some(cargo), false) = (std::env::var_os("CARGO"), args.no_build) {
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "--workspace", "--bins"]);
        if bin_dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().context("running cargo build")?;
        anyhow::ensure!(status.success(), "building the workspace's binaries failed");
    }

    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    tracing::error!("cannot listen for SIGTERM: {e}");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        on_signal.cancel();
    });
    deploy::up::run(
        Settings {
            state_dir: args.state_dir,
            bin_dir,
        },
        shutdown,
    )
    .await
}
