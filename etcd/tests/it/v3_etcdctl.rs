//! Debian's etcdctl (`ETCDCTL_API=3`) against OUR server and against Debian's etcd 3.4: the same scripted
//! commands print the same output, once revisions (ours start two higher: the v2 index), raft terms, lease
//! ids and addresses are normalised.

use std::process::Command;

use crate::support::{Ours, Proc, free_port, watch_lines};

const DEBIAN: &str = "/usr/bin/etcdctl";

/// One invocation per line (split on spaces). `{N}` is the server's starting revision plus N; `{lease}` the
/// lease granted by the script's `lease grant`.
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
    "get /s --print-value-only --prefix",
    "get --from-key /s/b",
    "get --from-key /s --limit 2",
    "-w json get --prefix /s --limit 1",
    "get /s --prefix --order DESCEND",
    "get /s --prefix --sort-by VALUE",
    "get /s --prefix --sort-by MODIFY --order DESCEND",
    "get /s --prefix --sort-by CREATE",
    "get /s --prefix --sort-by VERSION --order DESCEND",
    "get /s /s/c",
    "get /s --rev {1}",
    "-w json get /s --prev-kv --rev {2}",
    "get /s --rev {100}",
    "-w json get /s --prefix --count-only",
    "del /zz",
    "del /s/b --prev-kv",
    "-w json del /s/c --prev-kv",
    "-w fields del /s/d",
    "del /s --prefix",
    "put /t 1",
    "compaction {3}",
    "get /s --rev {2}",
    "get /s --rev {3}",
    "compaction {1}",
    "compaction {1000}",
    "lease grant 60",
    "put /l v --lease={lease}",
    "-w json get /l",
    "lease timetolive {lease} --keys",
    "lease keep-alive --once {lease}",
    "lease list",
    "lease revoke {lease}",
    "lease timetolive {lease}",
    "get /l",
    "lease revoke {lease}",
    "put /l v --lease=1234",
    "lease grant 9000000001",
    "member list",
    "-w json member list",
    "-w fields member list",
    "member remove 1234",
    "get",
    "put",
    "del",
];

/// `txn` runs: flags and the input on stdin.
const TXNS: &[(&str, &str)] = &[
    (
        "",
        "version(\"/t\") = \"0\"\n\nput /t \"a b\"\nget /t\ndel /none\nget /t --prefix\n\nput /t x\n\n",
    ),
    (
        "-w json",
        "mod(\"/t\") > \"0\"\n\nget /t\nput /t3 w\ndel /t2\n\n\n",
    ),
    ("-w fields", "create(\"/t\") < \"100000\"\n\n\n\n"),
    ("", "value(\"/t\") = \"x\"\n\nput /t y\nput /t z\n\n\n"),
];

