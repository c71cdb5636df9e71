//! Multi-member clusters in harness hosts (each member in its own network namespace): static bootstrap,
//! every member serving every request, kill -9 of the leader under load, a partitioned leader, restarts,
//! replacing, growing and shrinking, with Debian's etcd and etcdctl as neighbours.
//!
//! Invariants checked on every fault run: no acknowledged write is lost, the register history recorded by the
//! clients is linearizable (`linearizability.rs`), progress resumes after the fault, no member crashes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use etcd::ctl::client::{self, Response};
use integration::{Host, Network, Process, Spawn, poll_until};
use serde_json::Value;

use crate::linearizability::{self, Kind, Op, Recorder};

const TOKEN: &str = "it-cluster";

/// One member: its host, process and addresses.
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) host: Host,
    pub(crate) proc: Option<Process>,
    pub(crate) dir: PathBuf,
}

impl Member {
    pub(crate) fn client(&self) -> String {
        format!("{}:2379", self.host.addr())
    }

    pub(crate) fn peer_url(&self) -> String {
        format!("http://{}:2380", self.host.addr())
    }

    pub(crate) fn running(&mut self) -> bool {
        self.proc
            .as_mut()
            .is_some_and(|p| matches!(p.try_wait(), Ok(None)))
    }
}

/// A cluster of our members plus a client host.
pub(crate) struct Cluster {
    pub(crate) net: Network,
    pub(crate) cli: Host,
    pub(crate) members: Vec<Member>,
    _dir: tempfile::TempDir,
}

pub(crate) fn etcd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_etcd")
}

pub(crate) fn etcdctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_etcdctl")
}

impl Cluster {
    /// `n` hosts with member data dirs; nothing started yet.
    pub(crate) fn hosts(n: usize) -> Cluster {
        let net = Network::new().expect("network");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut members = Vec::new();
        for i in 1..=n {
            let name = format!("m{i}");
            let host = net.add_host(&name).expect("host");
            members.push(Member {
                dir: dir.path().join(&name),
                name,
                host,
                proc: None,
            });
        }
        let cli = net.add_host("client").expect("client host");
        Cluster {
            net,
            cli,
            members,
            _dir: dir,
        }
    }

