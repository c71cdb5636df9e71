//! One keyspace, two APIs: writes through v2 are read and watched through v3 and the other way round; v2
//! TTLs are leases, v2 directories are key prefixes, and v2 `waitIndex` is served from the shared history.

use std::time::Duration;

use etcd_client::{Client, DeleteOptions, EventType, GetOptions, PutOptions, WatchOptions};
use serde_json::Value;

use crate::support::{Ours, req};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn json(r: &etcd::ctl::client::Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

async fn connect(s: &Ours) -> Client {
    Client::connect([format!("http://{}", s.addr)], None)
        .await
        .expect("connect")
}

#[test]
fn v2_writes_are_v3_keys_with_the_same_revisions_and_v3_watchers_see_them() {
    let s = Ours::start();
    rt().block_on(async {
        let mut c = connect(&s).await;
        let mut w = c
            .watch(
                "/coreos.com/",
                Some(WatchOptions::new().with_prefix().with_prev_key()),
            )
            .await
            .unwrap();
        assert!(w.message().await.unwrap().unwrap().created());
        let r = req(
            &s.addr,
            "PUT",
            "/v2/keys/coreos.com/network/config",
            Some("value={}"),
        );
        assert_eq!(r.status, 201);
        let node = &json(&r)["node"];
        let g = c.get("/coreos.com/network/config", None).await.unwrap();
        let kv = &g.kvs()[0];
        assert_eq!(kv.value(), b"{}");
        assert_eq!(kv.create_revision(), node["createdIndex"].as_i64().unwrap());
        assert_eq!(kv.mod_revision(), node["modifiedIndex"].as_i64().unwrap());
        assert_eq!(
            g.header().unwrap().revision(),
            node["modifiedIndex"].as_i64().unwrap(),
            "index = revision"
        );
        let ev = w.message().await.unwrap().unwrap();
        assert_eq!(ev.events()[0].event_type(), EventType::Put);
        assert_eq!(
            ev.events()[0].kv().unwrap().key(),
            b"/coreos.com/network/config"
        );

        // v2 update keeps createdIndex: v3 sees version 2; v2 delete is a v3 delete with the old value.
        req(
            &s.addr,
            "PUT",
            "/v2/keys/coreos.com/network/config?prevExist=true",
            Some("value=x"),
        );
        let kv = c
            .get("/coreos.com/network/config", None)
            .await
            .unwrap()
            .kvs()[0]
            .clone();
        assert_eq!((kv.version(), kv.value()), (2, &b"x"[..]));
        let ev = w.message().await.unwrap().unwrap();
        assert_eq!(ev.events()[0].prev_kv().unwrap().value(), b"{}");
        req(
            &s.addr,
            "DELETE",
            "/v2/keys/coreos.com/network/config",
            None,
        );
        let ev = w.message().await.unwrap().unwrap();
        assert_eq!(ev.events()[0].event_type(), EventType::Delete);
        assert_eq!(ev.events()[0].prev_kv().unwrap().value(), b"x");
        assert_eq!(
            c.get("/coreos.com/network/config", None)
                .await
                .unwrap()
                .count(),
            0
        );
    });
}

#[test]
fn v3_puts_are_v2_nodes_and_wake_v2_waiters() {
    let s = Ours::start();
    rt().block_on(async {
        let mut c = connect(&s).await;
        let index: u64 = req(&s.addr, "GET", "/v2/keys/", None)
            .header("x-etcd-index")
            .and_then(|v| v.parse().ok())
            .expect("x-etcd-index");
        // A v2 waiter on the next index, served from history or woken live, whichever comes first.
        let addr = s.addr.clone();
        let waiter = std::thread::spawn(move || {
            req(
                &addr,
                "GET",
                &format!("/v2/keys/m?wait=true&waitIndex={}", index + 1),
                None,
            )
        });
        let p = c.put("/m", "hello", None).await.unwrap();
        let rev = p.header().unwrap().revision();
        assert_eq!(rev as u64, index + 1);
        let woke = json(&waiter.join().expect("waiter"));
        assert_eq!(woke["action"], "set");
        assert_eq!(woke["node"]["value"], "hello");
        assert_eq!(woke["node"]["modifiedIndex"], rev);

        c.put("/m", "again", None).await.unwrap();
        let r = json(&req(&s.addr, "GET", "/v2/keys/m", None));
        assert_eq!(r["node"]["value"], "again");
        assert_eq!(
            r["node"]["createdIndex"], rev,
            "a v3 put keeps the creation revision"
        );
        assert_eq!(r["node"]["modifiedIndex"], rev + 1);

        // Keys that are not v2 paths exist only in v3.
        c.put("plain", "v", None).await.unwrap();
        c.put("/a//b", "v", None).await.unwrap();
        assert_eq!(req(&s.addr, "GET", "/v2/keys/plain", None).status, 404);
        assert_eq!(c.get("/a//b", None).await.unwrap().count(), 1);
        assert_eq!(req(&s.addr, "GET", "/v2/keys/a/b", None).status, 404);
        c.delete("/m", None).await.unwrap();
        assert_eq!(req(&s.addr, "GET", "/v2/keys/m", None).status, 404);
    });
}

#[test]
fn v2_ttls_are_leases_and_leases_are_v2_ttls() {
    let s = Ours::start();
    rt().block_on(async {
        let mut c = connect(&s).await;
        req(&s.addr, "PUT", "/v2/keys/ttl", Some("value=v&ttl=100"));
        let kv = c.get("/ttl", None).await.unwrap().kvs()[0].clone();
        assert_ne!(kv.lease(), 0, "a v2 TTL shows as a lease");
        let t = c
            .lease_time_to_live(
                kv.lease(),
                Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys()),
            )
            .await
            .unwrap();
        assert_eq!(t.granted_ttl(), 100);
        assert!((98..=100).contains(&t.ttl()), "ttl {}", t.ttl());
        assert_eq!(t.keys(), [b"/ttl".to_vec()]);

        let lease = c.lease_grant(50, None).await.unwrap().id();
        c.put("/leased", "v", Some(PutOptions::new().with_lease(lease)))
            .await
            .unwrap();
        let node = json(&req(&s.addr, "GET", "/v2/keys/leased", None))["node"].clone();
        assert!((48..=50).contains(&node["ttl"].as_i64().unwrap()), "{node}");
        assert!(node["expiration"].is_string());
        // Revoking the lease deletes the key for v2 too, and a v2 waiter hears of it.
        let index: u64 = req(&s.addr, "GET", "/v2/keys/", None)
            .header("x-etcd-index")
            .and_then(|v| v.parse().ok())
            .unwrap();
        c.lease_revoke(lease).await.unwrap();
        assert_eq!(req(&s.addr, "GET", "/v2/keys/leased", None).status, 404);
        let gone = json(&req(
            &s.addr,
            "GET",
            &format!("/v2/keys/leased?wait=true&waitIndex={}", index + 1),
            None,
        ));
        assert_eq!(gone["action"], "delete");

        // A v2 TTL expires for v3 readers as well.
        req(&s.addr, "PUT", "/v2/keys/short", Some("value=v&ttl=1"));
        assert_eq!(c.get("/short", None).await.unwrap().count(), 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while c.get("/short", None).await.unwrap().count() != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "v2 TTL did not expire"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn v2_directories_are_prefixes() {
    let s = Ours::start();
    rt().block_on(async {
        let mut c = connect(&s).await;
        req(&s.addr, "PUT", "/v2/keys/d?dir=true", None);
        req(&s.addr, "PUT", "/v2/keys/d/a", Some("value=1"));
        req(&s.addr, "PUT", "/v2/keys/d/e/b", Some("value=2"));
        req(&s.addr, "PUT", "/v2/keys/d/_hidden", Some("value=3"));
        let g = c
            .get("/d", Some(GetOptions::new().with_prefix()))
            .await
            .unwrap();
        let keys: Vec<&str> = g.kvs().iter().map(|kv| kv.key_str().unwrap()).collect();
        assert_eq!(
            keys,
            ["/d/_hidden", "/d/a", "/d/e/b"],
            "files only; dirs are not keys"
        );

        let mut w = c
            .watch("/d/", Some(WatchOptions::new().with_prefix()))
            .await
            .unwrap();
        assert!(w.message().await.unwrap().unwrap().created());
        let r = req(&s.addr, "DELETE", "/v2/keys/d/e?recursive=true", None);
        assert_eq!(r.status, 200);
        let ev = w.message().await.unwrap().unwrap();
        assert_eq!(ev.events().len(), 1);
        assert_eq!(ev.events()[0].kv().unwrap().key(), b"/d/e/b");

        // A v3 prefix delete empties the v2 dir but leaves it in place (dirs are v2 structure).
        let d = c
            .delete("/d/", Some(DeleteOptions::new().with_prefix()))
            .await
            .unwrap();
        assert_eq!(d.deleted(), 2);
        let dir = json(&req(&s.addr, "GET", "/v2/keys/d", None));
        assert_eq!(dir["node"]["dir"], true);
        assert!(dir["node"]["nodes"].is_null(), "{dir}");
        // A v3 put under a v2 file cannot be a v2 node: it stays v3-only.
        req(&s.addr, "PUT", "/v2/keys/f", Some("value=file"));
        c.put("/f/child", "v", None).await.unwrap();
        assert_eq!(c.get("/f/child", None).await.unwrap().count(), 1);
        assert_eq!(
            json(&req(&s.addr, "GET", "/v2/keys/f", None))["node"]["value"],
            "file"
        );
    });
}

#[test]
fn v2_wait_index_reaches_back_past_1000_events_until_compaction() {
    let s = Ours::start();
    let first =
        json(&req(&s.addr, "PUT", "/v2/keys/old", Some("value=0")))["node"]["modifiedIndex"]
            .as_u64()
            .unwrap();
    for i in 0..1500 {
        req(
            &s.addr,
            "PUT",
            &format!("/v2/keys/other{}", i % 10),
            Some("value=v"),
        );
    }
    let r = req(
        &s.addr,
        "GET",
        &format!("/v2/keys/old?wait=true&waitIndex={first}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["node"]["value"], "0");
    // After a v3 compaction past it, v2 answers etcd's 401.
    rt().block_on(async {
        let mut c = connect(&s).await;
        c.compact((first + 10) as i64, None).await.unwrap();
    });
    let r = req(
        &s.addr,
        "GET",
        &format!("/v2/keys/old?wait=true&waitIndex={first}"),
        None,
    );
    assert_eq!(r.status, 400);
    assert_eq!(json(&r)["errorCode"], 401);
    assert_eq!(
        json(&r)["message"],
        "The event in requested index is outdated and cleared"
    );
}
