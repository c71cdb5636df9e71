//! The pure v2 state machine: the node tree, the global index, TTLs, CAS/CAD, in-order keys and the event history.
//!
//! Every change arrives as a [`Command`] stamped with the proposer's clock, so all members compute the same result.

pub mod auth;
pub mod error;
pub mod event;
pub mod history;
pub mod kv;
pub mod mvcc;
pub mod node;
pub mod path;
pub mod pb;
pub mod stats;
pub mod time;
pub mod watch;
pub mod watch_v3;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use error::Error;
pub use event::{Action, Event, NodeView};
pub use history::{Change, History};
pub use kv::{Kv, Watch};
pub use mvcc::V3Error;
use node::Node;
pub use pb::Pb;
pub use stats::Stats;

/// One write to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Create or replace (`PUT` without conditions).
    Set {
        /// The key.
        key: String,
        /// The value (ignored for dirs).
        value: String,
        /// Create a dir.
        dir: bool,
        /// TTL in seconds.
        ttl: Option<u64>,
        /// Only renew the TTL.
        refresh: bool,
    },
    /// Create only (`prevExist=false`, or `POST` with `unique`).
    Create {
        /// The key (the parent dir when `unique`).
        key: String,
        /// The value.
        value: String,
        /// Create a dir.
        dir: bool,
        /// TTL in seconds.
        ttl: Option<u64>,
        /// Append a 20-digit in-order name.
        unique: bool,
    },
    /// Replace only (`prevExist=true`).
    Update {
        /// The key.
        key: String,
        /// The new value.
        value: String,
        /// TTL in seconds (none makes the node permanent).
        ttl: Option<u64>,
        /// Only renew the TTL.
        refresh: bool,
    },
    /// Compare and swap.
    CompareAndSwap {
        /// The key.
        key: String,
        /// The new value.
        value: String,
        /// Expected value ("" = any).
        prev_value: String,
        /// Expected modifiedIndex (0 = any).
        prev_index: u64,
        /// TTL in seconds.
        ttl: Option<u64>,
        /// Only renew the TTL.
        refresh: bool,
    },
    /// Delete.
    Delete {
        /// The key.
        key: String,
        /// Allow removing an empty dir.
        dir: bool,
        /// Remove a dir and everything below.
        recursive: bool,
    },
    /// Compare and delete (files only).
    CompareAndDelete {
        /// The key.
        key: String,
        /// Expected value ("" = any).
        prev_value: String,
        /// Expected modifiedIndex (0 = any).
        prev_index: u64,
    },
    /// Remove every node whose expiry is at or before the command's time (etcd's `SYNC`).
    ExpireDue,
    /// A v3 transaction; Put and DeleteRange travel as one-op transactions.
    Txn(Pb<proto::etcdserverpb::TxnRequest>),
    /// Grants a v3 lease (the proposer picked the id and applied the minimum TTL).
    LeaseGrant {
        /// The lease id.
        id: i64,
        /// TTL in seconds.
        ttl: i64,
    },
    /// Revokes a lease and deletes its keys.
    LeaseRevoke {
        /// The lease id.
        id: i64,
    },
    /// Renews a lease to the command's time plus its TTL.
    LeaseKeepAlive {
        /// The lease id.
        id: i64,
    },
    /// Renews every v3 lease: proposed by a new leader, so leases never expire early across leader changes.
    LeaseExtend,
    /// Compacts the revision history.
    Compact {
        /// Every revision before this one is forgotten.
        revision: i64,
    },
    /// Cluster bookkeeping that etcd records in its hidden `/0` tree (member attributes, cluster version):
    /// it only advances the index, so indexes match etcd's.
    Internal {
        /// How many internal writes this stands for.
        writes: u64,
    },
    /// A member publishes its name and client URLs on start (etcd's `/0/members/<id>/attributes` write):
    /// one internal write here; the raft state machine records the attributes.
    Publish {
        /// The member id.
        member: u64,
        /// The member's name.
        name: String,
        /// The member's advertised client URLs.
        client_urls: Vec<String>,
    },
}

