//! The `etcd-client` crate (a real, independent v3 client) driving OUR server through KV, Txn, Watch and Lease;
//! every scenario also runs against Debian's etcd 3.4, so the expectations are etcd's behaviour.

use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, WatchFilterType, WatchOptions,
};

use crate::support::{Ours, Proc, free_port};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The gRPC code and message of a failed call.
fn status(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC status, got {other}"),
    }
}

async fn connect(addr: &str) -> Client {
    Client::connect([format!("http://{addr}")], None)
        .await
        .expect("connect")
}

/// Runs a scenario against ours and against Debian's etcd 3.4.
fn both<F, Fut>(scenario: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ours = Ours::start();
    rt().block_on(scenario(ours.addr.clone()));
    let debian = Proc::debian_with_peer_port(free_port());
    rt().block_on(scenario(debian.addr.clone()));
}

#[test]
fn kv_ranges_puts_deletes_and_compaction() {
    both(|addr| async move {
        let mut c = connect(&addr).await;
        let first = c.put("/r/a", "1", None).await.unwrap();
        let base = first.header().unwrap().revision();
        c.put("/r/b", "22", None).await.unwrap();
        c.put("/r/c", "3", None).await.unwrap();
        let p = c
            .put("/r/a", "4", Some(PutOptions::new().with_prev_key()))
            .await
            .unwrap();
        assert_eq!(p.prev_key().unwrap().value(), b"1");
        assert_eq!(p.header().unwrap().revision(), base + 3);

        let g = c.get("/r/a", None).await.unwrap();
        let kv = &g.kvs()[0];
        assert_eq!(
            (kv.create_revision(), kv.mod_revision(), kv.version()),
            (base, base + 3, 2)
        );

        let g = c
            .get(
                "/r/",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Key, SortOrder::Descend)
                        .with_limit(2),
                ),
            )
            .await
            .unwrap();
        let keys: Vec<&str> = g.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
        assert_eq!(keys, ["/r/c", "/r/b"]);
        assert!(g.more());
        assert_eq!(g.count(), 3);
        let g = c
            .get(
                "/r/",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Value, SortOrder::Ascend),
                ),
            )
            .await
            .unwrap();
        let values: Vec<&[u8]> = g.kvs().iter().map(|kv| kv.value()).collect();
        assert_eq!(values, [&b"22"[..], b"3", b"4"]);
        let g = c
            .get(
                "/r/",
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .unwrap();
        assert!(g.kvs().iter().all(|kv| kv.value().is_empty()));
        let g = c
            .get(
                "/r/",
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .unwrap();
        assert_eq!((g.count(), g.kvs().len()), (3, 0));
        let g = c
            .get(
                "/r/",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_min_mod_revision(base + 2),
                ),
            )
            .await
            .unwrap();
        assert_eq!(g.kvs().len(), 2);
        // An old revision reads as it was.
        let g = c
            .get("/r/a", Some(GetOptions::new().with_revision(base)))
            .await
            .unwrap();
        assert_eq!(g.kvs()[0].value(), b"1");

        let d = c
            .delete(
                "/r/",
                Some(DeleteOptions::new().with_prefix().with_prev_key()),
            )
            .await
            .unwrap();
        assert_eq!((d.deleted(), d.prev_kvs().len()), (3, 3));
        assert_eq!(
            c.get("/r/", Some(GetOptions::new().with_prefix()))
                .await
                .unwrap()
                .count(),
            0
        );

        c.compact(base + 2, None).await.unwrap();
        let e = c
            .get("/r/a", Some(GetOptions::new().with_revision(base)))
            .await
            .unwrap_err();
        assert_eq!(
            status(e),
            (
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted".into()
            )
        );
        let e = c
            .get("/r/a", Some(GetOptions::new().with_revision(base + 1000)))
            .await
            .unwrap_err();
        assert_eq!(
            status(e),
            (
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision".into()
            )
        );
        let e = c.compact(base + 1, None).await.unwrap_err();
        assert_eq!(
            status(e).1,
            "etcdserver: mvcc: required revision has been compacted"
        );
        let e = c.put("", "v", None).await.unwrap_err();
        assert_eq!(
            status(e),
            (
                tonic::Code::InvalidArgument,
                "etcdserver: key is not provided".into()
            )
        );
    });
}

