//! etcdctl `ETCDCTL_API=3` compatibility: Debian's etcdctl and ours, each against its own fresh Debian etcd 3.4.

use std::process::Command;

use crate::support::{Proc, free_port, watch_lines};

const OURS: &str = env!("CARGO_BIN_EXE_etcdctl");
const DEBIAN: &str = "/usr/bin/etcdctl";

/// One etcdctl invocation per line (split on spaces); both servers start empty, so revisions agree.
const SCRIPT: &[&str] = &[
    "put /s 1",
    "put /s/b 2",
    "-w json put /s/c 3",
    "-w fields put /s/d 4",
    "put /s 5 --prev-kv",
    "-w json put /s 6 --prev-kv",
    "get /s",
    "get /s --prefix",
    "-w json get /s --prefix",
    "-w fields get /s",
    "get /zz",
    "-w json get /zz",
    "get /s --keys-only --prefix",
    "-w json get /s --keys-only --prefix",
    "get /s --print-value-only --prefix",
    "get --from-key /s/b",
    "get --from-key /s --limit 2",
    "-w json get --prefix /s --limit 1",
    "get /s --prefix --order DESCEND",
    "get /s --prefix --sort-by VALUE",
    "get /s /s/c",
    "get /s --rev 2",
    "get",
    "put",
    "del",
    "del /zz",
    "del /s/b --prev-kv",
    "-w json del /s/c --prev-kv",
    "-w fields del /s/d",
    "del /s --prefix",
    "compaction 3",
    "get /s --rev 2",
    "compaction 1000",
    "compaction",
    "lease grant",
    "lease revoke 1",
    "lease timetolive 1",
    "lease keep-alive --once 1",
    "lease keep-alive 1",
    "watch /s --rev 2",
    "watch",
    "member list",
    "-w json member list",
    "-w fields member list",
    "version",
    "foo",
    "lease revoke zz",
    "lease timetolive zz",
    "compaction abc",
    "put /s 1 --lease zz",
    "-w table get /s",
    "del /s /t --prefix",
    "get /s /t --from-key",
];

/// `txn` runs: flags after `txn`, and the input given on stdin.
const TXNS: &[(&str, &str)] = &[
    (
        "",
        "version(\"/t\") = \"0\"\n\nput /t \"a b\"\nget /t\ndel /none\nget /t --prefix\n\nput /t x\n\n",
    ),
    (
        "",
        "value(\"/t\") = \"zz\"\n\nput /t y\n\nget /t\nput /t2 v\n\n",
    ),
    (
        "-w json",
        "mod(\"/t\") > \"0\"\n\nget /t\nput /t3 w\ndel /t2\n\n\n",
    ),
    ("-w json", "version(\"/t\") = \"7\"\n\n\n\n"),
    ("-w fields", "create(\"/t\") < \"100000\"\n\n\n\n"),
    ("-i", "version(\"/t\") > \"0\"\n\nget /t --keys-only\n\n\n"),
    ("", "bogus\n\n\n\n"),
    ("", "value(\"/t\") = \"v1\"\n"),
];

/// `put` runs with the value on stdin.
const PUT_STDIN: &[(&str, &str)] = &[("put /p", "hello\nworld\n"), ("put /p", ""), ("get /p", "")];

fn run(bin: &str, endpoint: &str, line: &str) -> (i32, String, String) {
    run_with_input(bin, endpoint, line, "")
}

fn run_with_input(bin: &str, endpoint: &str, line: &str, input: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(bin)
        .args(line.split(' ').filter(|w| !w.is_empty()))
        .env("ETCDCTL_API", "3")
        .env("ETCDCTL_ENDPOINTS", endpoint)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {bin}: {e}"));
    // etcdctl's client library logs retries as JSON lines on stderr; those are not etcdctl's output.
    let stderr: String = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("{\"level\""))
        .map(|l| format!("{l}\n"))
        .collect();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// Replaces the server's addresses and ids (they differ between the two servers) with placeholders.
fn normalise(s: &str, server: &Proc, peer_port: u16, ids: &[u64]) -> String {
    let mut s = s
        .replace(&server.addr, "<client>")
        .replace(&format!("127.0.0.1:{peer_port}"), "<peer>");
    for (i, id) in ids.iter().enumerate() {
        s = s
            .replace(&id.to_string(), &format!("<id{i}>"))
            .replace(&format!("{id:x}"), &format!("<id{i}>"));
    }
    s
}

/// The cluster and member ids, from `-w json member list`.
fn ids(endpoint: &str) -> Vec<u64> {
    let (code, out, err) = run(DEBIAN, endpoint, "-w json member list");
    assert_eq!(code, 0, "member list: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("member list json");
    let cluster = v["header"]["cluster_id"].as_u64().expect("cluster_id");
    let member = v["header"]["member_id"].as_u64().expect("member_id");
    vec![cluster, member]
}

fn transcript(bin: &str) -> Vec<String> {
    let peer_port = free_port();
    let server = Proc::debian_with_peer_port(peer_port);
    let endpoint = format!("http://{}", server.addr);
    let ids = ids(&endpoint);
    let mut lines: Vec<String> = SCRIPT
        .iter()
        .map(|line| {
            let r = format!("{:?}", run(bin, &endpoint, line));
            format!("$ {line}\n{}", normalise(&r, &server, peer_port, &ids))
        })
        .collect();
    for (line, input) in PUT_STDIN {
        let r = format!("{:?}", run_with_input(bin, &endpoint, line, input));
        lines.push(format!("$ {line} <<< {input:?}\n{r}"));
    }
    for (flags, input) in TXNS {
        let line = format!("txn {flags}");
        let r = format!("{:?}", run_with_input(bin, &endpoint, &line, input));
        lines.push(format!(
            "$ {line} <<< {input:?}\n{}",
            normalise(&r, &server, peer_port, &ids)
        ));
    }
    lines
}

#[test]
fn our_v3_etcdctl_prints_what_debian_etcdctl_prints() {
    let want = transcript(DEBIAN);
    let got = transcript(OURS);
    assert!(
        want.iter()
            .any(|l| l.contains("SUCCESS\\n\\nOK\\n\\n/t\\na b")),
        "Debian etcdctl txn failed: {want:?}"
    );
    assert!(
        want[0].contains("(0, \"OK\\n\""),
        "Debian etcdctl put failed: {}",
        want[0]
    );
    let diffs: Vec<String> = want
        .iter()
        .zip(&got)
        .filter(|(x, y)| x != y)
        .map(|(x, y)| format!("want {x}\ngot  {y}"))
        .collect();
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n\n")
    );
}

