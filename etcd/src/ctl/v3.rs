//! Our etcdctl in `ETCDCTL_API=3` mode: the common v3 commands with etcdctl 3.4's output formats, over TLS
//! with etcdctl's `--cacert`, `--cert`, `--key`, `--insecure-skip-tls-verify` and `--insecure-transport`.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use proto::etcdserverpb::cluster_client::ClusterClient;
use proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::lease_client::LeaseClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use proto::etcdserverpb::request_op::Request;
use proto::etcdserverpb::response_op::Response;
use proto::etcdserverpb::watch_client::WatchClient;
use proto::etcdserverpb::watch_request::RequestUnion;
use proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, MemberListRequest, PutRequest, RangeRequest,
    ResponseHeader, StatusRequest, WatchCreateRequest, WatchRequest,
};
use proto::etcdserverpb::{Compare, RequestOp, TxnRequest};
use proto::mvccpb::{Event, KeyValue};
use tonic::transport::{Channel, Endpoint};

/// Usage errors (etcdctl's `ExitBadArgs` for cobra argument errors).
const EXIT_BAD_ARGS: i32 = 128;
/// Any failed request.
const EXIT_ERROR: i32 = 1;

/// A failure: exit code and the text after `Error: `.
struct Fail(i32, String);

/// The end of a bidirectional stream (`what`: the command) as an error.
fn stream_closed(what: &str) -> Fail {
    Fail(EXIT_ERROR, format!("{what} stream closed"))
}

/// The next reply on a bidirectional stream; its end is an error.
async fn next_reply<T>(stream: &mut proto::tonic::Streaming<T>, what: &str) -> Result<T, Fail> {
    match stream.message().await {
        Ok(Some(reply)) => Ok(reply),
        Ok(None) => Err(stream_closed(what)),
        Err(status) => Err(rpc(status)),
    }
}

fn usage(msg: &str) -> Fail {
    Fail(EXIT_BAD_ARGS, msg.to_string())
}

fn rpc(s: tonic::Status) -> Fail {
    // A status with a source was made on this side from a broken connection (e.g. a TLS 1.3 server refusing
    // the client certificate after the handshake): etcdctl retries those until its deadline.
    let local = std::error::Error::source(&s).is_some();
    let msg = if local
        || s.code() == tonic::Code::DeadlineExceeded
        || s.code() == tonic::Code::Unavailable
    {
        "context deadline exceeded".to_string()
    } else {
        s.message().to_string()
    };
    Fail(EXIT_ERROR, msg)
}

/// Global flags and the command line left after them.
struct Opts {
    endpoints: Vec<String>,
    write_out: String,
    dial_timeout: Duration,
    command_timeout: Duration,
    /// TLS for endpoints without a scheme and `https://` ones, when a TLS flag asks for it.
    tls: Option<Arc<rustls::ClientConfig>>,
    words: Vec<String>,
    flags: Vec<(String, Option<String>)>,
}

impl Opts {
    fn has(&self, name: &str) -> bool {
        self.flags
            .iter()
            .any(|(k, v)| k == name && v.as_deref().is_none_or(|v| v != "false"))
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn int(&self, name: &str) -> Result<i64, Fail> {
        match self.value(name) {
            None => Ok(0),
            // etcdctl prints the command's help too; this one prints only the error.
            Some(v) => v.parse().map_err(|_| {
                Fail(EXIT_ERROR, format!(
                    "invalid argument {v:?} for \"--{name}\" flag: strconv.ParseInt: parsing {v:?}: invalid syntax"
                ))
            }),
        }
    }
}

/// Flags that take a value (global and per-command).
const VALUE_FLAGS: &[&str] = &[
    "endpoints",
    "write-out",
    "w",
    "dial-timeout",
    "command-timeout",
    "rev",
    "limit",
    "order",
    "sort-by",
    "consistency",
    "lease",
    "cert",
    "key",
    "cacert",
];

fn lease_id(id: &str) -> Result<i64, Fail> {
    u64::from_str_radix(id, 16).map(|v| v as i64).map_err(|_| {
        usage(&format!(
            "bad lease ID arg (strconv.ParseInt: parsing {id:?}: invalid syntax), expecting ID in Hex"
        ))
    })
}

fn flat_header_json(h: Option<&ResponseHeader>) -> String {
    let j = header_json(h);
    j[1..j.len() - 1].to_string()
}

fn parse_opts(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Opts, Fail> {
    let mut words = Vec::new();
    let mut flags: Vec<(String, Option<String>)> = Vec::new();
    let mut i = 0;
    let mut rest_positional = false;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if rest_positional || a == "-" || !a.starts_with('-') {
            words.push(a.clone());
            continue;
        }
        if a == "--" {
            rest_positional = true;
            continue;
        }
        let body = a.trim_start_matches('-');
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (body.to_string(), None),
        };
        let value = if inline.is_some() {
            inline
        } else if VALUE_FLAGS.contains(&name.as_str()) {
            let Some(v) = args.get(i) else {
                return Err(usage(&format!("flag needs an argument: {a}")));
            };
            i += 1;
            Some(v.clone())
        } else {
            None
        };
        flags.push((name, value));
    }
    let get = |names: &[&str]| {
        flags
            .iter()
            .rev()
            .find(|(k, _)| names.contains(&k.as_str()))
            .and_then(|(_, v)| v.clone())
    };
    let switch = |name: &str, envname: &str, default: bool| match flags
        .iter()
        .rev()
        .find(|(k, _)| k == name)
    {
        Some((_, v)) => v.as_deref().is_none_or(|v| v != "false"),
        None => env(envname).map_or(default, |v| v == "true"),
    };
    let tls = tls_config(
        get(&["cert"]).or_else(|| env("ETCDCTL_CERT")),
        get(&["key"]).or_else(|| env("ETCDCTL_KEY")),
        get(&["cacert"]).or_else(|| env("ETCDCTL_CACERT")),
        switch(
            "insecure-skip-tls-verify",
            "ETCDCTL_INSECURE_SKIP_TLS_VERIFY",
            false,
        ),
        switch("insecure-transport", "ETCDCTL_INSECURE_TRANSPORT", true),
    )?;
    // As etcd's client: a scheme-less endpoint is dialled with TLS exactly when a TLS flag configured it.
    let default_scheme = if tls.is_some() { "https" } else { "http" };
    let endpoints = get(&["endpoints"])
        .or_else(|| env("ETCDCTL_ENDPOINTS"))
        .unwrap_or_else(|| "127.0.0.1:2379".into())
        .split(',')
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains("://") {
                s.to_string()
            } else {
                format!("{default_scheme}://{s}")
            }
        })
        .collect();
    let write_out = get(&["write-out", "w"])
        .or_else(|| env("ETCDCTL_WRITE_OUT"))
        .unwrap_or_else(|| "simple".into());
    let duration = |name: &str, envname: &str, default: Duration| -> Result<Duration, Fail> {
        match get(&[name]).or_else(|| env(envname)) {
            None => Ok(default),
            Some(v) => super::parse_duration(&v)
                .ok_or_else(|| usage(&format!("invalid argument {v:?} for \"--{name}\" flag"))),
        }
    };
    Ok(Opts {
        endpoints,
        write_out,
        dial_timeout: duration(
            "dial-timeout",
            "ETCDCTL_DIAL_TIMEOUT",
            Duration::from_secs(2),
        )?,
        command_timeout: duration(
            "command-timeout",
            "ETCDCTL_COMMAND_TIMEOUT",
            Duration::from_secs(5),
        )?,
        tls,
        words,
        flags,
    })
}

