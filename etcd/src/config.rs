//! Command-line flags and `ETCD_*` variables (Go flag syntax accepted), validated once into [`Settings`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;

use crate::cluster;

/// The etcd release whose v2 API this server reproduces (reported by `/version` and `--version`).
pub const ETCD_VERSION: &str = "3.4.23";
/// The cluster version reported by `/version`.
pub const CLUSTER_VERSION: &str = "3.4.0";

/// Flags etcd has that this server does not implement yet; they are refused, never ignored.
const UNSUPPORTED: &[&str] = &[
    "wal-dir",
    "discovery-proxy",
    "discovery-srv",
    "cors",
    "quota-backend-bytes",
    "max-request-bytes",
    "auth-token",
    "enable-pprof",
    "listen-metrics-urls",
    "metrics",
    "force-new-cluster",
    "max-snapshots",
    "max-wals",
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "enable-grpc-gateway",
    "initial-election-tick-advance",
    "pre-vote",
    "host-whitelist",
    "cipher-suites",
    "config-file",
];

fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean value {s:?}")),
    }
}

/// Raw flags, named as etcd names them.
#[derive(Debug, Parser)]
#[command(
    name = "etcd",
    about = "etcd v2 API server (raft over sled)",
    args_override_self = true,
    disable_version_flag = true
)]
pub struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory (default: <name>.etcd).
    #[arg(long = "data-dir", env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic.
    #[arg(
        long = "listen-client-urls",
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub listen_client_urls: String,
    /// Client URLs advertised to the cluster.
    #[arg(
        long = "advertise-client-urls",
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    pub advertise_client_urls: String,
    /// URLs to listen on for peer traffic.
    #[arg(
        long = "listen-peer-urls",
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub listen_peer_urls: String,
    /// Peer URLs advertised to the cluster.
    #[arg(
        long = "initial-advertise-peer-urls",
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: String,
    /// Initial cluster configuration (name=peerURL,...).
    #[arg(long = "initial-cluster", env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// new or existing.
    #[arg(
        long = "initial-cluster-state",
        env = "ETCD_INITIAL_CLUSTER_STATE",
        default_value = "new"
    )]
    pub initial_cluster_state: String,
    /// Initial cluster token.
    #[arg(
        long = "initial-cluster-token",
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,
    /// Refuse membership changes that would leave fewer started members than a quorum (set false to force).
    #[arg(long = "strict-reconfig-check", env = "ETCD_STRICT_RECONFIG_CHECK", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", value_parser = go_bool)]
    pub strict_reconfig_check: bool,
    /// Discovery URL used to bootstrap the cluster (etcd's discovery protocol).
    #[arg(long, env = "ETCD_DISCOVERY")]
    pub discovery: Option<String>,
    /// What a member does when the discovery registry is full: exit, or become a proxy of the cluster.
    #[arg(
        long = "discovery-fallback",
        env = "ETCD_DISCOVERY_FALLBACK",
        default_value = "proxy"
    )]
    pub discovery_fallback: String,
    /// Accepted for compatibility: the v2 API is always on.
    #[arg(long = "enable-v2", env = "ETCD_ENABLE_V2", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub enable_v2: Option<bool>,
    /// Heartbeat interval in ms.
    #[arg(
        long = "heartbeat-interval",
        env = "ETCD_HEARTBEAT_INTERVAL",
        default_value_t = 100
    )]
    pub heartbeat_interval: u64,
    /// Election timeout in ms.
    #[arg(
        long = "election-timeout",
        env = "ETCD_ELECTION_TIMEOUT",
        default_value_t = 1000
    )]
    pub election_timeout: u64,
    /// Committed entries between snapshots.
    #[arg(
        long = "snapshot-count",
        env = "ETCD_SNAPSHOT_COUNT",
        default_value_t = 100_000
    )]
    pub snapshot_count: u64,
    /// Debug logging.
    #[arg(long, env = "ETCD_DEBUG", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub debug: Option<bool>,
    /// Log level (debug, info, warn, error).
    #[arg(long = "log-level", env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Accepted for compatibility: logs always go to stderr in one format.
    #[arg(long, env = "ETCD_LOGGER")]
    pub logger: Option<String>,
    /// Only stderr is supported.
    #[arg(long = "log-outputs", env = "ETCD_LOG_OUTPUTS")]
    pub log_outputs: Option<String>,
    /// Largest accepted v2 request body in bytes (our extension; Go's form limit is 10 MiB).
    #[arg(long = "v2-max-body-bytes", env = "ETCD_V2_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub v2_max_body_bytes: usize,
    /// Revisions kept in the history shared by v2 `waitIndex` and v3 (our extension; etcd's v2 keeps 1000
    /// events); older ones are compacted away.
    #[arg(long = "v2-history-size", env = "ETCD_V2_HISTORY_SIZE", default_value_t = crate::store::history::DEFAULT_CAPACITY)]
    pub v2_history_size: usize,
    /// etcd's auto-compaction retention: "0" (the default) turns it off; in periodic mode hours ("1") or a
    /// duration ("30m"), in revision mode a revision count.
    #[arg(
        long = "auto-compaction-retention",
        env = "ETCD_AUTO_COMPACTION_RETENTION",
        default_value = "0"
    )]
    pub auto_compaction_retention: String,
    /// etcd's auto-compaction mode: periodic or revision.
    #[arg(
        long = "auto-compaction-mode",
        env = "ETCD_AUTO_COMPACTION_MODE",
        default_value = "periodic"
    )]
    pub auto_compaction_mode: String,
    /// Proxy mode: off, on (forward client requests to the cluster) or readonly (forward only GETs).
    #[arg(long, env = "ETCD_PROXY", default_value = "off")]
    pub proxy: String,
    /// Proxy: ms an endpoint is skipped after a failed request.
    #[arg(
        long = "proxy-failure-wait",
        env = "ETCD_PROXY_FAILURE_WAIT",
        default_value_t = 5000
    )]
    pub proxy_failure_wait: u64,
    /// Proxy: ms between refreshes of the member list.
    #[arg(
        long = "proxy-refresh-interval",
        env = "ETCD_PROXY_REFRESH_INTERVAL",
        default_value_t = 30000
    )]
    pub proxy_refresh_interval: u64,
    /// Proxy: ms a connection to a member may take (0: no limit).
    #[arg(
        long = "proxy-dial-timeout",
        env = "ETCD_PROXY_DIAL_TIMEOUT",
        default_value_t = 1000
    )]
    pub proxy_dial_timeout: u64,
    /// Proxy: ms sending a request to a member may take (0: no limit).
    #[arg(
        long = "proxy-write-timeout",
        env = "ETCD_PROXY_WRITE_TIMEOUT",
        default_value_t = 5000
    )]
    pub proxy_write_timeout: u64,
    /// Proxy: ms a member may take to start its reply (0, the default: no limit, as watches need).
    #[arg(
        long = "proxy-read-timeout",
        env = "ETCD_PROXY_READ_TIMEOUT",
        default_value_t = 0
    )]
    pub proxy_read_timeout: u64,
    /// Certificate (PEM) served on `https://` client URLs.
    #[arg(long = "cert-file", env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long = "key-file", env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to.
    #[arg(long = "trusted-ca-file", env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a client certificate signed by `--trusted-ca-file` on `https://` client URLs.
    #[arg(long = "client-cert-auth", env = "ETCD_CLIENT_CERT_AUTH", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub client_cert_auth: bool,
    /// Client TLS with a self-signed certificate made in `<data-dir>/fixtures/client` (without `--cert-file`).
    #[arg(long = "auto-tls", env = "ETCD_AUTO_TLS", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub auto_tls: bool,
    /// Peer TLS with a self-signed certificate made in `<data-dir>/fixtures/peer` (without
    /// `--peer-cert-file`); peers are then not verified.
    #[arg(long = "peer-auto-tls", env = "ETCD_PEER_AUTO_TLS", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub peer_auto_tls: bool,
    /// Certificate (PEM) served on `https://` peer URLs and presented to `https://` peers.
    #[arg(long = "peer-cert-file", env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long = "peer-key-file", env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// CA certificates (PEM) that peers' certificates must chain to (both directions).
    #[arg(long = "peer-trusted-ca-file", env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Require a peer certificate signed by `--peer-trusted-ca-file` on `https://` peer URLs.
    #[arg(long = "peer-client-cert-auth", env = "ETCD_PEER_CLIENT_CERT_AUTH", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    pub peer_client_cert_auth: bool,
    /// Print the version and exit.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = go_bool)]
    pub version: Option<bool>,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A bad URL.
    #[error("invalid URL {url:?} in --{flag}: {why}")]
    Url {
        /// The flag.
        flag: &'static str,
        /// The value.
        url: String,
        /// The problem.
        why: String,
    },
    /// A bad --initial-cluster.
    #[error("--initial-cluster: {0}")]
    InitialCluster(String),
    /// Something not implemented.
    #[error("{0}")]
    Unsupported(String),
}

