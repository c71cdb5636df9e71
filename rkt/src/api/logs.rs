//! `GetLogs`: an app's log as stage1 recorded it (`--stdout=log` / `--stderr=log`, see
//! `stage1::logs`), filtered by time and tailed, then, with `follow`, the lines written after,
//! polled until the pod is over or the client goes away.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::tonic::Status;
use proto::v1alpha::{GetLogsRequest, GetLogsResponse};
use tokio::sync::mpsc;

use crate::pod::manifest::Output;
use crate::pod::{Pod, Pods};
use crate::stage1::logs::{self, Cursor, Record};

/// Most text sent in one response (clients decode at most 4 MiB per message by default).
const CHUNK_BYTES: usize = 1 << 20;

/// The request, checked: times in ns (`None` for unset).
#[derive(Clone, Debug)]
struct Query {
    uuid: String,
    app: String,
    lines: usize,
    follow: bool,
    since_ns: Option<i64>,
    until_ns: Option<i64>,
}

impl Query {
    fn keeps(&self, r: &Record) -> bool {
        self.since_ns.is_none_or(|s| r.time_ns >= s) && self.until_ns.is_none_or(|u| r.time_ns < u)
    }
}

/// A line as GetLogs returns it: `<RFC 3339 time> <stream> <text>`.
pub fn format(r: &Record) -> String {
    format!(
        "{} {} {}",
        crate::timefmt::rfc3339(r.time_ns),
        r.stream.as_str(),
        r.text
    )
}

fn secs_to_ns(field: &str, s: i64) -> Result<Option<i64>, Status> {
    match s {
        0 => Ok(None),
        s if s < 0 => Err(Status::invalid_argument(format!(
            "{field} must be unix seconds, got {s}"
        ))),
        s => Ok(Some(s.saturating_mul(1_000_000_000))),
    }
}

/// Finds the pod and the app whose logs are asked for; checks that the app logs.
fn resolve(dir: &Path, req: &GetLogsRequest) -> Result<(Pod, String), Status> {
    if req.pod_id.trim().is_empty() {
        return Err(Status::invalid_argument("pod_id is required"));
    }
    let pod = Pods::open(dir)
        .and_then(|p| p.find(&req.pod_id))
        .map_err(super::status)?;
    let manifest = pod.manifest().map_err(super::status)?;
    let app = if req.app_name.is_empty() {
        match manifest.apps.as_slice() {
            [one] => one,
            apps => {
                let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
                return Err(Status::invalid_argument(format!(
                    "pod {} has {} apps ({}): app_name is required",
                    pod.uuid,
                    apps.len(),
                    names.join(", ")
                )));
            }
        }
    } else {
        manifest.app(&req.app_name).ok_or_else(|| {
            Status::not_found(format!("pod {} has no app {:?}", pod.uuid, req.app_name))
        })?
    };
    if app.app.stdout != Output::Log && app.app.stderr != Output::Log {
        return Err(Status::failed_precondition(format!(
            "app {} of pod {} keeps no logs: it was not started with --stdout=log or --stderr=log",
            app.name, pod.uuid
        )));
    }
    let name = app.name.clone();
    Ok((pod, name))
}

/// Sends `lines` in responses of at most [`CHUNK_BYTES`]; false once the client is gone.
async fn send(tx: &mpsc::Sender<Result<GetLogsResponse, Status>>, lines: Vec<String>) -> bool {
    let mut batch = Vec::new();
    let mut size = 0;
    for l in lines {
        size += l.len();
        batch.push(l);
        if size >= CHUNK_BYTES {
            size = 0;
            let lines = std::mem::take(&mut batch);
            if tx.send(Ok(GetLogsResponse { lines })).await.is_err() {
                return false;
            }
        }
    }
    batch.is_empty() || tx.send(Ok(GetLogsResponse { lines: batch })).await.is_ok()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    what: String,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))?
        .map_err(|e| Status::internal(format!("reading {what}: {e}")))
}

/// Checks the request and starts the stream; the first response holds the log so far.
pub async fn spawn(
    dir: PathBuf,
    req: GetLogsRequest,
    every: Duration,
) -> Result<mpsc::Receiver<Result<GetLogsResponse, Status>>, Status> {
    let q = Query {
        uuid: String::new(),
        app: String::new(),
        lines: usize::try_from(req.lines.max(0)).unwrap_or(usize::MAX),
        follow: req.follow,
        since_ns: secs_to_ns("since_time", req.since_time)?,
        until_ns: secs_to_ns("until_time", req.until_time)?,
    };
    let d = dir.clone();
    let (pod, app) = tokio::task::spawn_blocking(move || resolve(&d, &req))
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))??;
    let q = Query {
        uuid: pod.uuid.clone(),
        app,
        ..q
    };
    let what = logs::log_path(&pod.dir, &q.app).display().to_string();
    let (pod_dir, name) = (pod.dir.clone(), q.app.clone());
    let (records, cursor) = blocking(move || logs::read_all(&pod_dir, &name), what).await?;
    let mut lines: Vec<String> = records.iter().filter(|r| q.keeps(r)).map(format).collect();
    if q.lines > 0 && lines.len() > q.lines {
        lines.drain(..lines.len() - q.lines);
    }
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        if !send(&tx, lines).await || !q.follow {
            return;
        }
        follow(dir, q, cursor, tx, every).await;
    });
    Ok(rx)
}

/// Sends what is appended to the log until the pod is over (then what it wrote last) or gone, or
/// the client leaves.
async fn follow(
    dir: PathBuf,
    q: Query,
    mut cursor: Cursor,
    tx: mpsc::Sender<Result<GetLogsResponse, Status>>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tx.closed() => return,
        }
        // The pod moves between state directories (and gc removes it): look it up each time,
        // before reading, so that the last read follows the pod's end.
        let (d, uuid) = (dir.clone(), q.uuid.clone());
        let now = match tokio::task::spawn_blocking(move || Pods::open(&d)?.find(&uuid)).await {
            Ok(Ok(p)) => Some(p),
            Ok(Err(crate::Error::PodNotFound(_))) => None,
            Ok(Err(e)) => {
                let _ = tx.send(Err(super::status(e))).await;
                return;
            }
            Err(e) => {
                let _ = tx
                    .send(Err(Status::internal(format!("worker failed: {e}"))))
                    .await;
                return;
            }
        };
        let Some(pod) = now else { return };
        let (pod_dir, name, mut c) = (pod.dir.clone(), q.app.clone(), cursor.clone());
        let what = logs::log_path(&pod.dir, &q.app).display().to_string();
        let got = blocking(
            move || logs::read_new(&pod_dir, &name, &mut c).map(|r| (r, c)),
            what,
        )
        .await;
        let records = match got {
            Ok((r, c)) => {
                cursor = c;
                r
            }
            Err(s) => {
                let _ = tx.send(Err(s)).await;
                return;
            }
        };
        let lines: Vec<String> = records.iter().filter(|r| q.keeps(r)).map(format).collect();
        if !send(&tx, lines).await || pod.is_finished() {
            return;
        }
    }
}
