//! The same scripted v2 requests against Debian's etcd 3.4 and ours: statuses, headers and bodies must agree
//! once indexes are taken relative to each server's starting index.

use std::time::{Duration, Instant};

use etcd::ctl::client::Response;
use serde_json::Value;

use crate::support::{Ours, Proc, free_port, req};

/// One scripted step. `{N}` in a target or form stands for (starting index + N).
enum Step {
    Req(&'static str, &'static str, Option<&'static str>),
    /// Start a long-poll watch, run the request, then collect the watch reply.
    WatchThen(
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
    ),
    /// Poll until the key is gone (TTL expiry).
    AwaitGone(&'static str),
    /// Write this many keys (to push events out of the history).
    Fill(usize),
}

use Step::*;

fn script() -> Vec<Step> {
    vec![
        Req("PUT", "/v2/keys/message", Some("value=Hello+world")),
        Req("PUT", "/v2/keys/message", Some("value=two")),
        Req("GET", "/v2/keys/message", None),
        Req("HEAD", "/v2/keys/message", None),
        Req("GET", "/v2/keys/missing", None),
        Req("GET", "/v2/keys/message/child", None),
        Req("PUT", "/v2/keys/message/child", Some("value=x")),
        // parameter errors
        Req("PUT", "/v2/keys/p?ttl=abc", Some("value=1")),
        Req("PUT", "/v2/keys/p?ttl=-1", Some("value=1")),
        Req("PUT", "/v2/keys/p?prevIndex=x", Some("value=1")),
        Req("GET", "/v2/keys/p?waitIndex=x&wait=true", None),
        Req("GET", "/v2/keys/p?recursive=maybe", None),
        Req("GET", "/v2/keys/p?sorted=2", None),
        Req("GET", "/v2/keys/p?quorum=x", None),
        Req("GET", "/v2/keys/p?stream=x&wait=true", None),
        Req("PUT", "/v2/keys/p?dir=x", None),
        Req("PUT", "/v2/keys/p?wait=true", Some("value=1")),
        Req("PUT", "/v2/keys/p?prevValue=", Some("value=1")),
        Req("PUT", "/v2/keys/p?prevExist=zz", Some("value=1")),
        Req("PUT", "/v2/keys/p?refresh=true&ttl=5", Some("value=x")),
        Req("PUT", "/v2/keys/p?refresh=true", None),
        Req("PUT", "/v2/keys/p?noValueOnSuccess=x", Some("value=1")),
        // body wins over query; JSON bodies are ignored
        Req("PUT", "/v2/keys/bw?value=query", Some("value=body")),
        Req("GET", "/v2/keys/bw", None),
        // create / update / CAS / CAD
        Req("PUT", "/v2/keys/c?prevExist=false", Some("value=1")),
        Req("PUT", "/v2/keys/c?prevExist=false", Some("value=2")),
        Req("PUT", "/v2/keys/c?prevExist=true", Some("value=3")),
        Req("PUT", "/v2/keys/nope?prevExist=true", Some("value=3")),
        Req("PUT", "/v2/keys/c?prevValue=3", Some("value=4")),
        Req("PUT", "/v2/keys/c?prevValue=zz", Some("value=5")),
        Req("PUT", "/v2/keys/c?prevIndex={100}", Some("value=5")),
        Req(
            "PUT",
            "/v2/keys/c?prevValue=zz&prevIndex={100}",
            Some("value=5"),
        ),
        Req(
            "PUT",
            "/v2/keys/c?prevExist=true&prevValue=4",
            Some("value=6"),
        ),
        Req("PUT", "/v2/keys/c?noValueOnSuccess=true", Some("value=7")),
        Req("DELETE", "/v2/keys/c?prevValue=zz", None),
        Req("DELETE", "/v2/keys/c?prevValue=7", None),
        Req("DELETE", "/v2/keys/c", None),
        // dirs
        Req("PUT", "/v2/keys/dir?dir=true", None),
        Req("PUT", "/v2/keys/dir?dir=true", None),
        Req("PUT", "/v2/keys/dir?dir=true&prevExist=false", None),
        Req("PUT", "/v2/keys/dir", Some("value=x")),
        Req("PUT", "/v2/keys/dir?prevValue=a", Some("value=x")),
        Req("PUT", "/v2/keys/dir/a/b", Some("value=1")),
        Req("PUT", "/v2/keys/dir/_hidden", Some("value=h")),
        Req("PUT", "/v2/keys/dir/z", Some("value=2")),
        Req("GET", "/v2/keys/dir", None),
        Req("GET", "/v2/keys/dir?recursive=true&sorted=true", None),
        Req("GET", "/v2/keys/dir/_hidden", None),
        Req("GET", "/v2/keys/?recursive=true&sorted=true", None),
        Req("GET", "/v2/keys", None),
        Req("DELETE", "/v2/keys/dir", None),
        Req("DELETE", "/v2/keys/dir?dir=true", None),
        Req("DELETE", "/v2/keys/dir/z?prevIndex=1", None),
        Req("PUT", "/v2/keys/dir/a?prevValue=x", Some("value=1")),
        Req("DELETE", "/v2/keys/dir/a?prevValue=x", None),
        Req("PUT", "/v2/keys/empty?dir=true", None),
        Req("DELETE", "/v2/keys/empty?dir=true", None),
        Req("PUT", "/v2/keys/file", Some("value=f")),
        Req("PUT", "/v2/keys/file?dir=true", None),
        Req("PUT", "/v2/keys/dir?dir=true&prevExist=true&ttl=100", None),
        Req("PUT", "/v2/keys/dir?dir=true&prevExist=true&ttl=", None),
        Req("DELETE", "/v2/keys/dir?recursive=true", None),
        // root
        Req("PUT", "/v2/keys/", Some("value=x")),
        Req("DELETE", "/v2/keys/?recursive=true", None),
        Req("POST", "/v2/keys/", Some("value=x")),
        // in-order keys
        Req("POST", "/v2/keys/queue", Some("value=Job1")),
        Req("POST", "/v2/keys/queue", Some("value=Job2")),
        Req("GET", "/v2/keys/queue?recursive=true&sorted=true", None),
        Req("POST", "/v2/keys/queue?dir=true", None),
        Req(
            "POST",
            "/v2/keys/queue?noValueOnSuccess=true",
            Some("value=Job3"),
        ),
        Req("GET", "/v2/keys/message?quorum=true", None),
        Req("HEAD", "/v2/keys/missing", None),
        Req("PUT", "/v2/keys/file2", Some("value=f")),
        Req("DELETE", "/v2/keys/file2?dir=true", None),
        Req("POST", "/v2/keys/file", Some("value=j")),
        // TTL, refresh, expiry
        Req("PUT", "/v2/keys/ttl?ttl=100", Some("value=v")),
        Req(
            "PUT",
            "/v2/keys/ttl?ttl=200&refresh=true&prevExist=true",
            None,
        ),
        Req("PUT", "/v2/keys/ttl?ttl=300&refresh=true", None),
        Req("PUT", "/v2/keys/nottl?ttl=300&refresh=true", None),
        Req("PUT", "/v2/keys/ttl?prevExist=true&ttl=", Some("value=w")),
        Req("PUT", "/v2/keys/exp?ttl=1", Some("value=v")),
        AwaitGone("/v2/keys/exp"),
        Req("GET", "/v2/keys/exp?wait=true&waitIndex={0}", None),
        // paths
        Req("PUT", "/v2/keys/t2/", Some("value=slash")),
        Req("GET", "/v2/keys/t2", None),
        Req("GET", "/v2/keys/a%2Fb", None),
        Req("PUT", "/v2/keys/a%2Fb", Some("value=enc")),
        Req("GET", "/v2/keys/a/b", None),
        Req("GET", "/v2/keys//message", None),
        Req("PATCH", "/v2/keys/message", None),
        // watches
        Req("GET", "/v2/keys/message?wait=true&waitIndex=1", None),
        Req(
            "GET",
            "/v2/keys/queue?wait=true&recursive=true&waitIndex={0}",
            None,
        ),
        WatchThen(
            "/v2/keys/w?wait=true&recursive=true",
            "PUT",
            "/v2/keys/w/foo",
            Some("value=bar"),
        ),
        WatchThen(
            "/v2/keys/w/foo?wait=true",
            "DELETE",
            "/v2/keys/w?recursive=true",
            None,
        ),
        WatchThen(
            "/v2/keys/hw?wait=true&recursive=true",
            "PUT",
            "/v2/keys/hw/_h",
            Some("value=1"),
        ),
        // history: after 1100 more writes, old indexes are cleared (both keep 1000 events here)
        Fill(1100),
        Req("GET", "/v2/keys/message?wait=true&waitIndex={1}", None),
        // other endpoints
        Req("GET", "/v2/members", None),
        Req("GET", "/v2/members/leader", None),
        Req("GET", "/v2/machines", None),
        Req("DELETE", "/v2/members", None),
        Req("GET", "/version", None),
        Req("GET", "/v2/auth/enable", None),
        Req("GET", "/health", None),
        Req("GET", "/v2/members/foo", None),
        Req("GET", "/v2/stats/leader", None),
        Req("GET", "/nothing/here", None),
    ]
}

fn subst(s: &str, base: u64) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let Some(j) = rest[i..].find('}') else { break };
        let n: u64 = rest[i + 1..i + j].parse().expect("index placeholder");
        out.push_str(&(base + n).to_string());
        rest = &rest[i + j + 1..];
    }
    out.push_str(rest);
    out
}