/// A write and the proposer's wall clock (unix ns), which decides expiry times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The proposer's clock when it accepted the request.
    pub now: i64,
    /// The write.
    pub op: Op,
}

/// What a v3 command returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum V3Out {
    /// A transaction's (or Put's, or DeleteRange's) response; the header carries only the revision.
    Txn(Pb<proto::etcdserverpb::TxnResponse>),
    /// A lease's TTL (grant, keep-alive).
    Lease {
        /// TTL in seconds.
        ttl: i64,
    },
    /// Done (revoke, compact, extend).
    Done,
}

/// A v3 command's result and the store revision after it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct V3Reply {
    /// The store revision after the command.
    pub revision: u64,
    /// The result.
    pub result: Result<V3Out, V3Error>,
}

/// What applying a command produced.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The reply of a v2 command: the event (none for `ExpireDue`) or the etcd error.
    pub reply: Option<Result<Arc<Event>, Error>>,
    /// The reply of a v3 command.
    pub v3: Option<V3Reply>,
    /// v2 events watchers must be told about, in order.
    pub notify: Vec<Arc<Event>>,
    /// The revisions the command made, in order (for v3 watchers).
    pub changes: Vec<Arc<Change>>,
}

/// The v2 store. It serialises flat (one record per node), so deep trees neither hit serde_json's
/// recursion limit nor the stack.
#[derive(Debug, Clone)]
pub struct Store {
    root: Node,
    index: u64,
    history: History,
    ttl: BTreeSet<(i64, String)>,
    stats: Stats,
    mvcc: mvcc::Mvcc,
    /// Changes committed by the command being applied.
    committed: Vec<Arc<Change>>,
}

/// The most components a key may have: bounds every recursion over the tree.
pub const MAX_DEPTH: usize = 1024;

