//! etcd: raft (openraft) over sled, serving the etcd v2 HTTP API and the v3 gRPC API on the same listeners.
//!
//! [`run`] starts a member on already-bound client listeners and stops it when the token fires.
//! Shutdown order: stop accepting and end watches, stop raft, flush storage.

pub mod bench;
pub mod cluster;
pub mod config;
pub mod ctl;
pub mod discovery;
pub mod discovery_service;
pub mod http;
pub mod proxy;
pub mod raft;
pub mod storage;
pub mod store;
pub mod tls;
pub mod v3;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Settings;
use storage::{Backend, DiskBackend, StorageError};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The data dir is unusable.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The data dir belongs to another member or cluster.
    #[error("{0}")]
    Identity(String),
    /// Raft failed to start.
    #[error(transparent)]
    Raft(#[from] raft::StartError),
    /// A background task failed.
    #[error("internal: {0}")]
    Internal(String),
    /// This member was removed from the cluster (now or before this start); etcd exits 0 then.
    #[error("the member has been permanently removed from the cluster")]
    Removed,
    /// The proxy could not start.
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
}

#[derive(Serialize, Deserialize)]
struct Identity {
    name: String,
    member_id: u64,
    cluster_id: u64,
}

/// Refuses a data dir written by another member or cluster; records ours on first use.
fn check_identity<B: Backend>(b: &B, s: &Settings) -> Result<(), RunError> {
    let mine = Identity {
        name: s.name.clone(),
        member_id: s.member_id,
        cluster_id: s.cluster_id,
    };
    let corrupt = |why: String| StorageError::Corrupt {
        path: s.data_dir.clone(),
        why,
    };
    match b.get_meta("identity")? {
        Some(bytes) => {
            let stored: Identity = serde_json::from_slice(&bytes)
                .map_err(|e| corrupt(format!("identity record: {e}")))?;
            if stored.member_id != mine.member_id
                || stored.cluster_id != mine.cluster_id
                || stored.name != mine.name
            {
                return Err(RunError::Identity(format!(
                    "data dir {} belongs to member {:?} ({:x}) of cluster {:x}, but this is member {:?} ({:x}) of cluster {:x}",
                    s.data_dir.display(),
                    stored.name,
                    stored.member_id,
                    stored.cluster_id,
                    mine.name,
                    mine.member_id,
                    mine.cluster_id
                )));
            }
        }
        None => {
            let bytes = serde_json::to_vec(&mine).map_err(|e| corrupt(e.to_string()))?;
            b.put_meta("identity", &bytes)?;
        }
    }
    Ok(())
}

/// One router for a client listener: gRPC (content type `application/grpc*`, HTTP/2) to the v3 services,
/// everything else to the v2 HTTP API.
fn client_router(app: Arc<http::App>) -> axum::Router {
    use axum::extract::Request;
    use tower::ServiceExt;
    let v2 = http::router(app.clone());
    let grpc = v3::routes(app);
    axum::Router::new().fallback(move |req: Request| async move {
        let is_grpc = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let res = if is_grpc {
            grpc.oneshot(req).await
        } else {
            v2.oneshot(req).await
        };
        match res {
            Ok(r) => r,
            Err(never) => match never {},
        }
    })
}

/// How often automatic compaction runs in revision mode (etcd: every 5 minutes).
const REVISION_COMPACTION_TICK: Duration = Duration::from_secs(300);

/// etcd's automatic compaction: periodic keeps the revisions of the last period (compacting every tenth of
/// it, at most hourly); revision mode keeps the last N revisions (every 5 minutes).
async fn auto_compact(
    node: raft::RaftNode,
    mode: config::AutoCompaction,
    shutdown: CancellationToken,
) {
    let (tick, keep) = match mode {
        config::AutoCompaction::Periodic(d) => (
            (d / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600)),
            d,
        ),
        config::AutoCompaction::Revision(_) => (REVISION_COMPACTION_TICK, Duration::ZERO),
    };
    let mut samples: std::collections::VecDeque<(tokio::time::Instant, u64)> = Default::default();
    let mut t = tokio::time::interval(tick);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = t.tick() => {}
        }
        if !node.status().is_leader {
            continue;
        }
        let now = tokio::time::Instant::now();
        let rev = node.kv().index();
        let target = match mode {
            config::AutoCompaction::Revision(n) => rev.saturating_sub(n),
            config::AutoCompaction::Periodic(_) => {
                samples.push_back((now, rev));
                let mut target = 0;
                while let Some(&(at, r)) = samples.front() {
                    if now.duration_since(at) < keep {
                        break;
                    }
                    target = r;
                    samples.pop_front();
                }
                target
            }
        };
        let compacted = node.kv().with_store(|s| s.compacted());
        if target > compacted {
            let op = store::Op::Compact {
                revision: i64::try_from(target).unwrap_or(i64::MAX),
            };
            match node.write_v3(op).await {
                Ok((r, _)) => match r.result {
                    Ok(_) => tracing::info!(revision = target, "auto-compacted"),
                    Err(e) => tracing::warn!(revision = target, "auto-compaction: {e}"),
                },
                Err(e) => tracing::warn!("auto-compaction: {e}"),
            }
        }
    }
}

