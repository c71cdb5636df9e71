//! Our etcdctl: commands, output formats and exit codes of etcdctl 3.4 in ETCDCTL_API=2 mode (the default), and ETCDCTL_API=3 mode in `v3`.

pub mod client;
mod output;
mod v3;

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use client::{Response, encode};

/// Success.
pub const EXIT_OK: i32 = 0;
/// Bad arguments.
pub const EXIT_BAD_ARGS: i32 = 1;
/// No endpoint reachable while syncing.
pub const EXIT_BAD_CONNECTION: i32 = 2;
/// Any etcd error reply or failed request.
pub const EXIT_SERVER_ERROR: i32 = 4;
/// Cluster not healthy.
pub const EXIT_CLUSTER_UNHEALTHY: i32 = 5;

/// A failure with its exit code and message (printed as `Error:  <msg>`).
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: i32,
    /// The message.
    pub message: String,
    /// Printed without the `Error:` prefix.
    pub bare: bool,
}

fn fail(code: i32, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
        bare: false,
    }
}

/// Global options.
#[derive(Debug, Clone)]
pub struct Global {
    endpoints: Vec<String>,
    no_sync: bool,
    output: String,
    timeout: Duration,
    auth: Option<String>,
    debug: bool,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    /// `--insecure-skip-tls-verify` (our extension: etcdctl 3.4's v2 mode lacks it).
    insecure_skip_tls_verify: bool,
}

/// Parsed command-line: global options, command words, command flags and positional arguments.
struct Parsed {
    global: Global,
    command: Vec<String>,
    flags: Vec<(String, Option<String>)>,
    args: Vec<String>,
    exec: Vec<String>,
}

/// Command flags that take a value.
const VALUE_FLAGS: &[&str] = &[
    "ttl",
    "swap-with-value",
    "swap-with-index",
    "after-index",
    "with-value",
    "with-index",
];
/// Global flags that take a value.
const GLOBAL_VALUE_FLAGS: &[&str] = &[
    "endpoints",
    "endpoint",
    "peers",
    "C",
    "output",
    "o",
    "timeout",
    "total-timeout",
    "username",
    "u",
    "cert-file",
    "key-file",
    "ca-file",
    "discovery-srv",
    "D",
];
const COMMANDS: &[&str] = &[
    "set",
    "get",
    "mk",
    "mkdir",
    "setdir",
    "update",
    "updatedir",
    "rm",
    "rmdir",
    "ls",
    "watch",
    "exec-watch",
    "member",
    "cluster-health",
    "backup",
    "user",
    "role",
    "auth",
    "help",
    "h",
];

fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs.max(0.0)))
}

fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Parsed, Failure> {
    let mut global = Global {
        endpoints: env("ETCDCTL_ENDPOINTS")
            .or_else(|| env("ETCDCTL_ENDPOINT"))
            .or_else(|| env("ETCDCTL_PEERS"))
            .unwrap_or_else(|| "http://127.0.0.1:2379,http://127.0.0.1:4001".into())
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        no_sync: false,
        output: "simple".into(),
        timeout: Duration::from_secs(2),
        auth: env("ETCDCTL_USERNAME"),
        debug: false,
        ca_file: env("ETCDCTL_CA_FILE"),
        cert_file: env("ETCDCTL_CERT_FILE"),
        key_file: env("ETCDCTL_KEY_FILE"),
        insecure_skip_tls_verify: env("ETCDCTL_INSECURE_SKIP_TLS_VERIFY")
            .is_some_and(|v| v == "true"),
    };
    let mut command = Vec::new();
    let mut flags = Vec::new();
    let mut positional = Vec::new();
    let mut exec = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            exec = args[i..].to_vec();
            break;
        }
        if let Some(stripped) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            let stripped = stripped.strip_prefix('-').unwrap_or(stripped);
            let (name, mut value) = match stripped.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (stripped.to_string(), None),
            };
            let is_global = command.is_empty();
            let takes = if is_global {
                GLOBAL_VALUE_FLAGS.contains(&name.as_str())
            } else {
                VALUE_FLAGS.contains(&name.as_str())
            };
            if takes && value.is_none() {
                value = args.get(i).cloned();
                i += 1;
                if value.is_none() {
                    return Err(fail(
                        EXIT_BAD_ARGS,
                        format!("flag needs an argument: -{name}"),
                    ));
                }
            }
            if is_global {
                let v = value.clone().unwrap_or_default();
                match name.as_str() {
                    "endpoints" | "endpoint" | "peers" | "C" => {
                        global.endpoints = v
                            .split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect()
                    }
                    "no-sync" => global.no_sync = value.as_deref() != Some("false"),
                    "output" | "o" => global.output = v,
                    "timeout" => {
                        global.timeout = parse_duration(&v)
                            .ok_or_else(|| fail(EXIT_BAD_ARGS, format!("invalid --timeout {v}")))?
                    }
                    "total-timeout" | "debug" | "insecure-discovery" => {}
                    "insecure-skip-tls-verify" => {
                        global.insecure_skip_tls_verify = value.as_deref() != Some("false")
                    }
                    "username" | "u" => global.auth = Some(v),
                    "ca-file" => global.ca_file = Some(v),
                    "cert-file" => global.cert_file = Some(v),
                    "key-file" => global.key_file = Some(v),
                    "discovery-srv" | "D" => {
                        return Err(fail(
                            EXIT_BAD_ARGS,
                            format!("--{name} is not supported by this etcdctl yet"),
                        ));
                    }
                    "help" | "h" => command.push("help".into()),
                    "version" | "v" => command.push("version".into()),
                    _ => {
                        return Err(fail(
                            EXIT_BAD_ARGS,
                            format!("flag provided but not defined: -{name}"),
                        ));
                    }
                }
            } else {
                flags.push((name, value));
            }
            continue;
        }
        if command.is_empty()
            || (command.len() == 1 && command[0] == "member" && positional.is_empty())
        {
            command.push(a.clone());
        } else {
            positional.push(a.clone());
        }
    }
    if !matches!(global.output.as_str(), "simple" | "extended" | "json") {
        return Err(fail(
            EXIT_BAD_ARGS,
            format!("output format {} is not supported", global.output),
        ));
    }
    Ok(Parsed {
        global,
        command,
        flags,
        args: positional,
        exec,
    })
}

impl Parsed {
    fn flag(&self, names: &[&str]) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| names.contains(&n.as_str()))
            .map(|(_, v)| v.as_deref().unwrap_or("true"))
    }

    fn bool(&self, names: &[&str]) -> bool {
        self.flag(names).is_some_and(|v| v != "false")
    }
}

/// Talks to the cluster: endpoint failover and member sync.
struct Conn {
    endpoints: Vec<String>,
    timeout: Duration,
    auth: Option<String>,
    debug: bool,
    /// For `https://` endpoints (`--ca-file`, `--cert-file`, `--key-file`).
    tls: Option<client::Tls>,
}

fn basic_auth(userpass: &str) -> String {
    use base64_lite::encode as b64;
    let up = if userpass.contains(':') {
        userpass.to_string()
    } else {
        format!("{userpass}:")
    };
    format!("Authorization: Basic {}\r\n", b64(up.as_bytes()))
}

mod base64_lite {
    //! Standard base64, for the Basic auth header.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /// Encodes with padding.
    pub fn encode(b: &[u8]) -> String {
        let mut s = String::new();
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }
}

impl Conn {
    /// One request to one endpoint, over TLS for `https://` ones.
    fn send(
        &self,
        endpoint: &str,
        method: &str,
        target: &str,
        body: Option<(&str, &str)>,
        headers: Option<&str>,
        timeout: Option<Duration>,
    ) -> std::io::Result<Response> {
        // Without TLS flags an https endpoint is verified against the system's CA bundle, as Go's etcdctl does.
        let system;
        let tls = if endpoint.starts_with("https://") {
            match &self.tls {
                Some(t) => Some(t),
                None => {
                    system = client::Tls::new(None, None, false).map_err(std::io::Error::other)?;
                    Some(&system)
                }
            }
        } else {
            None
        };
        client::request_tls(
            &client::authority(endpoint),
            tls,
            method,
            target,
            body,
            headers,
            timeout,
        )
    }