/// Validated settings; every default is written in [`Flags`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Member name.
    pub name: String,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Listen URLs for clients (host:port to bind).
    pub listen_client_urls: Vec<url::Url>,
    /// Advertised client URLs.
    pub advertise_client_urls: Vec<String>,
    /// Advertised peer URLs of this member.
    pub peer_urls: Vec<String>,
    /// The cluster token.
    pub token: String,
    /// This member's id.
    pub member_id: u64,
    /// The cluster id.
    pub cluster_id: u64,
    /// Raft heartbeat.
    pub heartbeat: Duration,
    /// Raft election timeout.
    pub election: Duration,
    /// Entries between snapshots.
    pub snapshot_count: u64,
    /// Largest accepted request body (Go's form limit is 10 MiB).
    pub max_body_bytes: usize,
    /// Revisions kept in the history (v2 `waitIndex`, v3 watches and old-revision reads) before the oldest
    /// are compacted away.
    pub history_capacity: usize,
    /// Automatic compaction (`--auto-compaction-*`), if on.
    pub auto_compaction: Option<AutoCompaction>,
    /// Listen URLs for peers.
    pub listen_peer_urls: Vec<url::Url>,
    /// The members of `--initial-cluster`: id → peer URLs.
    pub initial_members: BTreeMap<u64, Vec<String>>,
    /// `--initial-cluster-state existing`: join a running cluster (the ids come from it).
    pub join_existing: bool,
    /// `--strict-reconfig-check`.
    pub strict_reconfig: bool,
    /// `--discovery`: bootstrap through this registry on a fresh data dir.
    pub discovery: Option<String>,
    /// `--discovery-fallback exit` (else a member finding the registry full becomes a proxy).
    pub discovery_fallback_exit: bool,
    /// `--proxy`.
    pub proxy: ProxyMode,
    /// `--proxy-*` timing (also used when discovery falls back to a proxy).
    pub proxy_timing: ProxyTiming,
    /// Bound peer listeners handed to [`crate::run`] (the binary binds `listen_peer_urls`; in-process
    /// single-member servers need none).
    pub peer_listeners: PeerListeners,
    /// TLS for `https://` client URLs (`--cert-file` and friends).
    pub client_tls: Option<Arc<rustls::ServerConfig>>,
    /// Addresses of the bound client listeners that speak TLS (the binary fills this in as it binds the
    /// `https://` URLs of `listen_client_urls`).
    pub https_listeners: Vec<std::net::SocketAddr>,
    /// TLS for `https://` peer URLs (`--peer-cert-file` and friends): served on them, used towards them.
    pub peer_tls: Option<crate::tls::PeerTls>,
    /// Addresses of the bound peer listeners that speak TLS (the `https://` URLs of `listen_peer_urls`).
    pub https_peer_listeners: Vec<std::net::SocketAddr>,
    /// A proxy's TLS towards `https://` members (from the client TLS files, else the peer ones); `None`
    /// without either (the system's CA bundle is trusted then).
    pub proxy_client_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Settings {
    /// The TLS config a bound client listener serves with: `Some` for those of the `https://` URLs.
    pub fn client_tls_for(
        &self,
        listener: &tokio::net::TcpListener,
    ) -> Option<Arc<rustls::ServerConfig>> {
        listener
            .local_addr()
            .ok()
            .filter(|a| self.https_listeners.contains(a))
            .and(self.client_tls.clone())
    }
}

