//! `proto::etcd::Client` against real servers: every scenario runs against Debian's etcd 3.4 (the
//! reference) and against ours, each inside harness hosts so the fixed ports collide with nothing.

use integration::{Host, Network, Process, Spawn};
use proto::etcd::{Client, ClientError, RetryPolicy, WatchEvent};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which etcd a scenario runs against.
#[derive(Debug, Clone, Copy)]
enum Server {
    /// Debian's etcd 3.4 (package etcd-server).
    Reference,
    /// This workspace's `etcd` binary.
    Ours,
}

impl Server {
    fn program(self) -> PathBuf {
        match self {
            Server::Reference => PathBuf::from("/usr/bin/etcd"),
            Server::Ours => integration::binary("etcd").unwrap(),
        }
    }

    /// What the server prints once it serves clients.
    fn ready_line(self) -> &'static str {
        match self {
            Server::Reference => "ready to serve client requests",
            Server::Ours => "etcd member ready",
        }
    }
}

/// A single member inside `host`, on 127.0.0.1:2379 there.
fn single(server: Server, host: &Host, data: &Path) -> Process {
    let mut etcd = host
        .spawn(
            Spawn::new(server.program())
                .args(["--name", "one", "--data-dir"])
                .arg(data)
                .args(["--listen-client-urls", "http://127.0.0.1:2379"])
                .args(["--advertise-client-urls", "http://127.0.0.1:2379"])
                .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
                .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
                .args(["--initial-cluster", "one=http://127.0.0.1:2380"]),
        )
        .unwrap_or_else(|e| panic!("starting {server:?} etcd: {e}"));
    etcd.wait_for_output(server.ready_line(), Duration::from_secs(30))
        .unwrap();
    etcd
}

/// Runs `body` on a runtime inside `host`, so the client's sockets are
/// opened in the host's network namespace.
fn in_host<F, Fut>(host: &Host, body: F)
where
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = ()>,
{
    host.enter(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(body())
    })
    .unwrap();
}

fn key_of(event: &WatchEvent) -> String {
    String::from_utf8_lossy(&event.kv().key).into_owned()
}

fn kv_txn_lease_and_watch(server: Server) {
    let net = Network::new().unwrap();
    let host = net.add_host("ref").unwrap();
    let data = tempfile::tempdir().unwrap();
    let _etcd = single(server, &host, &data.path().join("one.etcd"));

    in_host(&host, || async {
        let client = Client::connect(&["http://127.0.0.1:2379"]).unwrap();
        let status = client.status().await.unwrap();
        assert!(
            status.version.starts_with("3.4"),
            "version {}",
            status.version
        );

        assert_eq!(client.get("/coreos.com/missing").await.unwrap(), None);
        let rev = client
            .put("/coreos.com/network/config", "{}", 0)
            .await
            .unwrap();
        let kv = client
            .get("/coreos.com/network/config")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (kv.value.as_slice(), kv.mod_revision, kv.version),
            (&b"{}"[..], rev, 1)
        );

        // Atomic create: only the first wins.
        assert!(client.create("/lock/holder", "a", 0).await.unwrap());
        assert!(!client.create("/lock/holder", "b", 0).await.unwrap());
        // Compare-and-swap on the modification revision.
        let held = client.get("/lock/holder").await.unwrap().unwrap();
        assert!(
            !client
                .compare_and_swap("/lock/holder", held.mod_revision - 1, "c", 0)
                .await
                .unwrap()
        );
        assert!(
            client
                .compare_and_swap("/lock/holder", held.mod_revision, "c", 0)
                .await
                .unwrap()
        );
        let now = client.get("/lock/holder").await.unwrap().unwrap();
        assert_eq!(now.value, b"c");
        assert!(
            !client
                .compare_and_delete("/lock/holder", held.mod_revision)
                .await
                .unwrap()
        );
        assert!(
            client
                .compare_and_delete("/lock/holder", now.mod_revision)
                .await
                .unwrap()
        );
        assert!(!client.delete("/lock/holder").await.unwrap());

        // Snapshot then watch: sorted, neighbours of the prefix excluded,
        // and the watch starts right after the snapshot.
        for key in ["/p/b", "/p/a", "/p0", "/o"] {
            client.put(key, key, 0).await.unwrap();
        }
        let (kvs, mut watch) = client.list_and_watch("/p/").await.unwrap();
        let keys: Vec<_> = kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect();
        assert_eq!(keys, ["/p/a", "/p/b"]);
        client.put("/p/c", "1", 0).await.unwrap();
        client.put("/elsewhere", "x", 0).await.unwrap();
        client.delete("/p/a").await.unwrap();
        match watch.next().await.unwrap() {
            WatchEvent::Put(kv) => {
                assert_eq!((kv.key, kv.value), (b"/p/c".to_vec(), b"1".to_vec()))
            }
            other => panic!("expected a put of /p/c, got {other:?}"),
        }
        match watch.next().await.unwrap() {
            WatchEvent::Delete(kv) => assert_eq!(kv.key, b"/p/a"),
            other => panic!("expected a delete of /p/a, got {other:?}"),
        }

        // Leases: keep-alive renews, revoke deletes the attached keys.
        let lease = client.lease_grant(Duration::from_secs(30)).await.unwrap();
        client.put("/leased", "v", lease).await.unwrap();
        let ttl = client.lease_keep_alive(lease).await.unwrap();
        assert!((1..=30).contains(&ttl), "ttl {ttl}");
        client.lease_revoke(lease).await.unwrap();
        assert_eq!(client.get("/leased").await.unwrap(), None);
    });
}