    fn request(
        &self,
        method: &str,
        target: &str,
        body: Option<(&str, &str)>,
        timeout: Option<Duration>,
    ) -> Result<Response, Failure> {
        let headers = self.auth.as_deref().map(basic_auth);
        let mut errors = Vec::new();
        for (i, ep) in self.endpoints.iter().enumerate() {
            if self.debug {
                let data = body.map(|(_, b)| format!(" -d {b}")).unwrap_or_default();
                eprintln!(
                    "cURL Command: curl -X {method} {}{target}{data}",
                    ep.trim_end_matches('/')
                );
            }
            match self.send(ep, method, target, body, headers.as_deref(), timeout) {
                Ok(r) => return Ok(r),
                Err(e) => errors.push(format!("error #{i}: {e}")),
            }
        }
        Err(fail(
            EXIT_SERVER_ERROR,
            format!(
                "client: etcd cluster is unavailable or misconfigured; {}\n\n{}\n",
                errors.join("\n; "),
                errors.join("\n")
            ),
        ))
    }

    /// etcdctl's endpoint sync: use the members' client URLs.
    fn sync(&mut self) -> Result<(), Failure> {
        let r = self
            .request("GET", "/v2/members", None, Some(self.timeout))
            .map_err(|f| fail(EXIT_BAD_CONNECTION, f.message))?;
        let v: Value = serde_json::from_slice(&r.body).map_err(|e| {
            fail(
                EXIT_BAD_CONNECTION,
                format!("client: bad members reply: {e}"),
            )
        })?;
        let mut urls = Vec::new();
        for m in v["members"].as_array().into_iter().flatten() {
            for u in m["clientURLs"].as_array().into_iter().flatten() {
                if let Some(u) = u.as_str() {
                    urls.push(u.to_string());
                }
            }
        }
        if !urls.is_empty() {
            self.endpoints = urls;
        }
        Ok(())
    }

    /// A keys-API call; etcd error replies become exit code 4.
    fn keys(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, String)],
        form: Option<String>,
        wait: bool,
    ) -> Result<Response, Failure> {
        let mut target = format!("/v2/keys{}", key_path(key));
        if !query.is_empty() {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", encode(v)))
                .collect();
            target.push('?');
            target.push_str(&q.join("&"));
        }
        let timeout = if wait { None } else { Some(self.timeout) };
        let body = form
            .as_deref()
            .map(|f| ("application/x-www-form-urlencoded", f));
        let r = self.request(method, &target, body, timeout)?;
        if r.status >= 400 {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let msg = match v.get("errorCode") {
                Some(code) => format!(
                    "{}: {} ({}) [{}]",
                    code,
                    v["message"].as_str().unwrap_or(""),
                    v["cause"].as_str().unwrap_or(""),
                    v["index"]
                ),
                None => format!("unexpected status {}: {}", r.status, r.text().trim()),
            };
            return Err(fail(EXIT_SERVER_ERROR, msg));
        }
        Ok(r)
    }
}

