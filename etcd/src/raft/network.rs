//! The raft peer transport, client side: openraft's RPCs over gRPC (`proto::etcdraftpb`) to a peer's first
//! peer URL, with per-follower counters for `/v2/stats/leader`.
//!
//! Payloads are openraft's serde-serialised requests and replies as JSON bytes, so openraft types stay out of
//! the protobuf contract. A connection failure is reported as openraft's `Unreachable`, which makes openraft
//! back off (100 ms doubling to 1 s) instead of hammering a dead peer on a loaded machine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use proto::etcdraftpb::Payload;
use proto::etcdraftpb::peer_client::PeerClient;
use proto::tonic;
use proto::tonic::transport::{Channel, Endpoint};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{NodeId, TypeConfig};

/// The largest gRPC message either side accepts (a batch of entries or one snapshot chunk).
pub(crate) const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// The status message a member answers a removed member's raft requests with.
pub(crate) const REMOVED: &str = "the member has been permanently removed from the cluster";

/// How long connecting to a peer may take before the peer counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Which peer RPC to call.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Forward,
    ReadIndex,
    ChangeMembers,
    ClusterInfo,
}

/// Why a peer call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The peer could not be reached (nothing was delivered).
    #[error("cannot reach peer {addr}: {why}")]
    Unreachable {
        /// The peer URL.
        addr: String,
        /// The cause.
        why: String,
    },
    /// The call failed after it may have been delivered.
    #[error("peer {addr}: {why}")]
    Failed {
        /// The peer URL.
        addr: String,
        /// The cause.
        why: String,
    },
    /// The peer refused the call because this member was removed from the cluster (etcd answers 410).
    #[error("peer {addr}: {}", REMOVED)]
    Removed {
        /// The peer URL.
        addr: String,
    },
    /// A payload could not be encoded or decoded.
    #[error("peer {addr}: bad payload: {why}")]
    Payload {
        /// The peer URL.
        addr: String,
        /// The cause.
        why: String,
    },
}

/// The first URL of a comma-separated peer URL list (how a member's `BasicNode.addr` holds its peer URLs).
pub(crate) fn first_url(addr: &str) -> &str {
    addr.split(',').next().unwrap_or("").trim()
}

/// The client side of peer TLS (`--peer-cert-file`, `--peer-trusted-ca-file`), shared by every connection to
/// an `https://` peer; `None` without `--peer-cert-file`.
pub type PeerClientTls = Option<Arc<rustls::ClientConfig>>;

/// What dials an `https://` peer when this member has no peer certificate: etcd then trusts the system's CA
/// bundle and presents no client certificate.
fn anonymous_tls() -> Option<Arc<rustls::ClientConfig>> {
    static CONFIG: std::sync::OnceLock<Option<Arc<rustls::ClientConfig>>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            crate::tls::client_config(&crate::tls::Trust::System, None, &[b"h2"])
                .inspect_err(|e| tracing::warn!("peer TLS without a peer certificate: {e}"))
                .ok()
        })
        .clone()
}

/// A lazily connected gRPC client to one peer.
#[derive(Clone)]
pub(crate) struct PeerConn {
    addr: String,
    client: Option<PeerClient<Channel>>,
}

