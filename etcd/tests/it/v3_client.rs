//! The shared client library (`proto::etcd::Client`) against OUR server: the scenarios its own tests run
//! against Debian's etcd 3.4 (KV, CAS, txn, leases, resuming watches, compaction, list-and-watch).

use std::time::Duration;

use proto::etcd::{Client, ClientError, RetryPolicy, WatchEvent};

use crate::support::{Ours, Proc, free_port};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn key_of(event: &WatchEvent) -> String {
    String::from_utf8_lossy(&event.kv().key).into_owned()
}

#[test]
fn kv_cas_txn_lease_and_list_and_watch_work_against_ours() {
    let s = Ours::start();
    let endpoint = format!("http://{}", s.addr);
    rt().block_on(async {
        let client = Client::connect(&[endpoint.as_str()]).unwrap();
        let status = client.status().await.unwrap();
        assert!(status.version.starts_with("3.4"), "{}", status.version);
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

        assert!(client.create("/lock/holder", "a", 0).await.unwrap());
        assert!(!client.create("/lock/holder", "b", 0).await.unwrap());
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

        let lease = client.lease_grant(Duration::from_secs(30)).await.unwrap();
        client.put("/leased", "v", lease).await.unwrap();
        let ttl = client.lease_keep_alive(lease).await.unwrap();
        assert!((1..=30).contains(&ttl), "ttl {ttl}");
        client.lease_revoke(lease).await.unwrap();
        assert_eq!(client.get("/leased").await.unwrap(), None);
    });
}

#[test]
fn a_watch_resumes_across_a_crash_of_ours_without_losing_or_repeating_events() {
    let port = free_port();
    let server = Proc::ours_in(tempfile::tempdir().expect("tempdir"), port);
    let endpoint = format!("http://{}", server.addr);
    rt().block_on(async move {
        let client = Client::connect(&[endpoint.as_str()]).unwrap();
        let mut watch = client.watch_prefix("/w/", 0).await.unwrap();
        client.put("/w/1", "before", 0).await.unwrap();
        assert_eq!(key_of(&watch.next().await.unwrap()), "/w/1");
        let dir = server.kill9();
        let _server = Proc::ours_in(dir, port);
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

#[test]
fn a_watch_from_a_compacted_revision_reports_the_compaction_point() {
    let s = Ours::start();
    let endpoint = format!("http://{}", s.addr);
    rt().block_on(async {
        let client = Client::connect(&[endpoint.as_str()]).unwrap();
        for i in 0..5 {
            client.put("/k", i.to_string(), 0).await.unwrap();
        }
        let last = client.get("/k").await.unwrap().unwrap().mod_revision;
        let mut kv = proto::etcdserverpb::kv_client::KvClient::connect(endpoint.clone()).await.unwrap();
        kv.compact(proto::etcdserverpb::CompactionRequest { revision: last, physical: true })
            .await
            .unwrap();
        let refused = match client.watch_prefix("/k", 2).await {
            Err(e) => e,
            Ok(mut watch) => watch.next().await.expect_err("a watch before the compaction point"),
        };
        assert!(
            matches!(refused, ClientError::Compacted { compact_revision } if compact_revision == last),
            "{refused}"
        );
    });
}

#[test]
fn a_lease_keeper_outlives_its_ttl_on_ours_and_reports_loss() {
    let server = Proc::ours_in(tempfile::tempdir().expect("tempdir"), free_port());
    let endpoint = format!("http://{}", server.addr);
    rt().block_on(async move {
        let retry = RetryPolicy {
            deadline: Duration::from_secs(2),
            ..RetryPolicy::default()
        };
        let client = Client::with_retry(&[endpoint.as_str()], retry).unwrap();
        let keeper = client.lease_keeper(Duration::from_secs(2)).await.unwrap();
        client.put("/alive", "yes", keeper.id()).await.unwrap();
        // Three TTLs later the key is still there: the keeper renewed it (this loop is the observation
        // window, not synchronisation).
        let until = tokio::time::Instant::now() + Duration::from_secs(6);
        while tokio::time::Instant::now() < until {
            assert!(
                client.get("/alive").await.unwrap().is_some(),
                "lease expired while kept"
            );
            assert!(!keeper.is_lost());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let _dir = server.kill9();
        tokio::time::timeout(Duration::from_secs(10), keeper.lost())
            .await
            .expect("loss not reported");
        assert!(keeper.is_lost());
    });
}

#[test]
fn the_v3_load_generator_does_real_requests() {
    let s = Ours::start();
    let rt = rt();
    for (workload, requests, conns) in [
        ("v3-put", 100, 4),
        ("v3-range", 100, 4),
        ("watch-fanout", 50, 5),
    ] {
        let spec = etcd::bench::BenchSpec {
            addr: s.addr.clone(),
            workload: workload.into(),
            conns,
            requests,
            value_size: 16,
        };
        let res = rt.block_on(etcd::bench::run(spec)).expect("bench");
        let want = if workload == "watch-fanout" {
            20
        } else {
            requests
        };
        assert_eq!((res.requests, res.failures), (want, 0), "{workload}");
    }
    rt.block_on(async {
        let client = Client::connect(&[format!("http://{}", s.addr)]).unwrap();
        let (kvs, _) = client.get_prefix("/bench/").await.unwrap();
        assert_eq!(kvs.len(), 101, "100 distinct put keys plus the range key");
        assert_eq!(client.get("/fanout").await.unwrap().unwrap().version, 20);
    });
}