/// etcdctl 3.4's TLS set-up: any of `--cert`, `--key`, `--cacert` (or `--insecure-transport=false`) gives a
/// TLS configuration, which `--insecure-skip-tls-verify` turns verification off in; without one, `https://`
/// endpoints still get TLS trusting the system's CA bundle, and the skip flag has no effect (as in etcdctl).
fn tls_config(
    cert: Option<String>,
    key: Option<String>,
    cacert: Option<String>,
    skip_verify: bool,
    insecure_transport: bool,
) -> Result<Option<Arc<rustls::ClientConfig>>, Fail> {
    use crate::tls::Trust;
    if cert.is_none() && key.is_none() && cacert.is_none() && insecure_transport {
        return Ok(None);
    }
    let identity = match (&cert, &key) {
        (None, None) => None,
        (Some(c), Some(k)) => Some(
            crate::tls::client_identity(Path::new(c), Path::new(k), ("--cert", "--key"))
                .map_err(|e| Fail(EXIT_ERROR, e.to_string()))?,
        ),
        // etcd's words.
        _ => {
            return Err(Fail(
                EXIT_ERROR,
                format!(
                    "KeyFile and CertFile must both be present[key: {}, cert: {}]",
                    key.unwrap_or_default(),
                    cert.unwrap_or_default()
                ),
            ));
        }
    };
    let trust = match &cacert {
        _ if skip_verify => Trust::Insecure,
        Some(ca) => Trust::Ca(Path::new(ca), "--cacert"),
        None => Trust::System,
    };
    crate::tls::client_config(&trust, identity, &[b"h2"])
        .map(Some)
        .map_err(|e| Fail(EXIT_ERROR, e.to_string()))
}

/// Runs a v3 command line; returns the exit code.
pub fn run(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let result = parse_opts(args, env).and_then(|o| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Fail(EXIT_ERROR, format!("starting the runtime: {e}")))?;
        rt.block_on(dispatch(&o, out, err))
    });
    match result {
        Ok(()) => 0,
        // An empty message: the command has already said what failed.
        Err(Fail(code, msg)) if msg.is_empty() => code,
        Err(Fail(code, msg)) => {
            let _ = writeln!(err, "Error: {msg}");
            code
        }
    }
}

async fn channel(o: &Opts) -> Result<Channel, Fail> {
    channel_with(o, true).await
}

/// A channel to the first reachable endpoint; long-running streams (watch, keep-alive) get no request timeout.
async fn channel_with(o: &Opts, timeout: bool) -> Result<Channel, Fail> {
    let mut last = Fail(EXIT_ERROR, "context deadline exceeded".into());
    for ep in &o.endpoints {
        let e = Endpoint::from_shared(ep.clone())
            .map_err(|e| Fail(EXIT_ERROR, format!("invalid endpoint {ep:?}: {e}")))?
            .connect_timeout(o.dial_timeout);
        let e = if timeout {
            e.timeout(o.command_timeout)
        } else {
            e
        };
        let connected = if ep.starts_with("https://") {
            let tls = match &o.tls {
                Some(t) => t.clone(),
                None => crate::tls::client_config(&crate::tls::Trust::System, None, &[b"h2"])
                    .map_err(|e| Fail(EXIT_ERROR, e.to_string()))?,
            };
            e.connect_with_connector(crate::tls::Connector::new(tls, None))
                .await
        } else {
            e.connect().await
        };
        match connected {
            Ok(c) => return Ok(c),
            Err(_) => last = Fail(EXIT_ERROR, "context deadline exceeded".into()),
        }
    }
    Err(last)
}

