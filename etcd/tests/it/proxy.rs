//! etcd's v2 proxy on a worker host in front of a 3-member cluster (each member in its own host): Debian's
//! etcdctl and ours through it, watches (long-poll and streamed), the readonly mode, Debian's etcd proxy in
//! front of our cluster, membership changes followed by the proxy, a removed member stopping itself, and a
//! member that finds the discovery registry full becoming a proxy.

use std::path::Path;
use std::time::Duration;

use etcd::ctl::client::{self, Response};
use integration::{Host, Process, Spawn, poll_until};
use serde_json::Value;

use crate::cluster::{Cluster, add_member, etcd_bin, etcdctl_bin, json, member_id};

/// Our etcd as a proxy on `host:port` in front of `initial`, with `extra` flags.
fn start_proxy(
    host: &Host,
    dir: &Path,
    port: u16,
    mode: &str,
    initial: &str,
    extra: &[&str],
) -> Process {
    let spawn = Spawn::new(etcd_bin())
        .args(["--proxy", mode])
        .args(["--name", &format!("proxy{port}")])
        .arg("--data-dir")
        .arg(dir)
        .args([
            "--listen-client-urls",
            &format!("http://{}:{port}", host.addr()),
        ])
        .args(["--initial-cluster", initial])
        .args(extra.iter().copied())
        .env("RUST_LOG", "info,openraft=error");
    host.spawn(spawn).expect("starting our etcd proxy")
}

fn try_at(
    c: &Cluster,
    addr: &str,
    method: &str,
    target: &str,
    form: Option<&str>,
) -> Option<Response> {
    c.cli
        .enter(|| client::request(addr, method, target, form, Some(Duration::from_secs(10))))
        .ok()?
        .ok()
}

fn at(c: &Cluster, addr: &str, method: &str, target: &str, form: Option<&str>) -> Response {
    try_at(c, addr, method, target, form)
        .unwrap_or_else(|| panic!("{method} {target} on {addr} failed"))
}

