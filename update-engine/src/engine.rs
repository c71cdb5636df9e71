//! The update engine: one task owns the state and runs the pipeline
//! check → download → verify → write the passive slot → verify → flip the
//! GPT bits, reports Omaha events, and publishes every status change.
//!
//! Commands (AttemptUpdate, ResetStatus) reach the task over an mpsc channel;
//! status is published on a watch (current) and a broadcast (every change).

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rand::Rng;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigPaths, ReleaseConfig};
use crate::gpt::{self, GptDisk};
use crate::omaha::{AppRequest, Event, Request, Response, UpdateOffer};
use crate::payload::stream::{StreamApplier, StreamSummary};
use crate::payload::{self, PayloadError};
use crate::prefs::{self, Prefs};
use crate::schedule::Schedule;
use crate::status::{ErrorCode, StatusInfo, UpdateStatus, event_result, event_type};

/// The version this engine reports as `update_engine-<ver>`.
pub const UPDATER_VERSION: &str = "0.4.10";

/// Everything the engine needs, validated.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// update.conf / release lookup files.
    pub config: ConfigPaths,
    /// The prefs directory (also holds the partial download).
    pub prefs_dir: PathBuf,
    /// The boot disk (a block device or a GPT image file).
    pub disk: PathBuf,
    /// The booted USR partition number; the other USR slot is written.
    pub active_partition: u32,
    /// The update payload public key (PEM).
    pub public_key: PathBuf,
    pub machine_id: String,
    pub boot_id: String,
    /// OEM id sent to Omaha (from oem-release), empty if none.
    pub oem: String,
    pub schedule: Schedule,
}

/// Why an update attempt failed, with its Omaha error code.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("omaha request to {url}: {reason}")]
    OmahaRequest { url: String, reason: String },
    #[error("omaha server {url} answered http {status}")]
    OmahaHttp { url: String, status: u16 },
    #[error("omaha response: {0}")]
    OmahaResponse(#[from] crate::omaha::OmahaError),
    #[error("downloading {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("download of {url} ended at {got} of {expected} bytes")]
    DownloadIncomplete {
        url: String,
        got: u64,
        expected: u64,
    },
    #[error("payload is {got} bytes, omaha announced {expected}")]
    SizeMismatch { got: u64, expected: u64 },
    #[error("payload sha256 {got} differs from omaha's {expected}")]
    HashMismatch { got: String, expected: String },
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("boot disk {disk}: {source}")]
    Disk {
        disk: PathBuf,
        source: gpt::GptError,
    },
    #[error("no passive USR partition next to partition {active} on {disk}")]
    NoPassive { disk: PathBuf, active: u32 },
    #[error("opening the install device {path}: {source}")]
    InstallDevice {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("marking partition {partition} for the next boot: {source}")]
    Postinstall {
        partition: u32,
        source: gpt::GptError,
    },
    #[error("local file {path}: {source}")]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("background task failed: {0}")]
    Task(String),
}

impl UpdateError {
    /// The ActionExitCode reported to Omaha. The one place errors map to codes.
    pub fn code(&self) -> ErrorCode {
        match self {
            UpdateError::OmahaRequest { .. } => ErrorCode::OmahaRequestError,
            UpdateError::OmahaHttp { status, .. } => ErrorCode::OmahaRequestHttpResponse(*status),
            UpdateError::OmahaResponse(_) => ErrorCode::OmahaResponseInvalid,
            UpdateError::Download { .. } => ErrorCode::DownloadTransferError,
            UpdateError::DownloadIncomplete { .. } => ErrorCode::DownloadIncomplete,
            UpdateError::SizeMismatch { .. } => ErrorCode::PayloadSizeMismatchError,
            UpdateError::HashMismatch { .. } => ErrorCode::PayloadHashMismatchError,
            UpdateError::Payload(e) => e.code(),
            UpdateError::Disk { .. }
            | UpdateError::NoPassive { .. }
            | UpdateError::InstallDevice { .. } => ErrorCode::InstallDeviceOpenError,
            UpdateError::Postinstall { .. } => ErrorCode::PostinstallRunnerError,
            UpdateError::Local { .. } => ErrorCode::DownloadWriteError,
            UpdateError::Task(_) => ErrorCode::Error,
        }
    }
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    NoUpdate,
    Updated {
        version: String,
        partition: u32,
    },
    Failed {
        code: u32,
        message: String,
    },
    /// Not started: the engine was not IDLE.
    Ignored,
}

