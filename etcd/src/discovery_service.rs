//! `etcd-discovery`: what discovery.etcd.io does (reference §4.2). `GET /new?size=N` creates a token in an etcd
//! cluster's v2 keys API and answers its URL as plain text; `/<token>/...` is passed through to
//! `<etcd>/v2/keys/_etcd/registry/<token>/...`, so members bootstrap with `--discovery <that URL>`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ctl::client;

/// Validated settings of the service.
#[derive(Debug, Clone)]
pub struct DiscoverySettings {
    /// host:port of the etcd member holding the registry.
    pub etcd: String,
    /// The URL prefix of the tokens this service hands out (`http://host:port`).
    pub host: String,
}

const REGISTRY: &str = "/v2/keys/_etcd/registry";

/// How long a passed-through watch may stay open.
const WATCH_TIMEOUT: Duration = Duration::from_secs(300);

/// How long any other passed-through request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves on `listener` until `shutdown` fires.
pub async fn serve(
    settings: DiscoverySettings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = Arc::new(settings);
    let app = Router::new()
        .route("/new", any(new_token))
        .route("/health", get(health))
        .route("/{token}", any(pass))
        .route("/{token}/", any(pass))
        .route("/{token}/{*rest}", any(pass))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

fn text(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// 32 hex characters from the kernel's random source.
fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn is_token(t: &str) -> bool {
    t.len() == 32
        && t.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// A blocking request to the registry's etcd, off the runtime.
async fn backend(
    etcd: String,
    method: String,
    target: String,
    form: Option<String>,
    timeout: Duration,
) -> std::io::Result<client::Response> {
    tokio::task::spawn_blocking(move || {
        client::request(&etcd, &method, &target, form.as_deref(), Some(timeout))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// `GET|POST /new[?size=N]`.
async fn new_token(
    State(s): State<Arc<DiscoverySettings>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let size = match q.get("size") {
        None => 3,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => n,
            Err(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("strconv.Atoi: parsing {v:?}: invalid syntax"),
                );
            }
        },
    };
    let Ok(token) = random_token() else {
        return text(StatusCode::BAD_REQUEST, "unable to generate token".into());
    };
    let res = backend(
        s.etcd.clone(),
        "PUT".into(),
        format!("{REGISTRY}/{token}/_config/size"),
        Some(format!("value={size}")),
        REQUEST_TIMEOUT,
    )
    .await;
    match res {
        Ok(r) if r.status == 201 || r.status == 200 => text(
            StatusCode::OK,
            format!("{}/{token}", s.host.trim_end_matches('/')),
        ),
        _ => text(StatusCode::BAD_REQUEST, "unable to generate token".into()),
    }
}

/// `GET /health`: a token can be created and deleted.
async fn health(State(s): State<Arc<DiscoverySettings>>) -> Response {
    let Ok(token) = random_token() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "unhealthy".into());
    };
    let key = format!("{REGISTRY}/{token}");
    let made = backend(
        s.etcd.clone(),
        "PUT".into(),
        format!("{key}/_config/size"),
        Some("value=0".into()),
        REQUEST_TIMEOUT,
    )
    .await;
    let removed = backend(
        s.etcd.clone(),
        "DELETE".into(),
        format!("{key}?recursive=true"),
        None,
        REQUEST_TIMEOUT,
    )
    .await;
    match (made, removed) {
        (Ok(a), Ok(b)) if a.status == 201 && b.status == 200 => text(StatusCode::OK, "OK".into()),
        _ => text(StatusCode::INTERNAL_SERVER_ERROR, "unhealthy".into()),
    }
}

/// `/<token>[/<path>]`: passed through to the registry's keys API; status, body and `X-Etcd-Index` unchanged.
async fn pass(
    State(s): State<Arc<DiscoverySettings>>,
    method: Method,
    path: Path<Vec<(String, String)>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let token = path
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let rest = path
        .iter()
        .find(|(k, _)| k == "rest")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if !is_token(&token) || !matches!(method, Method::GET | Method::PUT | Method::DELETE) {
        return text(StatusCode::NOT_FOUND, "404 page not found\n".into());
    }
    let rest: String = rest
        .split('/')
        .map(client::encode)
        .collect::<Vec<_>>()
        .join("/");
    let mut target = format!("{REGISTRY}/{token}");
    if !rest.is_empty() {
        target.push('/');
        target.push_str(&rest);
    }
    let wait = query.as_deref().is_some_and(|q| q.contains("wait=true"));
    if let Some(q) = &query {
        target.push('?');
        target.push_str(q);
    }
    let form = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
    let timeout = if wait { WATCH_TIMEOUT } else { REQUEST_TIMEOUT };
    match backend(s.etcd.clone(), method.to_string(), target, form, timeout).await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let index = r.header("x-etcd-index").map(str::to_string);
            let mut resp = (status, r.body).into_response();
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            if let Some(i) = index.and_then(|i| HeaderValue::from_str(&i).ok()) {
                resp.headers_mut().insert("x-etcd-index", i);
            }
            resp
        }
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            format!("registry unreachable: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_hex() {
        let t = random_token().unwrap();
        assert!(is_token(&t), "{t}");
        assert_ne!(t, random_token().unwrap());
        assert!(!is_token("new"));
        assert!(!is_token(&"A".repeat(32)));
    }
}