/// `--proxy`: whether this process is a member or a proxy of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// A member (raft and data).
    Off,
    /// A proxy forwarding every client request.
    On,
    /// A proxy forwarding only GETs (others get 501).
    Readonly,
}

/// The proxy's timing (`--proxy-*`, milliseconds in etcd's flags; zero means no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyTiming {
    /// How long a failed endpoint is skipped.
    pub failure_wait: Duration,
    /// How often the member list is refreshed.
    pub refresh: Duration,
    /// Connecting to a member.
    pub dial: Duration,
    /// Sending a request to a member.
    pub write: Duration,
    /// Waiting for a member's reply to start.
    pub read: Duration,
}

/// etcd's automatic compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep the revisions of the last period.
    Periodic(Duration),
    /// Keep the last N revisions.
    Revision(u64),
}

/// Parses `--auto-compaction-retention` for `--auto-compaction-mode`.
fn auto_compaction(mode: &str, retention: &str) -> Result<Option<AutoCompaction>, ConfigError> {
    let bad = || {
        ConfigError::Unsupported(format!(
            "--auto-compaction-retention {retention:?} is not valid for mode {mode:?}"
        ))
    };
    match mode {
        "revision" => {
            let n: u64 = retention.parse().map_err(|_| bad())?;
            Ok((n > 0).then_some(AutoCompaction::Revision(n)))
        }
        "periodic" => {
            let d = if let Ok(h) = retention.parse::<u64>() {
                Duration::from_secs(h.saturating_mul(3600))
            } else {
                let split = retention
                    .find(|c: char| c.is_ascii_alphabetic())
                    .ok_or_else(bad)?;
                let (num, unit) = retention.split_at(split);
                let n: f64 = num.parse().map_err(|_| bad())?;
                let secs = match unit {
                    "h" => n * 3600.0,
                    "m" => n * 60.0,
                    "s" => n,
                    "ms" => n / 1000.0,
                    _ => return Err(bad()),
                };
                if !secs.is_finite() || secs < 0.0 {
                    return Err(bad());
                }
                Duration::from_secs_f64(secs)
            };
            Ok((!d.is_zero()).then_some(AutoCompaction::Periodic(d)))
        }
        m => Err(ConfigError::Unsupported(format!(
            "--auto-compaction-mode {m:?}: must be periodic or revision"
        ))),
    }
}