/// One node in a snapshot, in pre-order (parents before children).
#[derive(Serialize, Deserialize)]
struct FlatNode {
    key: String,
    created: u64,
    modified: u64,
    expire: Option<i64>,
    /// The value of a file; none for a dir.
    value: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Image {
    index: u64,
    history: History,
    nodes: Vec<FlatNode>,
    #[serde(default)]
    kvs: Vec<Pb<proto::mvccpb::KeyValue>>,
    #[serde(default)]
    leases: Vec<(i64, mvcc::Lease)>,
    #[serde(default)]
    lease_seq: i64,
}

impl Serialize for Store {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut nodes = Vec::new();
        let mut stack: Vec<(String, &Node)> = vec![("/".to_string(), &self.root)];
        while let Some((key, n)) = stack.pop() {
            if key != "/" {
                nodes.push(FlatNode {
                    key: key.clone(),
                    created: n.created,
                    modified: n.modified,
                    expire: n.expire,
                    value: n.children().is_none().then(|| n.value().to_string()),
                });
            }
            if let Some(children) = n.children() {
                for (name, child) in children.iter().rev() {
                    stack.push((path::join(&key, name), child));
                }
            }
        }
        // Events are shared with the live history; serialise them by reference.
        #[derive(Serialize)]
        struct ImageRef<'a> {
            index: u64,
            history: &'a History,
            nodes: Vec<FlatNode>,
            kvs: Vec<Pb<proto::mvccpb::KeyValue>>,
            leases: Vec<(i64, &'a mvcc::Lease)>,
            lease_seq: i64,
        }
        ImageRef {
            index: self.index,
            history: &self.history,
            nodes,
            kvs: self.mvcc.kvs.values().map(|kv| Pb(kv.clone())).collect(),
            leases: self.mvcc.leases.iter().map(|(id, l)| (*id, l)).collect(),
            lease_seq: self.mvcc.lease_seq,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Store {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let img = Image::deserialize(d)?;
        let mut store = Store {
            index: img.index,
            history: img.history,
            ..Store::new(1)
        };
        for f in img.nodes {
            let split = f.key.rfind('/').unwrap_or(0);
            let parent = if split == 0 { "/" } else { &f.key[..split] };
            let name = f.key[split + 1..].to_string();
            let node = Node {
                created: f.created,
                modified: f.modified,
                expire: f.expire,
                kind: match f.value {
                    Some(v) => node::Kind::File(v),
                    None => node::Kind::Dir(Default::default()),
                },
            };
            if let Some(e) = node.expire {
                store.ttl.insert((e, f.key.clone()));
            }
            let Some(children) = store.lookup_mut(parent).and_then(Node::children_mut) else {
                return Err(serde::de::Error::custom(format!(
                    "snapshot node {} has no parent dir",
                    f.key
                )));
            };
            children.insert(name, node);
        }
        let upgrade = img.kvs.is_empty();
        for kv in img.kvs {
            store.mvcc.kvs.insert(kv.0.key.clone(), kv.0);
        }
        if upgrade {
            // A snapshot from before the v3 view: derive it from the tree.
            store.rebuild_v3_view();
        }
        for (id, l) in img.leases {
            if !l.v2 {
                store.mvcc.due.insert((l.deadline, id));
            }
            store.mvcc.leases.insert(id, l);
        }
        store.mvcc.lease_seq = img.lease_seq;
        Ok(store)
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new(history::DEFAULT_CAPACITY)
    }
}

fn ns_of(now: i64, ttl: Option<u64>) -> Option<i64> {
    ttl.map(|t| {
        now.saturating_add(
            i64::try_from(t)
                .unwrap_or(i64::MAX / 2)
                .saturating_mul(1_000_000_000),
        )
    })
}

impl Store {
    /// An empty store whose history keeps `history_capacity` events.
    pub fn new(history_capacity: usize) -> Self {
        Store {
            root: Node::dir(0, None),
            index: 0,
            history: History::new(history_capacity),
            ttl: BTreeSet::new(),
            stats: Stats::default(),
            mvcc: mvcc::Mvcc::default(),
            committed: Vec::new(),
        }
    }

    /// The current store index (`X-Etcd-Index`).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Raises the index without an event (used for internal cluster writes, like etcd's membership records).
    pub fn bump_index(&mut self) {
        self.index += 1;
    }

