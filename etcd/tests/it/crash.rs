//! Crash safety: acknowledged writes survive `kill -9`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd::ctl::client;

use crate::support::{Proc, free_port, req};

#[test]
fn acknowledged_writes_survive_kill_9() {
    let port = free_port();
    let server = Proc::ours_in(tempfile::tempdir().expect("tempdir"), port);
    let addr = server.addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let addr = addr.clone();
        let stop = stop.clone();
        writers.push(std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("/v2/keys/crash/w{w}-{i}");
                match client::request(
                    &addr,
                    "PUT",
                    &key,
                    Some(&format!("value={i}")),
                    Some(Duration::from_secs(5)),
                ) {
                    Ok(r) if r.status == 201 => acked.push((key, i)),
                    _ => break,
                }
                i += 1;
            }
            acked
        }));
    }
    // Let writes flow, then kill while they are in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = req(&addr, "GET", "/v2/keys/crash", None);
        let n = serde_json::from_slice::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| v["node"]["nodes"].as_array().map(|a| a.len()))
            .unwrap_or(0);
        if n >= 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "writes did not progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let dir = server.kill9();
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<(String, i32)> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    assert!(acked.len() >= 200);
    let server = Proc::ours_in(dir, free_port());
    for (key, i) in &acked {
        let r = req(&server.addr, "GET", key, None);
        assert_eq!(r.status, 200, "acknowledged write {key} lost after kill -9");
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(v["node"]["value"], i.to_string());
    }
}

#[test]
fn foreign_and_mismatched_data_dirs_are_refused() {
    let bin = env!("CARGO_BIN_EXE_etcd");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("data/member/wal")).expect("mkdir");
    let out = std::process::Command::new(bin)
        .args([
            "--data-dir",
            &dir.path().join("data").display().to_string(),
            "--listen-client-urls",
            "http://127.0.0.1:0",
            // Not etcd's default localhost:2380, which another server on this machine may hold.
            "--listen-peer-urls",
            "http://127.0.0.1:0",
        ])
        .output()
        .expect("run etcd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an etcd-rs data dir"), "{err}");

    let port = free_port();
    let server = Proc::ours_in(tempfile::tempdir().expect("tempdir"), port);
    let dir = server.kill9();
    let data = dir.path().join("data");
    let out = std::process::Command::new(bin)
        .args([
            "--name",
            "other",
            "--data-dir",
            &data.display().to_string(),
            "--listen-client-urls",
            &format!("http://127.0.0.1:{}", free_port()),
            "--listen-peer-urls",
            "http://127.0.0.1:0",
        ])
        .output()
        .expect("run etcd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("belongs to member"), "{err}");
}

#[test]
fn corrupt_data_dir_is_refused() {
    let port = free_port();
    let server = Proc::ours_in(tempfile::tempdir().expect("tempdir"), port);
    let dir = server.kill9();
    let conf = dir.path().join("data/db/conf");
    std::fs::write(&conf, b"garbage garbage garbage").expect("corrupt conf");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_etcd"))
        .args([
            "-name",
            "n1",
            "-data-dir",
            &dir.path().join("data").display().to_string(),
            "-listen-client-urls",
            &format!("http://127.0.0.1:{}", free_port()),
            "-listen-peer-urls",
            "http://127.0.0.1:0",
        ])
        .output()
        .expect("run etcd");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is corrupt"), "{err}");
}