/// Already-bound peer listeners, taken once by [`crate::run`].
#[derive(Debug, Clone, Default)]
pub struct PeerListeners(Arc<Mutex<Vec<std::net::TcpListener>>>);

impl PeerListeners {
    /// Wraps bound listeners.
    pub fn new(listeners: Vec<std::net::TcpListener>) -> Self {
        PeerListeners(Arc::new(Mutex::new(listeners)))
    }

    /// Takes the listeners (empty the second time).
    pub fn take(&self) -> Vec<std::net::TcpListener> {
        self.0
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }
}

/// What the command line asks for.
pub enum Invocation {
    /// `--version`.
    Version,
    /// Run the server.
    Run(Box<Flags>),
}

/// Rewrites Go-style single-dash long flags (`-name x`, `-data-dir=x`) to clap's `--name`.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut rest = false;
    for (i, a) in args.into_iter().enumerate() {
        let s = a.to_string_lossy().into_owned();
        if i == 0 || rest {
            out.push(a);
            continue;
        }
        if s == "--" {
            rest = true;
            out.push(a);
            continue;
        }
        let b = s.as_bytes();
        if b.len() > 2 && b[0] == b'-' && b[1] != b'-' && b[1].is_ascii_alphabetic() {
            out.push(OsString::from(format!("-{s}")));
        } else {
            out.push(a);
        }
    }
    out
}

