//! `/v2/keys`: reads, writes through raft, and watches.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::KeyError;
use super::params::{Form, KeyRequest};
use super::{App, names, percent_decode};
use crate::store::{self, Event, Op, error};

/// Handles every method on `/v2/keys{/path}`.
#[tracing::instrument(level = "debug", skip_all, fields(method = %req.method(), path = %req.uri().path()))]
pub async fn handle(State(app): State<Arc<App>>, req: Request) -> Response {
    let method = req.method().clone();
    if !matches!(
        method,
        Method::GET | Method::HEAD | Method::PUT | Method::POST | Method::DELETE
    ) {
        let mut r = (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n").into_response();
        r.headers_mut().insert(
            "allow",
            HeaderValue::from_static("HEAD,GET,PUT,POST,DELETE"),
        );
        r.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return r;
    }
    let raw_path = req.uri().path().to_string();
    let key = percent_decode(raw_path.strip_prefix("/v2/keys").unwrap_or("/"));
    let query = req.uri().query().map(str::to_string);
    let is_form = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let reads_body = matches!(method, Method::PUT | Method::POST) && is_form;
    let mut resp = match read_body(req.into_body(), reads_body, app.settings.max_body_bytes).await {
        Err(e) => KeyError(e).into_response(),
        Ok(body) => {
            let form = Form::parse(body.as_deref(), query.as_deref());
            match KeyRequest::parse(&form, method == Method::GET || method == Method::HEAD) {
                Err(e) => KeyError(e).into_response(),
                Ok(kr) => dispatch(&app, &method, &key, kr).await,
            }
        }
    };
    if let Ok(v) = HeaderValue::from_str(&format!("{:x}", app.settings.cluster_id)) {
        resp.headers_mut().insert(names::X_ETCD_CLUSTER_ID, v);
    }
    resp
}

async fn read_body(body: Body, wanted: bool, limit: usize) -> Result<Option<Bytes>, store::Error> {
    if !wanted {
        return Ok(None);
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(Some(b)),
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.to_string().contains("length limit"))
                || e.to_string().contains("length limit");
            let cause = if too_large {
                format!("http: request body too large (limit {limit} bytes)")
            } else {
                e.to_string()
            };
            Err(store::Error::new(error::INVALID_FORM, cause, 0))
        }
    }
}

fn headers(h: &mut HeaderMap, etcd_index: u64, raft_index: u64, raft_term: u64) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(names::X_ETCD_INDEX, HeaderValue::from(etcd_index));
    h.insert(names::X_RAFT_INDEX, HeaderValue::from(raft_index));
    h.insert(names::X_RAFT_TERM, HeaderValue::from(raft_term));
}

fn event_reply(ev: &Event, raft_index: u64, raft_term: u64, no_value: bool) -> Response {
    let status = if ev.is_created() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = if no_value
        && matches!(
            ev.action,
            store::Action::Set
                | store::Action::CompareAndSwap
                | store::Action::Create
                | store::Action::Update
        ) {
        Event {
            action: ev.action,
            node: None,
            prev_node: None,
            refresh: ev.refresh,
            etcd_index: ev.etcd_index,
        }
        .to_json()
    } else {
        ev.to_json()
    };
    let mut r = (status, body).into_response();
    headers(r.headers_mut(), ev.etcd_index, raft_index, raft_term);
    r
}

async fn dispatch(app: &Arc<App>, method: &Method, key: &str, r: KeyRequest) -> Response {
    let key = key.to_string();
    if *method == Method::GET || *method == Method::HEAD {
        if r.wait {
            return watch(app, &key, &r);
        }
        if r.quorum
            && let Err(e) = app.node.linearizable().await
        {
            return KeyError(e).into_response();
        }
        let st = app.node.status();
        return match app.node.kv().get(&key, r.recursive, store::time::now_ns()) {
            Ok(ev) => event_reply(&ev, st.applied, st.term, false),
            Err(e) => KeyError(e).into_response(),
        };
    }
    let op = match *method {
        Method::POST => Op::Create {
            key,
            value: r.value,
            dir: r.dir,
            ttl: r.ttl,
            unique: true,
        },
        Method::DELETE => {
            if r.prev_index > 0 || !r.prev_value.is_empty() {
                Op::CompareAndDelete {
                    key,
                    prev_value: r.prev_value,
                    prev_index: r.prev_index,
                }
            } else {
                Op::Delete {
                    key,
                    dir: r.dir,
                    recursive: r.recursive,
                }
            }
        }
        _ => match r.prev_exist {
            Some(true) if r.prev_index == 0 && r.prev_value.is_empty() => Op::Update {
                key,
                value: r.value,
                ttl: r.ttl,
                refresh: r.refresh,
            },
            Some(true) => Op::CompareAndSwap {
                key,
                value: r.value,
                prev_value: r.prev_value,
                prev_index: r.prev_index,
                ttl: r.ttl,
                refresh: r.refresh,
            },
            Some(false) => Op::Create {
                key,
                value: r.value,
                dir: r.dir,
                ttl: r.ttl,
                unique: false,
            },
            None if r.prev_index > 0 || !r.prev_value.is_empty() => Op::CompareAndSwap {
                key,
                value: r.value,
                prev_value: r.prev_value,
                prev_index: r.prev_index,
                ttl: r.ttl,
                refresh: r.refresh,
            },
            None => Op::Set {
                key,
                value: r.value,
                dir: r.dir,
                ttl: r.ttl,
                refresh: r.refresh,
            },
        },
    };
    match app.node.write(op).await {
        Ok(w) => event_reply(&w.event, w.raft_index, w.raft_term, r.no_value_on_success),
        Err(e) => KeyError(e).into_response(),
    }
}

fn watch(app: &Arc<App>, key: &str, r: &KeyRequest) -> Response {
    let mut w = match app
        .node
        .kv()
        .watch(key, r.recursive, r.stream, r.wait_index)
    {
        Ok(w) => w,
        Err(e) => return KeyError(e).into_response(),
    };
    let st = app.node.status();
    let start = w.start_index;
    let stream = r.stream;
    let shutdown = app.shutdown.clone();
    let body = async_stream(shutdown, move |tx| async move {
        while let Some(ev) = w.next().await {
            if tx
                .send(Ok::<Bytes, std::io::Error>(Bytes::from(ev.to_json())))
                .await
                .is_err()
                || !stream
            {
                break;
            }
        }
    });
    let mut resp = Response::new(body);
    headers(resp.headers_mut(), start, st.applied, st.term);
    resp
}

/// A body fed by a task; the task ends (dropping its watch) when the client goes away.
fn async_stream<F, Fut>(shutdown: tokio_util::sync::CancellationToken, f: F) -> Body
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let fut = f(tx.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = fut => {}
            _ = tx.closed() => {}
            _ = shutdown.cancelled() => {}
        }
    });
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