fn key_path(key: &str) -> String {
    let k = if key.starts_with('/') {
        key.to_string()
    } else {
        format!("/{key}")
    };
    k.split('/')
        .map(|c| {
            url::form_urlencoded::byte_serialize(c.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Runs etcdctl with `args` (without the program name); returns the exit code.
pub fn run(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    if let Some(api) = env("ETCDCTL_API") {
        match api.as_str() {
            "2" => {}
            "3" => return v3::run(args, env, out, err),
            _ => {
                let _ = writeln!(
                    err,
                    "Error:  ETCDCTL_API={api} is not supported: this etcdctl speaks the v2 and v3 APIs"
                );
                return EXIT_BAD_ARGS;
            }
        }
    }
    match dispatch(args, env, out) {
        Ok(code) => code,
        Err(f) => {
            if f.bare {
                let _ = writeln!(err, "{}", f.message);
            } else {
                let _ = writeln!(err, "Error:  {}", f.message);
            }
            f.code
        }
    }
}

fn dispatch(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
) -> Result<i32, Failure> {
    let p = parse(args, env)?;
    let cmd: Vec<&str> = p.command.iter().map(String::as_str).collect();
    match cmd.first().copied() {
        None | Some("help") | Some("h") => {
            let _ = writeln!(out, "etcdctl (v2 API): {}", COMMANDS.join(", "));
            return Ok(EXIT_OK);
        }
        Some("version") => {
            let _ = writeln!(
                out,
                "etcdctl version: {}\nAPI version: 2",
                crate::config::ETCD_VERSION
            );
            return Ok(EXIT_OK);
        }
        Some(c) if !COMMANDS.contains(&c) => {
            return Err(fail(EXIT_BAD_ARGS, format!("unknown command {c:?}")));
        }
        Some("backup" | "user" | "role" | "auth") => {
            return Err(fail(
                EXIT_BAD_ARGS,
                format!("{} is not supported by this etcdctl yet", cmd[0]),
            ));
        }
        _ => {}
    }
    let g = &p.global;
    let tls = if g.ca_file.is_none()
        && g.cert_file.is_none()
        && g.key_file.is_none()
        && !g.insecure_skip_tls_verify
    {
        None
    } else {
        let pair = match (&g.cert_file, &g.key_file) {
            (Some(c), Some(k)) => Some((std::path::Path::new(c), std::path::Path::new(k))),
            (None, None) => None,
            _ => {
                return Err(fail(
                    EXIT_BAD_ARGS,
                    "--cert-file and --key-file go together",
                ));
            }
        };
        let ca = g.ca_file.as_deref().map(std::path::Path::new);
        Some(
            client::Tls::new(ca, pair, g.insecure_skip_tls_verify)
                .map_err(|e| fail(EXIT_BAD_ARGS, e))?,
        )
    };
    let mut conn = Conn {
        endpoints: p.global.endpoints.clone(),
        timeout: p.global.timeout,
        auth: p.global.auth.clone(),
        debug: p.global.debug,
        tls,
    };
    if !p.global.no_sync {
        conn.sync()?;
    }
    let o = p.global.output.as_str();
    let key = || {
        p.args
            .first()
            .cloned()
            .ok_or_else(|| fail(EXIT_BAD_ARGS, "key required"))
    };
    let value = || {
        p.args
            .get(1)
            .cloned()
            .ok_or_else(|| fail(EXIT_BAD_ARGS, "value required"))
    };
    let ttl = || p.flag(&["ttl"]).map(str::to_string);
    let form = |pairs: &[(&str, Option<String>)]| -> Option<String> {
        let parts: Vec<String> = pairs
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
            .collect();
        Some(parts.join("&"))
    };
    match cmd[0] {
        "set" => {
            let (k, v) = (key()?, value()?);
            let mut q = Vec::new();
            if let Some(pv) = p.flag(&["swap-with-value"]) {
                q.push(("prevValue", pv.to_string()));
            }
            if let Some(pi) = p.flag(&["swap-with-index"]) {
                q.push(("prevIndex", pi.to_string()));
            }
            let r = conn.keys(
                "PUT",
                &k,
                &q,
                form(&[("value", Some(v)), ("ttl", ttl())]),
                false,
            )?;
            output::print(out, &r, o)?;
        }
        "mk" => {
            let (k, v) = (key()?, value()?);
            let r = if p.bool(&["in-order"]) {
                conn.keys(
                    "POST",
                    &k,
                    &[],
                    form(&[("value", Some(v)), ("ttl", ttl())]),
                    false,
                )?
            } else {
                conn.keys(
                    "PUT",
                    &k,
                    &[("prevExist", "false".into())],
                    form(&[("value", Some(v)), ("ttl", ttl())]),
                    false,
                )?
            };
            output::print(out, &r, o)?;
        }
        "update" => {
            let (k, v) = (key()?, value()?);
            let r = conn.keys(
                "PUT",
                &k,
                &[("prevExist", "true".into())],
                form(&[("value", Some(v)), ("ttl", ttl())]),
                false,
            )?;
            output::print(out, &r, o)?;
        }
        "mkdir" | "setdir" | "updatedir" => {
            let k = key()?;
            let mut q = vec![("dir", "true".to_string())];
            match cmd[0] {
                "mkdir" => q.push(("prevExist", "false".into())),
                "updatedir" => q.push(("prevExist", "true".into())),
                _ => {}
            }
            let r = conn.keys("PUT", &k, &q, form(&[("ttl", ttl())]), false)?;
            if o != "simple" {
                output::print(out, &r, o)?;
            }
        }
        "get" => {
            let k = key()?;
            let q = vec![
                ("quorum", p.bool(&["quorum", "q"]).to_string()),
                ("recursive", "false".into()),
                ("sorted", p.bool(&["sort"]).to_string()),
            ];
            let r = conn.keys("GET", &k, &q, None, false)?;
            let v = output::json(&r)?;
            if v["node"]["dir"].as_bool() == Some(true) {
                // etcdctl prints this one without its "Error:" prefix.
                return Err(Failure {
                    code: EXIT_BAD_ARGS,
                    message: format!(
                        "{}: is a directory",
                        v["node"]["key"].as_str().unwrap_or(&k)
                    ),
                    bare: true,
                });
            }
            output::print(out, &r, o)?;
        }
        "ls" => {
            let k = p.args.first().cloned().unwrap_or_else(|| "/".into());
            let q = vec![
                ("quorum", p.bool(&["quorum", "q"]).to_string()),
                ("recursive", p.bool(&["recursive", "r"]).to_string()),
                ("sorted", p.bool(&["sort"]).to_string()),
            ];
            let r = conn.keys("GET", &k, &q, None, false)?;
            if o == "simple" {
                output::ls(out, &output::json(&r)?, p.bool(&["p"]))?;
            } else {
                output::print(out, &r, o)?;
            }
        }
        "rm" | "rmdir" => {
            let k = key()?;
            let mut q = Vec::new();
            if cmd[0] == "rmdir" || p.bool(&["dir"]) {
                q.push(("dir", "true".to_string()));
            }
            if p.bool(&["recursive", "r"]) {
                q.push(("recursive", "true".into()));
            }
            if let Some(v) = p.flag(&["with-value"]) {
                q.push(("prevValue", v.to_string()));
            }
            if let Some(i) = p.flag(&["with-index"]) {
                q.push(("prevIndex", i.to_string()));
            }
            let r = conn.keys("DELETE", &k, &q, None, false)?;
            let v = output::json(&r)?;
            // etcdctl prints deleted files; dirs only in the non-simple formats.
            let file_removed = cmd[0] == "rm" && v["node"]["dir"].as_bool() != Some(true);
            if file_removed || o != "simple" {
                output::print(out, &r, o)?;
            }
        }
        "watch" | "exec-watch" => watch(&conn, &p, cmd[0] == "exec-watch", out, o)?,
        "member" => member(&conn, &p, out)?,
        "cluster-health" => loop {
            let code = cluster_health(&conn, out)?;
            if !p.bool(&["forever", "f"]) {
                return Ok(code);
            }
            // etcdctl checks again every 10 seconds.
            std::thread::sleep(Duration::from_secs(10));
        },
        _ => return Err(fail(EXIT_BAD_ARGS, format!("unknown command {:?}", cmd[0]))),
    }
    Ok(EXIT_OK)
}

fn watch(conn: &Conn, p: &Parsed, exec: bool, out: &mut dyn Write, o: &str) -> Result<(), Failure> {
    let k = p
        .args
        .first()
        .cloned()
        .ok_or_else(|| fail(EXIT_BAD_ARGS, "key required"))?;
    if exec && p.exec.is_empty() {
        return Err(fail(EXIT_BAD_ARGS, "command required"));
    }
    let forever = exec || p.bool(&["forever", "f"]);
    let recursive = p.bool(&["recursive", "r"]);
    let mut index: u64 = match p.flag(&["after-index"]) {
        Some(i) => {
            i.parse::<u64>()
                .map_err(|_| fail(EXIT_BAD_ARGS, format!("invalid --after-index {i}")))?
                + 1
        }
        None => 0,
    };
    loop {
        let mut q = vec![
            ("recursive", recursive.to_string()),
            ("wait", "true".into()),
        ];
        if index > 0 {
            q.push(("waitIndex", index.to_string()));
        }
        let r = conn.keys("GET", &k, &q, None, true)?;
        if r.body.is_empty() {
            continue;
        }
        let v = output::json(&r)?;
        index = v["node"]["modifiedIndex"].as_u64().unwrap_or(index) + 1;
        if exec {
            let status = std::process::Command::new(&p.exec[0])
                .args(&p.exec[1..])
                .env("ETCD_WATCH_ACTION", v["action"].as_str().unwrap_or(""))
                .env("ETCD_WATCH_KEY", v["node"]["key"].as_str().unwrap_or(""))
                .env(
                    "ETCD_WATCH_VALUE",
                    v["node"]["value"].as_str().unwrap_or(""),
                )
                .env(
                    "ETCD_WATCH_MODIFIED_INDEX",
                    v["node"]["modifiedIndex"].to_string(),
                )
                .status();
            if let Err(e) = status {
                return Err(fail(EXIT_BAD_ARGS, format!("exec {}: {e}", p.exec[0])));
            }
        } else {
            output::print(out, &r, o)?;
        }
        if !forever {
            return Ok(());
        }
    }
}

fn member(conn: &Conn, p: &Parsed, out: &mut dyn Write) -> Result<(), Failure> {
    let sub = p.command.get(1).map(String::as_str).unwrap_or("list");
    match sub {
        "list" => {
            let r = conn.request("GET", "/v2/members", None, Some(conn.timeout))?;
            let v = output::json(&r)?;
            let leader = conn
                .request("GET", "/v2/members/leader", None, Some(conn.timeout))
                .ok()
                .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok())
                .and_then(|v| v["id"].as_str().map(str::to_string));
            for m in v["members"].as_array().into_iter().flatten() {
                let id = m["id"].as_str().unwrap_or("");
                let join = |f: &str| -> String {
                    m[f].as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|u| u.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let name = m["name"].as_str().unwrap_or("");
                let line = if name.is_empty() {
                    format!("{id}[unstarted]: peerURLs={}", join("peerURLs"))
                } else {
                    format!(
                        "{id}: name={name} peerURLs={} clientURLs={} isLeader={}",
                        join("peerURLs"),
                        join("clientURLs"),
                        leader.as_deref() == Some(id)
                    )
                };
                let _ = writeln!(out, "{line}");
            }
            Ok(())
        }
        "add" => {
            let (Some(name), Some(urls)) = (p.args.first(), p.args.get(1)) else {
                return Err(fail(EXIT_BAD_ARGS, "member name and peer URL required"));
            };
            let peers: Vec<&str> = urls.split(',').collect();
            let body = serde_json::json!({ "peerURLs": peers }).to_string();
            let r = conn.request(
                "POST",
                "/v2/members",
                Some(("application/json", &body)),
                Some(conn.timeout),
            )?;
            if r.status != 201 {
                return Err(fail(EXIT_BAD_ARGS, output::message(&r)));
            }
            let v = output::json(&r)?;
            let new_id = v["id"].as_str().unwrap_or("").to_string();
            let _ = writeln!(out, "Added member named {name} with ID {new_id} to cluster");
            // etcdctl then lists the members to print the new member's configuration.
            let r = conn.request("GET", "/v2/members", None, Some(conn.timeout))?;
            let list = output::json(&r)?;
            let mut conf = Vec::new();
            for m in list["members"].as_array().into_iter().flatten() {
                let id = m["id"].as_str().unwrap_or("");
                let n = if id == new_id {
                    name.as_str()
                } else {
                    m["name"].as_str().unwrap_or("")
                };
                for u in m["peerURLs"].as_array().into_iter().flatten() {
                    conf.push(format!("{n}={}", u.as_str().unwrap_or("")));
                }
            }
            let _ = writeln!(out);
            let _ = writeln!(out, "ETCD_NAME={name:?}");
            let _ = writeln!(out, "ETCD_INITIAL_CLUSTER={:?}", conf.join(","));
            let _ = writeln!(out, "ETCD_INITIAL_CLUSTER_STATE=\"existing\"");
            Ok(())
        }
        "remove" | "update" => {
            let Some(id) = p.args.first() else {
                return Err(fail(EXIT_BAD_ARGS, "member ID required"));
            };
            let r = if sub == "remove" {
                conn.request(
                    "DELETE",
                    &format!("/v2/members/{id}"),
                    None,
                    Some(conn.timeout),
                )?
            } else {
                let urls = p
                    .args
                    .get(1)
                    .ok_or_else(|| fail(EXIT_BAD_ARGS, "peer URLs required"))?;
                let body = serde_json::json!({ "peerURLs": urls.split(',').collect::<Vec<_>>() })
                    .to_string();
                conn.request(
                    "PUT",
                    &format!("/v2/members/{id}"),
                    Some(("application/json", &body)),
                    Some(conn.timeout),
                )?
            };
            if r.status != 204 {
                return Err(fail(EXIT_BAD_ARGS, output::message(&r)));
            }
            if sub == "remove" {
                let _ = writeln!(out, "Removed member {id} from cluster");
            } else {
                let _ = writeln!(out, "Updated member with ID {id} in cluster");
            }
            Ok(())
        }
        other => Err(fail(
            EXIT_BAD_ARGS,
            format!("unknown member subcommand {other:?}"),
        )),
    }
}

fn cluster_health(conn: &Conn, out: &mut dyn Write) -> Result<i32, Failure> {
    let r = conn.request("GET", "/v2/members", None, Some(conn.timeout))?;
    let v = output::json(&r)?;
    let members = v["members"].as_array().cloned().unwrap_or_default();
    let mut healthy = 0;
    for m in &members {
        let id = m["id"].as_str().unwrap_or("");
        let urls: Vec<String> = m["clientURLs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u.as_str().map(String::from))
            .collect();
        let mut verdict = None;
        for u in &urls {
            if let Ok(r) = conn.send(u, "GET", "/health", None, None, Some(conn.timeout)) {
                let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                let ok = v["health"] == "true" || v["health"] == true;
                verdict = Some((ok, u.clone()));
                break;
            }
        }
        match verdict {
            Some((true, u)) => {
                healthy += 1;
                let _ = writeln!(out, "member {id} is healthy: got healthy result from {u}");
            }
            Some((false, u)) => {
                let _ = writeln!(
                    out,
                    "member {id} is unhealthy: got unhealthy result from {u}"
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "member {id} is unreachable: {urls:?} are all unreachable"
                );
            }
        }
    }
    if healthy == members.len() && healthy > 0 {
        let _ = writeln!(out, "cluster is healthy");
        Ok(EXIT_OK)
    } else if healthy > 0 {
        let _ = writeln!(out, "cluster is degraded");
        Ok(EXIT_CLUSTER_UNHEALTHY)
    } else {
        let _ = writeln!(out, "cluster is unavailable");
        Ok(EXIT_CLUSTER_UNHEALTHY)
    }
}
