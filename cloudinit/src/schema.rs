//! The cloud-config schema as data: every key, its type, deprecation and validity rule.
//!
//! The validator walks documents against this table, and the environment drop-ins for etcd, etcd2, fleet,
//! flannel and locksmith are rendered from it in declaration order, so the table is the one place a key is
//! described.

/// The type a key wants, named as the original's validator names it.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// `bool`
    Bool,
    /// `int`
    Int,
    /// `float64`
    Float,
    /// `string`
    Str,
    /// `struct`: a mapping with known keys.
    Struct(&'static [Field]),
    /// `[]string`
    StrList,
    /// `[]struct`
    StructList(&'static [Field]),
}

impl Ty {
    /// The name used in "incorrect type" messages.
    pub fn name(&self) -> &'static str {
        match self {
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::Float => "float64",
            Ty::Str => "string",
            Ty::Struct(_) => "struct",
            Ty::StrList => "[]string",
            Ty::StructList(_) => "[]struct",
        }
    }
}

/// One key of a mapping.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The key in normalised form (`_`, not `-`).
    pub key: &'static str,
    /// The wanted type.
    pub ty: Ty,
    /// The reason, when the key is deprecated.
    pub deprecated: Option<&'static str>,
    /// A regex the value's source text must match (string fields only).
    pub valid: Option<&'static str>,
    /// The environment variable the key becomes in a generated drop-in, if any.
    pub env: Option<&'static str>,
}

const fn f(key: &'static str, ty: Ty) -> Field {
    Field {
        key,
        ty,
        deprecated: None,
        valid: None,
        env: None,
    }
}

const fn e(key: &'static str, ty: Ty, env: &'static str) -> Field {
    Field {
        key,
        ty,
        deprecated: None,
        valid: None,
        env: Some(env),
    }
}

const fn dep(mut field: Field, reason: &'static str) -> Field {
    field.deprecated = Some(reason);
    field
}

const fn valid(mut field: Field, regex: &'static str) -> Field {
    field.valid = Some(regex);
    field
}

/// `permissions` of write_files.
pub const PERMISSIONS_RE: &str = r"^0?[0-7]{3,4}$";
/// `encoding` of write_files.
pub const ENCODING_RE: &str = r"^(base64|b64|gz|gzip|gz\+base64|gzip\+base64|gz\+b64|gzip\+b64)$";
/// `command` of a unit.
pub const COMMAND_RE: &str =
    r"^(start|stop|restart|reload|try-restart|reload-or-restart|reload-or-try-restart)$";
/// `reboot_strategy` of update.
pub const REBOOT_STRATEGY_RE: &str = r"^(etcd-lock|reboot|off)$";
/// `proxy` of etcd2.
pub const PROXY_RE: &str = r"^(on|off|readonly)$";
/// `window_start` of locksmith.
pub const WINDOW_START_RE: &str =
    r"^((?i:sun|mon|tue|wed|thu|fri|sat|sun) )?0*([0-9]|1[0-9]|2[0-3]):0*([0-9]|[1-5][0-9])$";
/// `window_length` of locksmith.
pub const WINDOW_LENGTH_RE: &str = r"^[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+$";

/// Every validity regex, compiled once by the validator.
pub const ALL_REGEXES: &[&str] = &[
    PERMISSIONS_RE,
    ENCODING_RE,
    COMMAND_RE,
    REBOOT_STRATEGY_RE,
    PROXY_RE,
    WINDOW_START_RE,
    WINDOW_LENGTH_RE,
];

const REMOTE_IMPORT: &str =
    "trying to fetch from a remote endpoint introduces too many intermittent errors";
const ETCD2_ONLY: &str = "etcd2 options no longer work for etcd";

