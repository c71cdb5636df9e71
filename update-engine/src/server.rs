//! `update-server`: a small Omaha server for running your own channels.
//!
//! Releases live in a directory, one folder per group and one per version:
//! `<releases>/<group>/<version>/update.gz` (a `CrAU` payload), optionally
//! with `meta.json` (`{"size": N, "sha256": "<b64>"}`) giving the announced
//! size and hash instead of computing them. `POST /v1/update/` answers update
//! checks with the newest version of the machine's group, `GET
//! /v1/payloads/<group>/<version>/update.gz` serves payloads (with `Range`
//! for resumed downloads), and `GET /v1/status` shows what every machine
//! reported. A rollout policy caps the machines granted an update per period.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;

use crate::omaha::{self, AppResponse, Package, PostInstall, UpdateCheck};

/// Read size when streaming payloads (the 4 KiB default costs a syscall and
/// a frame per page).
const STREAM_CHUNK: usize = 1 << 20;

/// The payload file name inside a release folder.
pub const PAYLOAD_NAME: &str = "update.gz";

/// At most this many updates are granted per period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rollout {
    pub max_updates_per_period: usize,
    pub period: Duration,
}

/// The server's validated settings.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub releases: PathBuf,
    /// Base URL put in `codebase` (e.g. `http://updates.example.com`);
    /// derived from the request's Host header when unset.
    pub base_url: Option<String>,
    pub rollout: Option<Rollout>,
}

/// Errors of the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("serving http: {0}")]
    Serve(std::io::Error),
}

/// One event a machine reported.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReportedEvent {
    pub event_type: u32,
    pub event_result: u32,
    pub error_code: Option<u32>,
    pub version: String,
    pub time: u64,
}

/// What the server knows of a machine.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MachineStatus {
    pub appid: String,
    pub version: String,
    pub group: String,
    pub bootid: String,
    pub last_check: u64,
    pub granted_version: Option<String>,
    /// The `previousversion` of the last update check that carried one
    /// (the version the machine ran before its last update).
    pub previous_version: Option<String>,
    pub events: Vec<ReportedEvent>,
}

/// The JSON of `GET /v1/status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusReport {
    pub machines: BTreeMap<String, MachineStatus>,
}

#[derive(Clone)]
struct PayloadMeta {
    modified: SystemTime,
    size: u64,
    sha256: String,
    sha1: String,
}

#[derive(Default)]
struct Inner {
    machines: BTreeMap<String, MachineStatus>,
    /// (machine, time) of updates granted, for the rollout policy.
    grants: Vec<(String, Instant)>,
    meta: HashMap<PathBuf, PayloadMeta>,
    /// update_server_update_checks_total by updatecheck status.
    checks: BTreeMap<String, u64>,
    /// update_server_events_total by (event type, result).
    events: BTreeMap<(u32, u32), u64>,
}

#[derive(Clone)]
struct AppState {
    settings: Arc<ServerSettings>,
    inner: Arc<Mutex<Inner>>,
}

/// Serves on `listener` until `shutdown` is cancelled.
pub async fn run(
    settings: ServerSettings,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let state = AppState {
        settings: Arc::new(settings),
        inner: Arc::new(Mutex::new(Inner::default())),
    };
    let app = Router::new()
        .route("/v1/update", post(update))
        .route("/v1/update/", post(update))
        .route("/v1/payloads/{group}/{version}/{name}", get(payload))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(ServerError::Serve)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Compares dotted versions numerically where both parts are numbers.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let mut ai = a.split('.');
    let mut bi = b.split('.');
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (x, y) => {
                let x = x.unwrap_or("0");
                let y = y.unwrap_or("0");
                let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(p), Ok(q)) => p.cmp(&q),
                    _ => x.cmp(y),
                };
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

fn valid_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\\')
}

/// The newest version folder of a group holding a payload, if the group exists.
fn latest_release(releases: &Path, group: &str) -> Option<Option<String>> {
    if !valid_component(group) {
        return None;
    }
    let entries = std::fs::read_dir(releases.join(group)).ok()?;
    let mut best: Option<String> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().join(PAYLOAD_NAME).is_file() {
            continue;
        }
        if best
            .as_deref()
            .is_none_or(|b| compare_versions(&name, b).is_gt())
        {
            best = Some(name);
        }
    }
    Some(best)
}

#[derive(Deserialize)]
struct MetaFile {
    size: u64,
    sha256: String,
    #[serde(default)]
    sha1: String,
}

