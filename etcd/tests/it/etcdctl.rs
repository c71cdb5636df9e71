//! etcdctl v2 compatibility: Debian's etcdctl against our server, and our etcdctl against both servers.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Ours, Proc, free_port, req};

const OURS: &str = env!("CARGO_BIN_EXE_etcdctl");
const DEBIAN: &str = "/usr/bin/etcdctl";

/// One etcdctl invocation per line (split on spaces).
const SCRIPT: &[&str] = &[
    "set /a b",
    "get /a",
    "mk /a c",
    "mk /m v",
    "mkdir /d",
    "mkdir /d",
    "setdir /d",
    "set /d/x 1",
    "set /d/_h hidden",
    "get /d",
    "-o json get /d",
    "ls --sort",
    "ls --sort -r -p /",
    "ls /d/x",
    "-o extended get /a",
    "-o json get /a",
    "update /a z",
    "update /nope z",
    "updatedir /d --ttl 100",
    "set /a q --swap-with-value z",
    "set /a r --swap-with-value nope",
    "rm /d",
    "rmdir /d",
    "rm /a --with-value nope",
    "rm /a --with-value q",
    "rm /missing",
    "rm -r /d",
    "-o extended mkdir /e",
    "rmdir /e",
    "watch /m --after-index 1",
    "-o extended watch /m --after-index 1",
    "get /nope",
    "get",
    "set /k",
    "mk --in-order /q job1",
    "mk --in-order /q job2",
    "ls --sort /q",
    "-o json ls --sort /q",
    "set /tt v --ttl 100",
    "-o extended get /tt",
    "update /tt w --ttl 50",
    "mkdir /nd",
    "set /nd/x 1",
    "rm /nd --dir",
    "updatedir /nodir",
    "-o extended rm /m",
    "-o json set /j v",
    "member list",
    "cluster-health",
];

fn run(bin: &str, endpoint: &str, line: &str) -> (i32, String, String) {
    let out = Command::new(bin)
        .args(line.split(' '))
        .env("ETCDCTL_API", "2")
        .env("ETCDCTL_ENDPOINTS", endpoint)
        .output()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).replace(endpoint, "<endpoint>"),
        String::from_utf8_lossy(&out.stderr).replace(endpoint, "<endpoint>"),
    )
}

fn transcript(bin: &str, addr: &str) -> Vec<String> {
    // etcd records the member and the cluster version (indexes 1-3) just after start: wait for them,
    // so both servers' first user write gets index 4.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = req(addr, "GET", "/v2/keys/", None);
        if r.header("x-etcd-index")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|i| i >= 3)
        {
            break;
        }
        assert!(Instant::now() < deadline, "{addr} never reached index 3");
        std::thread::sleep(Duration::from_millis(20));
    }
    let endpoint = format!("http://{addr}");
    SCRIPT
        .iter()
        .map(|line| format!("$ {line}\n{:?}", run(bin, &endpoint, line)))
        .collect()
}

fn compare(a: &[String], b: &[String], what: &str) {
    let diffs: Vec<String> = a
        .iter()
        .zip(b)
        .filter(|(x, y)| x != y)
        .map(|(x, y)| format!("want {x}\ngot  {y}"))
        .collect();
    assert!(
        diffs.is_empty(),
        "{what}: {} differences:\n{}",
        diffs.len(),
        diffs.join("\n\n")
    );
}

#[test]
fn debian_etcdctl_and_ours_print_the_same_against_our_server() {
    let (a, b) = (Ours::start(), Ours::start());
    let want = transcript(DEBIAN, &a.addr);
    let got = transcript(OURS, &b.addr);
    assert!(
        want[0].contains("(0, \"b\\n\""),
        "Debian etcdctl set failed: {}",
        want[0]
    );
    compare(&want, &got, "debian etcdctl vs ours");
}

#[test]
fn our_etcdctl_prints_the_same_against_debian_etcd() {
    let peer_port = free_port();
    let reference = Proc::debian_with_peer_port(peer_port);
    let ours = Ours::start_with_peer(&format!("http://127.0.0.1:{peer_port}"));
    let want = transcript(DEBIAN, &reference.addr);
    let got = transcript(OURS, &ours.addr);
    compare(
        &want,
        &got,
        "debian etcdctl on debian etcd vs our etcdctl on ours",
    );
}

#[test]
fn exec_watch_runs_the_command_with_the_event() {
    let s = Ours::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("events");
    let mut child = Command::new(OURS)
        .args(["exec-watch", "/ew", "--", "sh", "-c"])
        .arg(format!(
            "echo \"$ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_VALUE\" >> {}",
            file.display()
        ))
        .env("ETCDCTL_API", "2")
        .env("ETCDCTL_ENDPOINTS", format!("http://{}", s.addr))
        .spawn()
        .expect("exec-watch");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        req(&s.addr, "PUT", "/v2/keys/ew", Some("value=hello"));
        if std::fs::read_to_string(&file).is_ok_and(|c| c.contains("set /ew hello")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "exec-watch never ran its command"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn cluster_health_reports_an_unreachable_cluster() {
    let port = free_port();
    let out = Command::new(OURS)
        .args([
            "--no-sync",
            "--endpoints",
            &format!("http://127.0.0.1:{port}"),
            "get",
            "/a",
        ])
        .env("ETCDCTL_API", "2")
        .output()
        .expect("etcdctl");
    assert_eq!(out.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cluster is unavailable or misconfigured")
    );
    let out = Command::new(OURS)
        .args([
            "--endpoints",
            &format!("http://127.0.0.1:{port}"),
            "get",
            "/a",
        ])
        .env("ETCDCTL_API", "2")
        .output()
        .expect("etcdctl");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn watch_forever_prints_every_change() {
    use std::io::BufRead;
    let s = Ours::start();
    let mut child = Command::new(OURS)
        .args(["watch", "--forever", "--recursive", "/wf"])
        .env("ETCDCTL_API", "2")
        .env("ETCDCTL_ENDPOINTS", format!("http://{}", s.addr))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl watch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Writes land whether or not the watch is registered yet; it resumes from its last index, so
    // write until the first value shows, then expect the next two in order.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        req(&s.addr, "PUT", "/v2/keys/wf/a", Some("value=first"));
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            assert_eq!(line, "first");
            break;
        }
        assert!(Instant::now() < deadline, "watch printed nothing");
    }
    while rx.recv_timeout(Duration::from_millis(300)).is_ok() {}
    req(&s.addr, "PUT", "/v2/keys/wf/b", Some("value=second"));
    req(&s.addr, "PUT", "/v2/keys/wf/c", Some("value=third"));
    let got: Vec<String> = (0..2)
        .filter_map(|_| rx.recv_timeout(Duration::from_secs(10)).ok())
        .collect();
    assert_eq!(got, ["second", "third"]);
    let _ = child.kill();
    let _ = child.wait();
}
