//! Prometheus text metrics at `/metrics`, named like etcd's where it has them.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::App;

/// HTTP request counters.
#[derive(Default)]
pub struct Metrics {
    gets: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
}

/// Counts each request by kind and outcome.
pub async fn count(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let read = req.method() == Method::GET || req.method() == Method::HEAD;
    let resp = next.run(req).await;
    let m = &app.metrics;
    if read { &m.gets } else { &m.writes }.fetch_add(1, Ordering::Relaxed);
    if resp.status().is_server_error() || resp.status().is_client_error() {
        m.errors.fetch_add(1, Ordering::Relaxed);
    }
    resp
}

/// `GET /metrics`.
pub async fn handle(State(app): State<Arc<App>>) -> Response {
    let st = app.node.status();
    let stats = app.node.kv().stats();
    let mut s = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = write!(
            s,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        );
    };
    metric(
        "etcd_server_has_leader",
        "gauge",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        st.leader.is_some() as u64,
    );
    metric(
        "etcd_server_is_leader",
        "gauge",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        st.is_leader as u64,
    );
    let me = app.node.id();
    metric(
        "etcd_network_snapshot_receive_success",
        "counter",
        "Total number of successful snapshot receives.",
        app.node
            .peer_stats()
            .snapshots_received
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    metric(
        "etcd_server_is_learner",
        "gauge",
        "Whether or not this member is a learner. 1 if is, 0 otherwise.",
        app.node
            .members()
            .iter()
            .any(|m| m.member.id == me && m.is_learner) as u64,
    );
    metric(
        "etcd_server_proposals_applied_total",
        "gauge",
        "The total number of consensus proposals applied.",
        st.applied,
    );
    metric(
        "etcd_server_term",
        "gauge",
        "The current raft term.",
        st.term,
    );
    metric(
        "etcd_debugging_store_watchers",
        "gauge",
        "Count of currently active watchers.",
        stats.watchers,
    );
    metric(
        "etcd_debugging_store_expires_total",
        "counter",
        "Total number of expired keys.",
        stats.expire_count,
    );
    metric(
        "etcd_http_reads_total",
        "counter",
        "HTTP GET and HEAD requests served.",
        app.metrics.gets.load(Ordering::Relaxed),
    );
    metric(
        "etcd_http_writes_total",
        "counter",
        "HTTP requests other than GET and HEAD.",
        app.metrics.writes.load(Ordering::Relaxed),
    );
    metric(
        "etcd_http_failed_total",
        "counter",
        "HTTP requests answered with a 4xx or 5xx status.",
        app.metrics.errors.load(Ordering::Relaxed),
    );
    let mut r = s.into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
