//! Our HTTP API, end to end on a real listener.

use std::time::Duration;

use crate::support::{Ours, req};

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("bad json {:?}: {e}", String::from_utf8_lossy(body)))
}

#[test]
fn keys_headers_and_errors() {
    let s = Ours::start();
    let r = req(
        &s.addr,
        "PUT",
        "/v2/keys/message",
        Some("value=Hello+world"),
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        r.text(),
        "{\"action\":\"set\",\"node\":{\"key\":\"/message\",\"value\":\"Hello world\",\"modifiedIndex\":4,\"createdIndex\":4}}\n"
    );
    assert_eq!(r.header("x-etcd-index"), Some("4"));
    assert!(r.header("x-raft-index").is_some() && r.header("x-raft-term").is_some());
    assert_eq!(r.header("x-etcd-cluster-id"), Some("5d9487856336506b"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let r = req(&s.addr, "GET", "/v2/keys/missing", None);
    assert_eq!(r.status, 404);
    assert_eq!(
        r.text(),
        "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/missing\",\"index\":4}\n"
    );
    assert_eq!(r.header("x-raft-index"), None);
    let r = req(&s.addr, "PUT", "/v2/keys/x?ttl=abc", Some("value=1"));
    assert_eq!((r.status, r.header("x-etcd-index")), (400, Some("0")));
    assert_eq!(json(&r.body)["errorCode"], 202);
    let r = req(&s.addr, "PATCH", "/v2/keys/x", None);
    assert_eq!(r.status, 405);
    let r = req(&s.addr, "GET", "/v2//keys/message", None);
    assert_eq!(r.status, 301);
    let r = req(&s.addr, "GET", "/nothing", None);
    assert_eq!((r.status, r.text().as_str()), (404, "404 page not found\n"));
}

#[test]
fn long_poll_and_stream_watches() {
    let s = Ours::start();
    let addr = s.addr.clone();
    let watcher =
        std::thread::spawn(move || req(&addr, "GET", "/v2/keys/w?wait=true&recursive=true", None));
    // The watch is registered once the store counts it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while json(&req(&s.addr, "GET", "/v2/stats/store", None).body)["watchers"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "watch never registered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    req(&s.addr, "PUT", "/v2/keys/w/foo", Some("value=bar"));
    let r = watcher.join().expect("watcher thread");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-etcd-index"),
        Some("3"),
        "the index when the watch started"
    );
    let ev = json(&r.body);
    assert_eq!(ev["action"], "set");
    assert_eq!(ev["node"]["key"], "/w/foo");
    // waitIndex answers from the history at once.
    let r = req(&s.addr, "GET", "/v2/keys/w/foo?wait=true&waitIndex=1", None);
    assert_eq!(json(&r.body)["node"]["modifiedIndex"], 4);
}

#[test]
fn ttl_keys_expire_through_raft() {
    let s = Ours::start();
    let r = req(&s.addr, "PUT", "/v2/keys/t?ttl=1", Some("value=v"));
    assert_eq!(json(&r.body)["node"]["ttl"], 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while req(&s.addr, "GET", "/v2/keys/t", None).status != 404 {
        assert!(std::time::Instant::now() < deadline, "key never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = req(&s.addr, "GET", "/v2/keys/t?wait=true&waitIndex=5", None);
    let ev = json(&r.body);
    assert_eq!(ev["action"], "expire");
    assert_eq!(ev["node"]["modifiedIndex"], 5);
    assert_eq!(
        json(&req(&s.addr, "GET", "/v2/stats/store", None).body)["expireCount"],
        1
    );
}

#[test]
fn other_endpoints() {
    let s = Ours::start();
    assert_eq!(
        req(&s.addr, "GET", "/version", None).text(),
        "{\"etcdserver\":\"3.4.23\",\"etcdcluster\":\"3.4.0\"}"
    );
    assert_eq!(
        req(&s.addr, "GET", "/health", None).text(),
        "{\"health\":\"true\"}"
    );
    assert_eq!(
        req(&s.addr, "GET", "/v2/machines", None).text(),
        format!("http://{}", s.addr)
    );
    let m = json(&req(&s.addr, "GET", "/v2/members", None).body);
    assert_eq!(m["members"][0]["id"], "b66b2921ec552136");
    assert_eq!(m["members"][0]["name"], "n1");
    let l = json(&req(&s.addr, "GET", "/v2/members/leader", None).body);
    assert_eq!(l["id"], "b66b2921ec552136");
    assert_eq!(
        json(&req(&s.addr, "GET", "/v2/stats/self", None).body)["state"],
        "StateLeader"
    );
    assert_eq!(req(&s.addr, "GET", "/v2/stats/leader", None).status, 200);
    let metrics = req(&s.addr, "GET", "/metrics", None).text();
    assert!(metrics.contains("etcd_server_has_leader 1"), "{metrics}");
}

#[test]
fn oversized_body_is_refused_clearly() {
    // A small limit, so the whole request fits in socket buffers before the server answers.
    let s = Ours::start_with("http://127.0.0.1:22380", |s| s.max_body_bytes = 1024);
    let big = format!("value={}", "x".repeat(2048));
    let r = req(&s.addr, "PUT", "/v2/keys/big", Some(&big));
    assert_eq!(r.status, 400);
    assert_eq!(json(&r.body)["errorCode"], 210);
    assert!(
        json(&r.body)["cause"]
            .as_str()
            .unwrap_or("")
            .contains("too large"),
        "{}",
        r.text()
    );
}

#[test]
fn two_megabyte_values_are_accepted() {
    let s = Ours::start();
    let ok = format!("value={}", "x".repeat(2_000_000));
    assert_eq!(req(&s.addr, "PUT", "/v2/keys/big", Some(&ok)).status, 201);
    let r = req(&s.addr, "GET", "/v2/keys/big", None);
    assert_eq!(
        json(&r.body)["node"]["value"].as_str().map(str::len),
        Some(2_000_000)
    );
}

#[test]
fn stream_watch_delivers_every_event() {
    let s = Ours::start();
    let addr = s.addr.clone();
    // A stream watch stays open; read it raw until three events arrived.
    let reader = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        let mut c = std::net::TcpStream::connect(&addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            c,
            "GET /v2/keys/st?wait=true&stream=true&recursive=true HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .expect("write");
        let mut events = Vec::new();
        let mut r = BufReader::new(c);
        let mut line = String::new();
        while events.len() < 3 {
            line.clear();
            if r.read_line(&mut line).expect("read") == 0 {
                break;
            }
            if line.starts_with('{') {
                events.push(json(line.trim().as_bytes()));
            }
        }
        events
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while json(&req(&s.addr, "GET", "/v2/stats/store", None).body)["watchers"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "stream watch never registered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 0..3 {
        req(
            &s.addr,
            "PUT",
            &format!("/v2/keys/st/k{i}"),
            Some("value=v"),
        );
    }
    let events = reader.join().expect("reader");
    let keys: Vec<&str> = events
        .iter()
        .map(|e| e["node"]["key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(keys, ["/st/k0", "/st/k1", "/st/k2"]);
}

#[test]
fn binary_flags_version_and_env() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_etcd"))
        .arg("-version")
        .output()
        .expect("etcd --version");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("etcd Version: 3.4.23\n"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_etcd"))
        .arg("--bogus")
        .output()
        .expect("etcd --bogus");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
    // ETCD_* variables are read like flags.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_etcd"))
        .env("ETCD_INITIAL_CLUSTER_STATE", "bogus")
        .output()
        .expect("etcd with env");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_etcd"))
        .env("ETCD_DISCOVERY_SRV", "example.com")
        .output()
        .expect("etcd with ETCD_DISCOVERY_SRV");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not support yet"));
}

#[test]
fn cleared_history_answers_401() {
    let s = Ours::start_with("http://127.0.0.1:22380", |s| s.history_capacity = 5);
    for i in 0..10 {
        req(&s.addr, "PUT", &format!("/v2/keys/h{i}"), Some("value=v"));
    }
    let r = req(&s.addr, "GET", "/v2/keys/h0?wait=true&waitIndex=4", None);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        "{\"errorCode\":401,\"message\":\"The event in requested index is outdated and cleared\",\"cause\":\"the requested history has been cleared [9/4]\",\"index\":13}\n"
    );
    assert_eq!(r.header("x-etcd-index"), Some("13"));
}

#[test]
fn load_generator_does_real_requests() {
    let s = Ours::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for workload in ["put", "get"] {
        let spec = etcd::bench::BenchSpec {
            addr: s.addr.clone(),
            workload: workload.into(),
            conns: 4,
            requests: 100,
            value_size: 16,
        };
        let res = rt.block_on(etcd::bench::run(spec)).expect("bench");
        assert_eq!((res.requests, res.failures), (100, 0), "{workload}");
    }
    let r = req(&s.addr, "GET", "/v2/keys/bench", None);
    let n = json(&r.body)["node"]["nodes"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0);
    assert_eq!(n, 101, "100 distinct PUT keys plus the GET key");
}

#[test]
fn a_departed_watcher_is_dropped() {
    use std::io::Write;
    let s = Ours::start();
    let watchers = || {
        json(&req(&s.addr, "GET", "/v2/stats/store", None).body)["watchers"]
            .as_u64()
            .unwrap_or(99)
    };
    let mut c = std::net::TcpStream::connect(&s.addr).expect("connect");
    write!(c, "GET /v2/keys/gone?wait=true HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while watchers() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "watch never registered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(c);
    while watchers() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "watcher outlived its client"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn serves_every_listen_client_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (p1, p2) = (crate::support::free_port(), crate::support::free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_etcd"))
        .args(["--data-dir", &dir.path().join("d").display().to_string()])
        .env(
            "ETCD_LISTEN_CLIENT_URLS",
            format!("http://127.0.0.1:{p1},http://127.0.0.1:{p2}"),
        )
        // Not etcd's default localhost:2380, which other tests' servers must not collide with.
        .env("ETCD_LISTEN_PEER_URLS", "http://127.0.0.1:0")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcd");
    let (a1, a2) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
    crate::support::wait_healthy(&a1, Duration::from_secs(10));
    crate::support::wait_healthy(&a2, Duration::from_secs(10));
    assert_eq!(
        req(&a1, "PUT", "/v2/keys/both", Some("value=yes")).status,
        201
    );
    assert_eq!(
        json(&req(&a2, "GET", "/v2/keys/both", None).body)["node"]["value"],
        "yes"
    );
    let _ = child.kill();
    let _ = child.wait();
}