fn compute_meta(dir: &Path) -> std::io::Result<PayloadMeta> {
    let path = dir.join(PAYLOAD_NAME);
    let modified = std::fs::metadata(&path)?.modified()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Ok(text) = std::fs::read_to_string(dir.join("meta.json")) {
        let m: MetaFile = serde_json::from_str(&text)
            .map_err(|e| std::io::Error::other(format!("meta.json: {e}")))?;
        return Ok(PayloadMeta {
            modified,
            size: m.size,
            sha256: m.sha256,
            sha1: m.sha1,
        });
    }
    let mut f = std::fs::File::open(&path)?;
    let mut h256 = Sha256::new();
    let mut h1 = Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        h256.update(&buf[..n]);
        h1.update(&buf[..n]);
        size += n as u64;
    }
    Ok(PayloadMeta {
        modified,
        size,
        sha256: b64.encode(h256.finalize()),
        sha1: b64.encode(h1.finalize()),
    })
}

async fn release_meta(state: &AppState, dir: PathBuf) -> std::io::Result<PayloadMeta> {
    let modified = tokio::fs::metadata(dir.join(PAYLOAD_NAME))
        .await?
        .modified()?;
    if let Ok(inner) = state.inner.lock()
        && let Some(m) = inner.meta.get(&dir)
        && m.modified == modified
    {
        return Ok(m.clone());
    }
    let d = dir.clone();
    let meta = tokio::task::spawn_blocking(move || compute_meta(&d))
        .await
        .map_err(std::io::Error::other)??;
    if let Ok(mut inner) = state.inner.lock() {
        inner.meta.insert(dir, meta.clone());
    }
    Ok(meta)
}

#[tracing::instrument(skip_all)]
async fn update(State(state): State<AppState>, headers: HeaderMap, body: String) -> Response {
    let req = match omaha::Request::parse(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let base = state.settings.base_url.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    });
    let mut apps = Vec::new();
    for app in &req.apps {
        let mut resp = AppResponse {
            appid: app.appid.clone(),
            status: "ok".into(),
            updatecheck: None,
            events_acked: app.events.len(),
        };
        record(&state, app);
        if app.updatecheck {
            let uc = check(&state, app, &base).await;
            if let Ok(mut inner) = state.inner.lock() {
                *inner.checks.entry(uc.status.clone()).or_default() += 1;
            }
            resp.updatecheck = Some(uc);
        }
        apps.push(resp);
    }
    let xml = omaha::Response {
        elapsed_seconds: now() % 86400,
        apps,
    }
    .to_xml();
    ([(header::CONTENT_TYPE, "text/xml")], xml).into_response()
}

fn record(state: &AppState, app: &omaha::AppRequest) {
    let Ok(mut inner) = state.inner.lock() else {
        return;
    };
    let m = inner.machines.entry(app.machineid.clone()).or_default();
    m.appid = app.appid.clone();
    m.version = app.version.clone();
    m.group = app.track.clone();
    m.bootid = app.bootid.clone();
    if app.updatecheck {
        m.last_check = now();
    }
    let mut counted = Vec::new();
    for ev in &app.events {
        // The update-check's "previous version" ping is not an event of its own.
        if app.updatecheck {
            if let Some(prev) = ev.previous_version.as_ref().filter(|p| !p.is_empty()) {
                m.previous_version = Some(prev.clone());
            }
            continue;
        }
        counted.push((ev.event_type, ev.event_result));
        m.events.push(ReportedEvent {
            event_type: ev.event_type,
            event_result: ev.event_result,
            error_code: ev.error_code,
            version: app.version.clone(),
            time: now(),
        });
        tracing::info!(machine = %app.machineid, event_type = ev.event_type, result = ev.event_result, code = ?ev.error_code, "event");
    }
    for key in counted {
        *inner.events.entry(key).or_default() += 1;
    }
}

async fn check(state: &AppState, app: &omaha::AppRequest, base: &str) -> UpdateCheck {
    let releases = state.settings.releases.clone();
    let group = app.track.clone();
    let latest = tokio::task::spawn_blocking(move || latest_release(&releases, &group))
        .await
        .ok()
        .flatten();
    let Some(Some(version)) = latest else {
        return UpdateCheck::status_only("error-noPackageFound");
    };
    if !compare_versions(&version, &app.version).is_gt() {
        return UpdateCheck::status_only("noupdate");
    }
    if !grant(state, &app.machineid, &version) {
        return UpdateCheck::status_only("error-maxUpdatesPerPeriodLimitReached");
    }
    let dir = state.settings.releases.join(&app.track).join(&version);
    let meta = match release_meta(state, dir).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("release {}/{version}: {e}", app.track);
            return UpdateCheck::status_only("error-noPackageFound");
        }
    };
    UpdateCheck {
        status: "ok".into(),
        urls: vec![format!(
            "{}/v1/payloads/{}/{}/",
            base.trim_end_matches('/'),
            app.track,
            version
        )],
        version,
        packages: vec![Package {
            name: PAYLOAD_NAME.into(),
            hash: meta.sha1,
            size: meta.size,
        }],
        postinstall: Some(PostInstall {
            sha256: meta.sha256,
        }),
    }
}