/// Parses the command line (after [`normalize_args`]), refusing etcd flags this server lacks.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, clap::Error> {
    let args = normalize_args(args);
    for a in args.iter().skip(1) {
        let s = a.to_string_lossy();
        if let Some(name) = s.strip_prefix("--") {
            let name = name.split('=').next().unwrap_or("");
            if UNSUPPORTED.contains(&name) || name.starts_with("experimental-") {
                return Err(clap::Error::raw(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("flag --{name} is an etcd flag this server does not support yet\n"),
                ));
            }
        }
    }
    for name in UNSUPPORTED {
        let var = format!("ETCD_{}", name.to_ascii_uppercase().replace('-', "_"));
        if std::env::var_os(&var).is_some_and(|v| !v.is_empty()) {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "{var} (flag --{name}) is an etcd setting this server does not support yet\n"
                ),
            ));
        }
    }
    let flags = Flags::try_parse_from(args)?;
    if flags.version == Some(true) {
        return Ok(Invocation::Version);
    }
    Ok(Invocation::Run(Box::new(flags)))
}

/// Parses `name=peerURL,...` (a name may repeat for several URLs), keeping the order of first appearance.
pub fn parse_initial_cluster(initial: &str) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let mut members: Vec<(String, Vec<String>)> = Vec::new();
    for part in initial.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, u) = part
            .split_once('=')
            .ok_or_else(|| ConfigError::InitialCluster(format!("{part:?} is not name=url")))?;
        let u = urls("initial-cluster", u)?
            .iter()
            .map(url_string)
            .collect::<Vec<_>>();
        match members.iter_mut().find(|(n, _)| n == name) {
            Some((_, list)) => list.extend(u),
            None => members.push((name.to_string(), u)),
        }
    }
    Ok(members)
}

/// Member ids (etcd's derivation from peer URLs and `token`) → peer URLs.
pub fn members_by_id(
    members: &[(String, Vec<String>)],
    token: &str,
) -> Result<BTreeMap<u64, Vec<String>>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, urls) in members {
        let id = cluster::member_id(urls, token);
        if out.insert(id, urls.clone()).is_some() {
            return Err(ConfigError::InitialCluster(format!(
                "member {name:?} has the same peer URLs (and so the same id) as another member"
            )));
        }
    }
    Ok(out)
}

/// The lines `etcd --version` prints.
pub fn version_text() -> String {
    format!(
        "etcd Version: {ETCD_VERSION}\nGit SHA: etcd-rs {}\nGo Version: none (Rust)\nGo OS/Arch: {}/{}\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        if std::env::consts::ARCH == "x86_64" {
            "amd64"
        } else {
            std::env::consts::ARCH
        }
    )
}

fn urls(flag: &'static str, list: &str) -> Result<Vec<url::Url>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let u = url::Url::parse(s).map_err(|e| ConfigError::Url {
                flag,
                url: s.into(),
                why: e.to_string(),
            })?;
            if !matches!(u.scheme(), "http" | "https" | "unix" | "unixs") {
                return Err(ConfigError::Url {
                    flag,
                    url: s.into(),
                    why: "URL scheme must be http, https, unix, or unixs".into(),
                });
            }
            if !matches!(u.scheme(), "http" | "https") {
                return Err(ConfigError::Unsupported(format!(
                    "--{flag} {s}: only http and https URLs are supported yet"
                )));
            }
            Ok(u)
        })
        .collect()
}

