//! `GetLogs`: an app's log as stage1 recorded it (`--stdout=log` / `--stderr=log`, see
//! `stage1::logs`), or without `app_name` the logs of every app that keeps one, merged by time;
//! filtered by time and tailed, then, with `follow`, the lines written after, polled until the pod
//! is over or the client goes away.

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
    /// The apps whose logs are read; lines carry the app's name when there are several.
    apps: Vec<String>,
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

impl Query {
    /// The kept records of each app (in app order), merged by time, formatted.
    fn lines(&self, per_app: Vec<Vec<Record>>) -> Vec<String> {
        let named = self.apps.len() > 1;
        let mut all: Vec<(i64, String)> = Vec::new();
        for (app, records) in self.apps.iter().zip(per_app) {
            for r in records.iter().filter(|r| self.keeps(r)) {
                let line = if named {
                    format!(
                        "{} {app} {} {}",
                        crate::timefmt::rfc3339(r.time_ns),
                        r.stream.as_str(),
                        r.text
                    )
                } else {
                    format(r)
                };
                all.push((r.time_ns, line));
            }
        }
        // Stable: lines of one app at the same time keep their order.
        all.sort_by_key(|(t, _)| *t);
        all.into_iter().map(|(_, l)| l).collect()
    }
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

/// Finds the pod and the apps whose logs are asked for: the named one, which must keep a log, or
/// every app that keeps one.
fn resolve(dir: &Path, req: &GetLogsRequest) -> Result<(Pod, Vec<String>), Status> {
    if req.pod_id.trim().is_empty() {
        return Err(Status::invalid_argument("pod_id is required"));
    }
    let pod = Pods::open(dir)
        .and_then(|p| p.find(&req.pod_id))
        .map_err(super::status)?;
    let manifest = pod.manifest().map_err(super::status)?;
    let logs = |a: &crate::pod::manifest::RuntimeApp| {
        a.app.stdout == Output::Log || a.app.stderr == Output::Log
    };
    if req.app_name.is_empty() {
        let apps: Vec<String> = manifest
            .apps
            .iter()
            .filter(|a| logs(a))
            .map(|a| a.name.clone())
            .collect();
        if apps.is_empty() {
            return Err(Status::failed_precondition(format!(
                "no app of pod {} keeps logs: none was started with --stdout=log or --stderr=log",
                pod.uuid
            )));
        }
        return Ok((pod, apps));
    }
    let app = manifest.app(&req.app_name).ok_or_else(|| {
        Status::not_found(format!("pod {} has no app {:?}", pod.uuid, req.app_name))
    })?;
    if !logs(app) {
        return Err(Status::failed_precondition(format!(
            "app {} of pod {} keeps no logs: it was not started with --stdout=log or --stderr=log",
            app.name, pod.uuid
        )));
    }
    let name = app.name.clone();
    Ok((pod, vec![name]))
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
        apps: Vec::new(),
        lines: usize::try_from(req.lines.max(0)).unwrap_or(usize::MAX),
        follow: req.follow,
        since_ns: secs_to_ns("since_time", req.since_time)?,
        until_ns: secs_to_ns("until_time", req.until_time)?,
    };
    let d = dir.clone();
    let (pod, apps) = tokio::task::spawn_blocking(move || resolve(&d, &req))
        .await
        .map_err(|e| Status::internal(format!("worker failed: {e}")))??;
    let q = Query {
        uuid: pod.uuid.clone(),
        apps,
        ..q
    };
    let mut per_app = Vec::new();
    let mut cursors = Vec::new();
    for app in &q.apps {
        let what = logs::log_path(&pod.dir, app).display().to_string();
        let (pod_dir, name) = (pod.dir.clone(), app.clone());
        let (records, cursor) = blocking(move || logs::read_all(&pod_dir, &name), what).await?;
        per_app.push(records);
        cursors.push(cursor);
    }
    let mut lines = q.lines(per_app);
    if q.lines > 0 && lines.len() > q.lines {
        lines.drain(..lines.len() - q.lines);
    }
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        if !send(&tx, lines).await || !q.follow {
            return;
        }
        follow(dir, q, cursors, tx, every).await;
    });
    Ok(rx)
}

/// Sends what is appended to the log until the pod is over (then what it wrote last) or gone, or
/// the client leaves.
async fn follow(
    dir: PathBuf,
    q: Query,
    mut cursors: Vec<Cursor>,
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
        let mut per_app = Vec::new();
        for (app, cursor) in q.apps.iter().zip(cursors.iter_mut()) {
            let (pod_dir, name, mut c) = (pod.dir.clone(), app.clone(), cursor.clone());
            let what = logs::log_path(&pod.dir, app).display().to_string();
            let got = blocking(
                move || logs::read_new(&pod_dir, &name, &mut c).map(|r| (r, c)),
                what,
            )
            .await;
            match got {
                Ok((r, c)) => {
                    *cursor = c;
                    per_app.push(r);
                }
                Err(s) => {
                    let _ = tx.send(Err(s)).await;
                    return;
                }
            }
        }
        let lines = q.lines(per_app);
        if !send(&tx, lines).await || pod.is_finished() {
            return;
        }
    }
}