/// A `users[]` entry.
pub const USER: &[Field] = &[
    f("name", Ty::Str),
    f("passwd", Ty::Str),
    f("gecos", Ty::Str),
    f("homedir", Ty::Str),
    f("no_create_home", Ty::Bool),
    f("primary_group", Ty::Str),
    f("groups", Ty::StrList),
    f("no_user_group", Ty::Bool),
    f("ssh_authorized_keys", Ty::StrList),
    dep(f("coreos_ssh_import_github", Ty::Bool), REMOTE_IMPORT),
    dep(
        f("coreos_ssh_import_github_users", Ty::StrList),
        REMOTE_IMPORT,
    ),
    dep(f("coreos_ssh_import_url", Ty::Str), REMOTE_IMPORT),
    f("system", Ty::Bool),
    f("no_log_init", Ty::Bool),
    f("shell", Ty::Str),
];

/// A `write_files[]` entry.
pub const WRITE_FILE: &[Field] = &[
    valid(f("encoding", Ty::Str), ENCODING_RE),
    f("content", Ty::Str),
    f("owner", Ty::Str),
    f("path", Ty::Str),
    valid(f("permissions", Ty::Str), PERMISSIONS_RE),
];

/// A unit's `drop_ins[]` entry.
pub const DROP_IN: &[Field] = &[f("name", Ty::Str), f("content", Ty::Str)];

/// A `coreos.units[]` entry.
pub const UNIT: &[Field] = &[
    f("name", Ty::Str),
    f("mask", Ty::Bool),
    f("enable", Ty::Bool),
    f("runtime", Ty::Bool),
    f("content", Ty::Str),
    valid(f("command", Ty::Str), COMMAND_RE),
    f("drop_ins", Ty::StructList(DROP_IN)),
];

/// `coreos.update`.
pub const UPDATE: &[Field] = &[
    valid(
        e("reboot_strategy", Ty::Str, "REBOOT_STRATEGY"),
        REBOOT_STRATEGY_RE,
    ),
    e("group", Ty::Str, "GROUP"),
    e("server", Ty::Str, "SERVER"),
];

/// `coreos.oem`.
pub const OEM: &[Field] = &[
    f("id", Ty::Str),
    f("name", Ty::Str),
    f("version_id", Ty::Str),
    f("home_url", Ty::Str),
    f("bug_report_url", Ty::Str),
];

/// `coreos.locksmith`.
pub const LOCKSMITH: &[Field] = &[
    e("endpoint", Ty::Str, "LOCKSMITHD_ENDPOINT"),
    e("etcd_cafile", Ty::Str, "LOCKSMITHD_ETCD_CAFILE"),
    e("etcd_certfile", Ty::Str, "LOCKSMITHD_ETCD_CERTFILE"),
    e("etcd_keyfile", Ty::Str, "LOCKSMITHD_ETCD_KEYFILE"),
    e("etcd_username", Ty::Str, "LOCKSMITHD_ETCD_USERNAME"),
    e("etcd_password", Ty::Str, "LOCKSMITHD_ETCD_PASSWORD"),
    e("group", Ty::Str, "LOCKSMITHD_GROUP"),
    valid(
        e("window_start", Ty::Str, "REBOOT_WINDOW_START"),
        WINDOW_START_RE,
    ),
    valid(
        e("window_length", Ty::Str, "REBOOT_WINDOW_LENGTH"),
        WINDOW_LENGTH_RE,
    ),
];

/// `coreos.flannel`, written to `/run/flannel/options.env`.
pub const FLANNEL: &[Field] = &[
    e("etcd_endpoints", Ty::Str, "FLANNELD_ETCD_ENDPOINTS"),
    e("etcd_cafile", Ty::Str, "FLANNELD_ETCD_CAFILE"),
    e("etcd_certfile", Ty::Str, "FLANNELD_ETCD_CERTFILE"),
    e("etcd_keyfile", Ty::Str, "FLANNELD_ETCD_KEYFILE"),
    e("etcd_prefix", Ty::Str, "FLANNELD_ETCD_PREFIX"),
    e("etcd_username", Ty::Str, "FLANNELD_ETCD_USERNAME"),
    e("etcd_password", Ty::Str, "FLANNELD_ETCD_PASSWORD"),
    e("ip_masq", Ty::Str, "FLANNELD_IP_MASQ"),
    e("subnet_file", Ty::Str, "FLANNELD_SUBNET_FILE"),
    e("interface", Ty::Str, "FLANNELD_IFACE"),
    e("public_ip", Ty::Str, "FLANNELD_PUBLIC_IP"),
];