fn run(endpoint: &str, line: &str, input: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(DEBIAN)
        .args(line.split(' ').filter(|w| !w.is_empty()))
        .env("ETCDCTL_API", "3")
        .env("ETCDCTL_ENDPOINTS", endpoint)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running etcdctl: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().expect("etcdctl output");
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

/// Rewrites every revision after one of `labels` as an offset from `base`, and terms as `<term>`.
fn normalise_numbers(s: &str, base: i64) -> String {
    let revs = regex::Regex::new(
        r#"("(?:revision|create_revision|mod_revision|compact_revision)":|"(?:Revision|CreateRevision|ModRevision|PrevCreateRevision|PrevModRevision)" : |compacted revision )(\d+)"#,
    )
    .expect("regex");
    let s = revs.replace_all(s, |c: &regex::Captures| {
        let n: i64 = c[2].parse().unwrap_or(0);
        if n == 0 {
            // No revision at all (etcd leaves it unset in some headers).
            format!("{}0", &c[1])
        } else {
            format!("{}r{:+}", &c[1], n - base)
        }
    });
    let terms = regex::Regex::new(r#"("raft_term":|"RaftTerm" : )\d+"#).expect("regex");
    terms.replace_all(&s, "${1}<term>").into_owned()
}

struct Server {
    endpoint: String,
    addr: String,
    base: i64,
    ids: Vec<u64>,
}

fn server_facts(addr: &str) -> Server {
    let endpoint = format!("http://{addr}");
    let (code, out, err) = run(&endpoint, "-w json get /nothing", "");
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let base = v["header"]["revision"].as_i64().expect("revision");
    let cluster = v["header"]["cluster_id"].as_u64().expect("cluster_id");
    let member = v["header"]["member_id"].as_u64().expect("member_id");
    Server {
        endpoint,
        addr: addr.to_string(),
        base,
        ids: vec![cluster, member],
    }
}

fn transcript(s: &Server, peer_port: u16) -> Vec<String> {
    let mut lease = String::from("0");
    let mut lines = Vec::new();
    let expand = |line: &str, lease: &str| -> String {
        let mut out = line.replace("{lease}", lease);
        while let Some(i) = out.find('{') {
            let Some(j) = out[i..].find('}') else { break };
            let n: i64 = out[i + 1..i + j].parse().expect("offset");
            out.replace_range(i..i + j + 1, &(s.base + n).to_string());
        }
        out
    };
    let mut record = |shown: &str, r: (i32, String, String), lease: &str| {
        let r = (
            r.0,
            normalise_numbers(&r.1, s.base),
            normalise_numbers(&r.2, s.base),
        );
        let mut text = format!("{r:?}")
            .replace(&s.addr, "<client>")
            .replace(&format!("127.0.0.1:{peer_port}"), "<peer>");
        for (i, id) in s.ids.iter().enumerate() {
            text = text
                .replace(&id.to_string(), &format!("<id{i}>"))
                .replace(&format!("{id:x}"), &format!("<id{i}>"));
        }
        if lease != "0" {
            if let Ok(dec) = i64::from_str_radix(lease, 16) {
                text = text.replace(&dec.to_string(), "<lease>");
            }
            text = text.replace(lease, "<lease>");
        }
        lines.push(format!("$ {shown}\n{text}"));
    };
    for line in SCRIPT {
        let cmd = expand(line, &lease);
        let r = run(&s.endpoint, &cmd, "");
        if *line == "lease grant 60"
            && let Some(id) = r.1.strip_prefix("lease ").and_then(|t| t.split(' ').next())
        {
            lease = id.to_string();
        }
        record(line, r, &lease);
    }
    for (flags, input) in TXNS {
        let line = format!("txn {flags}");
        let r = run(&s.endpoint, &line, input);
        record(&format!("{line} <<< {input:?}"), r, &lease);
    }
    lines
}

#[test]
fn debian_etcdctl_prints_the_same_against_ours_and_against_etcd() {
    let peer_port = free_port();
    let reference = Proc::debian_with_peer_port(peer_port);
    let ours = Ours::start_with_peer(&format!("http://127.0.0.1:{peer_port}"));
    let want = transcript(&server_facts(&reference.addr), peer_port);
    let got = transcript(&server_facts(&ours.addr), peer_port);
    assert!(
        want[0].contains("(0, \"OK\\n\""),
        "Debian etcd refused: {}",
        want[0]
    );
    assert_eq!(want.len(), got.len());
    let diffs: Vec<String> = want
        .iter()
        .zip(&got)
        .filter(|(x, y)| x != y)
        .map(|(x, y)| format!("etcd {x}\nours {y}"))
        .collect();
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n\n")
    );
}

#[test]
fn debian_etcdctl_watches_ours_as_it_watches_etcd() {
    let peer_port = free_port();
    let reference = Proc::debian_with_peer_port(peer_port);
    let ours = Ours::start_with_peer(&format!("http://127.0.0.1:{peer_port}"));
    let mut outputs = Vec::new();
    for s in [server_facts(&reference.addr), server_facts(&ours.addr)] {
        for line in [
            "put /w/a 1",
            "del /w/a",
            "put /w/b 2",
            "put /x 3",
            "put /w/b 4",
        ] {
            assert_eq!(run(&s.endpoint, line, "").0, 0, "{line}");
        }
        let from = (s.base + 1).to_string();
        let mut out = Vec::new();
        for (args, lines) in [
            (vec!["watch", "--prefix", "/w", "--rev", &from], 12),
            (vec!["-w", "json", "watch", "/w/a", "--rev", &from], 1),
            (
                vec!["-w", "fields", "watch", "/w/b", "--prev-kv", "--rev", &from],
                14,
            ),
        ] {
            let args: Vec<String> = args.into_iter().map(String::from).collect();
            let text = watch_lines(DEBIAN, &s.endpoint, &args, lines);
            assert_eq!(text.lines().count(), lines, "{args:?}: {text}");
            let mut text = normalise_numbers(&text, s.base);
            for (i, id) in s.ids.iter().enumerate() {
                text = text.replace(&id.to_string(), &format!("<id{i}>"));
            }
            out.push(text);
        }
        outputs.push(out);
    }
    assert_eq!(outputs[1], outputs[0]);
}