enum Command {
    /// Acknowledged once the check has started (or was ignored).
    AttemptUpdate(Option<tokio::sync::oneshot::Sender<()>>),
    ResetStatus,
}

/// A cheap handle to a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<StatusInfo>,
    changes: broadcast::Sender<StatusInfo>,
    outcomes: broadcast::Sender<Outcome>,
}

impl EngineHandle {
    /// The current status.
    pub fn status(&self) -> StatusInfo {
        self.status.borrow().clone()
    }

    /// Every status change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StatusInfo> {
        self.changes.subscribe()
    }

    /// The outcome of every attempt from now on.
    pub fn outcomes(&self) -> broadcast::Receiver<Outcome> {
        self.outcomes.subscribe()
    }

    /// Asks for an update check; ignored unless the engine is IDLE. Returns
    /// once the engine has left IDLE (or ignored the request), so a status
    /// read right after sees the check.
    pub async fn attempt_update(&self) {
        if self.status().current_operation == UpdateStatus::Idle {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if self
                .commands
                .send(Command::AttemptUpdate(Some(tx)))
                .await
                .is_ok()
            {
                let _ = rx.await;
            }
        }
    }

    /// Returns to IDLE from UPDATED_NEED_REBOOT (or any finished state).
    pub async fn reset_status(&self) {
        let _ = self.commands.send(Command::ResetStatus).await;
    }
}

/// Starts the engine task; it stops when `shutdown` is cancelled.
pub fn spawn(
    settings: EngineSettings,
    shutdown: CancellationToken,
) -> Result<(EngineHandle, tokio::task::JoinHandle<()>), UpdateError> {
    let prefs = Prefs::open(&settings.prefs_dir).map_err(|source| UpdateError::Local {
        path: settings.prefs_dir.clone(),
        source,
    })?;
    let client = http_client().map_err(|e| UpdateError::OmahaRequest {
        url: String::new(),
        reason: e,
    })?;
    let (cmd_tx, cmd_rx) = mpsc::channel(8);
    let (status_tx, status_rx) = watch::channel(StatusInfo::default());
    let (changes, _) = broadcast::channel(1024);
    let (outcomes, _) = broadcast::channel(64);
    let handle = EngineHandle {
        commands: cmd_tx,
        status: status_rx,
        changes: changes.clone(),
        outcomes: outcomes.clone(),
    };
    let engine = Engine {
        settings: Arc::new(settings),
        prefs,
        client,
        status: status_tx,
        changes,
        outcomes,
        goodroot_done: false,
    };
    let task = tokio::spawn(engine.run(cmd_rx, shutdown));
    Ok((handle, task))
}

/// An HTTP client with rustls' ring provider installed.
pub fn http_client() -> Result<reqwest::Client, String> {
    // Installing twice fails harmlessly: the first provider stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())
}

struct Engine {
    settings: Arc<EngineSettings>,
    prefs: Prefs,
    client: reqwest::Client,
    status: watch::Sender<StatusInfo>,
    changes: broadcast::Sender<StatusInfo>,
    outcomes: broadcast::Sender<Outcome>,
    goodroot_done: bool,
}

