//! etcd's v2 proxy (`--proxy on|readonly`, or a member that found the discovery registry full): no raft and no
//! data but `<data-dir>/proxy/cluster`; client requests are forwarded to the members' client URLs.
//!
//! The member list comes from the peers: ours answer the peer transport's `ClusterInfo` call, Go etcd's answer
//! `GET /members` on their peer URLs; both are tried. It is refreshed every `--proxy-refresh-interval`, and the
//! peer URLs it names are written back to the cluster file (etcd does both), so the proxy follows membership
//! changes across restarts. An endpoint that fails is skipped for `--proxy-failure-wait`.
//!
//! TLS as etcd's proxy does it: `https://` listen URLs serve `--cert-file`; requests to `https://` members
//! verify them against `--trusted-ca-file` and present `--cert-file` (the `--peer-*` files when no client ones
//! are given); the member list is fetched from `https://` peers with the peer TLS files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ProxyMode, ProxyTiming, Settings};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The cluster file could not be read or written.
    #[error("proxy: {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The cluster file or the discovery registry gave no usable peer URLs.
    #[error("proxy: {0}")]
    Cluster(String),
    /// Something the proxy does not do yet.
    #[error("proxy: {0}")]
    Unsupported(String),
}

/// The cluster file, as etcd writes it.
#[derive(Debug, Serialize, Deserialize)]
struct ClusterFile {
    #[serde(rename = "PeerURLs")]
    peer_urls: Vec<String>,
}

fn cluster_file(data_dir: &Path) -> PathBuf {
    data_dir.join("proxy").join("cluster")
}

/// Whether `data_dir` belongs to a proxy (it holds a cluster file).
pub fn initialized(data_dir: &Path) -> bool {
    cluster_file(data_dir).is_file()
}