/// `coreos.fleet`.
pub const FLEET: &[Field] = &[
    e("agent_ttl", Ty::Str, "FLEET_AGENT_TTL"),
    e(
        "authorized_keys_file",
        Ty::Str,
        "FLEET_AUTHORIZED_KEYS_FILE",
    ),
    e("disable_engine", Ty::Bool, "FLEET_DISABLE_ENGINE"),
    e(
        "engine_reconcile_interval",
        Ty::Float,
        "FLEET_ENGINE_RECONCILE_INTERVAL",
    ),
    e("etcd_cafile", Ty::Str, "FLEET_ETCD_CAFILE"),
    e("etcd_certfile", Ty::Str, "FLEET_ETCD_CERTFILE"),
    e("etcd_keyfile", Ty::Str, "FLEET_ETCD_KEYFILE"),
    e("etcd_key_prefix", Ty::Str, "FLEET_ETCD_KEY_PREFIX"),
    e(
        "etcd_request_timeout",
        Ty::Float,
        "FLEET_ETCD_REQUEST_TIMEOUT",
    ),
    e("etcd_servers", Ty::Str, "FLEET_ETCD_SERVERS"),
    e("etcd_username", Ty::Str, "FLEET_ETCD_USERNAME"),
    e("etcd_password", Ty::Str, "FLEET_ETCD_PASSWORD"),
    e("metadata", Ty::Str, "FLEET_METADATA"),
    e("public_ip", Ty::Str, "FLEET_PUBLIC_IP"),
    e("token_limit", Ty::Int, "FLEET_TOKEN_LIMIT"),
    e("verbosity", Ty::Int, "FLEET_VERBOSITY"),
    e("verify_units", Ty::Bool, "FLEET_VERIFY_UNITS"),
];