impl Engine {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, shutdown: CancellationToken) {
        let start = Instant::now();
        let schedule = self.settings.schedule.clone();
        let mut next_check = start + schedule.first_check_delay;
        let goodroot_at = start + schedule.setgoodroot_delay;
        let mut failures = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(Command::AttemptUpdate(ack)) => {
                        if self.attempt(&shutdown, "ondemandupdate", ack).await.is_none() {
                            return;
                        }
                    }
                    Some(Command::ResetStatus) => {
                        if self.status.borrow().current_operation == UpdateStatus::UpdatedNeedReboot {
                            tracing::info!("status reset; to undo the update run `cgpt prioritize -i{}` on {}", self.settings.active_partition, self.settings.disk.display());
                        }
                        // Read first: the borrow must end before publishing.
                        let last_checked_time = self.status.borrow().last_checked_time;
                        self.publish(StatusInfo {
                            last_checked_time,
                            ..StatusInfo::default()
                        });
                    }
                },
                _ = tokio::time::sleep_until(goodroot_at), if !self.goodroot_done => {
                    self.set_good_root().await;
                }
                _ = tokio::time::sleep_until(next_check), if schedule.periodic => {
                    let outcome = self.attempt(&shutdown, "scheduler", None).await;
                    match outcome {
                        None => return,
                        Some(Outcome::Failed { .. }) => failures += 1,
                        Some(_) => failures = 0,
                    }
                    let jitter = rand::rng().random_range(-1.0..=1.0);
                    next_check = Instant::now() + schedule.next_delay(failures, jitter);
                }
            }
        }
    }

    /// One attempt, aborted (returning `None`) on shutdown.
    async fn attempt(
        &mut self,
        shutdown: &CancellationToken,
        source: &str,
        ack: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Option<Outcome> {
        if self.status.borrow().current_operation != UpdateStatus::Idle {
            let _ = self.outcomes.send(Outcome::Ignored);
            return Some(Outcome::Ignored);
        }
        if !self.goodroot_done {
            self.set_good_root().await;
        }
        self.set_op(UpdateStatus::CheckingForUpdate, 0.0);
        if let Some(ack) = ack {
            let _ = ack.send(());
        }
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return None,
            o = self.update(source) => o,
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                let code = e.code().code();
                tracing::error!(code, "update failed: {e}");
                self.set_op(UpdateStatus::ReportingErrorEvent, 0.0);
                let cfg = self.settings.config.load();
                self.send_event(
                    &cfg,
                    Event {
                        event_type: event_type::UPDATE_COMPLETE,
                        event_result: event_result::ERROR,
                        error_code: Some(code),
                        previous_version: None,
                    },
                )
                .await;
                self.set_op(UpdateStatus::Idle, 0.0);
                Outcome::Failed {
                    code,
                    message: e.to_string(),
                }
            }
        };
        let _ = self.outcomes.send(outcome.clone());
        Some(outcome)
    }

    async fn set_good_root(&mut self) {
        self.goodroot_done = true;
        let disk = self.settings.disk.clone();
        let part = self.settings.active_partition;
        let res = tokio::task::spawn_blocking(move || gpt::set_good_root(&disk, part)).await;
        match res {
            Ok(Ok(())) => {
                tracing::info!(partition = part, "marked the booted partition good");
                let _ = self
                    .prefs
                    .set(prefs::SETGOODROOT_DONE, &self.settings.boot_id);
            }
            Ok(Err(e)) => tracing::error!("setgoodroot: {e}"),
            Err(e) => tracing::error!("setgoodroot task: {e}"),
        }
    }

    fn publish(&self, info: StatusInfo) {
        self.status.send_replace(info.clone());
        let _ = self.changes.send(info);
    }

    fn set_op(&self, op: UpdateStatus, progress: f64) {
        let mut info = self.status.borrow().clone();
        info.current_operation = op;
        info.progress = progress;
        if op == UpdateStatus::Idle {
            info.new_version.clear();
            info.new_size = 0;
        }
        self.publish(info);
    }

    fn request(&self, cfg: &ReleaseConfig, source: &str, app: AppRequest) -> Request {
        Request {
            updater_version: format!("update_engine-{UPDATER_VERSION}"),
            install_source: source.into(),
            os_sp: format!("{}_{}", cfg.version, std::env::consts::ARCH),
            apps: vec![app],
        }
    }

    fn app(&self, cfg: &ReleaseConfig) -> AppRequest {
        // The aleph version is the version first installed: recorded once.
        let aleph = match self.prefs.get(prefs::ALEPH_VERSION) {
            Some(v) => v,
            None => {
                let _ = self.prefs.set(prefs::ALEPH_VERSION, &cfg.version);
                cfg.version.clone()
            }
        };
        AppRequest {
            alephversion: aleph,
            appid: cfg.appid.clone(),
            version: cfg.version.clone(),
            track: cfg.group.clone(),
            bootid: self.settings.boot_id.clone(),
            oem: self.settings.oem.clone(),
            machineid: self.settings.machine_id.clone(),
            board: cfg.board.clone(),
            ..AppRequest::default()
        }
    }

    async fn post(&self, cfg: &ReleaseConfig, req: &Request) -> Result<String, UpdateError> {
        let resp = self
            .client
            .post(&cfg.server)
            .header("content-type", "text/xml")
            .body(req.to_xml())
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(|e| UpdateError::OmahaRequest {
                url: cfg.server.clone(),
                reason: e.to_string(),
            })?;
        if !resp.status().is_success() {
            return Err(UpdateError::OmahaHttp {
                url: cfg.server.clone(),
                status: resp.status().as_u16(),
            });
        }
        resp.text().await.map_err(|e| UpdateError::OmahaRequest {
            url: cfg.server.clone(),
            reason: e.to_string(),
        })
    }

    async fn send_event(&self, cfg: &ReleaseConfig, event: Event) {
        let mut app = self.app(cfg);
        app.events.push(event);
        let req = self.request(cfg, "scheduler", app);
        if let Err(e) = self.post(cfg, &req).await {
            tracing::warn!("reporting an omaha event: {e}");
        }
    }

    async fn update(&mut self, source: &str) -> Result<Outcome, UpdateError> {
        let cfg = self.settings.config.load();
        let mut app = self.app(&cfg);
        app.ping = true;
        app.updatecheck = true;
        app.events.push(Event {
            event_type: event_type::UPDATE_COMPLETE,
            event_result: event_result::SUCCESS_REBOOT,
            error_code: None,
            previous_version: Some(
                self.prefs
                    .get(prefs::PREVIOUS_VERSION)
                    .unwrap_or_else(|| "0.0.0.0".into()),
            ),
        });
        let req = self.request(&cfg, source, app);
        let body = self.post(&cfg, &req).await?;
        let _ = self.prefs.set(prefs::PREVIOUS_VERSION, "");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut info = self.status.borrow().clone();
        info.last_checked_time = now;
        self.status.send_replace(info);
        let offer = Response::parse(&body)?.offer(&cfg.appid)?;
        let Some(offer) = offer else {
            tracing::info!(group = %cfg.group, "no update");
            self.set_op(UpdateStatus::Idle, 0.0);
            return Ok(Outcome::NoUpdate);
        };
        tracing::info!(version = %offer.version, url = %offer.url, "update available");
        let mut info = self.status.borrow().clone();
        info.current_operation = UpdateStatus::UpdateAvailable;
        info.progress = 0.0;
        info.new_version = offer.version.clone();
        info.new_size = offer.size as i64;
        self.publish(info);

        let passive = self.passive_partition().await?;
        self.send_event(&cfg, ok_event(event_type::UPDATE_DOWNLOAD_STARTED))
            .await;
        self.set_op(UpdateStatus::Downloading, 0.0);
        if passive == self.settings.active_partition {
            return Err(UpdateError::NoPassive {
                disk: self.settings.disk.clone(),
                active: passive,
            });
        }
        let t = std::time::Instant::now();
        let (file, mut summary) = self.download(&offer, passive).await?;
        let t_download = t.elapsed();
        let parsed = self.verify_download(&file, &offer, &summary).await?;
        let t_verify = t.elapsed();
        let parsed = if summary.applied {
            parsed
        } else {
            tracing::info!(
                reason = summary.not_applied.as_deref().unwrap_or(""),
                "operations not written while downloading; applying the verified file"
            );
            summary.read_back = None;
            self.apply(&file, passive).await?
        };
        let t_apply = t.elapsed();
        self.set_op(UpdateStatus::Verifying, 0.0);
        match summary.read_back.take() {
            // Most of the partition was read back while downloading.
            Some(read_back) => {
                blocking(move || -> Result<(), UpdateError> {
                    let (n, digest) = read_back.finish().map_err(PayloadError::Write)?;
                    payload::apply::check_written(&parsed, n, &digest)?;
                    Ok(())
                })
                .await??
            }
            None => self.verify_written(parsed, passive).await?,
        }
        let t_readback = t.elapsed();
        tracing::info!(
            download_apply_ms = t_download.as_millis() as u64,
            of_which_sync_ms = summary.sync_time.as_millis() as u64,
            of_which_hash_wait_ms = summary.hash_wait_time.as_millis() as u64,
            signature_ms = (t_verify - t_download).as_millis() as u64,
            file_apply_ms = (t_apply - t_verify).as_millis() as u64,
            read_back_ms = (t_readback - t_apply).as_millis() as u64,
            streamed = summary.applied,
            "payload written and verified"
        );
        self.send_event(&cfg, ok_event(event_type::UPDATE_DOWNLOAD_FINISHED))
            .await;
        self.set_op(UpdateStatus::Finalizing, 0.0);
        let disk = self.settings.disk.clone();
        blocking(move || gpt::mark_for_next_boot(&disk, passive))
            .await?
            .map_err(|source| UpdateError::Postinstall {
                partition: passive,
                source,
            })?;
        let label = self.partition_label(passive).await;
        tracing::info!(
            "Setup {label} ({}, partition {passive}) for next boot.",
            self.settings.disk.display()
        );
        let _ = self.prefs.set(prefs::PREVIOUS_VERSION, &cfg.version);
        remove_in_background(&file);
        let _ = self.prefs.delete(prefs::UPDATE_CHECK_RESPONSE_HASH);
        self.send_event(&cfg, ok_event(event_type::UPDATE_COMPLETE))
            .await;
        self.set_op(UpdateStatus::UpdatedNeedReboot, 1.0);
        Ok(Outcome::Updated {
            version: offer.version,
            partition: passive,
        })
    }

    async fn passive_partition(&self) -> Result<u32, UpdateError> {
        let disk = self.settings.disk.clone();
        let active = self.settings.active_partition;
        let gpt = blocking({
            let disk = disk.clone();
            move || GptDisk::open(&disk)
        })
        .await?
        .map_err(|source| UpdateError::Disk {
            disk: disk.clone(),
            source,
        })?;
        gpt.usr_slots()
            .into_iter()
            .map(|s| s.number)
            .find(|n| *n != active)
            .ok_or(UpdateError::NoPassive { disk, active })
    }

    async fn partition_label(&self, number: u32) -> String {
        let disk = self.settings.disk.clone();
        blocking(move || GptDisk::open(&disk).ok().and_then(|g| g.label(number)))
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Streams the payload to the prefs directory, resuming a partial file
    /// left by an earlier attempt at the same payload. The bytes go through
    /// a bounded channel to one blocking writer that appends them to the
    /// file, hashes them once and writes each operation to the passive
    /// partition as soon as its data is in (see [`payload::stream`]).
    async fn download(
        &self,
        offer: &UpdateOffer,
        passive: u32,
    ) -> Result<(PathBuf, StreamSummary), UpdateError> {
        let dir = self.prefs.dir().join("download");
        let local = |source| UpdateError::Local {
            path: dir.clone(),
            source,
        };
        tokio::fs::create_dir_all(&dir).await.map_err(local)?;
        let path = dir.join("payload");
        let id = hex::encode(&offer.sha256);
        let mut have = 0u64;
        if self.prefs.get(prefs::UPDATE_CHECK_RESPONSE_HASH).as_deref() == Some(id.as_str())
            && let Ok(meta) = tokio::fs::metadata(&path).await
        {
            have = meta.len();
        }
        if have > offer.size {
            have = 0;
        }
        self.prefs
            .set(prefs::UPDATE_CHECK_RESPONSE_HASH, &id)
            .map_err(local)?;
        let disk = self.settings.disk.clone();
        if have == offer.size {
            let p = path.clone();
            let summary =
                blocking(move || stream_file(&p, have, open_target(&disk, passive))).await??;
            return Ok((path, summary));
        }
        let err = |reason: String| UpdateError::Download {
            url: offer.url.clone(),
            reason,
        };
        let mut req = self.client.get(&offer.url);
        if have > 0 {
            tracing::info!(offset = have, "resuming the download");
            req = req.header("range", format!("bytes={have}-"));
        }
        let mut resp = req.send().await.map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        if status.as_u16() == 206 {
            // Appending to what we have.
        } else if status.is_success() {
            have = 0;
        } else {
            return Err(err(format!("http {status}")));
        }
        let (tx, rx) = mpsc::channel::<bytes::Bytes>(CHANNEL_CHUNKS);
        let p = path.clone();
        let writer = tokio::task::spawn_blocking(move || {
            write_stream(&p, have, open_target(&disk, passive), rx)
        });
        let mut got = have;
        let mut last_pct = 0u64;
        let mut failure = None;
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    failure = Some(err(e.to_string()));
                    break;
                }
            };
            if got + chunk.len() as u64 > offer.size {
                failure = Some(UpdateError::SizeMismatch {
                    got: got + chunk.len() as u64,
                    expected: offer.size,
                });
                break;
            }
            got += chunk.len() as u64;
            if tx.send(chunk).await.is_err() {
                break; // the writer failed: its error is below
            }
            let pct = got * 100 / offer.size.max(1);
            if pct > last_pct {
                last_pct = pct;
                self.set_op(UpdateStatus::Downloading, pct as f64 / 100.0);
            }
        }
        drop(tx);
        // The writer flushes what it has (for a later resume) before ending.
        let summary = writer
            .await
            .map_err(|e| UpdateError::Task(e.to_string()))??;
        if let Some(e) = failure {
            return Err(e);
        }
        if summary.len < offer.size {
            return Err(UpdateError::DownloadIncomplete {
                url: offer.url.clone(),
                got: summary.len,
                expected: offer.size,
            });
        }
        Ok((path, summary))
    }

    /// Checks the Omaha sha256 of the whole payload (error 10) and then its
    /// signature (error 12) with the digests computed while downloading;
    /// returns the payload's manifest.
    async fn verify_download(
        &self,
        path: &Path,
        offer: &UpdateOffer,
        summary: &StreamSummary,
    ) -> Result<payload::ParsedPayload, UpdateError> {
        let p = path.to_owned();
        let key = self.settings.public_key.clone();
        let expected = offer.sha256.clone();
        let digest = summary.sha256;
        let signed_digest = summary.signed_sha256;
        let res = blocking(move || -> Result<payload::ParsedPayload, UpdateError> {
            if digest.as_slice() != expected.as_slice() {
                let b64 = base64::engine::general_purpose::STANDARD;
                return Err(UpdateError::HashMismatch {
                    got: b64.encode(digest),
                    expected: b64.encode(&expected),
                });
            }
            let mut f = std::fs::File::open(&p).map_err(|source| UpdateError::Local {
                path: p.clone(),
                source,
            })?;
            let parsed = payload::read_manifest(&mut f)?;
            let signed_len = parsed.signed_len()?;
            let len = f
                .seek(std::io::SeekFrom::End(0))
                .map_err(PayloadError::Read)?;
            if len < signed_len {
                return Err(PayloadError::Signature(format!(
                    "payload ends at {len} bytes, before its signature"
                ))
                .into());
            }
            let key = payload::sign::load_public_key(&key)?;
            let signed = match signed_digest {
                Some(d) => d,
                None => payload::sign::hash_prefix(&mut f, signed_len)?,
            };
            payload::sign::verify_with_digest(&mut f, &parsed, &signed, &key)?;
            Ok(parsed)
        })
        .await?;
        if res.is_err() {
            // A corrupt or unverifiable file must not be resumed.
            let _ = std::fs::remove_file(path);
        }
        res
    }

    async fn apply(
        &self,
        path: &Path,
        passive: u32,
    ) -> Result<payload::ParsedPayload, UpdateError> {
        if passive == self.settings.active_partition {
            return Err(UpdateError::NoPassive {
                disk: self.settings.disk.clone(),
                active: passive,
            });
        }
        let p = path.to_owned();
        let disk = self.settings.disk.clone();
        let status = self.status.clone();
        let changes = self.changes.clone();
        blocking(move || -> Result<payload::ParsedPayload, UpdateError> {
            let extent = GptDisk::open(&disk)
                .and_then(|g| g.extent(passive))
                .map_err(|source| UpdateError::Disk {
                    disk: disk.clone(),
                    source,
                })?;
            let mut f = std::fs::File::open(&p).map_err(PayloadError::Read)?;
            let parsed = payload::read_manifest(&mut f)?;
            if !parsed.manifest.procedures.is_empty() {
                tracing::warn!(
                    count = parsed.manifest.procedures.len(),
                    "the payload has install procedures (kernel, PCR policy); they are not applied by this engine"
                );
            }
            let mut target = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&disk)
                .map_err(|source| UpdateError::InstallDevice {
                    path: disk.clone(),
                    source,
                })?;
            let mut last = 0usize;
            payload::apply::apply_payload(&mut f, &parsed, &mut target, extent, |done, total| {
                let pct = done * 100 / total.max(1);
                if pct > last {
                    last = pct;
                    let mut info = status.borrow().clone();
                    info.progress = 0.5 + pct as f64 / 200.0;
                    status.send_replace(info.clone());
                    let _ = changes.send(info);
                }
            })?;
            Ok(parsed)
        })
        .await?
    }

    async fn verify_written(
        &self,
        parsed: payload::ParsedPayload,
        passive: u32,
    ) -> Result<(), UpdateError> {
        let disk = self.settings.disk.clone();
        blocking(move || -> Result<(), UpdateError> {
            let extent = GptDisk::open(&disk)
                .and_then(|g| g.extent(passive))
                .map_err(|source| UpdateError::Disk {
                    disk: disk.clone(),
                    source,
                })?;
            let mut target =
                std::fs::File::open(&disk).map_err(|source| UpdateError::InstallDevice {
                    path: disk.clone(),
                    source,
                })?;
            payload::apply::verify_written(&mut target, &parsed, extent)?;
            Ok(())
        })
        .await?
    }
}