/// The certificate and key files: as given, or with `auto` (`--auto-tls`, `--peer-auto-tls`) and none given,
/// etcd's self-signed pair in `dir` for the hosts of `listen` (made now, or kept from an earlier start).
fn tls_files(
    auto: bool,
    given: (&Option<PathBuf>, &Option<PathBuf>),
    dir: &std::path::Path,
    listen: &[url::Url],
) -> Result<(Option<PathBuf>, Option<PathBuf>), ConfigError> {
    let given = (given.0.clone(), given.1.clone());
    if !auto {
        return Ok(given);
    }
    if given.0.is_some() || given.1.is_some() {
        tracing::warn!("ignoring auto TLS since certificate files are given");
        return Ok(given);
    }
    let mut hosts: Vec<String> = listen
        .iter()
        .filter_map(|u| u.host_str())
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .collect();
    hosts.sort();
    hosts.dedup();
    let (cert, key) = crate::tls::self_signed(dir, &hosts)
        .map_err(|e| ConfigError::Unsupported(e.to_string()))?;
    tracing::info!(dir = %dir.display(), "auto TLS: using a self-signed certificate");
    Ok((Some(cert), Some(key)))
}

fn proxy_mode(p: &str) -> Result<ProxyMode, ConfigError> {
    match p {
        "off" => Ok(ProxyMode::Off),
        "on" => Ok(ProxyMode::On),
        "readonly" => Ok(ProxyMode::Readonly),
        p => Err(ConfigError::Unsupported(format!(
            "--proxy {p:?}: must be off, on or readonly"
        ))),
    }
}

fn url_string(u: &url::Url) -> String {
    u.as_str().trim_end_matches('/').to_string()
}