impl PeerConn {
    /// A client for `addr` (a comma-separated peer URL list; the first is used), over TLS with `tls` for an
    /// `https://` one. Connects on first use.
    pub(crate) fn new(addr: &str, tls: &PeerClientTls) -> PeerConn {
        let url = first_url(addr).to_string();
        let https = url.starts_with("https://");
        let tls = if https {
            tls.clone().or_else(anonymous_tls)
        } else {
            None
        };
        let client = Endpoint::from_shared(url.clone()).ok().and_then(|e| {
            let e = e
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5));
            let ch = match tls {
                Some(tls) => e.connect_with_connector_lazy(crate::tls::Connector::new(tls, None)),
                None if https => return None,
                None => e.connect_lazy(),
            };
            Some(
                PeerClient::new(ch)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            )
        });
        PeerConn { addr: url, client }
    }

    /// Sends `req` as JSON and decodes the JSON reply, within `ttl`.
    pub(crate) async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, CallError> {
        let addr = self.addr.clone();
        let Some(client) = self.client.as_mut() else {
            return Err(CallError::Unreachable {
                addr,
                why: "invalid peer URL (or no TLS configuration for https)".into(),
            });
        };
        let data = serde_json::to_vec(req).map_err(|e| CallError::Payload {
            addr: addr.clone(),
            why: e.to_string(),
        })?;
        let mut request = tonic::Request::new(Payload { data });
        request.set_timeout(ttl);
        let fut = async {
            match rpc {
                Rpc::AppendEntries => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::InstallSnapshot => client.install_snapshot(request).await,
                Rpc::Forward => client.forward(request).await,
                Rpc::ReadIndex => client.read_index(request).await,
                Rpc::ChangeMembers => client.change_members(request).await,
                Rpc::ClusterInfo => client.cluster_info(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, fut).await {
            Err(_) => {
                return Err(CallError::Failed {
                    addr,
                    why: format!("no reply within {ttl:?}"),
                });
            }
            Ok(Err(status)) => return Err(status_error(addr, &status)),
            Ok(Ok(r)) => r.into_inner(),
        };
        serde_json::from_slice(&reply.data).map_err(|e| CallError::Payload {
            addr,
            why: e.to_string(),
        })
    }
}

/// Connection failures (nothing delivered) become `Unreachable`; the rest may have been delivered.
fn status_error(addr: String, status: &tonic::Status) -> CallError {
    if status.code() == tonic::Code::FailedPrecondition && status.message() == REMOVED {
        return CallError::Removed { addr };
    }
    let text = format!("{status}");
    let not_sent = status.code() == tonic::Code::Unavailable
        && (text.contains("tcp connect error")
            || text.contains("onnection refused")
            || text.contains("error trying to connect")
            || text.contains("No route to host")
            || text.contains("timed out")
            || text.contains("transport error")
            // Any failure to connect, a refused TLS handshake included (tonic names its connector's errors).
            || text.contains("ConnectError"));
    if not_sent {
        CallError::Unreachable { addr, why: text }
    } else {
        CallError::Failed { addr, why: text }
    }
}

/// Latency and success counters of one follower, as etcd's `/v2/stats/leader` reports them.
#[derive(Debug, Clone, Default)]
pub struct FollowerStats {
    /// Successful append-entries calls.
    pub success: u64,
    /// Failed append-entries calls.
    pub fail: u64,
    /// Last latency in seconds.
    pub current: f64,
    /// Mean latency in seconds.
    pub average: f64,
    /// Sum of squared latencies (for the standard deviation).
    sum_sq: f64,
    /// Smallest latency in seconds.
    pub minimum: f64,
    /// Largest latency in seconds.
    pub maximum: f64,
    /// When the follower last answered.
    pub last_ok: Option<Instant>,
    /// When a call to the follower last failed.
    pub last_fail: Option<Instant>,
}

impl FollowerStats {
    fn record(&mut self, latency: Duration) {
        let l = latency.as_secs_f64();
        self.success += 1;
        let n = self.success as f64;
        self.current = l;
        self.average += (l - self.average) / n;
        self.sum_sq += l * l;
        if self.success == 1 || l < self.minimum {
            self.minimum = l;
        }
        if l > self.maximum {
            self.maximum = l;
        }
        self.last_ok = Some(Instant::now());
    }

    /// Standard deviation of the latencies in seconds.
    pub fn standard_deviation(&self) -> f64 {
        if self.success == 0 {
            return 0.0;
        }
        let n = self.success as f64;
        (self.sum_sq / n - self.average * self.average)
            .max(0.0)
            .sqrt()
    }
}

/// Counters shared by the transport and `/v2/stats`.
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Per follower (by member id).
    pub followers: Mutex<HashMap<u64, FollowerStats>>,
    /// Append-entries requests this member sent.
    pub sent_appends: std::sync::atomic::AtomicU64,
    /// Append-entries requests this member received.
    pub received_appends: std::sync::atomic::AtomicU64,
    /// Snapshots this member received completely and installed.
    pub snapshots_received: std::sync::atomic::AtomicU64,
}