async fn dispatch(o: &Opts, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Fail> {
    let words: Vec<&str> = o.words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["version"] => {
            let _ = writeln!(
                out,
                "etcdctl version: {}\nAPI version: 3.4",
                crate::config::ETCD_VERSION
            );
            Ok(())
        }
        ["put", rest @ ..] => put(o, rest, out).await,
        ["get", rest @ ..] => get(o, rest, out).await,
        ["del", rest @ ..] => del(o, rest, out).await,
        ["compaction", rest @ ..] => compaction(o, rest, out).await,
        ["member", "list"] => member_list(o, out).await,
        ["endpoint", "status"] => endpoint_status(o, out, err).await,
        ["endpoint", "health"] => endpoint_health(o, out, err).await,
        ["lease", "grant", rest @ ..] => lease_grant(o, rest, out).await,
        ["lease", "revoke", rest @ ..] => lease_revoke(o, rest, out).await,
        ["lease", "timetolive", rest @ ..] => lease_timetolive(o, rest, out).await,
        ["lease", "keep-alive", rest @ ..] => lease_keep_alive(o, rest, out).await,
        ["watch", rest @ ..] => watch(o, rest, out, err).await,
        ["txn"] => txn(o, out).await,
        [] => Err(usage("no command given")),
        [c, ..] => Err(Fail(
            EXIT_ERROR,
            format!(
                "unknown command \"{c}\" for \"etcdctl\"\nRun 'etcdctl --help' for usage.\nError: unknown command \"{c}\" for \"etcdctl\""
            ),
        )),
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn header_json(h: Option<&ResponseHeader>) -> String {
    let h = h.copied().unwrap_or_default();
    let mut f = Vec::new();
    if h.cluster_id != 0 {
        f.push(format!("\"cluster_id\":{}", h.cluster_id));
    }
    if h.member_id != 0 {
        f.push(format!("\"member_id\":{}", h.member_id));
    }
    if h.revision != 0 {
        f.push(format!("\"revision\":{}", h.revision));
    }
    if h.raft_term != 0 {
        f.push(format!("\"raft_term\":{}", h.raft_term));
    }
    format!("{{{}}}", f.join(","))
}

fn kv_json(kv: &KeyValue) -> String {
    let mut f = Vec::new();
    if !kv.key.is_empty() {
        f.push(format!("\"key\":\"{}\"", b64(&kv.key)));
    }
    for (name, v) in [
        ("create_revision", kv.create_revision),
        ("mod_revision", kv.mod_revision),
        ("version", kv.version),
    ] {
        if v != 0 {
            f.push(format!("\"{name}\":{v}"));
        }
    }
    if !kv.value.is_empty() {
        f.push(format!("\"value\":\"{}\"", b64(&kv.value)));
    }
    if kv.lease != 0 {
        f.push(format!("\"lease\":{}", kv.lease));
    }
    format!("{{{}}}", f.join(","))
}

fn header_fields(out: &mut dyn Write, h: Option<&ResponseHeader>) {
    let h = h.copied().unwrap_or_default();
    let _ = writeln!(out, "\"ClusterID\" : {}", h.cluster_id);
    let _ = writeln!(out, "\"MemberID\" : {}", h.member_id);
    let _ = writeln!(out, "\"Revision\" : {}", h.revision);
    let _ = writeln!(out, "\"RaftTerm\" : {}", h.raft_term);
}

fn kv_fields(out: &mut dyn Write, kv: &KeyValue) {
    let _ = writeln!(out, "\"Key\" : {:?}", String::from_utf8_lossy(&kv.key));
    let _ = writeln!(out, "\"CreateRevision\" : {}", kv.create_revision);
    let _ = writeln!(out, "\"ModRevision\" : {}", kv.mod_revision);
    let _ = writeln!(out, "\"Version\" : {}", kv.version);
    let _ = writeln!(out, "\"Value\" : {:?}", String::from_utf8_lossy(&kv.value));
    let _ = writeln!(out, "\"Lease\" : {}", kv.lease);
}

fn check_format(o: &Opts) -> Result<(), Fail> {
    match o.write_out.as_str() {
        "simple" | "json" | "fields" => Ok(()),
        // etcdctl's ExitBadFeature.
        w => Err(Fail(4, format!("{w} not supported as output format"))),
    }
}

async fn put(o: &Opts, args: &[&str], out: &mut dyn Write) -> Result<(), Fail> {
    check_format(o)?;
    let needs = || usage("put command needs 1 argument and input from stdin or 2 arguments");
    let stdin_value;
    let (key, value) = match args {
        [key, value] => (*key, *value),
        // With one argument the value is the whole of stdin, as etcdctl reads it.
        [key] => {
            let mut v = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut v).map_err(|_| needs())?;
            if v.is_empty() {
                return Err(needs());
            }
            stdin_value = v;
            (*key, stdin_value.as_str())
        }
        _ => return Err(needs()),
    };
    let lease = match o.value("lease") {
        None => 0,
        Some(l) => u64::from_str_radix(l, 16).map(|v| v as i64).map_err(|_| {
            usage(&format!(
                "bad lease ID (strconv.ParseInt: parsing {l:?}: invalid syntax), expecting ID in Hex"
            ))
        })?,
    };
    let mut kv = KvClient::new(channel(o).await?);
    let r = kv
        .put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            lease,
            prev_kv: o.has("prev-kv"),
            ..Default::default()
        })
        .await
        .map_err(rpc)?
        .into_inner();
    match o.write_out.as_str() {
        "json" => {
            let mut s = format!("{{\"header\":{}", header_json(r.header.as_ref()));
            if let Some(p) = &r.prev_kv {
                s.push_str(&format!(",\"prev_kv\":{}", kv_json(p)));
            }
            let _ = writeln!(out, "{s}}}");
        }
        "fields" => {
            header_fields(out, r.header.as_ref());
            if let Some(p) = &r.prev_kv {
                kv_fields(out, p);
            }
        }
        _ => {
            let _ = writeln!(out, "OK");
            if let Some(p) = &r.prev_kv {
                let _ = writeln!(out, "{}", String::from_utf8_lossy(&p.key));
                let _ = writeln!(out, "{}", String::from_utf8_lossy(&p.value));
            }
        }
    }
    Ok(())
}

/// The first key of the range: as in etcd's client, an empty key with `--prefix` or `--from-key` means every
/// key, from "\0".
fn range_key(o: &Opts, key: &str) -> Vec<u8> {
    if key.is_empty() && (o.has("prefix") || o.has("from-key")) {
        vec![0]
    } else {
        key.as_bytes().to_vec()
    }
}

/// The end of the range a key argument plus `--prefix`/`--from-key`/`range_end` selects.
fn range_end(o: &Opts, key: &str, end: Option<&str>) -> Vec<u8> {
    if o.has("prefix") {
        if key.is_empty() {
            vec![0]
        } else {
            proto::etcd::prefix_end(key.as_bytes())
        }
    } else if o.has("from-key") {
        vec![0]
    } else {
        end.map(|e| e.as_bytes().to_vec()).unwrap_or_default()
    }
}

/// The `<key> [range_end]` arguments of `get` and `del`, with etcdctl's
/// usage errors.
fn key_and_range_end<'a>(
    command: &str,
    o: &Opts,
    args: &[&'a str],
) -> Result<(&'a str, Option<&'a str>), Fail> {
    let (key, end) = match args {
        [k] => (*k, None),
        [k, e] => (*k, Some(*e)),
        _ => {
            return Err(usage(&format!(
                "{command} command needs one argument as key and an optional argument as range_end"
            )));
        }
    };
    if end.is_some() && (o.has("prefix") || o.has("from-key")) {
        return Err(usage(
            "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
        ));
    }
    Ok((key, end))
}