fn a_watch_resumes_across_a_server_crash_without_losing_or_repeating_events(server: Server) {
    let net = Network::new().unwrap();
    let host = net.add_host("ref").unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut etcd = single(server, &host, &data.path().join("one.etcd"));

    let etcd = &mut etcd;
    in_host(&host, || async move {
        let client = Client::connect(&["http://127.0.0.1:2379"]).unwrap();
        let mut watch = client.watch_prefix("/w/", 0).await.unwrap();
        client.put("/w/1", "before", 0).await.unwrap();
        assert_eq!(key_of(&watch.next().await.unwrap()), "/w/1");

        // The server dies and comes back from its data dir; the watch's
        // stream breaks meanwhile.
        etcd.kill9().unwrap();
        etcd.restart().unwrap();
        client.put("/w/2", "after", 0).await.unwrap();
        client.put("/w/3", "after", 0).await.unwrap();
        let second = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .unwrap()
            .unwrap();
        let third = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (key_of(&second), key_of(&third)),
            ("/w/2".into(), "/w/3".into())
        );
    });
}

fn a_watch_from_a_compacted_revision_reports_the_compaction_point(server: Server) {
    let net = Network::new().unwrap();
    let host = net.add_host("ref").unwrap();
    let data = tempfile::tempdir().unwrap();
    let _etcd = single(server, &host, &data.path().join("one.etcd"));

    in_host(&host, || async {
        let client = Client::connect(&["http://127.0.0.1:2379"]).unwrap();
        for i in 0..5 {
            client.put("/k", i.to_string(), 0).await.unwrap();
        }
        let last = client.get("/k").await.unwrap().unwrap().mod_revision;
        let mut kv = proto::etcdserverpb::kv_client::KvClient::connect("http://127.0.0.1:2379")
            .await
            .unwrap();
        kv.compact(proto::etcdserverpb::CompactionRequest {
            revision: last,
            physical: true,
        })
        .await
        .unwrap();
        let refused = match client.watch_prefix("/k", 2).await {
            Err(e) => e,
            Ok(mut watch) => watch
                .next()
                .await
                .expect_err("a watch before the compaction point"),
        };
        assert!(
            matches!(refused, ClientError::Compacted { compact_revision } if compact_revision == last),
            "{refused}"
        );
    });
}