/// `coreos.etcd2`.
pub const ETCD2: &[Field] = &[
    e(
        "advertise_client_urls",
        Ty::Str,
        "ETCD_ADVERTISE_CLIENT_URLS",
    ),
    dep(
        e("ca_file", Ty::Str, "ETCD_CA_FILE"),
        "ca_file obsoleted by trusted_ca_file and client_cert_auth",
    ),
    e("cert_file", Ty::Str, "ETCD_CERT_FILE"),
    e("client_cert_auth", Ty::Bool, "ETCD_CLIENT_CERT_AUTH"),
    e("cors", Ty::Str, "ETCD_CORS"),
    e("data_dir", Ty::Str, "ETCD_DATA_DIR"),
    e("debug", Ty::Bool, "ETCD_DEBUG"),
    e("discovery", Ty::Str, "ETCD_DISCOVERY"),
    e("discovery_fallback", Ty::Str, "ETCD_DISCOVERY_FALLBACK"),
    e("discovery_srv", Ty::Str, "ETCD_DISCOVERY_SRV"),
    e("discovery_proxy", Ty::Str, "ETCD_DISCOVERY_PROXY"),
    e("election_timeout", Ty::Int, "ETCD_ELECTION_TIMEOUT"),
    e("enable_pprof", Ty::Bool, "ETCD_ENABLE_PPROF"),
    e("force_new_cluster", Ty::Bool, "ETCD_FORCE_NEW_CLUSTER"),
    e("heartbeat_interval", Ty::Int, "ETCD_HEARTBEAT_INTERVAL"),
    e(
        "initial_advertise_peer_urls",
        Ty::Str,
        "ETCD_INITIAL_ADVERTISE_PEER_URLS",
    ),
    e("initial_cluster", Ty::Str, "ETCD_INITIAL_CLUSTER"),
    e(
        "initial_cluster_state",
        Ty::Str,
        "ETCD_INITIAL_CLUSTER_STATE",
    ),
    e(
        "initial_cluster_token",
        Ty::Str,
        "ETCD_INITIAL_CLUSTER_TOKEN",
    ),
    e("key_file", Ty::Str, "ETCD_KEY_FILE"),
    e("listen_client_urls", Ty::Str, "ETCD_LISTEN_CLIENT_URLS"),
    e("listen_peer_urls", Ty::Str, "ETCD_LISTEN_PEER_URLS"),
    e("log_package_levels", Ty::Str, "ETCD_LOG_PACKAGE_LEVELS"),
    e("max_snapshots", Ty::Int, "ETCD_MAX_SNAPSHOTS"),
    e("max_wals", Ty::Int, "ETCD_MAX_WALS"),
    e("name", Ty::Str, "ETCD_NAME"),
    dep(
        e("peer_ca_file", Ty::Str, "ETCD_PEER_CA_FILE"),
        "peer_ca_file obsoleted peer_trusted_ca_file and peer_client_cert_auth",
    ),
    e("peer_cert_file", Ty::Str, "ETCD_PEER_CERT_FILE"),
    e("peer_key_file", Ty::Str, "ETCD_PEER_KEY_FILE"),
    e(
        "peer_client_cert_auth",
        Ty::Bool,
        "ETCD_PEER_CLIENT_CERT_AUTH",
    ),
    e("peer_trusted_ca_file", Ty::Str, "ETCD_PEER_TRUSTED_CA_FILE"),
    valid(e("proxy", Ty::Str, "ETCD_PROXY"), PROXY_RE),
    e("proxy_dial_timeout", Ty::Int, "ETCD_PROXY_DIAL_TIMEOUT"),
    e("proxy_failure_wait", Ty::Int, "ETCD_PROXY_FAILURE_WAIT"),
    e("proxy_read_timeout", Ty::Int, "ETCD_PROXY_READ_TIMEOUT"),
    e(
        "proxy_refresh_interval",
        Ty::Int,
        "ETCD_PROXY_REFRESH_INTERVAL",
    ),
    e("proxy_write_timeout", Ty::Int, "ETCD_PROXY_WRITE_TIMEOUT"),
    e("snapshot_count", Ty::Int, "ETCD_SNAPSHOT_COUNT"),
    e(
        "strict_reconfig_check",
        Ty::Bool,
        "ETCD_STRICT_RECONFIG_CHECK",
    ),
    e("trusted_ca_file", Ty::Str, "ETCD_TRUSTED_CA_FILE"),
    e("wal_dir", Ty::Str, "ETCD_WAL_DIR"),
];