async fn get(o: &Opts, args: &[&str], out: &mut dyn Write) -> Result<(), Fail> {
    check_format(o)?;
    let (key, end) = key_and_range_end("get", o, args)?;
    let sort_order = match o.value("order").unwrap_or("").to_uppercase().as_str() {
        "" => 0,
        "ASCEND" => 1,
        "DESCEND" => 2,
        x => return Err(usage(&format!("bad sort order {x}"))),
    };
    let sort_target = match o.value("sort-by").unwrap_or("").to_uppercase().as_str() {
        "" | "KEY" => 0,
        "VERSION" => 1,
        "CREATE" => 2,
        "MODIFY" => 3,
        "VALUE" => 4,
        x => return Err(usage(&format!("bad sort target {x}"))),
    };
    // etcdctl asks for ascending order when only a sort target is given.
    let sort_order = if sort_order == 0 && o.value("sort-by").is_some() {
        1
    } else {
        sort_order
    };
    let keys_only = o.has("keys-only");
    let mut kv = KvClient::new(channel(o).await?);
    let r = kv
        .range(RangeRequest {
            key: range_key(o, key),
            range_end: range_end(o, key, end),
            limit: o.int("limit")?,
            revision: o.int("rev")?,
            sort_order,
            sort_target,
            serializable: o.value("consistency") == Some("s"),
            keys_only,
            count_only: o.has("count-only"),
            ..Default::default()
        })
        .await
        .map_err(rpc)?
        .into_inner();
    match o.write_out.as_str() {
        "json" => {
            let mut s = format!("{{\"header\":{}", header_json(r.header.as_ref()));
            if !r.kvs.is_empty() {
                let kvs: Vec<String> = r.kvs.iter().map(kv_json).collect();
                s.push_str(&format!(",\"kvs\":[{}]", kvs.join(",")));
            }
            if r.more {
                s.push_str(",\"more\":true");
            }
            if r.count != 0 {
                s.push_str(&format!(",\"count\":{}", r.count));
            }
            let _ = writeln!(out, "{s}}}");
        }
        "fields" => {
            header_fields(out, r.header.as_ref());
            for k in &r.kvs {
                kv_fields(out, k);
            }
            let _ = writeln!(out, "\"More\" : {}", r.more);
            let _ = writeln!(out, "\"Count\" : {}", r.count);
        }
        _ => {
            let value_only = o.has("print-value-only");
            for k in &r.kvs {
                if !value_only {
                    let _ = writeln!(out, "{}", String::from_utf8_lossy(&k.key));
                }
                if !keys_only {
                    let _ = writeln!(out, "{}", String::from_utf8_lossy(&k.value));
                } else if !value_only {
                    let _ = writeln!(out);
                }
            }
            if o.has("count-only") {
                let _ = writeln!(out, "{}", r.count);
            }
        }
    }
    Ok(())
}