/// A member joining an existing cluster learns its id and the cluster id: from its data dir after the first
/// start, else from the members named in `--initial-cluster` (it must have been added with `member add`).
async fn resolve_joining_identity<B: Backend>(b: &B, s: &mut Settings) -> Result<(), RunError> {
    if let Some(bytes) = b.get_meta("identity")?
        && let Ok(stored) = serde_json::from_slice::<Identity>(&bytes)
        && stored.name == s.name
    {
        s.member_id = stored.member_id;
        s.cluster_id = stored.cluster_id;
        return Ok(());
    }
    let peers: Vec<String> = s
        .initial_members
        .values()
        .filter(|urls| **urls != s.peer_urls)
        .filter_map(|urls| urls.first().cloned())
        .collect();
    let tls = s.peer_tls.as_ref().map(|t| t.client.clone());
    let (member, cluster) = raft::discover_identity(&peers, &s.peer_urls, s.election * 30, &tls)
        .await
        .map_err(RunError::Identity)?;
    s.member_id = member;
    s.cluster_id = cluster;
    Ok(())
}

/// `--discovery` on a fresh data dir: learns `--initial-cluster` from the registry (then the cluster bootstraps
/// as a static one); with a data dir, the ids recorded there are used and the registry is not asked.
async fn bootstrap_by_discovery<B: Backend>(
    b: &B,
    s: &mut Settings,
    url: String,
) -> Result<Bootstrap, RunError> {
    if let Some(bytes) = b.get_meta("identity")?
        && let Ok(stored) = serde_json::from_slice::<Identity>(&bytes)
        && stored.name == s.name
    {
        s.member_id = stored.member_id;
        s.cluster_id = stored.cluster_id;
        return Ok(Bootstrap::Member);
    }
    let (id, name, peers) = (s.member_id, s.name.clone(), s.peer_urls.clone());
    let found = tokio::task::spawn_blocking(move || discovery::discover(&url, id, &name, &peers))
        .await
        .map_err(|e| RunError::Internal(format!("discovery: {e}")))?;
    let initial = match found {
        Ok(i) => i,
        Err(discovery::DiscoveryError::Full) if s.discovery_fallback_exit => {
            return Err(RunError::Identity(
                "failed to join discovery cluster (discovery: cluster is full); please generate a new discovery token".into(),
            ));
        }
        Err(discovery::DiscoveryError::Full) => {
            tracing::warn!("discovery cluster full, falling back to proxy");
            return Ok(Bootstrap::Proxy);
        }
        Err(e) => {
            return Err(RunError::Identity(format!(
                "failed to join discovery cluster ({e})"
            )));
        }
    };
    tracing::info!(%initial, "discovery: cluster found");
    let members = config::parse_initial_cluster(&initial)
        .and_then(|m| config::members_by_id(&m, &s.token))
        .map_err(|e| RunError::Identity(format!("discovery returned a bad cluster: {e}")))?;
    let ids: Vec<u64> = members.keys().copied().collect();
    s.cluster_id = cluster::cluster_id(&ids);
    s.initial_members = members;
    Ok(Bootstrap::Member)
}

/// What discovery made of this process.
enum Bootstrap {
    /// A member of the discovered cluster.
    Member,
    /// A proxy: the registry was full (`--discovery-fallback proxy`).
    Proxy,
}

/// The data-dir record of a member that was removed from its cluster.
const REMOVED_KEY: &str = "removed";

/// How often the leader checks for expired keys (etcd's SYNC tick).
const EXPIRY_TICK: Duration = Duration::from_millis(500);