/// Replaces numbers >= base in text with `#(n-base)`.
fn rel_text(s: &str, base: u64) -> String {
    let mut out = String::new();
    let mut num = String::new();
    for c in s.chars().chain(std::iter::once('\u{0}')) {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        if !num.is_empty() {
            match num.parse::<u64>() {
                Ok(n) if n >= base && num.len() < 20 => out.push_str(&format!("#{}", n - base)),
                Ok(n) if num.len() == 20 && n >= base => out.push_str(&format!("#{}", n - base)),
                _ => out.push_str(&num),
            }
            num.clear();
        }
        if c != '\u{0}' {
            out.push(c);
        }
    }
    out
}

fn normalize(v: &mut Value, base: u64) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                match k.as_str() {
                    "modifiedIndex" | "createdIndex" | "index" => {
                        if let Some(n) = val.as_u64() {
                            *val = Value::from(
                                n.saturating_sub(base) as i64
                                    - if n < base { 1_000_000 } else { 0 },
                            );
                        }
                    }
                    "expiration" => *val = Value::from("<time>"),
                    "nodes" => {
                        normalize(val, base);
                        // Unsorted listings have no defined order.
                        if let Some(a) = val.as_array_mut() {
                            a.sort_by_key(|n| n["key"].to_string());
                        }
                    }
                    "ttl" => *val = Value::from(val.as_i64().is_some_and(|t| t > 0)),
                    "key" | "cause" => {
                        if let Some(s) = val.as_str() {
                            *val = Value::from(rel_text(s, base));
                        }
                    }
                    _ => normalize(val, base),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| normalize(x, base)),
        _ => {}
    }
}