/// The rollout policy: a machine already granted this version keeps it;
/// others are granted while fewer than the maximum were granted this period.
fn grant(state: &AppState, machine: &str, version: &str) -> bool {
    let Ok(mut inner) = state.inner.lock() else {
        return false;
    };
    let already = inner
        .machines
        .get(machine)
        .and_then(|m| m.granted_version.as_deref())
        == Some(version);
    if !already && let Some(policy) = state.settings.rollout {
        let now = Instant::now();
        inner
            .grants
            .retain(|(_, t)| now.duration_since(*t) < policy.period);
        if inner.grants.len() >= policy.max_updates_per_period {
            return false;
        }
        inner.grants.push((machine.to_owned(), now));
    }
    if let Some(m) = inner.machines.get_mut(machine) {
        m.granted_version = Some(version.to_owned());
    }
    true
}

async fn payload(
    State(state): State<AppState>,
    UrlPath((group, version, name)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if ![&group, &version].iter().all(|s| valid_component(s)) || name != PAYLOAD_NAME {
        return StatusCode::NOT_FOUND.into_response();
    }
    let path = state
        .settings
        .releases
        .join(&group)
        .join(&version)
        .join(PAYLOAD_NAME);
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<u64>().ok());
    match start {
        Some(start) if start >= len => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{len}"))],
        )
            .into_response(),
        Some(start) => {
            if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
                file.take(len - start),
                STREAM_CHUNK,
            ));
            (
                StatusCode::PARTIAL_CONTENT,
                [
                    (header::CONTENT_LENGTH, (len - start).to_string()),
                    (
                        header::CONTENT_RANGE,
                        format!("bytes {start}-{}/{len}", len - 1),
                    ),
                ],
                body,
            )
                .into_response()
        }
        None => {
            let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
                file,
                STREAM_CHUNK,
            ));
            (
                StatusCode::OK,
                [
                    (header::CONTENT_LENGTH, len.to_string()),
                    (header::ACCEPT_RANGES, "bytes".to_string()),
                ],
                body,
            )
                .into_response()
        }
    }
}

async fn status(State(state): State<AppState>) -> Response {
    let report = match state.inner.lock() {
        Ok(inner) => StatusReport {
            machines: inner.machines.clone(),
        },
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    axum::Json(report).into_response()
}

/// Prometheus text metrics.
async fn metrics(State(state): State<AppState>) -> Response {
    use std::fmt::Write;
    let Ok(inner) = state.inner.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut s = String::new();
    s.push_str(
        "# HELP update_server_update_checks_total Update checks answered, by updatecheck status.\n",
    );
    s.push_str("# TYPE update_server_update_checks_total counter\n");
    for (status, n) in &inner.checks {
        let _ = writeln!(
            s,
            "update_server_update_checks_total{{status=\"{status}\"}} {n}"
        );
    }
    s.push_str("# HELP update_server_events_total Omaha events reported by machines.\n");
    s.push_str("# TYPE update_server_events_total counter\n");
    for ((ty, result), n) in &inner.events {
        let _ = writeln!(
            s,
            "update_server_events_total{{type=\"{ty}\",result=\"{result}\"}} {n}"
        );
    }
    s.push_str("# HELP update_server_machines Machines seen.\n");
    s.push_str("# TYPE update_server_machines gauge\n");
    let _ = writeln!(s, "update_server_machines {}", inner.machines.len());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("2.0.0", "10.0.0"), Ordering::Less);
        assert_eq!(compare_versions("1.2.10", "1.2.9"), Ordering::Greater);
        assert_eq!(compare_versions("1.2", "1.2.0"), Ordering::Equal);
        assert_eq!(compare_versions("0.0.0", "0.0.0"), Ordering::Equal);
    }

    #[test]
    fn latest_release_skips_folders_without_payloads() {
        let dir = tempfile::tempdir().unwrap();
        for (v, payload) in [("1.0.0", true), ("9.0.0", false), ("10.0.0", true)] {
            let d = dir.path().join("stable").join(v);
            std::fs::create_dir_all(&d).unwrap();
            if payload {
                std::fs::write(d.join(PAYLOAD_NAME), b"x").unwrap();
            }
        }
        assert_eq!(
            latest_release(dir.path(), "stable"),
            Some(Some("10.0.0".into()))
        );
        assert_eq!(latest_release(dir.path(), "beta"), None);
        assert_eq!(latest_release(dir.path(), ".."), None);
    }
}
