//! `update-server`: an Omaha update server and the payload tool (flags and
//! logging; the work is in the library).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use update_engine::server::{Rollout, ServerSettings};

#[derive(Parser, Debug)]
#[command(name = "update-server", about = "Omaha update server and payload tool")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve update checks and payloads from a releases directory.
    Serve {
        #[arg(long, env = "UPDATE_SERVER_LISTEN", default_value = "0.0.0.0:8000")]
        listen: SocketAddr,
        /// Directory of `<group>/<version>/update.gz`.
        #[arg(long, env = "UPDATE_SERVER_RELEASES")]
        releases: PathBuf,
        /// Base URL for payload links (default: from the request's Host).
        #[arg(long, env = "UPDATE_SERVER_BASE_URL")]
        base_url: Option<String>,
        /// Grant at most this many updates per period (default: no limit).
        #[arg(long)]
        max_updates_per_period: Option<usize>,
        /// The rollout period in seconds.
        #[arg(long, default_value_t = 3600)]
        period_secs: u64,
    },
    /// Payload tools.
    Payload {
        #[command(subcommand)]
        command: PayloadCommand,
    },
}

#[derive(Subcommand, Debug)]
enum PayloadCommand {
    /// Build a signed full payload (CrAU) from a filesystem image.
    Create {
        /// RSA private key (PEM, PKCS#8 or PKCS#1).
        #[arg(long)]
        key: PathBuf,
        /// The /usr filesystem image.
        #[arg(long)]
        image: PathBuf,
        /// Where to write the payload.
        #[arg(long, default_value = "update.gz")]
        output: PathBuf,
    },
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
    match Args::parse().command {
        Command::Payload {
            command: PayloadCommand::Create { key, image, output },
        } => {
            let key = update_engine::payload::sign::load_private_key(&key)?;
            let summary =
                update_engine::payload::create::create_full_payload(&image, &key, &output)
                    .with_context(|| format!("creating {}", output.display()))?;
            println!(
                "wrote {}: {} bytes, sha256 {}, image {} bytes",
                output.display(),
                summary.size,
                base64::engine::general_purpose::STANDARD.encode(summary.sha256),
                summary.image_size
            );
            Ok(())
        }
        Command::Serve {
            listen,
            releases,
            base_url,
            max_updates_per_period,
            period_secs,
        } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            tracing::info!("listening on {}", listener.local_addr()?);
            let settings = ServerSettings {
                releases,
                base_url,
                rollout: max_updates_per_period.map(|max| Rollout {
                    max_updates_per_period: max,
                    period: Duration::from_secs(period_secs),
                }),
            };
            let shutdown = CancellationToken::new();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = term.recv() => {}
                            _ = tokio::signal::ctrl_c() => {}
                        }
                    }
                    Err(e) => {
                        tracing::error!("installing the SIGTERM handler: {e}");
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
                stop.cancel();
            });
            update_engine::server::run(settings, listener, shutdown)
                .await
                .context("update-server")
        }
    }
}