fn read_cluster_file(path: &Path) -> Result<Vec<String>, ProxyError> {
    let bytes = std::fs::read(path).map_err(|source| ProxyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let f: ClusterFile = serde_json::from_slice(&bytes)
        .map_err(|e| ProxyError::Cluster(format!("{}: {e}", path.display())))?;
    Ok(f.peer_urls)
}

/// Writes the cluster file atomically (a temporary file renamed over it, as etcd does).
fn write_cluster_file(path: &Path, peer_urls: &[String]) -> Result<(), ProxyError> {
    let io = |source| ProxyError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let bytes = serde_json::to_vec(&ClusterFile {
        peer_urls: peer_urls.to_vec(),
    })
    .map_err(|e| ProxyError::Cluster(e.to_string()))?;
    let tmp = path.with_extension("bak");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// One member's client URL and when it may be tried again after a failure.
struct Endpoint {
    url: String,
    failed_until: Option<Instant>,
}

/// The client URLs requests go to.
#[derive(Default)]
struct Directory {
    endpoints: Mutex<Vec<Endpoint>>,
    /// Rotates the first endpoint tried, spreading clients over the members.
    next: AtomicUsize,
}

impl Directory {
    /// The endpoints not waiting out a failure, starting at the next in turn.
    fn available(&self) -> Vec<String> {
        let now = Instant::now();
        let Ok(eps) = self.endpoints.lock() else {
            return Vec::new();
        };
        let mut up: Vec<String> = eps
            .iter()
            .filter(|e| e.failed_until.is_none_or(|t| t <= now))
            .map(|e| e.url.clone())
            .collect();
        if !up.is_empty() {
            let n = self.next.fetch_add(1, Ordering::Relaxed) % up.len();
            up.rotate_left(n);
        }
        up
    }

    fn failed(&self, url: &str, wait: Duration) {
        if let Ok(mut eps) = self.endpoints.lock()
            && let Some(e) = eps.iter_mut().find(|e| e.url == url)
        {
            e.failed_until = Some(Instant::now() + wait);
        }
    }

    /// Replaces the list, keeping the failure state of endpoints that stay.
    fn set(&self, urls: Vec<String>) {
        if let Ok(mut eps) = self.endpoints.lock() {
            let old = std::mem::take(&mut *eps);
            *eps = urls
                .into_iter()
                .map(|url| Endpoint {
                    failed_until: old
                        .iter()
                        .find(|e| e.url == url)
                        .and_then(|e| e.failed_until),
                    url,
                })
                .collect();
        }
    }

    fn is_empty(&self) -> bool {
        self.endpoints.lock().map(|e| e.is_empty()).unwrap_or(true)
    }
}

type HttpClient = Client<crate::tls::Connector, Full<Bytes>>;

struct Proxy {
    directory: Directory,
    /// To the members' client URLs.
    client: HttpClient,
    /// To Go etcd's peer URLs (`GET /members`).
    peer_client: HttpClient,
    /// To our members' peer URLs (the peer transport).
    peer_tls: crate::raft::PeerClientTls,
    readonly: bool,
    timing: ProxyTiming,
    max_body: usize,
    shutdown: CancellationToken,
}

/// A member as Go etcd's peer `GET /members` lists it (ids are numbers there).
#[derive(Deserialize)]
struct PeerMember {
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    client_urls: Vec<String>,
}

/// The members' (peer URLs, client URLs), from the first peer that answers.
async fn fetch_members(
    proxy: &Proxy,
    peers: &[String],
    timeout: Duration,
) -> Option<Vec<(Vec<String>, Vec<String>)>> {
    for p in peers {
        match crate::raft::cluster_members(p, timeout, &proxy.peer_tls).await {
            Ok((_, members)) => {
                return Some(
                    members
                        .into_iter()
                        .map(|m| (m.peer_urls, m.client_urls))
                        .collect(),
                );
            }
            Err(e) => tracing::debug!(peer = %p, "proxy: cluster info: {e}"),
        }
        match etcd_members(&proxy.peer_client, p, timeout).await {
            Ok(members) => {
                return Some(
                    members
                        .into_iter()
                        .map(|m| (m.peer_urls, m.client_urls))
                        .collect(),
                );
            }
            Err(e) => tracing::debug!(peer = %p, "proxy: GET /members: {e}"),
        }
    }
    None
}

/// Go etcd's peer endpoint for its member list.
async fn etcd_members(
    client: &HttpClient,
    peer: &str,
    timeout: Duration,
) -> Result<Vec<PeerMember>, String> {
    let req = axum::http::Request::get(format!("{}/members", peer.trim_end_matches('/')))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let fetch = async {
        let res = client.request(req).await.map_err(|e| e.to_string())?;
        if res.status() != StatusCode::OK {
            return Err(format!("status {}", res.status()));
        }
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| format!("no reply within {timeout:?}"))?
}

/// Asks the peers for the members; updates the endpoints and, when the peer URLs changed, the cluster file.
async fn refresh(proxy: &Proxy, peers: &mut Vec<String>, file: &Path) {
    let timeout = proxy.timing.dial.max(Duration::from_millis(500)) * 2;
    let Some(members) = fetch_members(proxy, peers, timeout).await else {
        tracing::warn!(
            "proxy: no member answered at {}; keeping the endpoints",
            peers.join(",")
        );
        return;
    };
    let mut clients: Vec<String> = members
        .iter()
        .flat_map(|(_, c)| c.iter().map(|u| u.trim_end_matches('/').to_string()))
        .collect();
    clients.sort();
    clients.dedup();
    let mut new_peers: Vec<String> = members.into_iter().flat_map(|(p, _)| p).collect();
    new_peers.sort();
    new_peers.dedup();
    proxy.directory.set(clients.clone());
    let mut old = peers.clone();
    old.sort();
    if !new_peers.is_empty() && old != new_peers {
        tracing::info!(peers = %new_peers.join(","), "proxy: updated peer urls in cluster file");
        let (path, urls) = (file.to_path_buf(), new_peers.clone());
        match tokio::task::spawn_blocking(move || write_cluster_file(&path, &urls)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("{e}"),
            Err(e) => tracing::warn!("proxy: writing the cluster file: {e}"),
        }
        *peers = new_peers;
    }
    tracing::debug!(endpoints = %clients.join(","), "proxy: endpoints found");
}

/// Runs the proxy until `shutdown` fires.
pub async fn run(
    settings: Settings,
    listeners: Vec<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    tracing::warn!("proxy: this proxy supports v2 API only!");
    let file = cluster_file(&settings.data_dir);
    let mut peers = if file.is_file() {
        if settings.discovery.is_some() {
            tracing::warn!(
                "proxy: discovery token ignored since the proxy has already been initialized"
            );
        }
        let f = file.clone();
        tokio::task::spawn_blocking(move || read_cluster_file(&f))
            .await
            .map_err(|e| ProxyError::Cluster(e.to_string()))??
    } else {
        let peers = match settings.discovery.clone() {
            Some(url) => {
                let initial =
                    tokio::task::spawn_blocking(move || crate::discovery::registered_cluster(&url))
                        .await
                        .map_err(|e| ProxyError::Cluster(e.to_string()))?
                        .map_err(|e| ProxyError::Cluster(e.to_string()))?;
                crate::config::parse_initial_cluster(&initial)
                    .map_err(|e| ProxyError::Cluster(format!("discovery: {e}")))?
                    .into_iter()
                    .flat_map(|(_, urls)| urls)
                    .collect()
            }
            None => settings
                .initial_members
                .values()
                .flatten()
                .cloned()
                .collect::<Vec<_>>(),
        };
        let (f, p) = (file.clone(), peers.clone());
        tokio::task::spawn_blocking(move || write_cluster_file(&f, &p))
            .await
            .map_err(|e| ProxyError::Cluster(e.to_string()))??;
        peers
    };
    if peers.is_empty() {
        return Err(ProxyError::Cluster(
            "no peer URLs to ask for the cluster".into(),
        ));
    }
    let dial = Some(settings.proxy_timing.dial).filter(|d| !d.is_zero());
    let http1 = [&b"http/1.1"[..]];
    let upstream = match &settings.proxy_client_tls {
        Some(c) => c.clone(),
        None => crate::tls::client_config(&crate::tls::Trust::System, None, &http1)
            .map_err(|e| ProxyError::Unsupported(e.to_string()))?,
    };
    let peer_tls = settings.peer_tls.as_ref().map(|t| t.client.clone());
    // The peer configuration offers h2 (for the peer transport); `GET /members` is asked over HTTP/1.1.
    let peer_http1 = match &peer_tls {
        Some(c) => {
            let mut c = rustls::ClientConfig::clone(c);
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(c)
        }
        None => upstream.clone(),
    };
    let client =
        |tls| Client::builder(TokioExecutor::new()).build(crate::tls::Connector::new(tls, dial));
    let proxy = Arc::new(Proxy {
        directory: Directory::default(),
        client: client(upstream),
        peer_client: client(peer_http1),
        peer_tls,
        readonly: settings.proxy == ProxyMode::Readonly,
        timing: settings.proxy_timing,
        max_body: settings.max_body_bytes,
        shutdown: shutdown.clone(),
    });
    // etcd fills the endpoints once before serving.
    refresh(&proxy, &mut peers, &file).await;
    let tracker = TaskTracker::new();
    {
        let proxy = proxy.clone();
        let token = shutdown.clone();
        tracker.spawn(async move {
            loop {
                // While no member is known, ask every second (etcd does too), not once per interval.
                let wait = if proxy.directory.is_empty() {
                    proxy.timing.refresh.min(Duration::from_secs(1))
                } else {
                    proxy.timing.refresh
                };
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                refresh(&proxy, &mut peers, &file).await;
            }
        });
    }
    for listener in listeners {
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(proxy.clone());
        let token = shutdown.clone();
        if let Some(config) = settings.client_tls_for(&listener) {
            tracker.spawn(crate::tls::serve(listener, router, config, token));
            continue;
        }
        tracker.spawn(async move {
            let addr = listener.local_addr().ok();
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
            {
                tracing::error!(?addr, "proxy listener failed: {e}");
            }
        });
    }
    tracker.close();
    tracing::info!(
        mode = if proxy.readonly { "readonly" } else { "on" },
        "etcd proxy ready"
    );
    shutdown.cancelled().await;
    tracker.wait().await;
    Ok(())
}

/// Headers that belong to one connection, never forwarded (RFC 7230 §6.1, as Go's reverse proxy drops them).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        h.remove(*name);
    }
}