#[test]
fn leases_granted_by_ours_are_revoked_by_debian_and_health_is_reported() {
    let server = Proc::debian_with_peer_port(free_port());
    let endpoint = format!("http://{}", server.addr);
    let (code, out, err) = run(OURS, &endpoint, "lease grant 100");
    assert_eq!(code, 0, "lease grant: {err}");
    let id = out
        .strip_prefix("lease ")
        .and_then(|s| s.strip_suffix(" granted with TTL(100s)\n"))
        .unwrap_or_else(|| panic!("lease grant printed {out:?}"));
    run(OURS, &endpoint, &format!("put /lk v --lease {id}"));
    for line in [
        format!("lease timetolive {id} --keys"),
        format!("-w json lease timetolive {id} --keys"),
        format!("-w fields lease timetolive {id}"),
        format!("lease keep-alive --once {id}"),
        format!("-w json lease keep-alive --once {id}"),
    ] {
        // The remaining TTL can tick down between the two runs; compare with it normalised.
        let norm = |r: (i32, String, String)| {
            r.1.replace("remaining(99s)", "remaining(100s)")
                .replace("\"ttl\":99", "\"ttl\":100")
                .replace("\"TTL\" : 99", "\"TTL\" : 100")
        };
        assert_eq!(
            norm(run(OURS, &endpoint, &line)),
            norm(run(DEBIAN, &endpoint, &line)),
            "{line}"
        );
    }
    // The database size can change between runs (the backend commits in the background): ours must
    // match a Debian run just before or just after it, within a few attempts.
    for line in ["endpoint status", "-w json endpoint status"] {
        let matched = (0..5).any(|_| {
            let before = run(DEBIAN, &endpoint, line);
            let ours = run(OURS, &endpoint, line);
            ours == before || ours == run(DEBIAN, &endpoint, line)
        });
        assert!(
            matched,
            "{line}: ours {:?}, Debian's {:?}",
            run(OURS, &endpoint, line),
            run(DEBIAN, &endpoint, line)
        );
    }
    let revoke = format!("lease revoke {id}");
    assert_eq!(
        run(DEBIAN, &endpoint, &revoke),
        (0, format!("lease {id} revoked\n"), String::new())
    );
    assert_eq!(
        run(OURS, &endpoint, &revoke),
        run(DEBIAN, &endpoint, &revoke)
    );
    let (code, out, _) = run(OURS, &endpoint, "endpoint health");
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!(
            "{endpoint} is healthy: successfully committed proposal: took = "
        )),
        "{out}"
    );
}

#[test]
fn an_unreachable_endpoint_fails_like_debian() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    for line in [
        "--command-timeout=1s get /a",
        "--command-timeout=1s endpoint health",
        "--command-timeout=1s endpoint status",
    ] {
        let ours = run(OURS, &endpoint, line);
        assert_eq!(ours, run(DEBIAN, &endpoint, line), "{line}");
        assert_eq!(ours.0, 1, "{line}");
    }
}

#[test]
fn v2_stays_the_default_without_etcdctl_api() {
    let out = Command::new(OURS)
        .arg("--version")
        .env_remove("ETCDCTL_API")
        .output()
        .expect("running our etcdctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("API version: 2"), "{text}");
}

#[test]
fn watch_prints_the_events_debian_prints() {
    let server = Proc::debian_with_peer_port(free_port());
    let endpoint = format!("http://{}", server.addr);
    for line in ["put /w/a 1", "del /w/a", "put /w/b 2", "put /x 3"] {
        assert_eq!(run(DEBIAN, &endpoint, line).0, 0, "{line}");
    }
    for (args, lines) in [
        (&["watch", "--prefix", "/w", "--rev", "1"][..], 9),
        (&["-w", "json", "watch", "/w/a", "--rev", "1"][..], 1),
        (&["-w", "fields", "watch", "/w/b", "--rev", "1"][..], 11),
    ] {
        let want = watch_lines(DEBIAN, &endpoint, args, lines);
        let got = watch_lines(OURS, &endpoint, args, lines);
        assert_eq!(want.lines().count(), lines, "{args:?}: {want}");
        assert_eq!(got, want, "{args:?}");
    }
}

#[test]
fn watch_ends_on_sigint() {
    let server = Proc::debian_with_peer_port(free_port());
    let mut child = Command::new(OURS)
        .args(["watch", "/never"])
        .env("ETCDCTL_API", "3")
        .env("ETCDCTL_ENDPOINTS", format!("http://{}", server.addr))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("running our etcdctl");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            assert!(!s.success(), "{s:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "watch still running after SIGINT"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