impl Flags {
    /// Validates the flags into settings.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        if let Some(o) = &self.log_outputs
            && o != "stderr"
            && o != "default"
        {
            return Err(ConfigError::Unsupported(format!(
                "--log-outputs {o}: only stderr is supported"
            )));
        }
        let listen = urls("listen-client-urls", &self.listen_client_urls)?;
        if listen.is_empty() {
            return Err(ConfigError::Unsupported(
                "--listen-client-urls is empty".into(),
            ));
        }
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", self.name)));
        let (cert_file, key_file) = tls_files(
            self.auto_tls,
            (&self.cert_file, &self.key_file),
            &data_dir.join("fixtures").join("client"),
            &listen,
        )?;
        let client_flags = crate::tls::ClientTlsFlags {
            cert_file,
            key_file,
            trusted_ca_file: self.trusted_ca_file.clone(),
            client_cert_auth: self.client_cert_auth,
        };
        let client_tls = crate::tls::server_config(&client_flags)
            .map_err(|e| ConfigError::Unsupported(e.to_string()))?;
        if client_tls.is_none()
            && let Some(u) = listen.iter().find(|u| u.scheme() == "https")
        {
            return Err(ConfigError::Unsupported(format!(
                "--listen-client-urls {u}: https needs --cert-file and --key-file"
            )));
        }
        let advertise: Vec<String> = urls("advertise-client-urls", &self.advertise_client_urls)?
            .iter()
            .map(url_string)
            .collect();
        let listen_peer_urls = urls("listen-peer-urls", &self.listen_peer_urls)?;
        let (cert_file, key_file) = tls_files(
            self.peer_auto_tls,
            (&self.peer_cert_file, &self.peer_key_file),
            &data_dir.join("fixtures").join("peer"),
            &listen_peer_urls,
        )?;
        // Peers' self-signed certificates cannot be verified.
        let peer_skip_verify = self.peer_auto_tls && self.peer_cert_file.is_none();
        let peer_flags = crate::tls::ClientTlsFlags {
            cert_file,
            key_file,
            trusted_ca_file: self.peer_trusted_ca_file.clone(),
            client_cert_auth: self.peer_client_cert_auth,
        };
        let peer_tls = crate::tls::peer_config(&peer_flags, peer_skip_verify)
            .map_err(|e| ConfigError::Unsupported(e.to_string()))?;
        let proxy_client_tls = crate::tls::proxy_client_config(
            &client_flags,
            &peer_flags,
            self.auto_tls && self.cert_file.is_none(),
        )
        .map_err(|e| ConfigError::Unsupported(e.to_string()))?;
        // A proxy does not listen on the peer URLs.
        if peer_tls.is_none()
            && proxy_mode(&self.proxy)? == ProxyMode::Off
            && let Some(u) = listen_peer_urls.iter().find(|u| u.scheme() == "https")
        {
            // etcd's words.
            return Err(ConfigError::Unsupported(format!(
                "cannot listen on TLS for {}:{}: KeyFile and CertFile are not presented (--peer-cert-file, --peer-key-file)",
                u.host_str().unwrap_or(""),
                u.port_or_known_default().unwrap_or(2380)
            )));
        }
        let own_peers: Vec<String> = urls(
            "initial-advertise-peer-urls",
            &self.initial_advertise_peer_urls,
        )?
        .iter()
        .map(url_string)
        .collect();
        if let Some(d) = &self.discovery {
            if self.initial_cluster.is_some() {
                return Err(ConfigError::InitialCluster(
                    "multiple discovery or bootstrap flags are set: choose one of --initial-cluster or --discovery".into(),
                ));
            }
            if !matches!(self.discovery_fallback.as_str(), "exit" | "proxy") {
                return Err(ConfigError::Unsupported(format!(
                    "--discovery-fallback {:?}: must be exit or proxy",
                    self.discovery_fallback
                )));
            }
            url::Url::parse(d).map_err(|e| ConfigError::Url {
                flag: "discovery",
                url: d.clone(),
                why: e.to_string(),
            })?;
        }
        let initial = self
            .initial_cluster
            .clone()
            .unwrap_or_else(|| format!("{}={}", self.name, own_peers.join(",")));
        let members = parse_initial_cluster(&initial)?;
        let proxy = proxy_mode(&self.proxy)?;
        let ms = Duration::from_millis;
        let proxy_timing = ProxyTiming {
            failure_wait: ms(self.proxy_failure_wait),
            refresh: ms(self.proxy_refresh_interval),
            dial: ms(self.proxy_dial_timeout),
            write: ms(self.proxy_write_timeout),
            read: ms(self.proxy_read_timeout),
        };
        // A proxy is not in --initial-cluster: it only reads the members' peer URLs from it.
        let peers = match members.iter().find(|(n, _)| *n == self.name) {
            Some((_, peers)) => peers,
            None if proxy != ProxyMode::Off => &own_peers,
            None => {
                return Err(ConfigError::InitialCluster(format!(
                    "couldn't find local name {:?} in the initial cluster configuration",
                    self.name
                )));
            }
        };
        let (mut mine, mut theirs) = (peers.clone(), own_peers.clone());
        mine.sort();
        theirs.sort();
        if self.initial_cluster.is_some() && proxy == ProxyMode::Off && mine != theirs {
            return Err(ConfigError::InitialCluster(format!(
                "{:?} has peer URLs {} but --initial-advertise-peer-urls is {}",
                self.name,
                peers.join(","),
                own_peers.join(",")
            )));
        }
        let join_existing = match self.initial_cluster_state.as_str() {
            "new" => false,
            "existing" => true,
            s => {
                return Err(ConfigError::Unsupported(format!(
                    "--initial-cluster-state {s:?}: must be new or existing"
                )));
            }
        };
        // With discovery, ids derive from the discovery URL (etcd uses it as the cluster token).
        let token = self
            .discovery
            .clone()
            .unwrap_or_else(|| self.initial_cluster_token.clone());
        let initial_members = members_by_id(&members, &token)?;
        let ids: Vec<u64> = initial_members.keys().copied().collect();
        let member_id = cluster::member_id(peers, &token);
        Ok(Settings {
            name: self.name.clone(),
            data_dir,
            listen_client_urls: listen,
            advertise_client_urls: advertise,
            peer_urls: peers.clone(),
            token,
            member_id,
            cluster_id: cluster::cluster_id(&ids),
            heartbeat: Duration::from_millis(self.heartbeat_interval),
            election: Duration::from_millis(self.election_timeout),
            snapshot_count: self.snapshot_count,
            max_body_bytes: self.v2_max_body_bytes,
            history_capacity: self.v2_history_size.max(1),
            auto_compaction: auto_compaction(
                &self.auto_compaction_mode,
                &self.auto_compaction_retention,
            )?,
            listen_peer_urls,
            initial_members,
            join_existing,
            strict_reconfig: self.strict_reconfig_check,
            peer_listeners: PeerListeners::default(),
            client_tls,
            https_listeners: Vec::new(),
            peer_tls,
            https_peer_listeners: Vec::new(),
            proxy_client_tls,
            discovery: self.discovery.clone(),
            discovery_fallback_exit: self.discovery_fallback == "exit",
            proxy,
            proxy_timing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Flags, String> {
        let mut v = vec![OsString::from("etcd")];
        v.extend(args.iter().map(OsString::from));
        match parse(v) {
            Ok(Invocation::Run(f)) => Ok(*f),
            Ok(Invocation::Version) => Err("version".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn go_flag_syntax() {
        let f = run(&[
            "-name",
            "n1",
            "--data-dir=/x",
            "-data-dir",
            "/y",
            "-enable-v2=true",
            "--heartbeat-interval=50",
        ])
        .unwrap();
        assert_eq!(f.name, "n1");
        assert_eq!(f.data_dir, Some(PathBuf::from("/y")));
        assert_eq!(f.enable_v2, Some(true));
        assert_eq!(f.heartbeat_interval, 50);
        assert!(run(&["--no-such-flag"]).is_err());
        assert!(
            run(&["--discovery-srv", "x"])
                .unwrap_err()
                .contains("does not support")
        );
        assert_eq!(run(&["-version"]).unwrap_err(), "version");
    }

    #[test]
    fn proxy_flags() {
        let f = run(&[
            "--proxy",
            "readonly",
            "--name",
            "worker",
            "--initial-cluster",
            "n1=http://10.0.0.1:2380,n2=http://10.0.0.2:2380",
            "--proxy-refresh-interval",
            "200",
        ])
        .unwrap();
        // A proxy need not be named in --initial-cluster.
        let s = f.settings().unwrap();
        assert_eq!(s.proxy, ProxyMode::Readonly);
        assert_eq!(s.proxy_timing.refresh, Duration::from_millis(200));
        assert_eq!(s.proxy_timing.failure_wait, Duration::from_millis(5000));
        assert_eq!(s.proxy_timing.read, Duration::ZERO);
        assert_eq!(s.initial_members.len(), 2);
        let f = run(&["--proxy", "maybe"]).unwrap();
        assert!(f.settings().unwrap_err().to_string().contains("--proxy"));
    }

    #[test]
    fn settings_compute_ids() {
        let f = run(&[
            "--name",
            "n1",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:22380",
            "--initial-cluster",
            "n1=http://127.0.0.1:22380",
            "--initial-cluster-token",
            "t1",
        ])
        .unwrap();
        let s = f.settings().unwrap();
        assert_eq!(format!("{:x}", s.member_id), "b66b2921ec552136");
        assert_eq!(s.data_dir, PathBuf::from("n1.etcd"));
        let f = run(&["--name", "x", "--initial-cluster", "n1=http://127.0.0.1:1"]).unwrap();
        assert!(
            f.settings()
                .unwrap_err()
                .to_string()
                .contains("couldn't find local name")
        );
    }
}