async fn del(o: &Opts, args: &[&str], out: &mut dyn Write) -> Result<(), Fail> {
    check_format(o)?;
    let (key, end) = key_and_range_end("del", o, args)?;
    let mut kv = KvClient::new(channel(o).await?);
    let r = kv
        .delete_range(DeleteRangeRequest {
            key: range_key(o, key),
            range_end: range_end(o, key, end),
            prev_kv: o.has("prev-kv"),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    match o.write_out.as_str() {
        "json" => {
            let mut s = format!("{{\"header\":{}", header_json(r.header.as_ref()));
            if r.deleted != 0 {
                s.push_str(&format!(",\"deleted\":{}", r.deleted));
            }
            if !r.prev_kvs.is_empty() {
                let kvs: Vec<String> = r.prev_kvs.iter().map(kv_json).collect();
                s.push_str(&format!(",\"prev_kvs\":[{}]", kvs.join(",")));
            }
            let _ = writeln!(out, "{s}}}");
        }
        "fields" => {
            header_fields(out, r.header.as_ref());
            let _ = writeln!(out, "\"Deleted\" : {}", r.deleted);
            for k in &r.prev_kvs {
                kv_fields(out, k);
            }
        }
        _ => {
            let _ = writeln!(out, "{}", r.deleted);
            for k in &r.prev_kvs {
                let _ = writeln!(out, "{}", String::from_utf8_lossy(&k.key));
                let _ = writeln!(out, "{}", String::from_utf8_lossy(&k.value));
            }
        }
    }
    Ok(())
}

async fn compaction(o: &Opts, args: &[&str], out: &mut dyn Write) -> Result<(), Fail> {
    let [rev] = args else {
        return Err(usage("compaction command needs 1 argument"));
    };
    let revision: i64 = rev.parse().map_err(|_| {
        Fail(
            EXIT_ERROR,
            format!("strconv.ParseInt: parsing {rev:?}: invalid syntax"),
        )
    })?;
    let mut kv = KvClient::new(channel(o).await?);
    kv.compact(CompactionRequest {
        revision,
        physical: o.has("physical"),
    })
    .await
    .map_err(rpc)?;
    let _ = writeln!(out, "compacted revision {revision}");
    Ok(())
}

async fn member_list(o: &Opts, out: &mut dyn Write) -> Result<(), Fail> {
    check_format(o)?;
    let mut c = ClusterClient::new(channel(o).await?);
    let r = c
        .member_list(MemberListRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    match o.write_out.as_str() {
        "json" => {
            let ms: Vec<String> = r
                .members
                .iter()
                .map(|m| {
                    let mut f = vec![format!("\"ID\":{}", m.id)];
                    if !m.name.is_empty() {
                        f.push(format!("\"name\":{:?}", m.name));
                    }
                    let urls = |u: &[String]| {
                        u.iter()
                            .map(|s| format!("{s:?}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    if !m.peer_ur_ls.is_empty() {
                        f.push(format!("\"peerURLs\":[{}]", urls(&m.peer_ur_ls)));
                    }
                    if !m.client_ur_ls.is_empty() {
                        f.push(format!("\"clientURLs\":[{}]", urls(&m.client_ur_ls)));
                    }
                    if m.is_learner {
                        f.push("\"isLearner\":true".into());
                    }
                    format!("{{{}}}", f.join(","))
                })
                .collect();
            let _ = writeln!(
                out,
                "{{\"header\":{},\"members\":[{}]}}",
                header_json(r.header.as_ref()),
                ms.join(",")
            );
        }
        "fields" => {
            header_fields(out, r.header.as_ref());
            for m in &r.members {
                let _ = writeln!(out, "\"ID\" : {}", m.id);
                let _ = writeln!(out, "\"Name\" : {:?}", m.name);
                for u in &m.peer_ur_ls {
                    let _ = writeln!(out, "\"PeerURL\" : {u:?}");
                }
                for u in &m.client_ur_ls {
                    let _ = writeln!(out, "\"ClientURL\" : {u:?}");
                }
                let _ = writeln!(out, "\"IsLearner\" : {}", m.is_learner);
                let _ = writeln!(out);
            }
        }
        _ => {
            for m in &r.members {
                let status = if m.name.is_empty() {
                    "unstarted"
                } else {
                    "started"
                };
                let _ = writeln!(
                    out,
                    "{:x}, {status}, {}, {}, {}, {}",
                    m.id,
                    m.name,
                    m.peer_ur_ls.join(","),
                    m.client_ur_ls.join(","),
                    m.is_learner
                );
            }
        }
    }
    Ok(())
}

fn human_bytes(n: i64) -> String {
    // go-humanize's Bytes: SI units, one decimal under 10.
    let units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let e = e.min(units.len() - 1);
    let val = (n as f64 / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", units[e])
    } else {
        format!("{val:.0} {}", units[e])
    }
}

async fn endpoint_status(o: &Opts, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Fail> {
    check_format(o)?;
    let mut rows = Vec::new();
    for ep in &o.endpoints {
        let one = Opts {
            endpoints: vec![ep.clone()],
            write_out: o.write_out.clone(),
            dial_timeout: o.dial_timeout,
            command_timeout: o.command_timeout,
            tls: o.tls.clone(),
            words: Vec::new(),
            flags: Vec::new(),
        };
        let res = match channel(&one).await {
            Ok(ch) => MaintenanceClient::new(ch)
                .status(StatusRequest {})
                .await
                .map(|r| r.into_inner())
                .map_err(rpc),
            Err(f) => Err(f),
        };
        match res {
            Ok(r) => rows.push((ep.clone(), r)),
            Err(Fail(_, msg)) => {
                let _ = writeln!(err, "Failed to get the status of endpoint {ep} ({msg})");
            }
        }
    }
    if rows.is_empty() {
        return Err(Fail(EXIT_ERROR, String::new()));
    }
    match o.write_out.as_str() {
        "json" => {
            let items: Vec<String> = rows
                .iter()
                .map(|(ep, r)| {
                    format!(
                        "{{\"Endpoint\":{ep:?},\"Status\":{{\"header\":{},\"version\":{:?},\"dbSize\":{},\"leader\":{},\"raftIndex\":{},\"raftTerm\":{},\"raftAppliedIndex\":{},\"dbSizeInUse\":{}}}}}",
                        header_json(r.header.as_ref()),
                        r.version,
                        r.db_size,
                        r.leader,
                        r.raft_index,
                        r.raft_term,
                        r.raft_applied_index,
                        r.db_size_in_use
                    )
                })
                .collect();
            let _ = writeln!(out, "[{}]", items.join(","));
        }
        _ => {
            for (ep, r) in &rows {
                let member = r.header.map(|h| h.member_id).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{ep}, {member:x}, {}, {}, {}, {}, {}, {}, {}, {}",
                    r.version,
                    human_bytes(r.db_size),
                    r.leader == member,
                    r.is_learner,
                    r.raft_term,
                    r.raft_index,
                    r.raft_applied_index,
                    r.errors.join(", ")
                );
            }
        }
    }
    Ok(())
}

async fn endpoint_health(o: &Opts, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Fail> {
    check_format(o)?;
    let mut rows = Vec::new();
    let mut unhealthy = false;
    for ep in &o.endpoints {
        let start = Instant::now();
        let one = Opts {
            endpoints: vec![ep.clone()],
            write_out: o.write_out.clone(),
            dial_timeout: o.dial_timeout,
            command_timeout: o.command_timeout,
            tls: o.tls.clone(),
            words: Vec::new(),
            flags: Vec::new(),
        };
        // etcdctl's health check: a linearized read of the key "health" (a missing key is fine).
        let res = match channel(&one).await {
            Ok(ch) => KvClient::new(ch)
                .range(RangeRequest {
                    key: b"health".to_vec(),
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|s| s.message().to_string()),
            Err(Fail(_, m)) => Err(m),
        };
        unhealthy |= res.is_err();
        rows.push((ep.clone(), res, start.elapsed()));
    }
    for (ep, res, took) in &rows {
        let took = format!("{:?}", took);
        match (o.write_out.as_str(), res) {
            ("json", _) => {}
            (_, Ok(())) => {
                let _ = writeln!(
                    out,
                    "{ep} is healthy: successfully committed proposal: took = {took}"
                );
            }
            (_, Err(e)) => {
                let _ = writeln!(err, "{ep} is unhealthy: failed to commit proposal: {e}");
            }
        }
    }
    if o.write_out == "json" {
        let items: Vec<String> = rows
            .iter()
            .map(|(ep, res, took)| match res {
                Ok(()) => format!("{{\"endpoint\":{ep:?},\"health\":true,\"took\":\"{took:?}\"}}"),
                Err(e) => format!(
                    "{{\"endpoint\":{ep:?},\"health\":false,\"took\":\"{took:?}\",\"error\":{e:?}}}"
                ),
            })
            .collect();
        let _ = writeln!(out, "[{}]", items.join(","));
    }
    if unhealthy {
        return Err(Fail(EXIT_ERROR, "unhealthy cluster".into()));
    }
    Ok(())
}

async fn lease_grant(o: &Opts, args: &[&str], out: &mut dyn Write) -> Result<(), Fail> {
    check_format(o)?;
    let [ttl] = args else {
        return Err(usage("lease grant command needs TTL argument"));
    };
    let ttl: i64 = ttl.parse().map_err(|_| {
        usage(&format!(
            "bad TTL (strconv.ParseInt: parsing {ttl:?}: invalid syntax)"
        ))
    })?;
    let mut l = LeaseClient::new(channel(o).await?);
    let r = l
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .map_err(|s| {
            Fail(
                EXIT_ERROR,
                format!("failed to grant lease ({})", s.message()),
            )
        })?
        .into_inner();
    match o.write_out.as_str() {
        "json" => {
            let h = r.header.unwrap_or_default();
            let _ = writeln!(
                out,
                "{{\"cluster_id\":{},\"member_id\":{},\"revision\":{},\"raft_term\":{},\"ID\":{},\"TTL\":{},\"Error\":{:?}}}",
                h.cluster_id, h.member_id, h.revision, h.raft_term, r.id, r.ttl, r.error
            );
        }
        "fields" => {
            header_fields(out, r.header.as_ref());
            let _ = writeln!(out, "\"ID\" : {}", r.id);
            let _ = writeln!(out, "\"TTL\" : {}", r.ttl);
        }
        _ => {
            let _ = writeln!(out, "lease {:016x} granted with TTL({}s)", r.id, r.ttl);
        }
    }
    Ok(())
}

async fn lease_revoke(o: &Opts, args: &[&str], out: &mut dyn Write) -> Result<(), Fail> {
    check_format(o)?;
    let [id] = args else {
        return Err(usage("lease revoke command needs 1 argument"));
    };
    let id = lease_id(id)?;
    let mut l = LeaseClient::new(channel(o).await?);
    let r = l
        .lease_revoke(LeaseRevokeRequest { id })
        .await
        .map_err(|s| {
            Fail(
                EXIT_ERROR,
                format!("failed to revoke lease ({})", s.message()),
            )
        })?
        .into_inner();
    match o.write_out.as_str() {
        "json" => {
            let _ = writeln!(out, "{{\"header\":{}}}", header_json(r.header.as_ref()));
        }
        "fields" => header_fields(out, r.header.as_ref()),
        _ => {
            let _ = writeln!(out, "lease {id:016x} revoked");
        }
    }
    Ok(())
}

async fn lease_timetolive(o: &Opts, args: &[&str], out: &mut dyn Write) -> Result<(), Fail> {
    check_format(o)?;
    let [id] = args else {
        return Err(usage("lease timetolive command needs lease ID as argument"));
    };
    let id = lease_id(id)?;
    let mut l = LeaseClient::new(channel(o).await?);
    let r = l
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id,
            keys: o.has("keys"),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    match o.write_out.as_str() {
        "json" => {
            let mut f = vec![flat_header_json(r.header.as_ref())];
            f.retain(|s| !s.is_empty());
            if r.id != 0 {
                f.push(format!("\"id\":{}", r.id));
            }
            if r.ttl != 0 {
                f.push(format!("\"ttl\":{}", r.ttl));
            }
            if r.granted_ttl != 0 {
                f.push(format!("\"granted-ttl\":{}", r.granted_ttl));
            }
            if !r.keys.is_empty() {
                let keys: Vec<String> = r.keys.iter().map(|k| format!("\"{}\"", b64(k))).collect();
                f.push(format!("\"keys\":[{}]", keys.join(",")));
            }
            let _ = writeln!(out, "{{{}}}", f.join(","));
        }
        "fields" => {
            header_fields(out, r.header.as_ref());
            let _ = writeln!(out, "\"ID\" : {}", r.id);
            let _ = writeln!(out, "\"TTL\" : {}", r.ttl);
            let _ = writeln!(out, "\"GrantedTTL\" : {}", r.granted_ttl);
            for k in &r.keys {
                let _ = writeln!(out, "\"Key\" : {:?}", String::from_utf8_lossy(k));
            }
        }
        _ => {
            if r.granted_ttl == 0 && r.ttl == -1 {
                let _ = writeln!(out, "lease {id:016x} already expired");
                return Ok(());
            }
            let mut line = format!(
                "lease {:016x} granted with TTL({}s), remaining({}s)",
                r.id, r.granted_ttl, r.ttl
            );
            if o.has("keys") {
                let keys: Vec<String> = r
                    .keys
                    .iter()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .collect();
                line.push_str(&format!(", attached keys([{}])", keys.join(" ")));
            }
            let _ = writeln!(out, "{line}");
        }
    }
    Ok(())
}

async fn lease_keep_alive(o: &Opts, args: &[&str], out: &mut dyn Write) -> Result<(), Fail> {
    check_format(o)?;
    let [id] = args else {
        return Err(usage("lease keep-alive command needs lease ID as argument"));
    };
    let id = lease_id(id)?;
    let once = o.has("once");
    let (tx, rx) = tokio::sync::mpsc::channel::<LeaseKeepAliveRequest>(1);
    // The server answers the stream's headers with its first reply, so the first request goes out first.
    if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
        return Err(stream_closed("lease keep-alive"));
    }
    let mut l = LeaseClient::new(channel_with(o, false).await?);
    let mut stream = l
        .lease_keep_alive(tokio_stream_from(rx))
        .await
        .map_err(rpc)?
        .into_inner();
    loop {
        let r = next_reply(&mut stream, "lease keep-alive").await?;
        if r.ttl <= 0 {
            if once {
                // etcdctl 3.4 reports this as a bad connection (exit code 2).
                return Err(Fail(2, "etcdserver: requested lease not found".into()));
            }
            let _ = writeln!(out, "lease {id:016x} expired or revoked.");
            return Ok(());
        }
        match o.write_out.as_str() {
            "json" => {
                let h = flat_header_json(r.header.as_ref());
                let sep = if h.is_empty() { "" } else { "," };
                let _ = writeln!(out, "{{{h}{sep}\"ID\":{},\"TTL\":{}}}", r.id, r.ttl);
            }
            "fields" => {
                header_fields(out, r.header.as_ref());
                let _ = writeln!(out, "\"ID\" : {}", r.id);
                let _ = writeln!(out, "\"TTL\" : {}", r.ttl);
            }
            _ => {
                let _ = writeln!(out, "lease {:016x} keepalived with TTL({})", r.id, r.ttl);
            }
        }
        let _ = out.flush();
        if once {
            return Ok(());
        }
        // The Go client renews a third of the way through the TTL.
        tokio::time::sleep(Duration::from_secs((r.ttl as u64 / 3).max(1))).await;
        if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
            return Err(stream_closed("lease keep-alive"));
        }
    }
}

/// The receiving end of a channel as a request stream that stays open while the sender lives.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn event_type(e: &Event) -> &'static str {
    if e.r#type == 1 { "DELETE" } else { "PUT" }
}

async fn watch(
    o: &Opts,
    args: &[&str],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Fail> {
    check_format(o)?;
    let (key, end) = match args {
        [k] => (*k, None),
        [k, e] => (*k, Some(*e)),
        _ => return Err(usage("bad number of arguments")),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<WatchRequest>(1);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: range_key(o, key),
            range_end: range_end(o, key, end),
            start_revision: o.int("rev")?,
            prev_kv: o.has("prev-kv"),
            ..Default::default()
        })),
    };
    if tx.send(create).await.is_err() {
        return Err(stream_closed("watch"));
    }
    let mut w = WatchClient::new(channel_with(o, false).await?);
    let mut stream = w
        .watch(tokio_stream_from(rx))
        .await
        .map_err(rpc)?
        .into_inner();
    loop {
        let r = next_reply(&mut stream, "watch").await?;
        if r.canceled {
            // The Go client reports a compacted start revision as mvcc's error.
            let reason = if r.cancel_reason.is_empty() && r.compact_revision != 0 {
                "etcdserver: mvcc: required revision has been compacted"
            } else {
                r.cancel_reason.as_str()
            };
            let _ = writeln!(err, "watch was canceled ({reason})");
            return Err(Fail(5, "watch is canceled by the server".into()));
        }
        if r.created && r.events.is_empty() {
            continue;
        }
        match o.write_out.as_str() {
            "json" => {
                let events: Vec<String> = r
                    .events
                    .iter()
                    .map(|e| {
                        let mut f = Vec::new();
                        if e.r#type != 0 {
                            f.push(format!("\"type\":{}", e.r#type));
                        }
                        if let Some(kv) = &e.kv {
                            f.push(format!("\"kv\":{}", kv_json(kv)));
                        }
                        if let Some(kv) = &e.prev_kv {
                            f.push(format!("\"prev_kv\":{}", kv_json(kv)));
                        }
                        format!("{{{}}}", f.join(","))
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "{{\"Header\":{},\"Events\":[{}],\"CompactRevision\":{},\"Canceled\":false,\"Created\":false}}",
                    header_json(r.header.as_ref()),
                    events.join(","),
                    r.compact_revision
                );
            }
            "fields" => {
                header_fields(out, r.header.as_ref());
                for e in &r.events {
                    let _ = writeln!(out, "\"Type\" : {}", event_type(e));
                    if let Some(p) = &e.prev_kv {
                        kv_fields(out, p);
                    }
                    if let Some(kv) = &e.kv {
                        kv_fields(out, kv);
                    }
                }
            }
            _ => {
                for e in &r.events {
                    let _ = writeln!(out, "{}", event_type(e));
                    if let Some(p) = &e.prev_kv {
                        let _ = writeln!(out, "{}", String::from_utf8_lossy(&p.key));
                        let _ = writeln!(out, "{}", String::from_utf8_lossy(&p.value));
                    }
                    if let Some(kv) = &e.kv {
                        let _ = writeln!(out, "{}", String::from_utf8_lossy(&kv.key));
                        let _ = writeln!(out, "{}", String::from_utf8_lossy(&kv.value));
                    }
                }
            }
        }
        let _ = out.flush();
    }
}

/// Splits a txn line into words, honouring double quotes with backslash escapes.
fn argify(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(match n {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// Parses `target("key") op "value"`, as etcdctl's txn reads comparisons.
fn parse_compare(line: &str) -> Option<Compare> {
    let malformed = || None;
    let open = line.find('(')?;
    let target = line[..open].trim();
    let close = line.rfind(')')?;
    let key_words = argify(&line[open + 1..close]);
    let [key] = key_words.as_slice() else {
        return malformed();
    };
    let rest = argify(&line[close + 1..]);
    let [op, value] = rest.as_slice() else {
        return malformed();
    };
    let result = match op.as_str() {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        ">" => CompareResult::Greater,
        _ => return malformed(),
    };
    let (target, union) = match target {
        "value" | "val" => (
            CompareTarget::Value,
            TargetUnion::Value(value.as_bytes().to_vec()),
        ),
        "version" | "ver" => (
            CompareTarget::Version,
            TargetUnion::Version(value.parse().ok()?),
        ),
        "create" | "c" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(value.parse().ok()?),
        ),
        "mod" | "m" => (
            CompareTarget::Mod,
            TargetUnion::ModRevision(value.parse().ok()?),
        ),
        "lease" => (
            CompareTarget::Lease,
            TargetUnion::Lease(i64::from_str_radix(value, 16).ok()?),
        ),
        _ => return malformed(),
    };
    Some(Compare {
        result: result as i32,
        target: target as i32,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        target_union: Some(union),
    })
}

/// Parses one request line (`get`, `put` or `del` with their flags).
fn parse_op(line: &str) -> Result<RequestOp, Fail> {
    let words = argify(line);
    let o = parse_opts(&words, &|_| None)?;
    let w: Vec<&str> = o.words.iter().map(String::as_str).collect();
    let bad = || Fail(3, format!("invalid txn request: {line}"));
    let request = match w.as_slice() {
        ["put", key, value] => Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            lease: match o.value("lease") {
                None => 0,
                Some(l) => lease_id(l)?,
            },
            prev_kv: o.has("prev-kv"),
            ..Default::default()
        }),
        ["get", key, end @ ..] if end.len() <= 1 => Request::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            range_end: range_end(&o, key, end.first().copied()),
            limit: o.int("limit")?,
            revision: o.int("rev")?,
            keys_only: o.has("keys-only"),
            count_only: o.has("count-only"),
            ..Default::default()
        }),
        ["del", key, end @ ..] if end.len() <= 1 => {
            Request::RequestDeleteRange(DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                range_end: range_end(&o, key, end.first().copied()),
                prev_kv: o.has("prev-kv"),
            })
        }
        _ => return Err(bad()),
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

/// Reads lines up to an empty line; like etcdctl, input ending earlier is an error.
fn read_block(input: &mut dyn std::io::BufRead) -> Result<Vec<String>, Fail> {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        match input.read_line(&mut l) {
            Ok(0) => return Err(Fail(3, "EOF".into())),
            Ok(_) if !l.ends_with('\n') => return Err(Fail(3, "EOF".into())),
            Ok(_) => {}
            Err(e) => return Err(Fail(3, e.to_string())),
        }
        let l = l.trim_end_matches(['\n', '\r']);
        if l.is_empty() {
            return Ok(lines);
        }
        lines.push(l.to_string());
    }
}

async fn txn(o: &Opts, out: &mut dyn Write) -> Result<(), Fail> {
    check_format(o)?;
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let interactive = o.has("interactive") || o.has("i");
    if interactive {
        let _ = writeln!(out, "compares:");
    }
    let mut compare = Vec::new();
    for l in read_block(&mut input)? {
        compare
            .push(parse_compare(&l).ok_or_else(|| Fail(3, format!("malformed comparison: {l}")))?);
    }
    if interactive {
        let _ = writeln!(out, "success requests (get, put, del):");
    }
    let mut success = Vec::new();
    for l in read_block(&mut input)? {
        success.push(parse_op(&l)?);
    }
    if interactive {
        let _ = writeln!(out, "failure requests (get, put, del):");
    }
    let mut failure = Vec::new();
    for l in read_block(&mut input)? {
        failure.push(parse_op(&l)?);
    }
    let mut kv = KvClient::new(channel(o).await?);
    let r = kv
        .txn(TxnRequest {
            compare,
            success,
            failure,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    match o.write_out.as_str() {
        "json" => {
            let mut s = format!("{{\"header\":{}", header_json(r.header.as_ref()));
            if r.succeeded {
                s.push_str(",\"succeeded\":true");
            }
            let resps: Vec<String> = r
                .responses
                .iter()
                .filter_map(|op| op.response.as_ref())
                .map(|resp| match resp {
                    Response::ResponseRange(g) => {
                        let mut f = format!("{{\"header\":{}", header_json(g.header.as_ref()));
                        if !g.kvs.is_empty() {
                            let kvs: Vec<String> = g.kvs.iter().map(kv_json).collect();
                            f.push_str(&format!(",\"kvs\":[{}]", kvs.join(",")));
                        }
                        if g.more {
                            f.push_str(",\"more\":true");
                        }
                        if g.count != 0 {
                            f.push_str(&format!(",\"count\":{}", g.count));
                        }
                        format!("{{\"Response\":{{\"ResponseRange\":{f}}}}}}}")
                    }
                    Response::ResponsePut(p) => {
                        let mut f = format!("{{\"header\":{}", header_json(p.header.as_ref()));
                        if let Some(kv) = &p.prev_kv {
                            f.push_str(&format!(",\"prev_kv\":{}", kv_json(kv)));
                        }
                        format!("{{\"Response\":{{\"ResponsePut\":{f}}}}}}}")
                    }
                    Response::ResponseDeleteRange(d) => {
                        let mut f = format!("{{\"header\":{}", header_json(d.header.as_ref()));
                        if d.deleted != 0 {
                            f.push_str(&format!(",\"deleted\":{}", d.deleted));
                        }
                        if !d.prev_kvs.is_empty() {
                            let kvs: Vec<String> = d.prev_kvs.iter().map(kv_json).collect();
                            f.push_str(&format!(",\"prev_kvs\":[{}]", kvs.join(",")));
                        }
                        format!("{{\"Response\":{{\"ResponseDeleteRange\":{f}}}}}}}")
                    }
                    Response::ResponseTxn(_) => "{}".to_string(),
                })
                .collect();
            if !resps.is_empty() {
                s.push_str(&format!(",\"responses\":[{}]", resps.join(",")));
            }
            let _ = writeln!(out, "{s}}}");
        }
        "fields" => {
            header_fields(out, r.header.as_ref());
            let _ = writeln!(out, "\"Succeeded\" : {}", r.succeeded);
        }
        _ => {
            let _ = writeln!(out, "{}", if r.succeeded { "SUCCESS" } else { "FAILURE" });
            for resp in r.responses.iter().filter_map(|op| op.response.as_ref()) {
                let _ = writeln!(out);
                match resp {
                    Response::ResponseRange(g) => {
                        for k in &g.kvs {
                            let _ = writeln!(out, "{}", String::from_utf8_lossy(&k.key));
                            let _ = writeln!(out, "{}", String::from_utf8_lossy(&k.value));
                        }
                    }
                    Response::ResponsePut(p) => {
                        let _ = writeln!(out, "OK");
                        if let Some(kv) = &p.prev_kv {
                            let _ = writeln!(out, "{}", String::from_utf8_lossy(&kv.key));
                            let _ = writeln!(out, "{}", String::from_utf8_lossy(&kv.value));
                        }
                    }
                    Response::ResponseDeleteRange(d) => {
                        let _ = writeln!(out, "{}", d.deleted);
                        for kv in &d.prev_kvs {
                            let _ = writeln!(out, "{}", String::from_utf8_lossy(&kv.key));
                            let _ = writeln!(out, "{}", String::from_utf8_lossy(&kv.value));
                        }
                    }
                    Response::ResponseTxn(_) => {}
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argify_honours_quotes_and_escapes() {
        assert_eq!(
            argify(r#"put k1 "a b" "x\"y""#),
            vec!["put", "k1", "a b", "x\"y"]
        );
        assert_eq!(argify(r#"put k """#), vec!["put", "k", ""]);
    }

    #[test]
    fn comparisons_parse_like_etcdctl() {
        let c = parse_compare(r#"mod("k1") > "0""#).expect("parses");
        assert_eq!(c.key, b"k1");
        assert_eq!(c.result, CompareResult::Greater as i32);
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(0)));
        let c = parse_compare(r#"value("k") != "a b""#).expect("parses");
        assert_eq!(c.target_union, Some(TargetUnion::Value(b"a b".to_vec())));
        assert!(parse_compare("bogus").is_none());
        assert!(parse_compare(r#"version("k") = "x""#).is_none());
    }

    #[test]
    fn sizes_print_like_go_humanize() {
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(24576), "25 kB");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }
}