/// Chunks in flight between the network and the writer.
const CHANNEL_CHUNKS: usize = 256;
/// Download file write batches.
const FILE_BUF: usize = 4 << 20;

/// The passive partition opened for writing, or `None` (the file-based
/// apply after verification then reports why).
fn open_target(disk: &Path, passive: u32) -> Option<(std::fs::File, gpt::PartitionExtent)> {
    let extent = GptDisk::open(disk).and_then(|g| g.extent(passive)).ok()?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .ok()?;
    Some((file, extent))
}

/// Feeds the first `len` bytes of the download file into a new stream.
fn feed_file(path: &Path, len: u64, stream: &mut StreamApplier) -> Result<(), UpdateError> {
    let local = |source| UpdateError::Local {
        path: path.to_owned(),
        source,
    };
    let f = std::fs::File::open(path).map_err(local)?;
    let mut f = f.take(len);
    loop {
        let mut buf = vec![0u8; FILE_BUF];
        let n = payload::create::read_full(&mut f, &mut buf).map_err(local)?;
        if n == 0 {
            return Ok(());
        }
        buf.truncate(n);
        stream.feed_bytes(buf.into());
    }
}

/// A complete download file, streamed from disk.
fn stream_file(
    path: &Path,
    len: u64,
    target: Option<(std::fs::File, gpt::PartitionExtent)>,
) -> Result<StreamSummary, UpdateError> {
    let mut stream = StreamApplier::new(target);
    feed_file(path, len, &mut stream)?;
    Ok(stream.finish())
}

