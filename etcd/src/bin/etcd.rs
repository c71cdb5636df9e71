//! The etcd server binary: flags and environment, logging, listeners, then `etcd::run`.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc's malloc: measured 15–30% less server CPU per v2 GET and ~20% per PUT
/// (BENCHMARKS.md); glibc's free lists (`malloc_consolidate`, `unlink_chunk`) were ~10% of a GET's samples.
/// Built without transparent huge pages (`no_thp`): with them, faulting in 2 MiB pages put p99 of v3 Put
/// at 16 connections at 3–5.5 ms instead of ~1.6 ms, and the idle server's RSS at 60 MiB instead of 19.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let flags = match etcd::config::parse(std::env::args_os()) {
        Ok(etcd::config::Invocation::Version) => {
            print!("{}", etcd::config::version_text());
            return Ok(());
        }
        Ok(etcd::config::Invocation::Run(f)) => f,
        Err(e) => e.exit(),
    };
    let level = if flags.debug == Some(true) {
        "debug".to_string()
    } else {
        flags.log_level.clone()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},openraft=warn,sled=warn"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let mut settings = flags.settings().context("invalid configuration")?;
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async move {
        let mut listeners = Vec::new();
        for u in &settings.listen_client_urls {
            let bound = bind(u, 2379).await?;
            if u.scheme() == "https" {
                for l in &bound {
                    settings.https_listeners.push(l.local_addr()?);
                }
            }
            listeners.extend(bound);
        }
        let mut peers = Vec::new();
        // A proxy has no peer port (etcd's does not listen on --listen-peer-urls either), unless its data
        // dir holds a member's data, which then starts as a member.
        let member = settings.proxy == etcd::config::ProxyMode::Off
            || etcd::storage::DiskBackend::exists_in(&settings.data_dir);
        let peer_urls = if member {
            settings.listen_peer_urls.clone()
        } else {
            Vec::new()
        };
        for u in &peer_urls {
            for l in bind(u, 2380).await? {
                if u.scheme() == "https" {
                    settings.https_peer_listeners.push(l.local_addr()?);
                }
                peers.push(l.into_std().context("peer listener")?);
            }
        }
        settings.peer_listeners = etcd::config::PeerListeners::new(peers);
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
        match etcd::run(settings, listeners, token).await {
            // etcd exits 0 when removed, so a unit restarting on failure does not start it again.
            Err(etcd::RunError::Removed) => Ok(()),
            r => r.context("etcd failed"),
        }
    })
}

/// Binds every address `u`'s host resolves to (a name such as localhost may resolve to both 127.0.0.1 and ::1).
async fn bind(u: &url::Url, default_port: u16) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    let host = u
        .host_str()
        .unwrap_or("localhost")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = u.port_or_known_default().unwrap_or(default_port);
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {u}"))?
        .collect();
    let mut out = Vec::new();
    let mut last_err = None;
    for a in addrs {
        match tokio::net::TcpListener::bind(a).await {
            Ok(l) => out.push(l),
            Err(e) => last_err = Some(e),
        }
    }
    if out.is_empty() {
        let e = last_err.unwrap_or_else(|| std::io::Error::other("no address"));
        return Err(anyhow::Error::new(e).context(format!("listening on {u}")));
    }
    Ok(out)
}