/// Three members, one per host, formed statically.
fn cluster(server: Server, net: &Network, data: &Path) -> (Vec<Host>, Vec<Process>) {
    let hosts: Vec<Host> = (0..3)
        .map(|i| net.add_host(&format!("m{i}")).unwrap())
        .collect();
    let initial: Vec<String> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| format!("m{i}=http://{}:2380", h.addr()))
        .collect();
    let mut members = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let client_url = format!("http://{}:2379", host.addr());
        let peer_url = format!("http://{}:2380", host.addr());
        members.push(
            host.spawn(
                Spawn::new(server.program())
                    .args(["--name", &format!("m{i}"), "--data-dir"])
                    .arg(data.join(format!("m{i}")))
                    .args([
                        "--listen-client-urls",
                        &client_url,
                        "--advertise-client-urls",
                        &client_url,
                    ])
                    .args([
                        "--listen-peer-urls",
                        &peer_url,
                        "--initial-advertise-peer-urls",
                        &peer_url,
                    ])
                    .args([
                        "--initial-cluster",
                        &initial.join(","),
                        "--initial-cluster-state",
                        "new",
                    ])
                    .args(["--initial-cluster-token", "proto-client-test"]),
            )
            .unwrap(),
        );
    }
    for member in &mut members {
        member
            .wait_for_output(server.ready_line(), Duration::from_secs(60))
            .unwrap();
    }
    (hosts, members)
}

/// Three members and a client host; dropped in field order: the processes first, the network last.
struct ThreeMembers {
    members: Vec<Process>,
    endpoints: Vec<String>,
    observer: Host,
    _hosts: Vec<Host>,
    _data: tempfile::TempDir,
    _net: Network,
}

impl ThreeMembers {
    fn start(server: Server) -> ThreeMembers {
        let net = Network::new().unwrap();
        let data = tempfile::tempdir().unwrap();
        let (hosts, members) = cluster(server, &net, data.path());
        let endpoints = hosts
            .iter()
            .map(|h| format!("http://{}:2379", h.addr()))
            .collect();
        let observer = net.add_host("client").unwrap();
        ThreeMembers {
            members,
            endpoints,
            observer,
            _hosts: hosts,
            _data: data,
            _net: net,
        }
    }
}

fn calls_fail_over_when_the_current_member_dies(server: Server) {
    let mut c = ThreeMembers::start(server);
    let (members, endpoints) = (&mut c.members, c.endpoints.clone());
    in_host(&c.observer, || async move {
        let client = Client::connect(&endpoints).unwrap();
        client.put("/before", "1", 0).await.unwrap();
        assert_eq!(client.current_endpoint(), endpoints[0]);

        members[0].kill9().unwrap();
        // Reads fail over transparently.
        assert_eq!(client.get("/before").await.unwrap().unwrap().value, b"1");
        assert_ne!(client.current_endpoint(), endpoints[0]);
        // A write caught in the election may come back ambiguous (etcd's
        // "request timed out": it may have been applied), which the client
        // must report rather than repeat; nothing else may go wrong, and
        // writes go through once the survivors have a leader.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match client.put("/after", "2", 0).await {
                Ok(_) => break,
                Err(ClientError::Rpc(status)) if status.code() == tonic::Code::Unavailable => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "no progress: {status}"
                    );
                }
                Err(other) => panic!("unexpected failure during failover: {other}"),
            }
        }
        assert_eq!(client.get("/after").await.unwrap().unwrap().value, b"2");
    });
}

fn a_lease_keeper_outlives_its_ttl_and_reports_loss(server: Server) {
    let net = Network::new().unwrap();
    let host = net.add_host("ref").unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut etcd = single(server, &host, &data.path().join("one.etcd"));

    let etcd = &mut etcd;
    in_host(&host, || async move {
        let retry = RetryPolicy {
            deadline: Duration::from_secs(2),
            ..RetryPolicy::default()
        };
        let client = Client::with_retry(&["http://127.0.0.1:2379"], retry).unwrap();
        let keeper = client.lease_keeper(Duration::from_secs(2)).await.unwrap();
        client.put("/alive", "yes", keeper.id()).await.unwrap();

        // Three TTLs later the key is still there: the keeper renewed it.
        let until = tokio::time::Instant::now() + Duration::from_secs(6);
        while tokio::time::Instant::now() < until {
            assert!(
                client.get("/alive").await.unwrap().is_some(),
                "lease expired while kept"
            );
            assert!(!keeper.is_lost());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }

        // With the server gone, the keeper says the lease is lost in time.
        etcd.kill9().unwrap();
        tokio::time::timeout(Duration::from_secs(10), keeper.lost())
            .await
            .expect("loss not reported");
        assert!(keeper.is_lost());
    });
}