#[test]
fn transactions_compare_branch_and_nest() {
    both(|addr| async move {
        let mut c = connect(&addr).await;
        let create = |k: &str, v: &str| {
            Txn::new()
                .when([Compare::version(k, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(k, v, None)])
                .or_else([TxnOp::get(k, None)])
        };
        let t = c.txn(create("/lock", "me")).await.unwrap();
        assert!(t.succeeded());
        let t = c.txn(create("/lock", "you")).await.unwrap();
        assert!(!t.succeeded());
        match &t.op_responses()[0] {
            TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"me"),
            other => panic!("{other:?}"),
        }
        let rev = c.get("/lock", None).await.unwrap().kvs()[0].mod_revision();
        let t = c
            .txn(
                Txn::new()
                    .when([
                        Compare::mod_revision("/lock", CompareOp::Equal, rev),
                        Compare::value("/lock", CompareOp::Equal, "me"),
                        Compare::lease("/lock", CompareOp::Equal, 0),
                    ])
                    .and_then([
                        TxnOp::put("/lock", "released", None),
                        TxnOp::txn(
                            Txn::new()
                                .when([Compare::create_revision("/other", CompareOp::Greater, 0)])
                                .and_then([TxnOp::delete("/other", None)])
                                .or_else([TxnOp::put("/other", "made", None)]),
                        ),
                    ]),
            )
            .await
            .unwrap();
        assert!(t.succeeded());
        assert_eq!(
            t.header().unwrap().revision(),
            rev + 1,
            "one revision for the whole txn"
        );
        match &t.op_responses()[1] {
            TxnOpResponse::Txn(n) => assert!(!n.succeeded()),
            other => panic!("{other:?}"),
        }
        let other = c.get("/other", None).await.unwrap();
        assert_eq!(other.kvs()[0].mod_revision(), rev + 1);

        let e = c
            .txn(Txn::new().and_then([TxnOp::put("/d", "1", None), TxnOp::put("/d", "2", None)]))
            .await
            .unwrap_err();
        assert_eq!(
            status(e),
            (
                tonic::Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request".into()
            )
        );
        let ops: Vec<TxnOp> = (0..129)
            .map(|i| TxnOp::put(format!("/m{i}"), "v", None))
            .collect();
        let e = c.txn(Txn::new().and_then(ops)).await.unwrap_err();
        assert_eq!(
            status(e),
            (
                tonic::Code::InvalidArgument,
                "etcdserver: too many operations in txn request".into()
            )
        );
        let e = c
            .txn(Txn::new().and_then([TxnOp::put(
                "/l",
                "v",
                Some(PutOptions::new().with_lease(12345)),
            )]))
            .await
            .unwrap_err();
        assert_eq!(
            status(e),
            (
                tonic::Code::NotFound,
                "etcdserver: requested lease not found".into()
            )
        );
    });
}