/// `coreos.etcd`: the etcd 0.4 schema; etcd2-only keys are accepted but deprecated.
pub const ETCD: &[Field] = &[
    e("addr", Ty::Str, "ETCD_ADDR"),
    e("bind_addr", Ty::Str, "ETCD_BIND_ADDR"),
    e("ca_file", Ty::Str, "ETCD_CA_FILE"),
    e("cert_file", Ty::Str, "ETCD_CERT_FILE"),
    e("cluster_active_size", Ty::Int, "ETCD_CLUSTER_ACTIVE_SIZE"),
    e(
        "cluster_remove_delay",
        Ty::Float,
        "ETCD_CLUSTER_REMOVE_DELAY",
    ),
    e(
        "cluster_sync_interval",
        Ty::Float,
        "ETCD_CLUSTER_SYNC_INTERVAL",
    ),
    e("cors", Ty::Str, "ETCD_CORS"),
    e("data_dir", Ty::Str, "ETCD_DATA_DIR"),
    e("discovery", Ty::Str, "ETCD_DISCOVERY"),
    e("graphite_host", Ty::Str, "ETCD_GRAPHITE_HOST"),
    e("http_read_timeout", Ty::Float, "ETCD_HTTP_READ_TIMEOUT"),
    e("http_write_timeout", Ty::Float, "ETCD_HTTP_WRITE_TIMEOUT"),
    e("key_file", Ty::Str, "ETCD_KEY_FILE"),
    e("max_result_buffer", Ty::Int, "ETCD_MAX_RESULT_BUFFER"),
    e("max_retry_attempts", Ty::Int, "ETCD_MAX_RETRY_ATTEMPTS"),
    e("name", Ty::Str, "ETCD_NAME"),
    e("peer_addr", Ty::Str, "ETCD_PEER_ADDR"),
    e("peer_bind_addr", Ty::Str, "ETCD_PEER_BIND_ADDR"),
    e("peer_ca_file", Ty::Str, "ETCD_PEER_CA_FILE"),
    e("peer_cert_file", Ty::Str, "ETCD_PEER_CERT_FILE"),
    e(
        "peer_election_timeout",
        Ty::Int,
        "ETCD_PEER_ELECTION_TIMEOUT",
    ),
    e(
        "peer_heartbeat_interval",
        Ty::Int,
        "ETCD_PEER_HEARTBEAT_INTERVAL",
    ),
    e("peer_key_file", Ty::Str, "ETCD_PEER_KEY_FILE"),
    e("peers", Ty::Str, "ETCD_PEERS"),
    e("peers_file", Ty::Str, "ETCD_PEERS_FILE"),
    e("retry_interval", Ty::Float, "ETCD_RETRY_INTERVAL"),
    e("snapshot", Ty::Bool, "ETCD_SNAPSHOT"),
    e("snapshot_count", Ty::Int, "ETCD_SNAPSHOTCOUNT"),
    e("verbose", Ty::Bool, "ETCD_VERBOSE"),
    e("very_verbose", Ty::Bool, "ETCD_VERY_VERBOSE"),
    dep(
        e(
            "advertise_client_urls",
            Ty::Str,
            "ETCD_ADVERTISE_CLIENT_URLS",
        ),
        ETCD2_ONLY,
    ),
    dep(
        e(
            "initial_advertise_peer_urls",
            Ty::Str,
            "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        ),
        ETCD2_ONLY,
    ),
    dep(
        e("initial_cluster", Ty::Str, "ETCD_INITIAL_CLUSTER"),
        ETCD2_ONLY,
    ),
    dep(
        e(
            "initial_cluster_state",
            Ty::Str,
            "ETCD_INITIAL_CLUSTER_STATE",
        ),
        ETCD2_ONLY,
    ),
    dep(
        e(
            "initial_cluster_token",
            Ty::Str,
            "ETCD_INITIAL_CLUSTER_TOKEN",
        ),
        ETCD2_ONLY,
    ),
    dep(
        e("listen_client_urls", Ty::Str, "ETCD_LISTEN_CLIENT_URLS"),
        ETCD2_ONLY,
    ),
    dep(
        e("listen_peer_urls", Ty::Str, "ETCD_LISTEN_PEER_URLS"),
        ETCD2_ONLY,
    ),
    dep(e("proxy", Ty::Str, "ETCD_PROXY"), ETCD2_ONLY),
    dep(
        e("trusted_ca_file", Ty::Str, "ETCD_TRUSTED_CA_FILE"),
        ETCD2_ONLY,
    ),
];

/// The `coreos` section.
pub const COREOS: &[Field] = &[
    dep(
        f("etcd", Ty::Struct(ETCD)),
        "etcd is no longer shipped in Container Linux",
    ),
    f("etcd2", Ty::Struct(ETCD2)),
    f("flannel", Ty::Struct(FLANNEL)),
    f("fleet", Ty::Struct(FLEET)),
    f("locksmith", Ty::Struct(LOCKSMITH)),
    f("oem", Ty::Struct(OEM)),
    f("update", Ty::Struct(UPDATE)),
    f("units", Ty::StructList(UNIT)),
];

/// The top level of a cloud-config.
pub const CLOUD_CONFIG: &[Field] = &[
    f("coreos", Ty::Struct(COREOS)),
    f("ssh_authorized_keys", Ty::StrList),
    f("hostname", Ty::Str),
    f("users", Ty::StructList(USER)),
    f("manage_etc_hosts", Ty::Str),
    f("write_files", Ty::StructList(WRITE_FILE)),
];

/// Finds a key in a field table.
pub fn field(fields: &'static [Field], key: &str) -> Option<&'static Field> {
    fields.iter().find(|f| f.key == key)
}