/// Runs a member (or, with `--proxy`, a proxy) until `shutdown` fires. A member removed from its cluster
/// cancels `shutdown` itself, stops, and returns [`RunError::Removed`].
pub async fn run(
    mut settings: Settings,
    listeners: Vec<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    // A proxy has no raft and no data but its cluster file. As in etcd, the data dir decides over the flag:
    // one holding a member's data starts a member, one holding a proxy's cluster file a proxy.
    // (A member that fell back to a proxy opened its database before discovery: its cluster file wins.)
    let proxy_dir = proxy::initialized(&settings.data_dir);
    let member_dir = DiskBackend::exists_in(&settings.data_dir) && !proxy_dir;
    if member_dir && settings.proxy != config::ProxyMode::Off {
        tracing::warn!(
            "the server is already initialized as member before, starting as etcd member..."
        );
        settings.proxy = config::ProxyMode::Off;
    }
    if !member_dir && (settings.proxy != config::ProxyMode::Off || proxy_dir) {
        return Ok(proxy::run(settings, listeners, shutdown).await?);
    }
    let dir = settings.data_dir.clone();
    let backend = tokio::task::spawn_blocking(move || DiskBackend::open(&dir))
        .await
        .map_err(|e| {
            // sled may panic on a damaged file instead of returning an error.
            RunError::Storage(StorageError::Corrupt {
                path: settings.data_dir.clone(),
                why: format!("the database failed while opening: {e}"),
            })
        })??;
    if settings.join_existing {
        resolve_joining_identity(&backend, &mut settings).await?;
    } else if let Some(url) = settings.discovery.clone()
        && let Bootstrap::Proxy = bootstrap_by_discovery(&backend, &mut settings, url).await?
    {
        drop(backend);
        settings.proxy = config::ProxyMode::On;
        return Ok(proxy::run(settings, listeners, shutdown).await?);
    }
    if backend.get_meta(REMOVED_KEY)?.is_some() {
        return Err(removed());
    }
    check_identity(&backend, &settings)?;
    backend.flush().await?;
    let backend = Arc::new(backend);
    let kv = store::Kv::new(store::Store::new(settings.history_capacity));
    let params = raft::RaftParams {
        id: settings.member_id,
        peer_url: settings.peer_urls.first().cloned().unwrap_or_default(),
        heartbeat: settings.heartbeat,
        election: settings.election,
        snapshot_count: settings.snapshot_count,
        cluster_id: settings.cluster_id,
        token: settings.token.clone(),
        initial_members: settings.initial_members.clone(),
        join_existing: settings.join_existing,
        strict_reconfig: settings.strict_reconfig,
        peer_tls: settings.peer_tls.as_ref().map(|t| t.client.clone()),
    };
    let node = raft::RaftNode::start(params, backend.clone(), kv).await?;
    let peer_listeners = settings
        .peer_listeners
        .take()
        .into_iter()
        .map(|l| {
            let tls = l
                .local_addr()
                .ok()
                .filter(|a| settings.https_peer_listeners.contains(a))
                .and(settings.peer_tls.as_ref().map(|t| t.server.clone()));
            (l, tls)
        })
        .collect();
    node.serve_peers(peer_listeners)
        .map_err(|e| RunError::Internal(format!("serving the peer listeners: {e}")))?;
    let wait = settings.election * 5;
    let attrs = raft::Attributes {
        name: settings.name.clone(),
        client_urls: settings.advertise_client_urls.clone(),
    };
    node.publish(node.is_fresh(), wait, attrs, &shutdown)
        .await
        .map_err(|e| RunError::Internal(format!("publishing member attributes: {e}")))?;
    let settings = Arc::new(settings);
    let app = Arc::new(http::App {
        node: node.clone(),
        settings: settings.clone(),
        started: store::time::now_ns(),
        metrics: http::Metrics::default(),
        shutdown: shutdown.clone(),
    });
    let tracker = TaskTracker::new();
    for listener in listeners {
        let router = client_router(app.clone());
        let token = shutdown.clone();
        if let Some(config) = settings.client_tls_for(&listener) {
            tracker.spawn(tls::serve(listener, router, config, token));
            continue;
        }
        tracker.spawn(async move {
            let addr = listener.local_addr().ok();
            // gRPC replies are several small HTTP/2 frames: without TCP_NODELAY, Nagle's algorithm holds the
            // last one until the client's delayed ACK (~40 ms per unary call, measured on Range).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!("TCP_NODELAY: {e}");
                }
            });
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
            {
                tracing::error!(?addr, "client listener failed: {e}");
            }
        });
    }
    if let Some(mode) = settings.auto_compaction {
        tracker.spawn(auto_compact(node.clone(), mode, shutdown.clone()));
    }
    {
        let node = node.clone();
        let token = shutdown.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(EXPIRY_TICK);
            let mut led_term = None;
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                // A new leader renews every lease first (as etcd's lessor does on promotion), so no lease
                // loses the time the old leader could not count.
                let st = node.status();
                if st.is_leader && led_term != Some(st.term) {
                    match node.extend_leases().await {
                        Ok(()) => led_term = Some(st.term),
                        Err(e) => tracing::warn!("renewing leases after becoming leader: {e}"),
                    }
                }
                let due = node
                    .kv()
                    .next_expiry()
                    .is_some_and(|t| t <= store::time::now_ns());
                if due
                    && node.status().is_leader
                    && let Err(e) = node.expire_due().await
                {
                    tracing::warn!("expiring keys: {e}");
                }
            }
        });
    }
    tracker.close();
    tracing::info!(name = %settings.name, id = %format!("{:x}", settings.member_id), "etcd member ready");
    let was_removed = tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = node.removed() => true,
    };
    if was_removed {
        // Recorded first, so a restart refuses even if stopping fails half-way.
        backend.put_meta(REMOVED_KEY, b"1")?;
        backend.flush().await?;
        shutdown.cancel();
    }
    tracker.wait().await;
    node.shutdown().await;
    backend.flush().await?;
    if was_removed {
        return Err(removed());
    }
    Ok(())
}

/// etcd's two lines when a removed member stops (or is started again with its data dir).
fn removed() -> RunError {
    tracing::error!("the member has been permanently removed from the cluster");
    tracing::info!("the data-dir used by this member must be removed.");
    RunError::Removed
}