#[test]
fn watches_share_a_stream_replay_history_filter_cancel_and_report_compaction() {
    both(|addr| async move {
        let mut c = connect(&addr).await;
        let start = c
            .put("/w/0", "old", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let mut w = c
            .watch(
                "/w/",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_prev_key()
                        .with_start_revision(start),
                ),
            )
            .await
            .unwrap();
        let created = w.message().await.unwrap().unwrap();
        assert!(created.created());
        let prefix_id = created.watch_id();
        let replay = w.message().await.unwrap().unwrap();
        assert_eq!(
            replay.events()[0].kv().unwrap().value(),
            b"old",
            "history from start_revision"
        );
        w.watch(
            "/w/1",
            Some(WatchOptions::new().with_filters([WatchFilterType::NoPut])),
        )
        .await
        .unwrap();
        let created = w.message().await.unwrap().unwrap();
        assert!(created.created());
        let key_id = created.watch_id();
        assert_ne!(key_id, prefix_id);

        c.put("/w/1", "a", None).await.unwrap();
        c.put("/w/1", "b", None).await.unwrap();
        c.delete("/w/1", None).await.unwrap();
        let mut prefix_events = Vec::new();
        let mut key_events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while prefix_events.len() < 3 || key_events.is_empty() {
            assert!(Instant::now() < deadline, "events missing");
            let r = tokio::time::timeout(Duration::from_secs(10), w.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            for e in r.events() {
                if r.watch_id() == prefix_id {
                    prefix_events.push((e.event_type(), e.prev_kv().map(|p| p.value().to_vec())));
                } else {
                    key_events.push(e.event_type());
                }
            }
        }
        assert_eq!(
            prefix_events,
            [
                (EventType::Put, None),
                (EventType::Put, Some(b"a".to_vec())),
                (EventType::Delete, Some(b"b".to_vec())),
            ]
        );
        assert_eq!(key_events, [EventType::Delete], "NOPUT filter");

        w.request_progress().await.unwrap();
        let p = w.message().await.unwrap().unwrap();
        assert_eq!((p.watch_id(), p.events().len()), (-1, 0));

        w.cancel(key_id).await.unwrap();
        let r = w.message().await.unwrap().unwrap();
        assert!(r.canceled());
        assert_eq!(r.watch_id(), key_id);

        let now = c
            .put("/w/2", "x", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let r = w.message().await.unwrap().unwrap();
        assert_eq!(r.events()[0].kv().unwrap().key(), b"/w/2");
        c.compact(now, None).await.unwrap();
        let mut old = c
            .watch(
                "/w/",
                Some(WatchOptions::new().with_prefix().with_start_revision(start)),
            )
            .await
            .unwrap();
        let mut got = None;
        while got.is_none() {
            let r = old.message().await.unwrap().unwrap();
            if r.canceled() {
                got = Some(r.compact_revision());
            }
        }
        assert_eq!(got, Some(now));
    });
}

#[test]
fn leases_grant_attach_keep_alive_expire_and_revoke() {
    both(|addr| async move {
        let mut c = connect(&addr).await;
        let g = c.lease_grant(30, None).await.unwrap();
        let id = g.id();
        assert_eq!(g.ttl(), 30);
        c.put("/leased/a", "1", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap();
        c.put("/leased/b", "2", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap();
        assert_eq!(c.get("/leased/a", None).await.unwrap().kvs()[0].lease(), id);
        let t = c
            .lease_time_to_live(
                id,
                Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
            )
            .await
            .unwrap();
        assert_eq!(t.granted_ttl(), 30);
        assert!((28..=30).contains(&t.ttl()), "ttl {}", t.ttl());
        // etcd keeps a lease's keys in a Go map: their order is unspecified.
        let mut keys = t.keys().to_vec();
        keys.sort();
        assert_eq!(keys, [b"/leased/a".to_vec(), b"/leased/b".to_vec()]);
        let (mut keeper, mut stream) = c.lease_keep_alive(id).await.unwrap();
        keeper.keep_alive().await.unwrap();
        let r = stream.message().await.unwrap().unwrap();
        assert_eq!((r.id(), r.ttl()), (id, 30));
        let leases = c.leases().await.unwrap();
        assert!(leases.leases().iter().any(|l| l.id() == id));
        c.lease_revoke(id).await.unwrap();
        assert_eq!(
            c.get("/leased/", Some(GetOptions::new().with_prefix()))
                .await
                .unwrap()
                .count(),
            0
        );
        // A lease that is gone answers TTL -1 (etcdctl: "already expired"), not an error.
        let t = c.lease_time_to_live(id, None).await.unwrap();
        assert_eq!((t.ttl(), t.granted_ttl()), (-1, 0));
        let e = c.lease_revoke(id).await.unwrap_err();
        assert_eq!(status(e).1, "etcdserver: requested lease not found");
        // A keep-alive of an unknown lease answers TTL 0, as etcd.
        keeper.keep_alive().await.unwrap();
        assert_eq!(stream.message().await.unwrap().unwrap().ttl(), 0);

        // Expiry: the shortest TTL is etcd's minimum (1.5 election timeouts, so 2 s here).
        let short = c.lease_grant(1, None).await.unwrap();
        assert_eq!(short.ttl(), 2);
        c.put(
            "/short",
            "v",
            Some(PutOptions::new().with_lease(short.id())),
        )
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.get("/short", None).await.unwrap().count() != 0 {
            assert!(Instant::now() < deadline, "leased key not expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let t = c.lease_time_to_live(short.id(), None).await.unwrap();
        assert_eq!(t.ttl(), -1);
        let g = c.lease_grant(9_000_000_001, None).await.unwrap_err();
        assert_eq!(
            status(g),
            (
                tonic::Code::OutOfRange,
                "etcdserver: too large lease TTL".into()
            )
        );
    });
}

#[test]
fn a_watcher_that_does_not_read_loses_no_event() {
    // Ours only: the point is our hub's overflow path (a stream that lags is resynced from the history).
    let s = Ours::start();
    rt().block_on(async {
        let c = connect(&s.addr).await;
        let mut w = c
            .clone()
            .watch("/lag/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        assert!(w.message().await.unwrap().unwrap().created());
        // Far more revisions than the stream's buffers hold, while nobody reads the watch.
        let writers: Vec<_> = (0..8)
            .map(|t| {
                let mut c = c.clone();
                tokio::spawn(async move {
                    for i in 0..500 {
                        c.put(format!("/lag/{t}/{i}"), "v", None).await.unwrap();
                    }
                })
            })
            .collect();
        for wr in writers {
            wr.await.unwrap();
        }
        let mut revs = Vec::new();
        while revs.len() < 4000 {
            let r = tokio::time::timeout(Duration::from_secs(10), w.message())
                .await
                .expect("events stopped")
                .unwrap()
                .unwrap();
            assert!(!r.canceled(), "watch cancelled");
            revs.extend(r.events().iter().map(|e| e.kv().unwrap().mod_revision()));
        }
        assert_eq!(revs.len(), 4000);
        assert!(
            revs.windows(2).all(|p| p[0] < p[1]),
            "in order, no duplicates"
        );
    });
}

#[test]
fn a_new_leader_renews_leases_so_a_restart_never_shortens_them() {
    // Ours only: etcd does the same (its lessor refreshes leases on promotion), but its restart takes longer.
    let port = free_port();
    let server = Proc::ours_in(tempfile::tempdir().expect("tempdir"), port);
    let addr = server.addr.clone();
    let id = rt().block_on(async {
        let mut c = connect(&addr).await;
        let id = c.lease_grant(10, None).await.unwrap().id();
        c.put("/kept", "v", Some(PutOptions::new().with_lease(id)))
            .await
            .unwrap();
        // Let some of the TTL run out (poll the server's own countdown, no fixed sleep).
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.lease_time_to_live(id, None).await.unwrap().ttl() > 8 {
            assert!(Instant::now() < deadline, "lease countdown stuck");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        id
    });
    let dir = server.kill9();
    let _server = Proc::ours_in(dir, port);
    rt().block_on(async {
        let mut c = connect(&addr).await;
        // The restarted member is a new leader: every lease is renewed to its full TTL before it expires any.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let t = c.lease_time_to_live(id, None).await.unwrap();
            if t.ttl() >= 9 {
                break;
            }
            assert!(t.ttl() > 0, "lease lost across the restart");
            assert!(
                Instant::now() < deadline,
                "lease not renewed: ttl {}",
                t.ttl()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(c.get("/kept", None).await.unwrap().count(), 1);
    });
}

#[test]
fn periodic_auto_compaction_forgets_old_revisions() {
    let s = Ours::start_with("http://127.0.0.1:22380", |s| {
        s.auto_compaction = Some(etcd::config::AutoCompaction::Periodic(Duration::from_secs(
            1,
        )));
    });
    rt().block_on(async {
        let mut c = connect(&s.addr).await;
        let first = c
            .put("/ac", "1", None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        c.put("/ac", "2", None).await.unwrap();
        assert_eq!(
            c.get("/ac", Some(GetOptions::new().with_revision(first)))
                .await
                .unwrap()
                .kvs()[0]
                .value(),
            b"1"
        );
        // The leader compacts to the revision it saw a retention period ago; poll until it has.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match c
                .get("/ac", Some(GetOptions::new().with_revision(first)))
                .await
            {
                Err(e) => {
                    assert_eq!(
                        status(e).1,
                        "etcdserver: mvcc: required revision has been compacted"
                    );
                    break;
                }
                Ok(_) => {
                    assert!(Instant::now() < deadline, "never compacted");
                    c.put("/ac/tick", "x", None).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        assert_eq!(c.get("/ac", None).await.unwrap().kvs()[0].value(), b"2");
    });
}
