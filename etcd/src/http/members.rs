//! `/version`, `/health`, `/v2/machines`, `/v2/members` and `/v2/stats/*`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::App;
use super::error::message;
use crate::cluster::Member;
use crate::config::{CLUSTER_VERSION, ETCD_VERSION};
use crate::raft::MemberError;
use crate::store::time::{now_ns, rfc3339_nano};

fn json_reply(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn with_cluster(app: &App, mut r: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("{:x}", app.settings.cluster_id)) {
        r.headers_mut().insert(super::names::X_ETCD_CLUSTER_ID, v);
    }
    r
}

fn member_list(app: &App) -> Vec<Member> {
    app.node.members().into_iter().map(|m| m.member).collect()
}

/// THE map from membership errors to etcd's HTTP replies.
fn member_error(e: &MemberError) -> Response {
    let status = match e {
        MemberError::NotFound(_) => StatusCode::NOT_FOUND,
        MemberError::Removed(_) => StatusCode::GONE,
        MemberError::PeerUrlExists | MemberError::IdExists => StatusCode::CONFLICT,
        MemberError::LearnerNotReady | MemberError::NotLearner => StatusCode::PRECONDITION_FAILED,
        // etcd answers 500 for these; the message says why.
        MemberError::NotEnoughStarted | MemberError::Unavailable(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    message(status, &e.to_string())
}

/// Reads `{"peerURLs":[...]}` from a JSON request, answering etcd's errors for a bad one.
async fn peer_urls_body(req: Request) -> Result<Vec<String>, Response> {
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !ct.starts_with("application/json") {
        return Err(message(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("Bad Content-Type {ct}, accept application/json"),
        ));
    }
    let body = axum::body::to_bytes(req.into_body(), 1024 * 1024)
        .await
        .map_err(|e| message(StatusCode::BAD_REQUEST, &e.to_string()))?;
    #[derive(serde::Deserialize)]
    struct Req {
        #[serde(rename = "peerURLs", default)]
        peer_urls: Vec<String>,
    }
    let r: Req = serde_json::from_slice(&body)
        .map_err(|e| message(StatusCode::BAD_REQUEST, &e.to_string()))?;
    if r.peer_urls.is_empty() {
        return Err(message(StatusCode::BAD_REQUEST, "no peerURLs given"));
    }
    let mut out = Vec::new();
    for u in &r.peer_urls {
        match crate::cluster::peer_url(u) {
            Some(p) => out.push(p),
            None => {
                return Err(message(
                    StatusCode::BAD_REQUEST,
                    &format!("URL scheme must be http, https, unix, or unixs: {u}"),
                ));
            }
        }
    }
    Ok(out)
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

/// `GET /v2/machines`: every member's client URLs, comma-separated.
pub async fn machines(State(app): State<Arc<App>>) -> Response {
    member_list(&app)
        .iter()
        .flat_map(|m| m.client_urls.iter().cloned())
        .collect::<Vec<_>>()
        .join(", ")
        .into_response()
}

/// `/v2/members`: the list (GET) and adding a member (POST).
pub async fn members(State(app): State<Arc<App>>, req: Request) -> Response {
    let r = match *req.method() {
        Method::GET | Method::HEAD => json_reply(
            StatusCode::OK,
            format!(
                "{{\"members\":{}}}",
                serde_json::to_string(&member_list(&app)).unwrap_or_else(|_| "[]".into())
            ),
        ),
        Method::POST => match peer_urls_body(req).await {
            Err(r) => r,
            Ok(urls) => match app.node.add_member(urls, false).await {
                Ok(m) => json_reply(
                    StatusCode::CREATED,
                    serde_json::to_string(&m).unwrap_or_default(),
                ),
                Err(e) => member_error(&e),
            },
        },
        _ => {
            let mut r = (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").into_response();
            r.headers_mut()
                .insert("allow", HeaderValue::from_static("GET,POST"));
            r
        }
    };
    with_cluster(&app, r)
}

/// `/v2/members/leader` and `/v2/members/<id>` (PUT updates peer URLs, DELETE removes).
pub async fn member(State(app): State<Arc<App>>, Path(id): Path<String>, req: Request) -> Response {
    let method = req.method().clone();
    let parsed = u64::from_str_radix(&id, 16).ok();
    let r = if id == "leader" && method == Method::GET {
        let leader = app.node.status().leader;
        match member_list(&app).into_iter().find(|m| Some(m.id) == leader) {
            Some(m) => json_reply(
                StatusCode::OK,
                serde_json::to_string(&m).unwrap_or_default(),
            ),
            None => message(StatusCode::SERVICE_UNAVAILABLE, "During election"),
        }
    } else if method == Method::GET {
        message(StatusCode::NOT_FOUND, "Not found")
    } else if method == Method::DELETE || method == Method::PUT {
        match parsed {
            None => message(StatusCode::NOT_FOUND, &format!("No such member: {id}")),
            Some(n) if method == Method::DELETE => match app.node.remove_member(n).await {
                Ok(_) => StatusCode::NO_CONTENT.into_response(),
                Err(e) => member_error(&e),
            },
            Some(n) => match peer_urls_body(req).await {
                Err(r) => r,
                Ok(urls) => match app.node.update_member(n, urls).await {
                    Ok(_) => StatusCode::NO_CONTENT.into_response(),
                    Err(e) => member_error(&e),
                },
            },
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
        id: format!("{:x}", app.node.id()),
        state,
        start_time: rfc3339_nano(app.started),
        leader_info: LeaderInfo {
            leader: st.leader.map(|l| format!("{l:x}")).unwrap_or_default(),
            uptime: go_duration(now_ns() - app.started),
            start_time: rfc3339_nano(app.started),
        },
        recv_append_request_cnt: app
            .node
            .peer_stats()
            .received_appends
            .load(std::sync::atomic::Ordering::Relaxed),
        send_append_request_cnt: app
            .node
            .peer_stats()
            .sent_appends
            .load(std::sync::atomic::Ordering::Relaxed),
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
    let me = app.node.id();
    let stats = app
        .node
        .peer_stats()
        .followers
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    let mut followers = serde_json::Map::new();
    for m in app.node.members() {
        if m.member.id == me {
            continue;
        }
        let f = stats.get(&m.member.id).cloned().unwrap_or_default();
        followers.insert(
            format!("{:x}", m.member.id),
            serde_json::json!({
                "latency": {
                    "current": f.current,
                    "average": f.average,
                    "standardDeviation": f.standard_deviation(),
                    "minimum": f.minimum,
                    "maximum": f.maximum,
                },
                "counts": {"fail": f.fail, "success": f.success},
            }),
        );
    }
    json_reply(
        StatusCode::OK,
        serde_json::json!({"leader": format!("{me:x}"), "followers": followers}).to_string(),
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