const HEADERS: &[&str] = &[
    "x-etcd-index",
    "x-raft-index",
    "x-raft-term",
    "x-etcd-cluster-id",
    "content-type",
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "location",
];

fn view(r: &Response, base: u64) -> String {
    let mut hs = Vec::new();
    for h in HEADERS {
        match (r.header(h), *h) {
            (None, _) => {}
            (Some(v), "x-etcd-index") => hs.push(format!("{h}={}", rel_text(v, base))),
            (
                Some(v),
                "content-type"
                | "access-control-allow-origin"
                | "access-control-allow-methods"
                | "access-control-allow-headers",
            ) => hs.push(format!("{h}={v}")),
            (Some(_), _) => hs.push(h.to_string()),
        }
    }
    let body = match serde_json::from_slice::<Value>(&r.body) {
        Ok(mut v) => {
            normalize(&mut v, base);
            v.to_string()
        }
        Err(_) if r.status == 301 => "<redirect>".into(),
        Err(_) => r.text(),
    };
    format!("{} [{}] {}", r.status, hs.join(" "), body)
}

/// Runs the script against one server; returns one normalized line per reply.
fn run(addr: &str) -> Vec<String> {
    let base: u64 = req(addr, "GET", "/v2/keys/", None)
        .header("x-etcd-index")
        .and_then(|v| v.parse().ok())
        .expect("index");
    let mut out = Vec::new();
    for step in script() {
        match step {
            Req(m, t, f) => {
                let r = req(
                    addr,
                    m,
                    &subst(t, base),
                    f.map(|f| subst(f, base)).as_deref(),
                );
                out.push(format!("{m} {t}: {}", view(&r, base)).replace(addr, "<addr>"));
            }
            WatchThen(w, m, t, f) => {
                let a = addr.to_string();
                let before = watchers(addr);
                let h = std::thread::spawn(move || req(&a, "GET", w, None));
                let deadline = Instant::now() + Duration::from_secs(10);
                while watchers(addr) <= before {
                    assert!(Instant::now() < deadline, "watch not registered on {addr}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                let r = req(addr, m, t, f);
                out.push(format!("{m} {t}: {}", view(&r, base)));
                if w.contains("/hw") {
                    // Hidden keys do not wake an ancestor's watcher: wake it with a visible one.
                    req(addr, "PUT", "/v2/keys/hw/visible", Some("value=1"));
                }
                let r = h.join().expect("watch thread");
                out.push(format!("watch {w}: {}", view(&r, base)));
            }
            Fill(n) => {
                for i in 0..n {
                    req(addr, "PUT", &format!("/v2/keys/fill/k{i}"), Some("value=v"));
                }
            }
            AwaitGone(t) => {
                let deadline = Instant::now() + Duration::from_secs(10);
                while req(addr, "GET", t, None).status != 404 {
                    assert!(Instant::now() < deadline, "{t} never expired on {addr}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
    out
}

fn watchers(addr: &str) -> u64 {
    let r = req(addr, "GET", "/v2/stats/store", None);
    serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["watchers"].as_u64())
        .unwrap_or(0)
}

#[test]
fn same_replies_as_debian_etcd() {
    // The same peer URL gives both the same member and cluster ids.
    let peer_port = free_port();
    let reference = Proc::debian_with_peer_port(peer_port);
    let ours = Ours::start_with(&format!("http://127.0.0.1:{peer_port}"), |s| {
        s.history_capacity = 1000
    });
    let want = run(&reference.addr);
    let got = run(&ours.addr);
    let mut diffs = Vec::new();
    for (w, g) in want.iter().zip(&got) {
        if w != g {
            diffs.push(format!("etcd: {w}\nours: {g}"));
        }
    }
    assert_eq!(want.len(), got.len());
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n\n")
    );
}