    pub(crate) fn initial_cluster(&self, which: impl Iterator<Item = usize>) -> String {
        which
            .map(|i| format!("{}={}", self.members[i].name, self.members[i].peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` with `--initial-cluster` `initial` and the given state.
    pub(crate) fn start(&mut self, i: usize, initial: &str, state: &str) {
        let m = &mut self.members[i];
        let spawn = Spawn::new(etcd_bin())
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.dir)
            .args(["--listen-client-urls", &format!("http://{}", m.client())])
            .args(["--advertise-client-urls", &format!("http://{}", m.client())])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", initial])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", TOKEN])
            .args(["--snapshot-count", "200"])
            .env("RUST_LOG", "info,openraft=error");
        m.proc = Some(m.host.spawn(spawn).expect("starting our etcd"));
    }

    /// A static cluster of `n`, started in reverse order (any order works), healthy on every member.
    fn start_static(n: usize) -> Cluster {
        Cluster::start_first(n, n)
    }

    /// `n` hosts, the first `k` of them a new static cluster (started in reverse order), healthy; the others
    /// are left for `member add`.
    pub(crate) fn start_first(n: usize, k: usize) -> Cluster {
        let mut c = Cluster::hosts(n);
        let initial = c.initial_cluster(0..k);
        for i in (0..k).rev() {
            c.start(i, &initial, "new");
        }
        for i in 0..k {
            c.wait_healthy(i);
        }
        c
    }

    /// One request from the client host.
    pub(crate) fn try_req(
        &self,
        i: usize,
        method: &str,
        target: &str,
        form: Option<&str>,
    ) -> std::io::Result<Response> {
        let addr = self.members[i].client();
        self.cli
            .enter(|| client::request(&addr, method, target, form, Some(Duration::from_secs(10))))
            .map_err(std::io::Error::other)?
    }

    pub(crate) fn req(&self, i: usize, method: &str, target: &str, form: Option<&str>) -> Response {
        self.try_req(i, method, target, form)
            .unwrap_or_else(|e| panic!("{method} {target} on member {i}: {e}"))
    }

    pub(crate) fn wait_healthy(&self, i: usize) {
        poll_until(
            &format!("member {} healthy", self.members[i].name),
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                self.try_req(i, "GET", "/health", None)
                    .ok()
                    .filter(|r| r.status == 200)
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs(i)));
    }

    pub(crate) fn logs(&self, i: usize) -> String {
        self.members[i]
            .proc
            .as_ref()
            .map(|p| p.stderr())
            .unwrap_or_default()
    }

    /// The leader's index in `members`, as member `asking` sees it.
    fn leader(&self, asking: usize) -> Option<usize> {
        let r = self
            .try_req(asking, "GET", "/v2/members/leader", None)
            .ok()?;
        let v: Value = serde_json::from_slice(&r.body).ok()?;
        let name = v["name"].as_str()?;
        self.members.iter().position(|m| m.name == name)
    }

    /// Waits until every live member in `among` agrees on a leader (itself among them).
    pub(crate) fn agreed_leader(&self, among: &[usize]) -> usize {
        poll_until(
            "an agreed leader",
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                let first = self.leader(among[0])?;
                (among.contains(&first) && among.iter().all(|&i| self.leader(i) == Some(first)))
                    .then_some(first)
            },
        )
        .expect("leader")
    }

    /// Runs a program on the client host.
    pub(crate) fn exec(&self, program: &str, args: &[&str]) -> (bool, String, String) {
        let out = self.cli.exec(program, args).expect("exec");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub(crate) fn endpoints(&self, which: &[usize]) -> String {
        which
            .iter()
            .map(|&i| format!("http://{}", self.members[i].client()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `member list` lines from our etcdctl.
    pub(crate) fn member_list(&self, via: usize) -> Vec<String> {
        let (ok, out, err) = self.exec(
            etcdctl_bin(),
            &["--endpoints", &self.endpoints(&[via]), "member", "list"],
        );
        assert!(ok, "member list failed: {err}");
        out.lines().map(String::from).collect()
    }

    /// Waits until `member list` through member `via` shows `n` members. A member lists the membership it
    /// has applied, which trails a change made through another member by about a heartbeat (as in etcd).
    pub(crate) fn wait_member_count(&self, via: usize, n: usize) {
        poll_until(
            "the member list",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || (self.member_list(via).len() == n).then_some(()),
        )
        .unwrap_or_else(|e| panic!("{e}: {:?}", self.member_list(via)));
    }

    /// Asserts that no member in `alive` has exited (a crash).
    pub(crate) fn assert_alive(&mut self, alive: &[usize]) {
        for &i in alive {
            let running = self.members[i].running();
            assert!(
                running,
                "member {} exited:\n{}",
                self.members[i].name,
                self.logs(i)
            );
        }
    }
}

pub(crate) fn json(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// Clients writing and reading the register `/v2/keys/reg` (and each write's own key under `/v2/keys/acked`)
/// on every member in turn, recording the history.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<std::sync::Mutex<Vec<String>>>,
    acked_count: Arc<AtomicUsize>,
    recorder: Arc<Recorder>,
    threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Load {
    fn start(c: &Cluster, clients: usize, targets: &[usize]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let acked_count = Arc::new(AtomicUsize::new(0));
        let recorder = Arc::new(Recorder::new());
        let addrs: Vec<String> = targets.iter().map(|&i| c.members[i].client()).collect();
        let mut threads = Vec::new();
        for t in 0..clients {
            let (stop, acked, acked_count, recorder, addrs) = (
                stop.clone(),
                acked.clone(),
                acked_count.clone(),
                recorder.clone(),
                addrs.clone(),
            );
            threads.push(
                c.cli
                    .spawn_thread(move || {
                        let timeout = Some(Duration::from_secs(3));
                        let mut i = 0usize;
                        while !stop.load(Ordering::Relaxed) {
                            let addr = &addrs[(i + t) % addrs.len()];
                            let value = format!("c{t}-{i}");
                            // A write of the register, then the same value under its own key.
                            let call = recorder.now();
                            let res = client::request(
                                addr,
                                "PUT",
                                "/v2/keys/reg",
                                Some(&format!("value={value}")),
                                timeout,
                            );
                            let ret = recorder.now();
                            match res {
                                Ok(r) if r.status == 200 || r.status == 201 => {
                                    recorder.push(Op {
                                        kind: Kind::Write(value.clone()),
                                        call,
                                        ret: Some(ret),
                                    });
                                }
                                // Refused connection: the request never reached a server.
                                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                                // Anything else may or may not have been applied.
                                _ => recorder.push(Op {
                                    kind: Kind::Write(value.clone()),
                                    call,
                                    ret: None,
                                }),
                            }
                            let key = format!("/v2/keys/acked/{value}");
                            if let Ok(r) =
                                client::request(addr, "PUT", &key, Some("value=1"), timeout)
                                && r.status == 201
                            {
                                acked.lock().expect("lock").push(value.clone());
                                acked_count.fetch_add(1, Ordering::Relaxed);
                            }
                            // A linearizable read of the register.
                            let call = recorder.now();
                            let res = client::request(
                                addr,
                                "GET",
                                "/v2/keys/reg?quorum=true",
                                None,
                                timeout,
                            );
                            let ret = recorder.now();
                            if let Ok(r) = res {
                                let v: Value =
                                    serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                                let read = match (r.status, v["node"]["value"].as_str()) {
                                    (200, Some(s)) => Some(Some(s.to_string())),
                                    (404, _) if v["errorCode"] == 100 => Some(None),
                                    _ => None,
                                };
                                if let Some(read) = read {
                                    recorder.push(Op {
                                        kind: Kind::Read(read),
                                        call,
                                        ret: Some(ret),
                                    });
                                }
                            }
                            i += 1;
                        }
                    })
                    .expect("client thread"),
            );
        }
        Load {
            stop,
            acked,
            acked_count,
            recorder,
            threads,
        }
    }

    /// Waits until `more` further writes were acknowledged (progress).
    fn progress(&self, more: usize, what: &str) {
        let target = self.acked_count.load(Ordering::Relaxed) + more;
        poll_until(
            what,
            Duration::from_secs(40),
            Duration::from_millis(20),
            || (self.acked_count.load(Ordering::Relaxed) >= target).then_some(()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Stops the clients and returns (acknowledged unique keys, register history).
    fn finish(self) -> (Vec<String>, Vec<Op>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join()
                .expect("client thread")
                .expect("client thread in host");
        }
        let acked = self.acked.lock().expect("lock").clone();
        (acked, self.recorder.history())
    }
}

/// Every acknowledged key is present on every member in `on` (read linearizably), and the history is
/// linearizable.
fn check_invariants(c: &Cluster, on: &[usize], acked: &[String], history: &[Op]) {
    for &i in on {
        let r = c.req(i, "GET", "/v2/keys/acked?quorum=true&recursive=true", None);
        assert_eq!(r.status, 200, "{}", r.text());
        let present: std::collections::HashSet<String> = json(&r)["node"]["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| {
                n["key"]
                    .as_str()
                    .map(|k| k.trim_start_matches("/acked/").to_string())
            })
            .collect();
        for k in acked {
            assert!(
                present.contains(k),
                "acknowledged write {k} lost on member {}",
                c.members[i].name
            );
        }
    }
    let completed = history.iter().filter(|o| o.ret.is_some()).count();
    assert!(completed > 20, "too few operations recorded: {completed}");
    if let Err(e) = linearizability::check(history) {
        panic!(
            "history of {} operations is not linearizable: {e}",
            history.len()
        );
    }
}

#[test]
fn three_members_form_statically_and_every_member_serves_every_request() {
    let mut c = Cluster::start_static(3);
    let leader = c.agreed_leader(&[0, 1, 2]);
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;

    // /v2/members lists every member by name, from every member.
    for i in 0..3 {
        let v = json(&c.req(i, "GET", "/v2/members", None));
        let mut names: Vec<&str> = v["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter_map(|m| m["name"].as_str())
            .collect();
        names.sort();
        assert_eq!(names, ["m1", "m2", "m3"]);
    }
    let machines = c.req(other, "GET", "/v2/machines", None).text();
    for m in &c.members {
        assert!(machines.contains(&m.client()), "{machines}");
    }

    // A watch on one member sees a write made through a follower.
    let watch_addr = c.members[other].client();
    let watch = c
        .cli
        .spawn_thread(move || {
            client::request(
                &watch_addr,
                "GET",
                "/v2/keys/w?wait=true",
                None,
                Some(Duration::from_secs(20)),
            )
        })
        .expect("watch thread");
    // The watch is registered once the member counts a watcher.
    poll_until(
        "watch registered",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || (json(&c.req(other, "GET", "/v2/stats/store", None))["watchers"] == 1).then_some(()),
    )
    .expect("watcher");
    let w = c.req(follower, "PUT", "/v2/keys/w", Some("value=hello"));
    assert_eq!(w.status, 201, "{}", w.text());
    let index: u64 = w
        .header("x-etcd-index")
        .expect("x-etcd-index")
        .parse()
        .expect("index");
    assert!(index > 0);
    let raft_term: u64 = w
        .header("x-raft-term")
        .expect("term")
        .parse()
        .expect("term");
    assert!(raft_term >= 1);
    let seen = watch
        .join()
        .expect("watch")
        .expect("in host")
        .expect("watch reply");
    assert_eq!(json(&seen)["node"]["value"], "hello", "{}", seen.text());
    assert_eq!(json(&seen)["node"]["modifiedIndex"], index);

    // The writing member reads its own write at once; quorum reads see it everywhere.
    assert_eq!(
        json(&c.req(follower, "GET", "/v2/keys/w", None))["node"]["value"],
        "hello"
    );
    for i in 0..3 {
        let r = c.req(i, "GET", "/v2/keys/w?quorum=true", None);
        assert_eq!(json(&r)["node"]["value"], "hello", "member {i}");
    }

    // TTL expiry is decided once (by the leader) and every member sees the same expire event.
    let r = c.req(follower, "PUT", "/v2/keys/ttl", Some("value=x&ttl=1"));
    assert_eq!(r.status, 201);
    let expired: Vec<u64> = (0..3)
        .map(|i| {
            let r = c.req(
                i,
                "GET",
                &format!(
                    "/v2/keys/ttl?wait=true&waitIndex={}",
                    json(&r)["node"]["modifiedIndex"].as_u64().unwrap_or(0) + 1
                ),
                None,
            );
            let v = json(&r);
            assert_eq!(v["action"], "expire", "member {i}: {}", r.text());
            v["node"]["modifiedIndex"].as_u64().expect("expire index")
        })
        .collect();
    assert!(expired.iter().all(|e| *e == expired[0]), "{expired:?}");

    // Stats reflect the real cluster.
    let s = json(&c.req(leader, "GET", "/v2/stats/leader", None));
    assert_eq!(s["followers"].as_object().map(|f| f.len()), Some(2), "{s}");
    assert_eq!(c.req(follower, "GET", "/v2/stats/leader", None).status, 403);
    let me = json(&c.req(follower, "GET", "/v2/stats/self", None));
    assert_eq!(me["state"], "StateFollower");
    assert!(me["recvAppendRequestCnt"].as_u64().unwrap_or(0) > 0, "{me}");

    // Debian's etcdctl (v2) and ours print the same member list and health.
    let ep = c.endpoints(&[0, 1, 2]);
    let (ok, debian, err) = c.exec(
        "env",
        &[
            "ETCDCTL_API=2",
            "/usr/bin/etcdctl",
            "--endpoints",
            &ep,
            "member",
            "list",
        ],
    );
    assert!(ok, "{err}");
    let (ok, ours, err) = c.exec(etcdctl_bin(), &["--endpoints", &ep, "member", "list"]);
    assert!(ok, "{err}");
    assert_eq!(ours, debian);
    assert_eq!(ours.lines().count(), 3);
    assert_eq!(ours.matches("isLeader=true").count(), 1, "{ours}");
    let (ok, debian, err) = c.exec(
        "env",
        &[
            "ETCDCTL_API=2",
            "/usr/bin/etcdctl",
            "--endpoints",
            &ep,
            "cluster-health",
        ],
    );
    assert!(ok, "{err}");
    let (ok, ours, err) = c.exec(etcdctl_bin(), &["--endpoints", &ep, "cluster-health"]);
    assert!(ok, "{err}");
    let sorted = |s: &str| {
        let mut l: Vec<String> = s.lines().map(String::from).collect();
        l.sort();
        l
    };
    assert_eq!(sorted(&ours), sorted(&debian));
    assert!(ours.ends_with("cluster is healthy\n"), "{ours}");
    c.assert_alive(&[0, 1, 2]);
}

#[test]
fn killing_the_leader_under_load_loses_no_acknowledged_write() {
    let mut c = Cluster::start_static(3);
    let leader = c.agreed_leader(&[0, 1, 2]);
    let load = Load::start(&c, 3, &[0, 1, 2]);
    load.progress(30, "writes before the kill");
    c.members[leader]
        .proc
        .as_mut()
        .expect("leader")
        .kill9()
        .expect("kill -9");
    load.progress(30, "writes after the leader was killed");
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let new_leader = c.agreed_leader(&rest);
    assert_ne!(new_leader, leader);
    // A follower saw the dead leader's peer port refuse connections and campaigned as soon as the lease
    // allowed (raft/watchdog.rs), rather than waiting for its election timer on top.
    assert!(
        rest.iter().any(|&i| c
            .logs(i)
            .contains("peer port refuses connections: campaigning")),
        "no follower campaigned early:\n{}",
        rest.iter()
            .map(|&i| c.logs(i))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The old leader rejoins from its data dir with the same flags.
    c.members[leader]
        .proc
        .as_mut()
        .expect("proc")
        .restart()
        .expect("restart");
    c.wait_healthy(leader);
    load.progress(30, "writes after the old leader rejoined");
    let (acked, history) = load.finish();
    check_invariants(&c, &[0, 1, 2], &acked, &history);
    c.assert_alive(&[0, 1, 2]);
}

#[test]
fn a_leader_partitioned_into_a_minority_is_replaced_and_catches_up_after_the_heal() {
    let mut c = Cluster::start_static(3);
    let leader = c.agreed_leader(&[0, 1, 2]);
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let load = Load::start(&c, 3, &[0, 1, 2]);
    load.progress(20, "writes before the partition");
    c.members[leader].host.partition().expect("partition");
    load.progress(20, "writes in the majority during the partition");
    let new_leader = c.agreed_leader(&rest);
    assert_ne!(new_leader, leader);
    c.members[leader].host.heal().expect("heal");
    load.progress(20, "writes after the heal");
    let (acked, history) = load.finish();
    // The old leader converges: a quorum read through it sees every acknowledged write.
    check_invariants(&c, &[0, 1, 2], &acked, &history);
    c.assert_alive(&[0, 1, 2]);
}

#[test]
fn a_cluster_blocked_between_two_members_keeps_serving() {
    let mut c = Cluster::start_static(3);
    let leader = c.agreed_leader(&[0, 1, 2]);
    let a = (leader + 1) % 3;
    // Clients of the two members that still reach each other (the cut-off follower's clients wait).
    let served: Vec<usize> = (0..3).filter(|&i| i != a).collect();
    let load = Load::start(&c, 2, &served);
    load.progress(20, "writes before the block");
    // Silently drop traffic between the leader and one follower: the other follower keeps the quorum.
    c.net
        .block(&c.members[leader].host, &c.members[a].host)
        .expect("block");
    load.progress(20, "writes while two members cannot talk");
    c.net
        .unblock(&c.members[leader].host, &c.members[a].host)
        .expect("unblock");
    load.progress(20, "writes after unblocking");
    let (acked, history) = load.finish();
    check_invariants(&c, &[0, 1, 2], &acked, &history);
    c.assert_alive(&[0, 1, 2]);
}

#[test]
fn every_member_restarts_from_its_data_dir() {
    let mut c = Cluster::start_static(3);
    let r = c.req(0, "PUT", "/v2/keys/persist", Some("value=1"));
    assert_eq!(r.status, 201);
    for m in c.members.iter_mut() {
        m.proc.as_mut().expect("proc").kill9().expect("kill");
    }
    // Restart in a different order, flags unchanged.
    for i in [1, 2, 0] {
        c.members[i]
            .proc
            .as_mut()
            .expect("proc")
            .restart()
            .expect("restart");
    }
    for i in 0..3 {
        c.wait_healthy(i);
        let r = c.req(i, "GET", "/v2/keys/persist?quorum=true", None);
        assert_eq!(json(&r)["node"]["value"], "1", "member {i}: {}", r.text());
    }
    let r = c.req(2, "PUT", "/v2/keys/persist", Some("value=2"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(c.member_list(1).len(), 3);
    c.assert_alive(&[0, 1, 2]);
}

/// `etcdctl member add`, then the new member started with the printed configuration.
pub(crate) fn add_member(c: &mut Cluster, i: usize, via: usize) {
    let (name, peer) = (c.members[i].name.clone(), c.members[i].peer_url());
    let (ok, out, err) = c.exec(
        etcdctl_bin(),
        &[
            "--endpoints",
            &c.endpoints(&[via]),
            "member",
            "add",
            &name,
            &peer,
        ],
    );
    assert!(ok, "member add: {err}");
    assert!(
        out.starts_with(&format!("Added member named {name} with ID ")),
        "{out}"
    );
    assert!(out.contains(&format!("ETCD_NAME=\"{name}\"")), "{out}");
    assert!(
        out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{out}"
    );
    let initial = out
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER="))
        .expect("ETCD_INITIAL_CLUSTER line")
        .trim_matches('"')
        .to_string();
    assert!(initial.contains(&format!("{name}={peer}")), "{initial}");
    // Until it starts, the member is listed as unstarted.
    assert!(
        c.member_list(via)
            .iter()
            .any(|l| l.contains("[unstarted]: peerURLs=") && l.contains(&peer)),
        "{:?}",
        c.member_list(via)
    );
    c.start(i, &initial, "existing");
    c.wait_healthy(i);
    poll_until(
        "the new member named in the list",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            c.member_list(via)
                .iter()
                .any(|l| l.contains(&format!("name={name} ")))
                .then_some(())
        },
    )
    .expect("named");
}

pub(crate) fn member_id(c: &Cluster, via: usize, name: &str) -> String {
    c.member_list(via)
        .iter()
        .find(|l| l.contains(&format!("name={name} ")))
        .and_then(|l| l.split(':').next())
        .map(String::from)
        .unwrap_or_else(|| panic!("{name} not in {:?}", c.member_list(via)))
}

#[test]
fn a_cluster_grows_from_three_to_five_and_shrinks_back() {
    let mut c = Cluster::start_first(5, 3);
    let r = c.req(0, "PUT", "/v2/keys/before", Some("value=1"));
    assert_eq!(r.status, 201);
    add_member(&mut c, 3, 0);
    add_member(&mut c, 4, 1);
    c.wait_member_count(4, 5);
    // The new members have the data and vote: with two original members down, the three left (two of them
    // new) still make a quorum of five.
    let r = c.req(4, "GET", "/v2/keys/before?quorum=true", None);
    assert_eq!(json(&r)["node"]["value"], "1");
    // Promotion happens once a learner has caught up.
    for i in [3, 4] {
        poll_until(
            "new member promoted to voter",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let m = c.try_req(i, "GET", "/metrics", None).ok()?.text();
                m.contains("\netcd_server_is_learner 0\n").then_some(())
            },
        )
        .expect("promoted");
    }
    let leader = c.agreed_leader(&[0, 1, 2, 3, 4]);
    let down: Vec<usize> = [0, 1, 2]
        .into_iter()
        .filter(|&i| i != leader)
        .take(2)
        .collect();
    for &i in &down {
        c.members[i]
            .proc
            .as_mut()
            .expect("proc")
            .kill9()
            .expect("kill");
    }
    let up: Vec<usize> = (0..5).filter(|i| !down.contains(i)).collect();
    poll_until(
        "a write with two of five members down",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let r = c
                .try_req(up[0], "PUT", "/v2/keys/with-new-voters", Some("value=1"))
                .ok()?;
            (r.status == 201 || r.status == 200).then_some(())
        },
    )
    .expect("quorum of five");
    for &i in &down {
        c.members[i]
            .proc
            .as_mut()
            .expect("proc")
            .restart()
            .expect("restart");
        c.wait_healthy(i);
    }
    // Shrink back to three: remove the two new members.
    for (i, via) in [(3, 0), (4, 1)] {
        let id = member_id(&c, via, &c.members[i].name.clone());
        let (ok, out, err) = c.exec(
            etcdctl_bin(),
            &["--endpoints", &c.endpoints(&[via]), "member", "remove", &id],
        );
        assert!(ok, "member remove: {err}");
        assert_eq!(out, format!("Removed member {id} from cluster\n"));
        c.members[i]
            .proc
            .as_mut()
            .expect("proc")
            .kill9()
            .expect("kill");
    }
    c.wait_member_count(0, 3);
    let r = c.req(2, "PUT", "/v2/keys/after", Some("value=1"));
    assert_eq!(r.status, 201, "{}", r.text());
    c.assert_alive(&[0, 1, 2]);
}

#[test]
fn a_dead_member_is_replaced_and_quorum_losing_removals_are_refused() {
    let mut c = Cluster::start_first(4, 3);
    let leader = c.agreed_leader(&[0, 1, 2]);
    let dead = (leader + 1) % 3;
    let healthy = (leader + 2) % 3;
    let id = member_id(&c, leader, &c.members[healthy].name.clone());
    let dead_id = member_id(&c, leader, &c.members[dead].name.clone());
    let failures = |c: &Cluster| -> Option<u64> {
        let s = json(&c.try_req(leader, "GET", "/v2/stats/leader", None).ok()?);
        s["followers"][&dead_id]["counts"]["fail"].as_u64()
    };
    // Failures from before the kill (a peer still starting up) must not count as noticing it.
    let before = failures(&c).unwrap_or(0);
    c.members[dead]
        .proc
        .as_mut()
        .expect("proc")
        .kill9()
        .expect("kill");
    // Removing a healthy member now would leave one started member of two: refused.
    poll_until(
        "the leader notices the dead member",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || (failures(&c)? > before).then_some(()),
    )
    .expect("noticed");
    let r = c.req(leader, "DELETE", &format!("/v2/members/{id}"), None);
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.text().contains("not enough started members"),
        "{}",
        r.text()
    );
    assert_eq!(c.member_list(leader).len(), 3);
    // Removing the dead one is fine, then a new member takes its place.
    let r = c.req(leader, "DELETE", &format!("/v2/members/{dead_id}"), None);
    assert_eq!(r.status, 204, "{}", r.text());
    // Removing it again: etcd's 410, at once (the state machine records the removal as it applies it).
    assert_eq!(
        c.req(leader, "DELETE", &format!("/v2/members/{dead_id}"), None)
            .status,
        410
    );
    add_member(&mut c, 3, healthy);
    c.wait_member_count(3, 3);
    let lines = c.member_list(3);
    assert!(!lines.iter().any(|l| l.contains(&dead_id)));
    let r = c.req(3, "PUT", "/v2/keys/replaced", Some("value=1"));
    assert_eq!(r.status, 201, "{}", r.text());
    // Updating a member's peer URLs is replicated.
    let new_id = member_id(&c, 3, "m4");
    let peer = c.members[3].peer_url();
    let r = c
        .cli
        .enter(|| {
            client::request_with(
                &c.members[healthy].client(),
                "PUT",
                &format!("/v2/members/{new_id}"),
                Some((
                    "application/json",
                    &format!("{{\"peerURLs\":[\"{peer}\"]}}"),
                )),
                None,
                Some(Duration::from_secs(10)),
            )
        })
        .expect("in host")
        .expect("update");
    assert_eq!(r.status, 204, "{}", r.text());
    c.assert_alive(&[leader, healthy, 3]);
}

/// Debian's etcd 3.4 as a 3-member cluster in harness hosts.
fn debian_cluster(c: &mut Cluster) -> Vec<Process> {
    let initial = c.initial_cluster(0..3);
    let mut procs = Vec::new();
    for m in &c.members {
        let p = m
            .host
            .spawn(
                Spawn::new("/usr/bin/etcd")
                    .args(["--name", &m.name, "--enable-v2=true"])
                    .arg("--data-dir")
                    .arg(&m.dir)
                    .args(["--listen-client-urls", &format!("http://{}", m.client())])
                    .args(["--advertise-client-urls", &format!("http://{}", m.client())])
                    .args(["--listen-peer-urls", &m.peer_url()])
                    .args(["--initial-advertise-peer-urls", &m.peer_url()])
                    .args(["--initial-cluster", &initial])
                    .args(["--initial-cluster-token", TOKEN]),
            )
            .expect("starting Debian's etcd (package etcd-server)");
        procs.push(p);
    }
    procs
}

#[test]
fn our_etcdctl_prints_what_debians_prints_against_a_debian_cluster() {
    let mut c = Cluster::hosts(3);
    let _procs = debian_cluster(&mut c);
    for i in 0..3 {
        c.wait_healthy(i);
    }
    let ep = c.endpoints(&[0, 1, 2]);
    for cmd in [&["member", "list"][..], &["cluster-health"][..]] {
        let mut args = vec!["--endpoints", &ep];
        args.extend_from_slice(cmd);
        let (ok, ours, err) = c.exec(etcdctl_bin(), &args);
        assert!(ok, "{err}");
        let mut dargs = vec!["ETCDCTL_API=2", "/usr/bin/etcdctl"];
        dargs.extend_from_slice(&args);
        let (ok, debian, err) = c.exec("env", &dargs);
        assert!(ok, "{err}");
        let sorted = |s: &str| {
            let mut l: Vec<String> = s.lines().map(String::from).collect();
            l.sort();
            l
        };
        assert_eq!(sorted(&ours), sorted(&debian), "{cmd:?}");
    }
    // The member ids and the cluster id are the ones etcd derives: ours computes the same from the flags.
    let v = json(&c.req(0, "GET", "/v2/members", None));
    for m in v["members"].as_array().expect("members") {
        let peer = m["peerURLs"][0].as_str().expect("peer url").to_string();
        let id = etcd::cluster::member_id(&[peer], TOKEN);
        assert_eq!(m["id"], format!("{id:x}"));
    }
    let ids: Vec<u64> = c
        .members
        .iter()
        .map(|m| etcd::cluster::member_id(&[m.peer_url()], TOKEN))
        .collect();
    let r = c.req(0, "GET", "/v2/members", None);
    assert_eq!(
        r.header("x-etcd-cluster-id"),
        Some(format!("{:x}", etcd::cluster::cluster_id(&ids)).as_str())
    );
}

#[test]
fn a_member_down_for_long_catches_up_through_a_snapshot() {
    // --snapshot-count 200 (see `Cluster::start`): the log behind the last snapshot is purged quickly.
    let mut c = Cluster::start_static(3);
    let leader = c.agreed_leader(&[0, 1, 2]);
    let lagging = (leader + 1) % 3;
    c.members[lagging]
        .proc
        .as_mut()
        .expect("proc")
        .kill9()
        .expect("kill");
    let addr = c.members[leader].client();
    // Sequential writes: one raft entry each, far more than the snapshot interval plus the kept log.
    let written = c
        .cli
        .enter(move || {
            for i in 0..700 {
                let r = client::request(
                    &addr,
                    "PUT",
                    &format!("/v2/keys/lag/k{i}"),
                    Some(&format!("value={i}")),
                    Some(Duration::from_secs(10)),
                )?;
                if r.status != 201 {
                    return Err(std::io::Error::other(r.text()));
                }
            }
            Ok(700)
        })
        .expect("in host")
        .expect("writes");
    c.members[lagging]
        .proc
        .as_mut()
        .expect("proc")
        .restart()
        .expect("restart");
    c.wait_healthy(lagging);
    poll_until(
        "the lagging member has every key",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let r = c.try_req(lagging, "GET", "/v2/keys/lag", None).ok()?;
            (json(&r)["node"]["nodes"].as_array()?.len() == written).then_some(())
        },
    )
    .expect("caught up");
    let metrics = c.req(lagging, "GET", "/metrics", None).text();
    let received: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("etcd_network_snapshot_receive_success "))
        .and_then(|v| v.parse().ok())
        .expect("snapshot metric");
    assert!(received >= 1, "caught up without a snapshot:\n{metrics}");
    let r = c.req(lagging, "GET", "/v2/keys/lag/k699", None);
    assert_eq!(json(&r)["node"]["value"], "699");
    c.assert_alive(&[0, 1, 2]);
}

#[test]
fn three_members_form_through_a_discovery_token_and_a_fourth_is_turned_away() {
    // Host 5 runs the registry: a lone member of ours and etcd-discovery in front of it.
    let mut c = Cluster::hosts(5);
    let reg = c.members.remove(4);
    let reg_addr = reg.host.addr();
    let _registry = reg
        .host
        .spawn(
            Spawn::new(etcd_bin())
                .args(["--name", "registry"])
                .arg("--data-dir")
                .arg(&reg.dir)
                .args(["--listen-client-urls", "http://127.0.0.1:2379"])
                .args(["--advertise-client-urls", "http://127.0.0.1:2379"])
                .args(["--listen-peer-urls", "http://127.0.0.1:2380"]),
        )
        .expect("registry etcd");
    let _service = reg
        .host
        .spawn(
            Spawn::new(env!("CARGO_BIN_EXE_etcd-discovery"))
                .args(["--etcd", "http://127.0.0.1:2379"])
                .args(["--host", &format!("http://{reg_addr}:8087")])
                .args(["--addr", "0.0.0.0:8087"]),
        )
        .expect("etcd-discovery");
    let service = format!("{reg_addr}:8087");
    let url = poll_until(
        "a discovery token",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let r = c
                .cli
                .enter(|| {
                    client::request(
                        &service,
                        "GET",
                        "/new?size=3",
                        None,
                        Some(Duration::from_secs(5)),
                    )
                })
                .ok()?
                .ok()?;
            (r.status == 200).then(|| r.text())
        },
    )
    .expect("token");
    assert!(url.starts_with(&format!("http://{service}/")), "{url}");
    let bad = c
        .cli
        .enter(|| {
            client::request(
                &service,
                "GET",
                "/new?size=x",
                None,
                Some(Duration::from_secs(5)),
            )
        })
        .expect("in host")
        .expect("reply");
    assert_eq!(bad.status, 400);

    let start = |c: &mut Cluster, i: usize, fallback: &str| {
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
            .args(["--discovery-fallback", fallback]);
        m.proc = Some(m.host.spawn(spawn).expect("starting our etcd"));
    };
    for i in [2, 0, 1] {
        start(&mut c, i, "exit");
    }
    for i in 0..3 {
        c.wait_healthy(i);
    }
    let lines = c.member_list(0);
    assert_eq!(lines.len(), 3, "{lines:?}");
    // Ids derive from the discovery URL (etcd uses it as the token), and the registry lists them.
    for m in &c.members[..3] {
        let id = etcd::cluster::member_id(&[m.peer_url()], &url);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{id:x}: name={} ", m.name))),
            "{lines:?}"
        );
    }
    let r = c.req(1, "PUT", "/v2/keys/through-discovery", Some("value=1"));
    assert_eq!(r.status, 201, "{}", r.text());
    // The registry is full: a fourth member exits, naming the reason.
    start(&mut c, 3, "exit");
    let status = c.members[3]
        .proc
        .as_mut()
        .expect("proc")
        .wait_timeout(Duration::from_secs(30))
        .expect("fourth member exits");
    assert!(!status.success());
    assert!(
        c.logs(3).contains("discovery: cluster is full"),
        "{}",
        c.logs(3)
    );
    // A restart uses the data dir, not the registry.
    c.members[0]
        .proc
        .as_mut()
        .expect("proc")
        .restart()
        .expect("restart");
    c.wait_healthy(0);
    c.assert_alive(&[0, 1, 2]);
}

/// Debian's etcdctl (v3 API) against our cluster.
fn etcdctl_v3(c: &Cluster, via: usize, args: &[&str]) -> (bool, String, String) {
    let endpoints = c.endpoints(&[via]);
    let mut all = vec![
        "ETCDCTL_API=3",
        "/usr/bin/etcdctl",
        "--endpoints",
        &endpoints,
    ];
    all.extend_from_slice(args);
    c.exec("/usr/bin/env", &all)
}

#[test]
fn debians_v3_etcdctl_lists_adds_promotes_and_removes_members() {
    let mut c = Cluster::start_first(4, 3);

    // Each member publishes its name through the log when it starts: wait until member 1 applied all three.
    let names = |out: &str| -> Vec<String> {
        let list: Value = serde_json::from_str(out).unwrap_or_default();
        let mut names: Vec<String> = list["members"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let out = poll_until(
        "every member named in the list",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let (ok, out, _) = etcdctl_v3(&c, 1, &["member", "list", "-w", "json"]);
            (ok && names(&out) == ["m1", "m2", "m3"]).then_some(out)
        },
    )
    .expect("member list");
    let list: Value = serde_json::from_str(&out).expect("member list json");
    assert_ne!(list["header"]["cluster_id"].as_u64(), Some(0), "{out}");

    // Add: etcdctl prints the settings to start the new member with; it joins and shows in the list.
    let peer = c.members[3].peer_url();
    let (ok, out, err) = etcdctl_v3(&c, 0, &["member", "add", "m4", "--peer-urls", &peer]);
    assert!(ok, "member add: {err}");
    assert!(out.starts_with("Member "), "{out}");
    assert!(out.contains(" added to cluster "), "{out}");
    assert!(out.contains("ETCD_NAME=\"m4\""), "{out}");
    assert!(
        out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{out}"
    );
    let joined = out
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("ETCD_INITIAL_CLUSTER line")
        .to_string();
    assert!(joined.contains(&format!("m4={peer}")), "{joined}");
    let id = out
        .split_whitespace()
        .nth(1)
        .expect("member id")
        .to_string();
    c.start(3, &joined, "existing");
    c.wait_healthy(3);
    poll_until(
        "m4 listed by name",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let (ok, out, _) = etcdctl_v3(&c, 2, &["member", "list"]);
            (ok && out.contains(", m4, ")).then_some(())
        },
    )
    .expect("m4 named");

    // A voter cannot be promoted; an unknown member cannot be removed.
    let voter = member_id(&c, 0, "m1");
    let (ok, _, err) = etcdctl_v3(&c, 0, &["member", "promote", &voter]);
    assert!(!ok);
    assert!(err.contains("can only promote a learner member"), "{err}");
    let (ok, _, err) = etcdctl_v3(&c, 0, &["member", "remove", "abcdef0123456789"]);
    assert!(!ok);
    assert!(err.contains("etcdserver: member not found"), "{err}");

    // Remove the new member again.
    let (ok, out, err) = etcdctl_v3(&c, 1, &["member", "remove", &id]);
    assert!(ok, "member remove: {err}");
    assert!(
        // etcdctl prints the id as `%16x`: space-padded when it starts with a zero digit.
        out.starts_with(&format!("Member {id:>16} removed from cluster ")),
        "{out}"
    );
    let (ok, out, err) = etcdctl_v3(&c, 2, &["member", "list"]);
    assert!(ok, "member list: {err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    c.assert_alive(&[0, 1, 2]);
}

#[test]
fn debians_v3_etcdctl_finds_equal_hashes_on_every_member() {
    let mut c = Cluster::start_static(3);
    // `endpoint hashkv` dials each endpoint as given: without a scheme (see COMPAT.md on `http://`).
    let hash = |c: &Cluster, via: usize| -> Option<u64> {
        let ep = c.members[via].client();
        let (ok, out, _) = c.exec(
            "/usr/bin/env",
            &[
                "ETCDCTL_API=3",
                "/usr/bin/etcdctl",
                "--endpoints",
                &ep,
                "endpoint",
                "hashkv",
                "-w",
                "json",
            ],
        );
        let v: Value = serde_json::from_str(&out).ok()?;
        ok.then(|| v[0]["HashKV"]["hash"].as_u64())?
    };
    let agreed = |c: &Cluster, what: &str| -> u64 {
        poll_until(
            what,
            Duration::from_secs(20),
            Duration::from_millis(100),
            || {
                let h: Vec<Option<u64>> = (0..3).map(|i| hash(c, i)).collect();
                match h[0] {
                    Some(first) if h.iter().all(|x| *x == Some(first)) => Some(first),
                    _ => None,
                }
            },
        )
        .expect(what)
    };
    let (ok, _, err) = etcdctl_v3(&c, 0, &["put", "hashed", "one"]);
    assert!(ok, "put: {err}");
    let first = agreed(&c, "members agree on the hash");
    let (ok, _, err) = etcdctl_v3(&c, 1, &["put", "hashed", "two"]);
    assert!(ok, "put: {err}");
    let second = agreed(&c, "members agree on the new hash");
    assert_ne!(first, second, "a write changes the hash");
    c.assert_alive(&[0, 1, 2]);
}
