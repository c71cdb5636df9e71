//! `proto::etcd::Client` against Debian's etcd 3.4 (the reference), run
//! inside a harness host so its fixed ports collide with nothing.

use integration::{Host, Network, Process, Spawn};
use proto::etcd::{Client, ClientError, WatchEvent};
use std::time::Duration;

/// A reference etcd 3.4 inside `host`, answering on 127.0.0.1:2379 there.
fn reference_etcd(host: &Host, data: &std::path::Path) -> Process {
    let mut etcd = host
        .spawn(
            Spawn::new("/usr/bin/etcd")
                .args(["--name", "ref", "--data-dir"])
                .arg(data)
                .args(["--listen-client-urls", "http://127.0.0.1:2379"])
                .args(["--advertise-client-urls", "http://127.0.0.1:2379"])
                .args(["--listen-peer-urls", "http://127.0.0.1:2380"]),
        )
        .expect("starting Debian's etcd (package etcd-server)");
    etcd.wait_for_output("ready to serve client requests", Duration::from_secs(30))
        .unwrap();
    etcd
}

/// Runs `body` on a current-thread runtime inside `host`, so the client's
/// sockets are opened in the host's network namespace.
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

#[test]
fn kv_txn_lease_and_watch_work_against_etcd_3_4() {
    let net = Network::new().unwrap();
    let host = net.add_host("ref").unwrap();
    let data = tempfile::tempdir().unwrap();
    let _etcd = reference_etcd(&host, &data.path().join("ref.etcd"));

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

        // Prefix reads are sorted and exclude the neighbours of the prefix.
        for key in ["/p/b", "/p/a", "/p0", "/o"] {
            client.put(key, key, 0).await.unwrap();
        }
        let (kvs, read_at) = client.get_prefix("/p/").await.unwrap();
        let keys: Vec<_> = kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect();
        assert_eq!(keys, ["/p/a", "/p/b"]);

        // A watch from the read revision sees later changes, in order.
        let mut watch = client.watch_prefix("/p/", read_at + 1).await.unwrap();
        client.put("/p/c", "1", 0).await.unwrap();
        client.put("/elsewhere", "x", 0).await.unwrap();
        client.delete("/p/a").await.unwrap();
        match watch.next().await.unwrap() {
            Some(WatchEvent::Put(kv)) => {
                assert_eq!((kv.key, kv.value), (b"/p/c".to_vec(), b"1".to_vec()))
            }
            other => panic!("expected a put of /p/c, got {other:?}"),
        }
        match watch.next().await.unwrap() {
            Some(WatchEvent::Delete(kv)) => assert_eq!(kv.key, b"/p/a"),
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

#[test]
fn a_watch_from_a_compacted_revision_is_refused_with_the_compaction_point() {
    let net = Network::new().unwrap();
    let host = net.add_host("ref").unwrap();
    let data = tempfile::tempdir().unwrap();
    let _etcd = reference_etcd(&host, &data.path().join("ref.etcd"));

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
        match refused {
            ClientError::WatchCancelled {
                compact_revision, ..
            } => assert_eq!(compact_revision, last),
            other => panic!("expected a cancelled watch, got {other}"),
        }
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