/// The blocking writer: the `have` bytes already in the file, then every
/// chunk from the network, appended to the file and fed to the stream.
fn write_stream(
    path: &Path,
    have: u64,
    target: Option<(std::fs::File, gpt::PartitionExtent)>,
    mut chunks: mpsc::Receiver<bytes::Bytes>,
) -> Result<StreamSummary, UpdateError> {
    let local = |source| UpdateError::Local {
        path: path.to_owned(),
        source,
    };
    let mut stream = StreamApplier::new(target);
    if have > 0 {
        feed_file(path, have, &mut stream)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(have == 0)
        .append(have > 0)
        .open(path)
        .map_err(local)?;
    while let Some(chunk) = chunks.blocking_recv() {
        // Straight from the network buffer into the page cache (the chunks
        // are tens to hundreds of KiB: no buffering copy). The file is a
        // resume cache checked by sha256 at the end: it is not synced (it
        // is deleted after the update; syncing it would double the disk
        // writes).
        file.write_all(&chunk).map_err(local)?;
        stream.feed_bytes(chunk);
    }
    Ok(stream.finish())
}

/// Deletes a finished download file. Unlinking a large file whose pages are
/// still cached takes a while (the kernel drops them), so the file is
/// renamed out of the way at once and unlinked on a blocking thread; a new
/// download can start meanwhile.
fn remove_in_background(path: &Path) {
    let doomed = path.with_extension("done");
    match std::fs::rename(path, &doomed) {
        Ok(()) => {
            tokio::task::spawn_blocking(move || {
                let _ = std::fs::remove_file(&doomed);
            });
        }
        Err(_) => {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn ok_event(ty: u32) -> Event {
    Event {
        event_type: ty,
        event_result: event_result::SUCCESS,
        error_code: None,
        previous_version: None,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, UpdateError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| UpdateError::Task(e.to_string()))
}

/// The disk and partition number of a `/usr` block device path such as
/// `/dev/sda3`, `/dev/vda4` or `/dev/nvme0n1p3`.
pub fn split_partition_device(dev: &str) -> Option<(PathBuf, u32)> {
    let digits = dev.len() - dev.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let (base, num) = dev.split_at(dev.len() - digits);
    let number = num.parse().ok()?;
    let base = match base.strip_suffix('p') {
        Some(b) if b.ends_with(|c: char| c.is_ascii_digit()) => b,
        _ => base,
    };
    Some((PathBuf::from(base), number))
}

/// The device mounted at `/usr`, from a mountinfo text.
pub fn usr_device_from_mountinfo(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let mount_point = fields.get(4)?;
        if *mount_point != "/usr" {
            return None;
        }
        let sep = fields.iter().position(|f| *f == "-")?;
        fields.get(sep + 2).map(|s| (*s).to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_devices() {
        assert_eq!(
            split_partition_device("/dev/sda3"),
            Some(("/dev/sda".into(), 3))
        );
        assert_eq!(
            split_partition_device("/dev/nvme0n1p4"),
            Some(("/dev/nvme0n1".into(), 4))
        );
        assert_eq!(
            split_partition_device("/dev/loop0p4"),
            Some(("/dev/loop0".into(), 4))
        );
        assert_eq!(split_partition_device("/dev/mapper/usr"), None);
    }

    #[test]
    fn usr_from_mountinfo() {
        let text = "22 1 8:9 / / rw,relatime shared:1 - ext4 /dev/sda9 rw\n\
                    23 1 8:3 / /usr ro,relatime shared:2 - ext4 /dev/sda3 ro\n";
        assert_eq!(
            usr_device_from_mountinfo(text).as_deref(),
            Some("/dev/sda3")
        );
        assert_eq!(
            usr_device_from_mountinfo("22 1 8:9 / / rw - ext4 /dev/sda9 rw"),
            None
        );
    }
}
