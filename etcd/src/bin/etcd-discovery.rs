//! etcd-discovery: the discovery service (`GET /new?size=N`, tokens served from an etcd cluster's v2 keys API).

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "etcd-discovery",
    about = "etcd discovery service (what discovery.etcd.io does)"
)]
struct Args {
    /// The etcd client URL holding the registry.
    #[arg(long, env = "DISC_ETCD", default_value = "http://127.0.0.1:2379")]
    etcd: String,
    /// The URL prefix of the token URLs handed out.
    #[arg(long, env = "DISC_HOST", default_value = "http://127.0.0.1:8087")]
    host: String,
    /// Address to listen on.
    #[arg(long, env = "DISC_ADDR", default_value = "0.0.0.0:8087")]
    addr: String,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let etcd = url::Url::parse(&a.etcd).with_context(|| format!("--etcd {}", a.etcd))?;
    let settings = etcd::discovery_service::DiscoverySettings {
        etcd: format!(
            "{}:{}",
            etcd.host_str().context("--etcd has no host")?,
            etcd.port_or_known_default().unwrap_or(2379)
        ),
        host: a.host,
    };
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.addr)
            .await
            .with_context(|| format!("listening on {}", a.addr))?;
        let token = CancellationToken::new();
        let t = token.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            t.cancel();
        });
        tracing::info!(addr = %a.addr, "etcd-discovery ready");
        etcd::discovery_service::serve(settings, listener, token)
            .await
            .context("serving")
    })
}