impl PeerStats {
    fn record(&self, target: u64, outcome: Result<Duration, ()>) {
        self.sent_appends
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut f) = self.followers.lock() {
            let s = f.entry(target).or_default();
            match outcome {
                Ok(l) => s.record(l),
                Err(()) => {
                    s.fail += 1;
                    s.last_fail = Some(Instant::now());
                }
            }
        }
    }

    /// Members the leader heard from within `within`, whose last call did not fail.
    pub fn recently_heard(&self, within: Duration) -> Vec<u64> {
        let Ok(f) = self.followers.lock() else {
            return Vec::new();
        };
        f.iter()
            .filter(|(_, s)| {
                s.last_ok
                    .is_some_and(|ok| ok.elapsed() <= within && s.last_fail.is_none_or(|f| f < ok))
            })
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Creates connections to peers.
pub struct Network {
    pub(crate) stats: Arc<PeerStats>,
    /// Fired when a peer answers that this member was removed.
    pub(crate) removed: tokio_util::sync::CancellationToken,
    /// For `https://` peers.
    pub(crate) tls: PeerClientTls,
}

/// A connection to one peer.
pub struct Connection {
    target: NodeId,
    conn: PeerConn,
    stats: Arc<PeerStats>,
    removed: tokio_util::sync::CancellationToken,
}

fn rpc_error<E: std::error::Error>(target: NodeId, e: CallError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        _ => {
            tracing::debug!(target = %format!("{target:x}"), "peer call failed: {e}");
            RPCError::Network(NetworkError::new(&e))
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Connection {
            target,
            conn: PeerConn::new(&node.addr, &self.tls),
            stats: self.stats.clone(),
            removed: self.removed.clone(),
        }
    }
}

impl Connection {
    async fn send<Req: Serialize, Resp: DeserializeOwned, E>(
        &mut self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let res: Result<Result<Resp, RaftError<NodeId, E>>, CallError> =
            self.conn.call(rpc, req, option.hard_ttl()).await;
        match res {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(CallError::Removed { addr }) => {
                if !self.removed.is_cancelled() {
                    tracing::warn!(peer = %addr, "the peer refused this member's request: it was removed from the cluster");
                    self.removed.cancel();
                }
                Err(rpc_error(self.target, CallError::Removed { addr }))
            }
            Err(e) => Err(rpc_error(self.target, e)),
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let start = Instant::now();
        let res = self.send(Rpc::AppendEntries, &req, &option).await;
        self.stats.record(
            self.target,
            match &res {
                Ok(_) => Ok(start.elapsed()),
                Err(_) => Err(()),
            },
        );
        res
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(Rpc::InstallSnapshot, &req, &option).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.send(Rpc::Vote, &req, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(
            (0..).map(|i: u32| {
                Duration::from_millis(100u64 << i.min(3)).min(Duration::from_secs(1))
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follower_latency_stats() {
        let mut s = FollowerStats::default();
        s.record(Duration::from_millis(10));
        s.record(Duration::from_millis(30));
        assert_eq!(s.success, 2);
        assert!((s.average - 0.02).abs() < 1e-9);
        assert!((s.minimum - 0.01).abs() < 1e-9);
        assert!((s.maximum - 0.03).abs() < 1e-9);
        assert!((s.standard_deviation() - 0.01).abs() < 1e-9);
    }

    #[test]
    fn first_of_several_peer_urls() {
        assert_eq!(first_url("http://a:1,http://b:2"), "http://a:1");
        assert_eq!(first_url(""), "");
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", l.local_addr().unwrap());
        drop(l);
        let mut c = PeerConn::new(&addr, &None);
        let r: Result<u64, _> = c.call(Rpc::Vote, &1u64, Duration::from_secs(2)).await;
        assert!(matches!(r, Err(CallError::Unreachable { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn an_https_peer_on_a_closed_port_or_without_tls_is_unreachable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("https://{}", l.local_addr().unwrap());
        drop(l);
        let mut c = PeerConn::new(&addr, &None);
        let r: Result<u64, _> = c.call(Rpc::Vote, &1u64, Duration::from_secs(2)).await;
        assert!(matches!(r, Err(CallError::Unreachable { .. })), "{r:?}");
        // A listener that speaks no TLS: the handshake fails, nothing is delivered.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("https://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = tokio::io::AsyncWriteExt::write_all(
                    &mut s,
                    b"HTTP/1.1 400 Bad Request\r\n\r\n",
                )
                .await;
            }
        });
        let mut c = PeerConn::new(&addr, &None);
        let r: Result<u64, _> = c.call(Rpc::Vote, &1u64, Duration::from_secs(2)).await;
        assert!(matches!(r, Err(CallError::Unreachable { .. })), "{r:?}");
    }
}
