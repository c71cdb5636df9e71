//! `/version`, `/health`, `/v2/machines`, `/v2/members` and `/v2/stats/*`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::App;
use super::error::message;
use crate::cluster::Member;
use crate::config::{CLUSTER_VERSION, ETCD_VERSION};
use crate::store::time::{now_ns, rfc3339_nano};

fn json_reply(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn with_cluster(app: &App, mut r: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("{:x}", app.settings.cluster_id)) {
        r.headers_mut().insert("x-etcd-cluster-id", v);
    }
    r
}

fn me(app: &App) -> Member {
    Member {
        id: app.settings.member_id,
        name: app.settings.name.clone(),
        peer_urls: app.settings.peer_urls.clone(),
        client_urls: app.settings.advertise_client_urls.clone(),
    }
}

/// `GET /version`.
pub async fn version() -> Response {
    json_reply(
        StatusCode::OK,
        format!("{{\"etcdserver\":\"{ETCD_VERSION}\",\"etcdcluster\":\"{CLUSTER_VERSION}\"}}"),
    )
}

/// `GET /health`: 503 without a leader.
pub async fn health(State(app): State<Arc<App>>) -> Response {
    // etcd 3.4 labels this JSON as text/plain.
    let (status, body) = if app.node.status().leader.is_some() {
        (StatusCode::OK, "{\"health\":\"true\"}")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "{\"health\":\"false\"}")
    };
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `GET /v2/machines`: the client URLs, comma-separated.
pub async fn machines(State(app): State<Arc<App>>) -> Response {
    app.settings
        .advertise_client_urls
        .join(", ")
        .into_response()
}

/// `/v2/members`: the list (GET); adding members needs the multi-member transport.
pub async fn members(State(app): State<Arc<App>>, req: Request) -> Response {
    let r = match *req.method() {
        Method::GET | Method::HEAD => json_reply(
            StatusCode::OK,
            format!(
                "{{\"members\":[{}]}}",
                serde_json::to_string(&me(&app)).unwrap_or_default()
            ),
        ),
        Method::POST => {
            let ct = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if !ct.starts_with("application/json") {
                message(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &format!("Bad Content-Type {ct}, accept application/json"),
                )
            } else {
                message(
                    StatusCode::NOT_IMPLEMENTED,
                    "adding members is not supported yet (single-member server)",
                )
            }
        }
        _ => {
            let mut r = (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").into_response();
            r.headers_mut()
                .insert("allow", HeaderValue::from_static("GET,POST"));
            r
        }
    };
    with_cluster(&app, r)
}

/// `/v2/members/leader` and `/v2/members/<id>`.
pub async fn member(State(app): State<Arc<App>>, Path(id): Path<String>, req: Request) -> Response {
    let method = req.method().clone();
    let r = if id == "leader" && method == Method::GET {
        if app.node.status().leader == Some(app.settings.member_id) {
            json_reply(
                StatusCode::OK,
                serde_json::to_string(&me(&app)).unwrap_or_default(),
            )
        } else {
            message(StatusCode::SERVICE_UNAVAILABLE, "During election")
        }
    } else if method == Method::GET {
        message(StatusCode::NOT_FOUND, "Not found")
    } else if method == Method::DELETE || method == Method::PUT {
        match u64::from_str_radix(&id, 16) {
            Ok(n) if n == app.settings.member_id => message(
                StatusCode::NOT_IMPLEMENTED,
                "changing membership is not supported yet (single-member server)",
            ),
            _ => message(StatusCode::NOT_FOUND, &format!("No such member: {id}")),
        }
    } else {
        let mut r = (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").into_response();
        r.headers_mut()
            .insert("allow", HeaderValue::from_static("GET,PUT,DELETE"));
        r
    };
    with_cluster(&app, r)
}

/// Go's duration formatting for positive durations (`1h2m3.5s`).
fn go_duration(ns: i64) -> String {
    let ns = ns.max(0);
    let h = ns / 3_600_000_000_000;
    let m = (ns / 60_000_000_000) % 60;
    let s = (ns % 60_000_000_000) as f64 / 1e9;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{s}s"));
    out
}

/// `GET /v2/stats/self`.
pub async fn stats_self(State(app): State<Arc<App>>) -> Response {
    let st = app.node.status();
    let state = if st.is_leader {
        "StateLeader"
    } else {
        "StateFollower"
    };
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct LeaderInfo {
        leader: String,
        uptime: String,
        start_time: String,
    }
    // etcd's field order.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct SelfStats<'a> {
        name: &'a str,
        id: String,
        state: &'a str,
        start_time: String,
        leader_info: LeaderInfo,
        recv_append_request_cnt: u64,
        send_append_request_cnt: u64,
    }
    let body = SelfStats {
        name: &app.settings.name,
        id: format!("{:x}", app.settings.member_id),
        state,
        start_time: rfc3339_nano(app.started),
        leader_info: LeaderInfo {
            leader: st.leader.map(|l| format!("{l:x}")).unwrap_or_default(),
            uptime: go_duration(now_ns() - app.started),
            start_time: rfc3339_nano(app.started),
        },
        recv_append_request_cnt: 0,
        send_append_request_cnt: 0,
    };
    json_reply(
        StatusCode::OK,
        serde_json::to_string(&body).unwrap_or_default(),
    )
}

/// `GET /v2/stats/leader`: 403 on a follower.
pub async fn stats_leader(State(app): State<Arc<App>>) -> Response {
    if !app.node.status().is_leader {
        return message(StatusCode::FORBIDDEN, "not current leader");
    }
    json_reply(
        StatusCode::OK,
        format!(
            "{{\"leader\":\"{:x}\",\"followers\":{{}}}}",
            app.settings.member_id
        ),
    )
}

/// `GET /v2/stats/store`.
pub async fn stats_store(State(app): State<Arc<App>>) -> Response {
    json_reply(
        StatusCode::OK,
        serde_json::to_string(&app.node.kv().stats()).unwrap_or_default(),
    )
}

/// `GET /v2/auth/enable`: auth is off (v2 auth is not implemented yet).
pub async fn auth_enable(State(app): State<Arc<App>>, req: Request) -> Response {
    let r = if req.method() == Method::GET {
        json_reply(StatusCode::OK, "{\"enabled\":false}".into())
    } else {
        message(StatusCode::NOT_IMPLEMENTED, "v2 auth is not supported yet")
    };
    with_cluster(&app, r)
}

/// The rest of `/v2/auth/*`.
pub async fn auth_other() -> Response {
    message(StatusCode::NOT_IMPLEMENTED, "v2 auth is not supported yet")
}