#[test]
fn bad_endpoints_are_refused_clearly() {
    assert!(matches!(
        Client::connect::<&str>(&[]),
        Err(ClientError::NoEndpoints)
    ));
    let err = Client::connect(&["not a url"]).unwrap_err();
    assert!(err.to_string().contains("not a url"), "{err}");
}

/// The index of the member that leads, as every member reports it.
async fn leader_of(endpoints: &[String]) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut leaders = Vec::new();
        let mut ids = Vec::new();
        for ep in endpoints {
            let client = Client::connect(&[ep.as_str()]).unwrap();
            if let Ok(s) = client.status().await {
                leaders.push(s.leader);
                ids.push(s.header.map(|h| h.member_id).unwrap_or_default());
            }
        }
        if ids.len() == endpoints.len()
            && leaders.iter().all(|&l| l != 0 && l == leaders[0])
            && let Some(i) = ids.iter().position(|&id| id == leaders[0])
        {
            return i;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agreed leader: leaders {leaders:x?}, members {ids:x?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A watch that resumes from its last revision sees every acknowledged write exactly once, in order, while
/// the leader is killed under it and writes go on.
fn a_watch_resumes_across_a_leader_kill_without_losing_or_repeating_events(server: Server) {
    let mut c = ThreeMembers::start(server);
    let (members, endpoints) = (&mut c.members, c.endpoints.clone());
    in_host(&c.observer, || async move {
        let leader = leader_of(&endpoints).await;
        // The watcher starts on the leader, so the kill breaks its stream.
        let mut ordered = endpoints.clone();
        ordered.swap(0, leader);
        let watcher = Client::connect(&ordered).unwrap();
        let writer = Client::connect(&ordered).unwrap();
        let mut watch = watcher.watch_prefix("/w/", 0).await.unwrap();

        let mut acked = Vec::new();
        let mut ambiguous = Vec::new();
        for i in 0..60 {
            if i == 20 {
                members[leader].kill9().unwrap();
            }
            let key = format!("/w/{i:03}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                match writer.put(key.as_str(), "v", 0).await {
                    Ok(rev) => {
                        acked.push((key.clone(), rev));
                        break;
                    }
                    // Possibly applied: never repeat it (the watch may or may not show it once).
                    Err(ClientError::Rpc(status)) if status.code() == tonic::Code::Unavailable => {
                        ambiguous.push(key.clone());
                        break;
                    }
                    Err(e) => {
                        assert!(tokio::time::Instant::now() < deadline, "no progress: {e}");
                    }
                }
            }
        }
        let end = writer.put("/w/end", "v", 0).await.unwrap();

        let mut seen: Vec<(String, i64)> = Vec::new();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(30), watch.next())
                .await
                .expect("the watch went quiet before the last write")
                .unwrap();
            let rev = event.kv().mod_revision;
            let key = key_of(&event);
            if key == "/w/end" {
                assert_eq!(rev, end);
                break;
            }
            seen.push((key, rev));
        }
        assert!(
            seen.windows(2).all(|w| w[0].1 < w[1].1),
            "events out of order or repeated: {seen:?}"
        );
        for (key, rev) in &acked {
            assert!(
                seen.iter().any(|(k, r)| k == key && r == rev),
                "acknowledged write {key}@{rev} missing from the watch: {seen:?}"
            );
        }
        for (key, _) in &seen {
            assert!(
                acked.iter().any(|(k, _)| k == key) || ambiguous.contains(key),
                "the watch reported {key}, which was never written"
            );
        }
        assert!(
            acked.len() >= 40,
            "too few writes acknowledged: {}",
            acked.len()
        );
    });
}

/// Runs each scenario once against Debian's etcd 3.4 and once against ours.
macro_rules! against_both {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn reference() {
                super::$scenario(super::Server::Reference)
            }
            #[test]
            fn ours() {
                super::$scenario(super::Server::Ours)
            }
        }
    )*};
}

against_both!(
    kv_txn_lease_and_watch,
    a_watch_resumes_across_a_server_crash_without_losing_or_repeating_events,
    a_watch_from_a_compacted_revision_reports_the_compaction_point,
    calls_fail_over_when_the_current_member_dies,
    a_lease_keeper_outlives_its_ttl_and_reports_loss,
    a_watch_resumes_across_a_leader_kill_without_losing_or_repeating_events,
);