    /// The operation counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The event history.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The earliest expiry time of any node or v3 lease.
    pub fn next_expiry(&self) -> Option<i64> {
        let node = self.ttl.first().map(|(t, _)| *t);
        match (node, self.next_lease_expiry()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn lookup(&self, key: &str) -> Result<&Node, Error> {
        let mut cur = &self.root;
        let mut cur_key = String::from("/");
        for comp in path::components(key) {
            let Some(children) = cur.children() else {
                return Err(Error::new(error::NOT_DIR, cur_key, self.index));
            };
            let next_key = path::join(&cur_key, comp);
            match children.get(comp) {
                Some(n) => cur = n,
                None => return Err(Error::new(error::KEY_NOT_FOUND, next_key, self.index)),
            }
            cur_key = next_key;
        }
        Ok(cur)
    }

    fn lookup_mut(&mut self, key: &str) -> Option<&mut Node> {
        let mut cur = &mut self.root;
        for comp in path::components(key) {
            cur = cur.children_mut()?.get_mut(comp)?;
        }
        Some(cur)
    }

    /// A read (`GET`); `now` only decides the `ttl` shown.
    pub fn get(&self, key: &str, recursive: bool, now: i64) -> Result<Event, Error> {
        let key = path::clean(key);
        let n = self.lookup(&key)?;
        Ok(Event {
            action: Action::Get,
            node: Some(n.load(&key, recursive, now)),
            prev_node: None,
            refresh: false,
            etcd_index: self.index,
        })
    }

    /// Applies one command.
    pub fn apply(&mut self, cmd: &Command) -> Applied {
        let now = cmd.now;
        let mut out = Applied::default();
        let res = match &cmd.op {
            Op::Set {
                key,
                value,
                dir,
                ttl,
                refresh,
            } => {
                let r = self.set(key, value, *dir, ns_of(now, *ttl), *refresh, now);
                self.count(r.is_ok(), Action::Set);
                r
            }
            Op::Create {
                key,
                value,
                dir,
                ttl,
                unique,
            } => {
                let r = self.create(
                    key,
                    value,
                    *dir,
                    ns_of(now, *ttl),
                    *unique,
                    false,
                    Action::Create,
                    now,
                );
                self.count(r.is_ok(), Action::Create);
                r
            }
            Op::Update {
                key,
                value,
                ttl,
                refresh,
            } => {
                let r = self.update(key, value, ns_of(now, *ttl), *refresh, now);
                self.count(r.is_ok(), Action::Update);
                r
            }
            Op::CompareAndSwap {
                key,
                value,
                prev_value,
                prev_index,
                ttl,
                refresh,
            } => {
                let r = self.cas(
                    key,
                    value,
                    prev_value,
                    *prev_index,
                    ns_of(now, *ttl),
                    *refresh,
                    now,
                );
                self.count(r.is_ok(), Action::CompareAndSwap);
                r
            }
            Op::Delete {
                key,
                dir,
                recursive,
            } => {
                let r = self.delete(key, *dir, *recursive, now);
                self.count(r.is_ok(), Action::Delete);
                r
            }
            Op::CompareAndDelete {
                key,
                prev_value,
                prev_index,
            } => {
                let r = self.cad(key, prev_value, *prev_index, now);
                self.count(r.is_ok(), Action::CompareAndDelete);
                r
            }
            Op::ExpireDue => {
                self.expire_leases(now);
                self.expire_due(now);
                return self.finish(out);
            }
            Op::Internal { writes } => {
                self.index += writes;
                return out;
            }
            Op::Txn(t) => {
                let r = self.apply_txn(t, now).map(|t| V3Out::Txn(Pb(t)));
                return self.finish_v3(out, r);
            }
            Op::LeaseGrant { id, ttl } => {
                let r = self
                    .lease_grant(*id, *ttl, now)
                    .map(|_| V3Out::Lease { ttl: *ttl });
                return self.finish_v3(out, r);
            }
            Op::LeaseRevoke { id } => {
                let r = self
                    .lease_revoke(*id, Action::Delete, now)
                    .map(|_| V3Out::Done);
                return self.finish_v3(out, r);
            }
            Op::LeaseKeepAlive { id } => {
                let r = self.lease_renew(*id, now).map(|ttl| V3Out::Lease { ttl });
                return self.finish_v3(out, r);
            }
            Op::LeaseExtend => {
                self.lease_extend_all(now);
                return self.finish_v3(out, Ok(V3Out::Done));
            }
            Op::Compact { revision } => {
                let r = self.compact(*revision).map(|_| V3Out::Done);
                return self.finish_v3(out, r);
            }
            Op::Publish { .. } => {
                self.index += 1;
                return out;
            }
        };
        match res {
            Ok(ev) => {
                let ev = Arc::new(ev);
                self.mvcc.pending_v2.push(ev.clone());
                self.commit_pending(self.index);
                out.reply = Some(Ok(ev));
            }
            Err(e) => {
                self.mvcc.pending_v2.clear();
                self.mvcc.pending_v3.clear();
                out.reply = Some(Err(e));
            }
        }
        self.finish(out)
    }

    fn finish_v3(&mut self, mut out: Applied, result: Result<V3Out, V3Error>) -> Applied {
        out.v3 = Some(V3Reply {
            revision: self.index,
            result,
        });
        self.finish(out)
    }

    /// Hands the committed changes and the v2 events to notify to the caller.
    fn finish(&mut self, mut out: Applied) -> Applied {
        out.changes = std::mem::take(&mut self.committed);
        for ch in &out.changes {
            out.notify
                .extend(ch.v2.iter().filter(|e| !e.refresh).cloned());
        }
        out
    }

    fn count(&mut self, ok: bool, action: Action) {
        let s = &mut self.stats;
        let (succ, fail) = match action {
            Action::Set => (&mut s.sets_success, &mut s.sets_fail),
            Action::Create => (&mut s.create_success, &mut s.create_fail),
            Action::Update => (&mut s.update_success, &mut s.update_fail),
            Action::CompareAndSwap => (
                &mut s.compare_and_swap_success,
                &mut s.compare_and_swap_fail,
            ),
            Action::Delete => (&mut s.delete_success, &mut s.delete_fail),
            Action::CompareAndDelete => (
                &mut s.compare_and_delete_success,
                &mut s.compare_and_delete_fail,
            ),
            Action::Get | Action::Expire => return,
        };
        if ok {
            *succ += 1;
        } else {
            *fail += 1;
        }
    }

    fn track(&mut self, key: &str, node: &Node) {
        let ttl = &mut self.ttl;
        node.each_expiring(key, &mut |k, e| {
            ttl.insert((e, k.to_string()));
        });
    }

    fn untrack(&mut self, key: &str, node: &Node) {
        let ttl = &mut self.ttl;
        node.each_expiring(key, &mut |k, e| {
            ttl.remove(&(e, k.to_string()));
        });
    }

    /// Removes the node at `key` (which must exist) from its parent and from the TTL index.
    fn detach(&mut self, key: &str) -> Option<Node> {
        let (parent, name) = match key.rfind('/') {
            Some(i) => (if i == 0 { "/" } else { &key[..i] }, &key[i + 1..]),
            None => return None,
        };
        let node = self.lookup_mut(parent)?.children_mut()?.remove(name)?;
        self.untrack(key, &node);
        Some(node)
    }

    fn set(
        &mut self,
        key: &str,
        value: &str,
        dir: bool,
        expire: Option<i64>,
        refresh: bool,
        now: i64,
    ) -> Result<Event, Error> {
        let key = path::clean(key);
        let prev = match self.lookup(&key) {
            Ok(n) => Some(n),
            Err(e) if e.code == error::KEY_NOT_FOUND => None,
            Err(e) => return Err(e),
        };
        let prev_view = prev.map(|n| n.load(&key, false, now));
        let mut value = value.to_string();
        if refresh {
            match prev {
                Some(n) => value = n.value().to_string(),
                None => {
                    return Err(self.lookup(&key).err().unwrap_or_else(|| {
                        Error::new(error::KEY_NOT_FOUND, key.clone(), self.index)
                    }));
                }
            }
        }
        let mut ev = self.create(&key, &value, dir, expire, false, true, Action::Set, now)?;
        if prev_view.is_some() {
            ev.prev_node = prev_view;
        }
        ev.refresh = refresh;
        Ok(ev)
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        key: &str,
        value: &str,
        dir: bool,
        expire: Option<i64>,
        unique: bool,
        replace: bool,
        action: Action,
        now: i64,
    ) -> Result<Event, Error> {
        let cur = self.index;
        let next = cur + 1;
        let mut key = path::clean(key);
        if unique {
            key = path::join(&key, &format!("{next:020}"));
        }
        if key == "/" {
            return Err(Error::new(error::ROOT_RONLY, "/", cur));
        }
        if path::components(&key).count() > MAX_DEPTH {
            return Err(Error::new(
                error::INVALID_FIELD,
                format!("key has more than {MAX_DEPTH} components"),
                cur,
            ));
        }
        let split = key.rfind('/').unwrap_or(0);
        let (parent_key, name) = (&key[..split], key[split + 1..].to_string());
        // Walk to the parent, creating missing dirs (permanent, created at the next index).
        let mut d = &mut self.root;
        let mut d_key = String::from("/");
        for comp in path::components(parent_key) {
            let child_key = path::join(&d_key, comp);
            let Some(children) = d.children_mut() else {
                return Err(Error::new(error::NOT_DIR, d_key, cur));
            };
            let child = children
                .entry(comp.to_string())
                .or_insert_with(|| Node::dir(next, None));
            if !child.is_dir() {
                return Err(Error::new(error::NOT_DIR, child_key, cur));
            }
            d = child;
            d_key = child_key;
        }
        let mut prev_node = None;
        let existing = d.children().and_then(|c| c.get(&name));
        if let Some(n) = existing {
            if !replace {
                return Err(Error::new(error::NODE_EXIST, key, cur));
            }
            if n.is_dir() {
                return Err(Error::new(error::NOT_FILE, key, cur));
            }
            prev_node = Some(n.repr(&key, false, now));
        }
        let node = if dir {
            Node::dir(next, expire)
        } else {
            Node::file(value.to_string(), next, expire)
        };
        let mut view = node.repr(&key, false, now);
        view.nodes.clear();
        let old = d.children_mut().and_then(|c| c.insert(name, node.clone()));
        if let Some(old) = &old {
            self.untrack(&key, old);
        }
        self.track(&key, &node);
        if !dir {
            self.mirror_put(&key, value, next, next, expire, now);
        } else if old.is_some() {
            self.mirror_delete(key.as_bytes(), next);
        }
        self.index = next;
        Ok(Event {
            action,
            node: Some(view),
            prev_node,
            refresh: false,
            etcd_index: next,
        })
    }

    fn update(
        &mut self,
        key: &str,
        value: &str,
        expire: Option<i64>,
        refresh: bool,
        now: i64,
    ) -> Result<Event, Error> {
        let key = path::clean(key);
        let cur = self.index;
        let next = cur + 1;
        if key == "/" {
            return Err(Error::new(error::ROOT_RONLY, "/", cur));
        }
        let n = self.lookup(&key)?;
        if n.is_dir() && !value.is_empty() {
            return Err(Error::new(error::NOT_FILE, key, cur));
        }
        let prev = n.repr(&key, false, now);
        let old = n.clone();
        let created = n.created;
        self.untrack(&key, &old);
        let Some(n) = self.lookup_mut(&key) else {
            return Err(Error::new(error::KEY_NOT_FOUND, key, cur));
        };
        let mut view = NodeView {
            key: key.clone(),
            modified_index: next,
            created_index: created,
            ..Default::default()
        };
        match &mut n.kind {
            node::Kind::File(v) => {
                if !refresh {
                    *v = value.to_string();
                }
                n.modified = next;
                view.value = Some(v.clone());
            }
            // etcd leaves a dir's modifiedIndex alone on update; only the TTL changes.
            node::Kind::Dir(_) => view.dir = true,
        }
        n.expire = expire;
        if let Some(e) = expire {
            view.expiration = Some(time::rfc3339_nano(e));
            view.ttl = time::ttl_seconds(e, now);
        }
        let updated = n.clone();
        self.track(&key, &updated);
        if !updated.is_dir() {
            self.mirror_put(&key, updated.value(), created, next, expire, now);
        }
        self.index = next;
        Ok(Event {
            action: Action::Update,
            node: Some(view),
            prev_node: Some(prev),
            refresh,
            etcd_index: next,
        })
    }

    fn compare(n: &Node, prev_value: &str, prev_index: u64) -> Option<String> {
        let index_ok = prev_index == 0 || n.modified == prev_index;
        let value_ok = prev_value.is_empty() || n.value() == prev_value;
        match (value_ok, index_ok) {
            (true, true) => None,
            (true, false) => Some(format!("[{} != {}]", prev_index, n.modified)),
            (false, true) => Some(format!("[{} != {}]", prev_value, n.value())),
            (false, false) => Some(format!(
                "[{} != {}] [{} != {}]",
                prev_value,
                n.value(),
                prev_index,
                n.modified
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn cas(
        &mut self,
        key: &str,
        value: &str,
        prev_value: &str,
        prev_index: u64,
        expire: Option<i64>,
        refresh: bool,
        now: i64,
    ) -> Result<Event, Error> {
        let key = path::clean(key);
        let cur = self.index;
        if key == "/" {
            return Err(Error::new(error::ROOT_RONLY, "/", cur));
        }
        let n = self.lookup(&key)?;
        if n.is_dir() {
            return Err(Error::new(error::NOT_FILE, key, cur));
        }
        if let Some(cause) = Self::compare(n, prev_value, prev_index) {
            return Err(Error::new(error::TEST_FAILED, cause, cur));
        }
        let prev = n.repr(&key, false, now);
        let old = n.clone();
        self.untrack(&key, &old);
        let next = cur + 1;
        let Some(n) = self.lookup_mut(&key) else {
            return Err(Error::new(error::KEY_NOT_FOUND, key, cur));
        };
        let value = if refresh {
            n.value().to_string()
        } else {
            value.to_string()
        };
        n.kind = node::Kind::File(value.clone());
        n.modified = next;
        n.expire = expire;
        let updated = n.clone();
        let view = updated.repr(&key, false, now);
        self.track(&key, &updated);
        self.mirror_put(&key, &value, updated.created, next, expire, now);
        self.index = next;
        Ok(Event {
            action: Action::CompareAndSwap,
            node: Some(view),
            prev_node: Some(prev),
            refresh,
            etcd_index: next,
        })
    }

    fn delete(&mut self, key: &str, dir: bool, recursive: bool, now: i64) -> Result<Event, Error> {
        let key = path::clean(key);
        let cur = self.index;
        if key == "/" {
            return Err(Error::new(error::ROOT_RONLY, "/", cur));
        }
        let dir = dir || recursive;
        let n = self.lookup(&key)?;
        if n.is_dir() {
            if !dir {
                return Err(Error::new(error::NOT_FILE, key, cur));
            }
            if n.children().is_some_and(|c| !c.is_empty()) && !recursive {
                return Err(Error::new(error::DIR_NOT_EMPTY, key, cur));
            }
        }
        Ok(self.remove(&key, Action::Delete, now))
    }

    fn cad(
        &mut self,
        key: &str,
        prev_value: &str,
        prev_index: u64,
        now: i64,
    ) -> Result<Event, Error> {
        let key = path::clean(key);
        let cur = self.index;
        let n = self.lookup(&key)?;
        if n.is_dir() {
            return Err(Error::new(error::NOT_FILE, key, cur));
        }
        if let Some(cause) = Self::compare(n, prev_value, prev_index) {
            return Err(Error::new(error::TEST_FAILED, cause, cur));
        }
        Ok(self.remove(&key, Action::CompareAndDelete, now))
    }

    /// Removes an existing node (and its subtree) and returns the event, advancing the index.
    fn remove(&mut self, key: &str, action: Action, now: i64) -> Event {
        let next = self.index + 1;
        let node = self.detach(key);
        if let Some(n) = &node {
            self.mirror_delete_tree(key, n, next);
        }
        let (prev, created, dir) = match &node {
            Some(n) => (Some(n.repr(key, false, now)), n.created, n.is_dir()),
            None => (None, 0, false),
        };
        self.index = next;
        Event {
            action,
            node: Some(NodeView {
                key: key.to_string(),
                dir,
                modified_index: next,
                created_index: created,
                ..Default::default()
            }),
            prev_node: prev,
            refresh: false,
            etcd_index: next,
        }
    }

    fn expire_due(&mut self, now: i64) {
        while let Some((t, key)) = self.ttl.first().cloned() {
            if t > now {
                break;
            }
            if self.lookup(&key).is_err() {
                self.ttl.remove(&(t, key));
                continue;
            }
            let ev = Arc::new(self.remove(&key, Action::Expire, now));
            self.stats.expire_count += 1;
            self.mvcc.pending_v2.push(ev);
            self.commit_pending(self.index);
        }
    }
}

#[cfg(test)]
mod tests;