fn wait_serving(c: &Cluster, addr: &str, logs: impl Fn() -> String) {
    poll_until(
        &format!("{addr} healthy"),
        Duration::from_secs(30),
        Duration::from_millis(50),
        || try_at(c, addr, "GET", "/health", None).filter(|r| r.status == 200),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
}

/// The client URLs the proxy forwards to, sorted.
fn proxy_endpoints(c: &Cluster, addr: &str) -> Vec<String> {
    let r = at(c, addr, "GET", "/v2/config/local/proxy", None);
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let mut eps: Vec<String> = v["endpoints"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    eps.sort();
    eps
}

fn client_urls(c: &Cluster, which: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = which
        .iter()
        .map(|&i| format!("http://{}", c.members[i].client()))
        .collect();
    v.sort();
    v
}

fn debian_etcdctl(c: &Cluster, endpoint: &str, args: &[&str]) -> (bool, String, String) {
    // --no-sync keeps etcdctl on the proxy: it otherwise fetches the member list and talks to the members.
    let mut all = vec![
        "ETCDCTL_API=2",
        "/usr/bin/etcdctl",
        "--no-sync",
        "--endpoints",
        endpoint,
    ];
    all.extend_from_slice(args);
    c.exec("/usr/bin/env", &all)
}

/// Waits until member `i` serves `key` with `value` from a plain read. Such a read is served from the
/// member's applied state, which a follower reaches about a heartbeat after the write was acknowledged
/// through another member (as in etcd).
fn wait_value(c: &Cluster, i: usize, key: &str, value: &str) {
    poll_until(
        "the write applied on the member",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let v =
                json(&c.req(i, "GET", &format!("/v2/keys{key}"), None))["node"]["value"].clone();
            (v == value).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("member {i}, {key}: {e}"));
}

#[test]
fn a_proxy_on_a_worker_host_serves_etcdctl_watches_and_readonly_refusals() {
    let c = Cluster::start_first(3, 3);
    let worker = c.net.add_host("worker").expect("worker host");
    let tmp = tempfile::tempdir().expect("tempdir");
    let initial = c.initial_cluster(0..3);
    let proxy = start_proxy(
        &worker,
        &tmp.path().join("proxy"),
        2379,
        "on",
        &initial,
        &[],
    );
    let paddr = format!("{}:2379", worker.addr());
    let ep = format!("http://{paddr}");
    wait_serving(&c, &paddr, || proxy.stderr());
    assert!(
        proxy
            .stderr()
            .contains("proxy: this proxy supports v2 API only!")
    );
    assert_eq!(proxy_endpoints(&c, &paddr), client_urls(&c, &[0, 1, 2]));
    // etcd's cluster file, with every member's peer URL.
    let file =
        std::fs::read_to_string(tmp.path().join("proxy/proxy/cluster")).expect("cluster file");
    let f: Value = serde_json::from_str(&file).expect("cluster file JSON");
    for m in &c.members {
        assert!(
            f["PeerURLs"]
                .as_array()
                .is_some_and(|a| a.iter().any(|u| *u == m.peer_url())),
            "{file}"
        );
    }

    // Debian's etcdctl (v2) and ours, through the proxy; the writes are on the members.
    let (ok, out, err) = debian_etcdctl(&c, &ep, &["set", "/via-proxy", "debian"]);
    assert!(ok, "{err}");
    assert_eq!(out, "debian\n");
    let (ok, out, err) = c.exec(
        etcdctl_bin(),
        &["--no-sync", "--endpoints", &ep, "get", "/via-proxy"],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "debian\n");
    let (ok, _, err) = c.exec(
        etcdctl_bin(),
        &["--no-sync", "--endpoints", &ep, "set", "/ours", "rust"],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = debian_etcdctl(&c, &ep, &["get", "/ours"]);
    assert!(ok, "{err}");
    assert_eq!(out, "rust\n");
    let (ok, out, err) = debian_etcdctl(&c, &ep, &["member", "list"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    for i in 0..3 {
        wait_value(&c, i, "/via-proxy", "debian");
    }
    let r = at(&c, &paddr, "GET", "/version", None);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("etcdserver"), "{}", r.text());

    // Watches through the proxy see writes made on a member: etcdctl's long poll, and a stream that must
    // deliver each event while it stays open (no buffering in the proxy).
    let index: u64 = c
        .req(0, "GET", "/v2/keys/", None)
        .header("x-etcd-index")
        .and_then(|s| s.parse().ok())
        .expect("X-Etcd-Index");
    let after = index.to_string();
    let mut watch = c
        .cli
        .spawn(Spawn::new(etcdctl_bin()).args([
            "--no-sync",
            "--endpoints",
            &ep,
            "watch",
            "--after-index",
            &after,
            "/watched",
        ]))
        .expect("etcdctl watch");
    let mut stream = c
        .cli
        .spawn(Spawn::new("curl").args([
            "-sN",
            &format!(
                "{ep}/v2/keys/streamed?wait=true&stream=true&waitIndex={}",
                index + 1
            ),
        ]))
        .expect("curl stream");
    assert_eq!(
        c.req(1, "PUT", "/v2/keys/watched", Some("value=w1")).status,
        201
    );
    let status = watch
        .wait_timeout(Duration::from_secs(20))
        .expect("watch ends");
    assert!(status.success(), "{}", watch.stderr());
    assert_eq!(watch.stdout(), "w1\n");
    assert_eq!(
        c.req(2, "PUT", "/v2/keys/streamed", Some("value=s1"))
            .status,
        201
    );
    stream
        .wait_for_output("\"value\":\"s1\"", Duration::from_secs(20))
        .expect("first streamed event");
    assert_eq!(
        c.req(0, "PUT", "/v2/keys/streamed", Some("value=s2"))
            .status,
        200
    );
    stream
        .wait_for_output("\"value\":\"s2\"", Duration::from_secs(20))
        .expect("second streamed event");
    assert!(
        matches!(stream.try_wait(), Ok(None)),
        "the stream ended early"
    );

    // A readonly proxy forwards GETs only; etcd answers the rest with a bare 501.
    let ro = start_proxy(
        &worker,
        &tmp.path().join("ro"),
        2378,
        "readonly",
        &initial,
        &[],
    );
    let roaddr = format!("{}:2378", worker.addr());
    wait_serving(&c, &roaddr, || ro.stderr());
    for (method, form) in [
        ("PUT", Some("value=no")),
        ("DELETE", None),
        ("POST", Some("value=no")),
    ] {
        let r = at(&c, &roaddr, method, "/v2/keys/via-proxy", form);
        assert_eq!(r.status, 501, "{method}: {}", r.text());
        assert!(r.body.is_empty());
    }
    assert_eq!(
        json(&at(&c, &roaddr, "GET", "/v2/keys/via-proxy", None))["node"]["value"],
        "debian"
    );
    let (ok, _, err) = debian_etcdctl(
        &c,
        &format!("http://{roaddr}"),
        &["set", "/via-proxy", "no"],
    );
    assert!(!ok, "a write through the readonly proxy succeeded");
    // What Debian's etcdctl prints against Debian's readonly proxy too.
    assert!(
        err.contains(&format!(
            "client: etcd member http://{roaddr} returns server error [Not Implemented]"
        )),
        "{err}"
    );
    assert_eq!(
        json(&c.req(0, "GET", "/v2/keys/via-proxy", None))["node"]["value"],
        "debian"
    );

    // Debian's etcd proxy learns our members from the peer port's GET /members and forwards to them.
    let mut go = worker
        .spawn(
            Spawn::new("/usr/bin/etcd")
                .args(["--proxy", "on", "--name", "goproxy"])
                .arg("--data-dir")
                .arg(tmp.path().join("goproxy"))
                .args([
                    "--listen-client-urls",
                    &format!("http://{}:2377", worker.addr()),
                ])
                .args(["--initial-cluster", &initial]),
        )
        .expect("Debian's etcd proxy");
    let goaddr = format!("{}:2377", worker.addr());
    poll_until(
        "Debian's proxy forwarding a write",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            try_at(
                &c,
                &goaddr,
                "PUT",
                "/v2/keys/from-go-proxy",
                Some("value=go"),
            )
            .filter(|r| r.status == 201)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", go.stderr()));
    wait_value(&c, 2, "/from-go-proxy", "go");
    let r = at(&c, &goaddr, "GET", "/v2/config/local/proxy", None);
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    assert_eq!(
        v["endpoints"].as_array().map(|a| a.len()),
        Some(3),
        "{}",
        r.text()
    );
    let _ = go.stop(Duration::from_secs(5));
    drop(stream);
}

#[test]
fn a_proxy_follows_membership_changes_and_a_removed_member_stops_itself() {
    let mut c = Cluster::start_first(4, 3);
    let worker = c.net.add_host("worker").expect("worker host");
    let tmp = tempfile::tempdir().expect("tempdir");
    let initial = c.initial_cluster(0..3);
    let proxy = start_proxy(
        &worker,
        &tmp.path().join("proxy"),
        2379,
        "on",
        &initial,
        &[
            "--proxy-refresh-interval",
            "200",
            "--proxy-failure-wait",
            "1000",
        ],
    );
    let paddr = format!("{}:2379", worker.addr());
    wait_serving(&c, &paddr, || proxy.stderr());
    assert_eq!(proxy_endpoints(&c, &paddr), client_urls(&c, &[0, 1, 2]));
    let wait_endpoints = |c: &Cluster, which: &[usize], what: &str| {
        let want = client_urls(c, which);
        poll_until(
            what,
            Duration::from_secs(20),
            Duration::from_millis(50),
            || (proxy_endpoints(c, &paddr) == want).then_some(()),
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", proxy_endpoints(c, &paddr), proxy.stderr()));
    };

    // A member added while the proxy runs becomes one of its endpoints.
    add_member(&mut c, 3, 0);
    // It joins as a learner and is promoted once caught up; wait for that, so the cluster has three voters
    // after the removal below and keeps a quorum when one more member is killed.
    poll_until(
        "the added member promoted to voter",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let (ok, out, _) = c.exec(
                "/usr/bin/env",
                &[
                    "ETCDCTL_API=3",
                    "/usr/bin/etcdctl",
                    "--endpoints",
                    &c.endpoints(&[0]),
                    "member",
                    "list",
                ],
            );
            (ok && out
                .lines()
                .any(|l| l.contains(", m4, ") && l.ends_with(", false")))
            .then_some(())
        },
    )
    .expect("promoted");
    wait_endpoints(
        &c,
        &[0, 1, 2, 3],
        "the added member among the proxy's endpoints",
    );

    // A removed member stops itself as etcd 3.4 does (exit 0, its two lines), and the proxy drops it.
    let id = member_id(&c, 0, "m3");
    let (ok, out, err) = c.exec(
        etcdctl_bin(),
        &["--endpoints", &c.endpoints(&[0]), "member", "remove", &id],
    );
    assert!(ok, "member remove: {err}");
    assert!(
        out.starts_with(&format!("Removed member {id} from cluster")),
        "{out}"
    );
    let status = c.members[2]
        .proc
        .as_mut()
        .expect("proc")
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("the removed member did not exit: {e}"));
    let logs = c.logs(2);
    assert!(status.success(), "exit {status:?}\n{logs}");
    assert!(
        logs.contains("the member has been permanently removed from the cluster"),
        "{logs}"
    );
    assert!(
        logs.contains("the data-dir used by this member must be removed."),
        "{logs}"
    );
    wait_endpoints(
        &c,
        &[0, 1, 3],
        "the removed member gone from the proxy's endpoints",
    );
    // Removing it again: etcd's 410 for a member removed earlier, through every member.
    for via in [0, 1, 3] {
        let r = poll_until(
            "410 for the removed member",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || {
                let r = c.req(via, "DELETE", &format!("/v2/members/{id}"), None);
                (r.status != 404).then_some(r)
            },
        )
        .expect("not 404");
        assert_eq!(r.status, 410, "{}", r.text());
        assert_eq!(
            json(&r)["message"],
            format!("Member permanently removed: {id}")
        );
    }
    let file =
        std::fs::read_to_string(tmp.path().join("proxy/proxy/cluster")).expect("cluster file");
    assert!(!file.contains(&c.members[2].peer_url()), "{file}");
    assert!(file.contains(&c.members[3].peer_url()), "{file}");
    // Started again with its data dir, it refuses the same way.
    c.members[2]
        .proc
        .as_mut()
        .expect("proc")
        .restart()
        .expect("restart");
    let status = c.members[2]
        .proc
        .as_mut()
        .expect("proc")
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("the removed member started again: {e}"));
    assert!(status.success());
    assert_eq!(
        c.logs(2)
            .matches("the data-dir used by this member must be removed.")
            .count(),
        2,
        "{}",
        c.logs(2)
    );
    let r = at(&c, &paddr, "PUT", "/v2/keys/after-remove", Some("value=1"));
    assert_eq!(r.status, 201, "{}", r.text());
    c.wait_member_count(1, 3);

    // With one of the three remaining members killed, requests through the proxy keep working.
    c.members[0]
        .proc
        .as_mut()
        .expect("proc")
        .kill9()
        .expect("kill -9");
    for i in 0..10 {
        let value = format!("value={i}");
        poll_until(
            "a write through the proxy with a member down",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || {
                try_at(&c, &paddr, "PUT", "/v2/keys/after-kill", Some(&value))
                    .filter(|r| r.status == 200 || r.status == 201)
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    }
    assert_eq!(
        json(&at(
            &c,
            &paddr,
            "GET",
            "/v2/keys/after-kill?quorum=true",
            None
        ))["node"]["value"],
        "9"
    );
    c.assert_alive(&[1, 3]);
}

#[test]
fn a_member_finding_the_discovery_registry_full_becomes_a_proxy() {
    // Host 5 runs the registry: a lone member of ours, its v2 keys API used directly.
    let mut c = Cluster::hosts(5);
    let reg = c.members.remove(4);
    let reg_addr = format!("{}:2379", reg.host.addr());
    let _registry = reg
        .host
        .spawn(
            Spawn::new(etcd_bin())
                .args(["--name", "registry"])
                .arg("--data-dir")
                .arg(&reg.dir)
                .args(["--listen-client-urls", &format!("http://{reg_addr}")])
                .args(["--advertise-client-urls", &format!("http://{reg_addr}")])
                .args(["--listen-peer-urls", "http://127.0.0.1:2380"]),
        )
        .expect("registry etcd");
    poll_until(
        "the registry's size key",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            try_at(
                &c,
                &reg_addr,
                "PUT",
                "/v2/keys/_etcd/registry/tok/_config/size",
                Some("value=3"),
            )
            .filter(|r| r.status == 201)
        },
    )
    .expect("size key");
    let url = format!("http://{reg_addr}/v2/keys/_etcd/registry/tok");
    // The default --discovery-fallback is proxy.
    let start = |c: &mut Cluster, i: usize| {
        let m = &mut c.members[i];
        let spawn = Spawn::new(etcd_bin())
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.dir)
            .args(["--listen-client-urls", &format!("http://{}", m.client())])
            .args(["--advertise-client-urls", &format!("http://{}", m.client())])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--discovery", &url])
            .env("RUST_LOG", "info,openraft=error");
        m.proc = Some(m.host.spawn(spawn).expect("starting our etcd"));
    };
    for i in 0..3 {
        start(&mut c, i);
    }
    for i in 0..3 {
        c.wait_healthy(i);
    }
    start(&mut c, 3);
    c.wait_healthy(3);
    let logs = c.logs(3);
    assert!(
        logs.contains("discovery cluster full, falling back to proxy"),
        "{logs}"
    );
    assert!(
        logs.contains("proxy: this proxy supports v2 API only!"),
        "{logs}"
    );
    // It serves by forwarding: the cluster still has three members and the write lands on them.
    let r = c.req(3, "PUT", "/v2/keys/through-fallback", Some("value=1"));
    assert_eq!(r.status, 201, "{}", r.text());
    wait_value(&c, 0, "/through-fallback", "1");
    let (ok, out, err) = c.exec(
        etcdctl_bin(),
        &["--endpoints", &c.endpoints(&[3]), "member", "list"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(!out.contains("name=m4"), "{out}");
    assert!(c.members[3].dir.join("proxy/cluster").is_file());
    // A restart finds the proxy's data dir and stays a proxy without asking the registry.
    c.members[3]
        .proc
        .as_mut()
        .expect("proc")
        .restart()
        .expect("restart");
    c.wait_healthy(3);
    let r = c.req(3, "GET", "/v2/keys/through-fallback", None);
    assert_eq!(json(&r)["node"]["value"], "1");
    c.assert_alive(&[0, 1, 2, 3]);
}