fn http_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "message": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Forwards one client request to the first endpoint that answers.
async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    // etcd's readonly proxy answers anything but GET with a bare 501.
    if proxy.readonly && req.method() != Method::GET {
        return StatusCode::NOT_IMPLEMENTED.into_response();
    }
    if req.uri().path() == "/v2/config/local/proxy" {
        let body = serde_json::json!({ "endpoints": proxy.directory.available() }).to_string();
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
    }
    let (parts, body) = req.into_parts();
    // Buffered, so the request can be sent again to the next endpoint when one fails.
    let body = match axum::body::to_bytes(body, proxy.max_body).await {
        Ok(b) => b,
        Err(e) => return http_error(StatusCode::BAD_REQUEST, &format!("httpproxy: {e}")),
    };
    let endpoints = proxy.directory.available();
    if endpoints.is_empty() {
        return http_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "httpproxy: zero endpoints currently available",
        );
    }
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    for ep in &endpoints {
        let mut out = axum::http::Request::new(Full::new(body.clone()));
        *out.method_mut() = parts.method.clone();
        *out.headers_mut() = headers.clone();
        match format!("{ep}{target}").parse() {
            Ok(uri) => *out.uri_mut() = uri,
            Err(e) => {
                tracing::warn!(endpoint = %ep, "proxy: bad URL: {e}");
                continue;
            }
        }
        let sent = proxy.client.request(out);
        let res = if proxy.timing.read.is_zero() {
            sent.await.map_err(|e| e.to_string())
        } else {
            match tokio::time::timeout(proxy.timing.read, sent).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no reply within {:?}", proxy.timing.read)),
            }
        };
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(endpoint = %ep, "proxy: failed to reach the member: {e}");
                proxy.directory.failed(ep, proxy.timing.failure_wait);
                continue;
            }
        };
        let (mut rparts, rbody) = res.into_parts();
        strip_hop_by_hop(&mut rparts.headers);
        // Streamed as it arrives (watches), and cut when the proxy stops so shutdown does not wait for them.
        let stream = rbody
            .into_data_stream()
            .take_until(proxy.shutdown.clone().cancelled_owned());
        return Response::from_parts(rparts, Body::from_stream(stream));
    }
    http_error(
        StatusCode::BAD_GATEWAY,
        &format!(
            "httpproxy: unable to get response from {} endpoint(s)",
            endpoints.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_skips_failed_endpoints_until_the_wait_ends() {
        let d = Directory::default();
        d.set(vec!["http://a".into(), "http://b".into()]);
        assert_eq!(d.available().len(), 2);
        d.failed("http://a", Duration::from_secs(60));
        assert_eq!(d.available(), vec!["http://b".to_string()]);
        // A refresh keeps the failure of an endpoint that stays, and adds new ones as available.
        d.set(vec!["http://a".into(), "http://c".into()]);
        let mut up = d.available();
        up.sort();
        assert_eq!(up, vec!["http://c".to_string()]);
        d.failed("http://c", Duration::ZERO);
        assert_eq!(d.available(), vec!["http://c".to_string()]);
    }

    #[test]
    fn cluster_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let f = cluster_file(dir.path());
        assert!(!initialized(dir.path()));
        write_cluster_file(&f, &["http://p:1".into()]).unwrap();
        assert!(initialized(dir.path()));
        assert_eq!(
            read_cluster_file(&f).unwrap(),
            vec!["http://p:1".to_string()]
        );
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            r#"{"PeerURLs":["http://p:1"]}"#
        );
    }
}
