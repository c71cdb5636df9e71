//! The client HTTP API (axum): keys, members, stats, version, health and metrics, with CORS on every reply.

mod error;
mod keys;
mod members;
mod metrics;
mod params;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::config::Settings;

/// etcd's reply header names, built once: a `&str` name is parsed again on every insert.
pub(crate) mod names {
    use axum::http::HeaderName;
    pub(crate) const X_ETCD_INDEX: HeaderName = HeaderName::from_static("x-etcd-index");
    pub(crate) const X_RAFT_INDEX: HeaderName = HeaderName::from_static("x-raft-index");
    pub(crate) const X_RAFT_TERM: HeaderName = HeaderName::from_static("x-raft-term");
    pub(crate) const X_ETCD_CLUSTER_ID: HeaderName = HeaderName::from_static("x-etcd-cluster-id");
}
use crate::raft::RaftNode;

pub use error::status as error_status;
pub use metrics::Metrics;

/// What the handlers share.
pub struct App {
    /// This member's raft node and store.
    pub node: RaftNode,
    /// Validated settings.
    pub settings: Arc<Settings>,
    /// Start time (unix ns).
    pub started: i64,
    /// Request counters.
    pub metrics: Metrics,
    /// Fired at shutdown; ends open watches.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Decodes `%XX` escapes in a path (`+` stays as is, unlike in forms).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hexval(b[i + 1]), hexval(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hexval(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Whether Go's ServeMux would leave `p` as it is (no empty, `.` or `..` segment but a trailing slash):
/// the common case, checked without allocating.
fn is_clean_request_path(p: &str) -> bool {
    if p == "/" {
        return true;
    }
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// Go's ServeMux path cleaning: `//`, `.` and `..` are removed, a trailing slash is kept.
fn clean_request_path(p: &str) -> String {
    let mut c = crate::store::path::clean(p);
    if p.ends_with('/') && c != "/" {
        c.push('/');
    }
    c
}

async fn common(req: Request, next: Next) -> Response {
    let mut resp = if req.method() == Method::OPTIONS {
        StatusCode::OK.into_response()
    } else if is_clean_request_path(req.uri().path()) {
        next.run(req).await
    } else {
        let path = req.uri().path().to_string();
        let clean = clean_request_path(&path);
        if clean != path {
            let loc = match req.uri().query() {
                Some(q) => format!("{clean}?{q}"),
                None => clean,
            };
            let mut r = (
                StatusCode::MOVED_PERMANENTLY,
                format!("<a href=\"{loc}\">Moved Permanently</a>.\n\n"),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&loc) {
                r.headers_mut().insert("location", v);
            }
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        } else {
            next.run(req).await
        }
    };
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    resp
}

async fn not_found() -> Response {
    let mut r = (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The router for the client port.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v2/keys", any(keys::handle))
        .route("/v2/keys/", any(keys::handle))
        .route("/v2/keys/{*key}", any(keys::handle))
        .route("/version", get(members::version))
        .route("/health", get(members::health))
        .route("/v2/machines", get(members::machines))
        .route("/v2/members", any(members::members))
        .route("/v2/members/", any(members::members))
        .route("/v2/members/{id}", any(members::member))
        .route("/v2/stats/self", get(members::stats_self))
        .route("/v2/stats/leader", get(members::stats_leader))
        .route("/v2/stats/store", get(members::stats_store))
        .route("/v2/auth/enable", any(members::auth_enable))
        .route("/v2/auth/{*rest}", any(members::auth_other))
        .route("/metrics", get(metrics::handle))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), metrics::count))
        .layer(middleware::from_fn(common))
        .with_state(app)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{clean_request_path, is_clean_request_path};

    proptest! {
        /// The allocation-free check never lets through a path that cleaning would change.
        #[test]
        fn a_path_called_clean_is_left_as_it_is(p in "[/a.]{0,12}") {
            if is_clean_request_path(&p) {
                prop_assert_eq!(clean_request_path(&p), p);
            }
        }
    }

    #[test]
    fn common_paths_are_clean_and_odd_ones_are_not() {
        for p in ["/", "/v2/keys", "/v2/keys/", "/v2/keys/a.b/..c", "/version"] {
            assert!(is_clean_request_path(p), "{p}");
        }
        for p in [
            "",
            "//",
            "/v2//keys",
            "/v2/./keys",
            "/v2/keys/..",
            "/v2/keys/../",
            "v2",
        ] {
            assert!(!is_clean_request_path(p), "{p}");
        }
    }
}
