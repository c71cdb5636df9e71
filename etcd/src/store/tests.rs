//! Unit and property tests of the v2 store.

use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_700_000_000_000_000_000;

fn cmd(op: Op) -> Command {
    Command { now: NOW, op }
}

fn set(key: &str, value: &str) -> Op {
    Op::Set {
        key: key.into(),
        value: value.into(),
        dir: false,
        ttl: None,
        refresh: false,
    }
}

fn ok(s: &mut Store, op: Op) -> Arc<Event> {
    match s.apply(&cmd(op)).reply {
        Some(Ok(ev)) => ev,
        other => panic!("expected success, got {other:?}"),
    }
}

fn err(s: &mut Store, op: Op) -> Error {
    match s.apply(&cmd(op)).reply {
        Some(Err(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn set_then_replace_resets_created_index() {
    let mut s = Store::default();
    let a = ok(&mut s, set("/message", "Hello world"));
    assert_eq!(a.action, Action::Set);
    assert!(a.is_created());
    let b = ok(&mut s, set("/message", "two"));
    assert_eq!(
        b.to_json(),
        "{\"action\":\"set\",\"node\":{\"key\":\"/message\",\"value\":\"two\",\"modifiedIndex\":2,\"createdIndex\":2},\
         \"prevNode\":{\"key\":\"/message\",\"value\":\"Hello world\",\"modifiedIndex\":1,\"createdIndex\":1}}\n"
    );
    assert!(!b.is_created());
}

#[test]
fn implicit_parents_and_listing() {
    let mut s = Store::default();
    ok(&mut s, set("/d/x/y", "1"));
    ok(&mut s, set("/d/_hidden", "h"));
    let g = s.get("/d", false, NOW).unwrap();
    assert_eq!(
        serde_json::to_string(&g).unwrap(),
        "{\"action\":\"get\",\"node\":{\"key\":\"/d\",\"dir\":true,\"nodes\":[{\"key\":\"/d/x\",\"dir\":true,\"modifiedIndex\":1,\"createdIndex\":1}],\"modifiedIndex\":1,\"createdIndex\":1}}"
    );
    let g = s.get("/", true, NOW).unwrap();
    assert_eq!(
        serde_json::to_string(&g).unwrap(),
        "{\"action\":\"get\",\"node\":{\"dir\":true,\"nodes\":[{\"key\":\"/d\",\"dir\":true,\"nodes\":[{\"key\":\"/d/x\",\"dir\":true,\"nodes\":[{\"key\":\"/d/x/y\",\"value\":\"1\",\"modifiedIndex\":1,\"createdIndex\":1}],\"modifiedIndex\":1,\"createdIndex\":1}],\"modifiedIndex\":1,\"createdIndex\":1}]}}"
    );
    assert_eq!(
        s.get("/d/_hidden", false, NOW)
            .unwrap()
            .node
            .unwrap()
            .value
            .as_deref(),
        Some("h")
    );
}

#[test]
fn errors_carry_codes_and_causes() {
    let mut s = Store::default();
    ok(&mut s, set("/message", "v"));
    assert_eq!(
        s.get("/nope/x", false, NOW).unwrap_err(),
        Error::new(error::KEY_NOT_FOUND, "/nope", 1)
    );
    assert_eq!(
        err(&mut s, set("/message/child", "x")),
        Error::new(error::NOT_DIR, "/message", 1)
    );
    assert_eq!(
        s.get("/message/child", false, NOW).unwrap_err(),
        Error::new(error::NOT_DIR, "/message", 1)
    );
    assert_eq!(err(&mut s, set("/", "x")).code, error::ROOT_RONLY);
    let e = err(
        &mut s,
        Op::CompareAndSwap {
            key: "/message".into(),
            value: "n".into(),
            prev_value: "zz".into(),
            prev_index: 9,
            ttl: None,
            refresh: false,
        },
    );
    assert_eq!(e, Error::new(error::TEST_FAILED, "[zz != v] [9 != 1]", 1));
    let e = err(
        &mut s,
        Op::Create {
            key: "/message".into(),
            value: "n".into(),
            dir: false,
            ttl: None,
            unique: false,
        },
    );
    assert_eq!(e, Error::new(error::NODE_EXIST, "/message", 1));
    ok(&mut s, set("/dd/x", "1"));
    assert_eq!(
        err(
            &mut s,
            Op::Delete {
                key: "/dd".into(),
                dir: false,
                recursive: false
            }
        )
        .code,
        error::NOT_FILE
    );
    assert_eq!(
        err(
            &mut s,
            Op::Delete {
                key: "/dd".into(),
                dir: true,
                recursive: false
            }
        )
        .code,
        error::DIR_NOT_EMPTY
    );
    let d = ok(
        &mut s,
        Op::Delete {
            key: "/dd".into(),
            dir: false,
            recursive: true,
        },
    );
    assert_eq!(
        d.to_json(),
        "{\"action\":\"delete\",\"node\":{\"key\":\"/dd\",\"dir\":true,\"modifiedIndex\":3,\"createdIndex\":2},\"prevNode\":{\"key\":\"/dd\",\"dir\":true,\"modifiedIndex\":2,\"createdIndex\":2}}\n"
    );
}

#[test]
fn in_order_keys() {
    let mut s = Store::default();
    ok(&mut s, set("/x", "1"));
    let ev = ok(
        &mut s,
        Op::Create {
            key: "/queue".into(),
            value: "Job1".into(),
            dir: false,
            ttl: None,
            unique: true,
        },
    );
    assert_eq!(ev.key(), "/queue/00000000000000000002");
    assert!(ev.is_created());
    let e = err(
        &mut s,
        Op::Create {
            key: "/x".into(),
            value: "j".into(),
            dir: false,
            ttl: None,
            unique: true,
        },
    );
    assert_eq!(e, Error::new(error::NOT_DIR, "/x", 2));
}

#[test]
fn ttl_expiry_and_refresh() {
    let mut s = Store::default();
    let ev = ok(
        &mut s,
        Op::Set {
            key: "/t".into(),
            value: "v".into(),
            dir: false,
            ttl: Some(5),
            refresh: false,
        },
    );
    let n = ev.node.as_ref().unwrap();
    assert_eq!(n.ttl, 5);
    assert_eq!(n.expiration.as_deref(), Some("2023-11-14T22:13:25Z"));
    let r = ok(
        &mut s,
        Op::Update {
            key: "/t".into(),
            value: String::new(),
            ttl: Some(10),
            refresh: true,
        },
    );
    assert!(r.refresh);
    assert_eq!(r.node.as_ref().unwrap().value.as_deref(), Some("v"));
    // Nothing is due yet.
    assert!(
        s.apply(&Command {
            now: NOW + 9_000_000_000,
            op: Op::ExpireDue
        })
        .notify
        .is_empty()
    );
    let out = s.apply(&Command {
        now: NOW + 10_000_000_000,
        op: Op::ExpireDue,
    });
    assert_eq!(out.notify.len(), 1);
    assert_eq!(out.notify[0].action, Action::Expire);
    assert_eq!(out.notify[0].prev_node.as_ref().unwrap().ttl, 0);
    assert_eq!(s.index(), 3);
    assert_eq!(s.stats().expire_count, 1);
    assert!(s.get("/t", false, NOW).is_err());
    // Update without ttl makes a key permanent.
    ok(
        &mut s,
        Op::Set {
            key: "/p".into(),
            value: "v".into(),
            dir: false,
            ttl: Some(1),
            refresh: false,
        },
    );
    ok(
        &mut s,
        Op::Update {
            key: "/p".into(),
            value: "w".into(),
            ttl: None,
            refresh: false,
        },
    );
    assert_eq!(s.next_expiry(), None);
}

#[test]
fn history_scan_and_cleared() {
    let mut s = Store::new(3);
    for i in 0..5 {
        ok(&mut s, set(&format!("/k{i}"), "v"));
    }
    let e = s.history().scan("/k0", false, 1, s.index(), 1).unwrap_err();
    assert_eq!(
        e,
        Error::new(
            error::EVENT_INDEX_CLEARED,
            "the requested history has been cleared [3/1]",
            5
        )
    );
    let found = s.history().scan("/", true, 3, s.index(), 10).unwrap();
    assert_eq!(found.len(), 3);
}

#[tokio::test]
async fn watchers_see_matching_events() {
    let kv = Kv::new(Store::default());
    let mut plain = kv.watch("/w", false, false, 0).unwrap();
    let mut rec = kv.watch("/w", true, false, 0).unwrap();
    let mut below = kv.watch("/w/x/y", false, false, 0).unwrap();
    kv.apply(&cmd(set("/w/_h", "hidden")));
    kv.apply(&cmd(set("/w/x/y", "1")));
    let ev = rec.next().await.unwrap();
    assert_eq!(ev.key(), "/w/x/y");
    assert_eq!(below.next().await.unwrap().key(), "/w/x/y");
    let mut below = kv.watch("/w/x/y", false, false, 0).unwrap();
    kv.apply(&cmd(Op::Delete {
        key: "/w".into(),
        dir: true,
        recursive: true,
    }));
    assert_eq!(below.next().await.unwrap().key(), "/w");
    assert_eq!(plain.next().await.unwrap().action, Action::Delete);
    // waitIndex answers from the history at once.
    let mut past = kv.watch("/w/x/y", false, false, 1).unwrap();
    assert_eq!(past.next().await.unwrap().index(), 2);
    assert_eq!(kv.stats().watchers, 0);
}

#[test]
fn snapshots_round_trip_deep_trees() {
    let mut s = Store::default();
    let deep: String = (0..300).map(|i| format!("/d{i}")).collect();
    ok(&mut s, set(&deep, "bottom"));
    ok(
        &mut s,
        Op::Set {
            key: "/t/x".into(),
            value: "v".into(),
            dir: false,
            ttl: Some(60),
            refresh: false,
        },
    );
    ok(&mut s, set("/t/_h", "h"));
    let too_deep: String = (0..=MAX_DEPTH).map(|i| format!("/{i}")).collect();
    assert_eq!(err(&mut s, set(&too_deep, "x")).code, error::INVALID_FIELD);
    let bytes = serde_json::to_vec(&s).unwrap();
    let r: Store = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(r.index(), s.index());
    assert_eq!(r.next_expiry(), s.next_expiry());
    assert_eq!(
        r.get("/", true, NOW).unwrap(),
        s.get("/", true, NOW).unwrap()
    );
    assert_eq!(
        r.get(&deep, false, NOW)
            .unwrap()
            .node
            .unwrap()
            .value
            .as_deref(),
        Some("bottom")
    );
    assert_eq!(
        r.history().scan("/", true, 1, r.index(), 10).unwrap().len(),
        3
    );
}

#[derive(Debug, Clone)]
enum MOp {
    Set(usize, u8),
    Create(usize, u8),
    Update(usize, u8),
    Cas(usize, u8, u8),
    Delete(usize),
    Cad(usize, u8),
}

const KEYS: [&str; 3] = ["/a", "/b", "/c"];

fn mop() -> impl Strategy<Value = MOp> {
    prop_oneof![
        (0..3usize, 0..4u8).prop_map(|(k, v)| MOp::Set(k, v)),
        (0..3usize, 0..4u8).prop_map(|(k, v)| MOp::Create(k, v)),
        (0..3usize, 0..4u8).prop_map(|(k, v)| MOp::Update(k, v)),
        (0..3usize, 0..4u8, 0..4u8).prop_map(|(k, p, v)| MOp::Cas(k, p, v)),
        (0..3usize).prop_map(MOp::Delete),
        (0..3usize, 0..4u8).prop_map(|(k, p)| MOp::Cad(k, p)),
    ]
}

proptest! {
    #[test]
    fn store_matches_a_simple_model(ops in proptest::collection::vec(mop(), 1..60)) {
        let mut s = Store::default();
        // key -> (value, createdIndex, modifiedIndex)
        let mut model: std::collections::BTreeMap<&str, (String, u64, u64)> = Default::default();
        let mut index = 0u64;
        for op in ops {
            let (store_op, expect_ok) = match &op {
                MOp::Set(k, v) => (set(KEYS[*k], &v.to_string()), true),
                MOp::Create(k, v) => (Op::Create { key: KEYS[*k].into(), value: v.to_string(), dir: false, ttl: None, unique: false }, !model.contains_key(KEYS[*k])),
                MOp::Update(k, v) => (Op::Update { key: KEYS[*k].into(), value: v.to_string(), ttl: None, refresh: false }, model.contains_key(KEYS[*k])),
                MOp::Cas(k, p, v) => (Op::CompareAndSwap { key: KEYS[*k].into(), value: v.to_string(), prev_value: p.to_string(), prev_index: 0, ttl: None, refresh: false }, model.get(KEYS[*k]).is_some_and(|e| e.0 == p.to_string())),
                MOp::Delete(k) => (Op::Delete { key: KEYS[*k].into(), dir: false, recursive: false }, model.contains_key(KEYS[*k])),
                MOp::Cad(k, p) => (Op::CompareAndDelete { key: KEYS[*k].into(), prev_value: p.to_string(), prev_index: 0 }, model.get(KEYS[*k]).is_some_and(|e| e.0 == p.to_string())),
            };
            let reply = s.apply(&cmd(store_op)).reply.unwrap();
            prop_assert_eq!(reply.is_ok(), expect_ok, "{:?}", op);
            if expect_ok {
                index += 1;
                let ev = reply.unwrap();
                prop_assert_eq!(ev.index(), index);
                match op {
                    MOp::Set(k, v) | MOp::Create(k, v) => { model.insert(KEYS[k], (v.to_string(), index, index)); }
                    MOp::Update(k, v) | MOp::Cas(k, _, v) => {
                        let e = model.get_mut(KEYS[k]).unwrap();
                        e.0 = v.to_string();
                        e.2 = index;
                    }
                    MOp::Delete(k) | MOp::Cad(k, _) => { model.remove(KEYS[k]); }
                }
            }
            prop_assert_eq!(s.index(), index);
        }
        for k in KEYS {
            match (model.get(k), s.get(k, false, NOW)) {
                (Some((v, c, m)), Ok(ev)) => {
                    let n = ev.node.unwrap();
                    prop_assert_eq!(n.value.as_deref(), Some(v.as_str()));
                    prop_assert_eq!(n.created_index, *c);
                    prop_assert_eq!(n.modified_index, *m);
                }
                (None, Err(e)) => prop_assert_eq!(e.code, error::KEY_NOT_FOUND),
                (m, g) => prop_assert!(false, "model {:?} store {:?}", m, g),
            }
        }
    }
}
