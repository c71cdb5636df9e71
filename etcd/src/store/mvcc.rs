//! The revisioned (v3) view of the keyspace, kept inside the same pure [`Store`] as the v2 tree.
//!
//! Every key is in the flat map `kvs` with etcd v3's metadata (create/mod revision, version, lease); every v2
//! file is also there under its path, and every v3 key that is a valid v2 file path is also in the tree. One
//! index counts both: the v2 index is the v3 revision. Leases (v3 grants and v2 TTLs) live here too.
//! See ARCHITECTURE.md "One keyspace" for the mapping.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse, compare,
    range_request, request_op, response_op,
};
use proto::mvccpb::{self, KeyValue, event::EventType};
use serde::{Deserialize, Serialize};

use super::event::{Action, Event, NodeView};
use super::history::Change;
use super::node::{self, Node};
use super::pb::Pb;
use super::{MAX_DEPTH, Store, path};

/// Lease ids given to v2 TTLs: `'v' '2'` in the top bytes, then a sequence number.
pub const V2_LEASE_BASE: i64 = 0x7632 << 48;

/// etcd's largest lease TTL (seconds).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// A v3 failure, with etcd 3.4's message (the gRPC status code is chosen in `v3/error.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum V3Error {
    /// A revision older than the compaction revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A revision newer than the store.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRev,
    /// No such lease.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// The lease id is taken.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// The TTL is above [`MAX_LEASE_TTL`].
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// `ignore_value`/`ignore_lease` on a missing key.
    #[error("etcdserver: key not found")]
    KeyNotFound,
}

/// One lease: a v3 grant, or the lease standing for a v2 TTL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Granted TTL (seconds).
    pub ttl: i64,
    /// Expiry time (unix ns).
    pub deadline: i64,
    /// The attached keys.
    pub keys: BTreeSet<LeaseKey>,
    /// A v2 TTL's lease: expired by the v2 sweep with its node, dropped when its key goes.
    pub v2: bool,
}

/// A key attached to a lease (base64 in snapshots).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaseKey(#[serde(with = "super::pb::b64")] pub Vec<u8>);

/// What a lease looks like to `LeaseTimeToLive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Granted TTL.
    pub granted: i64,
    /// Whole seconds left (-1 once due).
    pub remaining: i64,
    /// The attached keys.
    pub keys: Vec<Vec<u8>>,
}

/// The v3 state inside [`Store`].
#[derive(Debug, Clone, Default)]
pub struct Mvcc {
    pub(super) kvs: BTreeMap<Vec<u8>, KeyValue>,
    pub(super) leases: BTreeMap<i64, Lease>,
    /// (deadline, id) of v3 leases; v2 leases expire with their node.
    pub(super) due: BTreeSet<(i64, i64)>,
    pub(super) lease_seq: i64,
    /// The changes of the revision being applied.
    pub(super) pending_v2: Vec<Arc<Event>>,
    pub(super) pending_v3: Vec<Pb<mvccpb::Event>>,
}

/// The key range of a request: one key (`end` empty), every key from `key` (`end` = `\0`), or `[key, end)`.
type Span = (Bound<Vec<u8>>, Bound<Vec<u8>>);

fn bounds(key: &[u8], end: &[u8]) -> Option<Span> {
    if end.is_empty() {
        return Some((Bound::Included(key.to_vec()), Bound::Included(key.to_vec())));
    }
    if end == [0] {
        return Some((Bound::Included(key.to_vec()), Bound::Unbounded));
    }
    if key >= end {
        return None;
    }
    Some((Bound::Included(key.to_vec()), Bound::Excluded(end.to_vec())))
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

/// The v2 path a v3 key stands for, if it is one (rooted, clean, not the root, not too deep).
fn v2_path(key: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(key).ok()?;
    (s.starts_with('/')
        && s != "/"
        && path::clean(s) == s
        && path::components(s).count() <= MAX_DEPTH)
        .then_some(s)
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let ord = match c.target() {
        CompareTarget::Value => {
            let v: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        t => {
            let want = match (&c.target_union, t) {
                (Some(TargetUnion::Version(v)), CompareTarget::Version)
                | (Some(TargetUnion::CreateRevision(v)), CompareTarget::Create)
                | (Some(TargetUnion::ModRevision(v)), CompareTarget::Mod)
                | (Some(TargetUnion::Lease(v)), CompareTarget::Lease) => *v,
                _ => 0,
            };
            let have = match t {
                CompareTarget::Version => kv.version,
                CompareTarget::Create => kv.create_revision,
                CompareTarget::Mod => kv.mod_revision,
                _ => kv.lease,
            };
            have.cmp(&want)
        }
    };
    match c.result() {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

fn rev_i64(r: u64) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

fn header(rev: u64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision: rev_i64(rev),
        ..Default::default()
    })
}

impl Store {
    /// The current v3 value of `key`.
    pub fn kv(&self, key: &[u8]) -> Option<&KeyValue> {
        self.mvcc.kvs.get(key)
    }

    /// Every key of the v3 view with its metadata (for tests and hashes).
    pub fn kvs(&self) -> impl Iterator<Item = &KeyValue> {
        self.mvcc.kvs.values()
    }

    /// The compaction revision (0 when nothing was compacted).
    pub fn compacted(&self) -> u64 {
        self.history.start_index()
    }

    fn current_range(&self, key: &[u8], end: &[u8]) -> Vec<&KeyValue> {
        match bounds(key, end) {
            Some(b) => self.mvcc.kvs.range(b).map(|(_, v)| v).collect(),
            None => Vec::new(),
        }
    }

    /// The keys in range as of revision `rev` (`rev` >= the compaction revision): the current ones with every
    /// later change undone.
    fn range_at(&self, key: &[u8], end: &[u8], rev: u64) -> Vec<KeyValue> {
        let mut map: BTreeMap<Vec<u8>, KeyValue> = self
            .current_range(key, end)
            .into_iter()
            .map(|kv| (kv.key.clone(), kv.clone()))
            .collect();
        let undo = |map: &mut BTreeMap<Vec<u8>, KeyValue>, ev: &mvccpb::Event| {
            let Some(k) = ev.kv.as_ref().map(|kv| &kv.key) else {
                return;
            };
            if !in_range(k, key, end) {
                return;
            }
            match &ev.prev_kv {
                Some(p) => {
                    map.insert(k.clone(), p.clone());
                }
                None => {
                    map.remove(k);
                }
            }
        };
        for ev in self.mvcc.pending_v3.iter().rev() {
            undo(&mut map, ev);
        }
        for ch in self.history.since(rev + 1).rev() {
            for ev in ch.v3.iter().rev() {
                undo(&mut map, ev);
            }
        }
        map.into_values().collect()
    }

    /// Checks a read revision against the compaction revision and `current`.
    fn check_rev(&self, revision: i64, current: u64) -> Result<(), super::mvcc::V3Error> {
        if revision > rev_i64(current) {
            return Err(V3Error::FutureRev);
        }
        if revision > 0 && (revision as u64) < self.compacted() {
            return Err(V3Error::Compacted);
        }
        Ok(())
    }

    /// A v3 Range (outside a transaction: on the applied state).
    pub fn range(&self, r: &RangeRequest) -> Result<RangeResponse, V3Error> {
        self.range_in(r, self.index)
    }

    fn range_in(&self, r: &RangeRequest, current: u64) -> Result<RangeResponse, V3Error> {
        use range_request::{SortOrder, SortTarget};
        self.check_rev(r.revision, current)?;
        let mut kvs: Vec<KeyValue> = if r.revision > 0 && (r.revision as u64) < current {
            self.range_at(&r.key, &r.range_end, r.revision as u64)
        } else {
            self.current_range(&r.key, &r.range_end)
                .into_iter()
                .cloned()
                .collect()
        };
        let count = kvs.len() as i64;
        if r.count_only {
            return Ok(RangeResponse {
                header: header(current),
                kvs: Vec::new(),
                more: false,
                count,
            });
        }
        kvs.retain(|kv| {
            !(r.max_mod_revision != 0 && kv.mod_revision > r.max_mod_revision
                || r.min_mod_revision != 0 && kv.mod_revision < r.min_mod_revision
                || r.max_create_revision != 0 && kv.create_revision > r.max_create_revision
                || r.min_create_revision != 0 && kv.create_revision < r.min_create_revision)
        });
        let target = r.sort_target();
        let mut order = r.sort_order();
        if target != SortTarget::Key && order == SortOrder::None {
            order = SortOrder::Ascend;
        }
        if order != SortOrder::None {
            let by = |a: &KeyValue, b: &KeyValue| match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            // Stable both ways, so equal entries stay in key order (what etcd's sort shows for small results).
            if order == SortOrder::Descend {
                kvs.sort_by(|a, b| by(b, a));
            } else {
                kvs.sort_by(by);
            }
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse {
            header: header(current),
            kvs,
            more,
            count,
        })
    }

    fn compares(&self, cs: &[Compare]) -> bool {
        cs.iter().all(|c| {
            let kvs = self.current_range(&c.key, &c.range_end);
            if kvs.is_empty() {
                c.target() != compare::CompareTarget::Value && compare_kv(c, &KeyValue::default())
            } else {
                kvs.iter().all(|kv| compare_kv(c, kv))
            }
        })
    }

    /// etcd's `compareToPath`: every compare of the transaction and its nested ones, on the state before it.
    fn txn_path(&self, t: &TxnRequest, path: &mut Vec<bool>) {
        let ok = self.compares(&t.compare);
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let Some(request_op::Request::RequestTxn(n)) = &op.request {
                self.txn_path(n, path);
            }
        }
    }

    /// etcd's `checkRequests` along the chosen path: leases exist, ignored fields have a key, revisions are readable.
    fn txn_check(&self, t: &TxnRequest, path: &[bool], at: &mut usize) -> Result<(), V3Error> {
        let ok = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        for op in if ok { &t.success } else { &t.failure } {
            match &op.request {
                Some(request_op::Request::RequestPut(p)) => {
                    if p.lease != 0 && !self.mvcc.leases.contains_key(&p.lease) {
                        return Err(V3Error::LeaseNotFound);
                    }
                    if (p.ignore_value || p.ignore_lease) && !self.mvcc.kvs.contains_key(&p.key) {
                        return Err(V3Error::KeyNotFound);
                    }
                }
                Some(request_op::Request::RequestRange(r)) => {
                    self.check_rev(r.revision, self.index)?
                }
                Some(request_op::Request::RequestTxn(n)) => self.txn_check(n, path, at)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Applies a v3 transaction (Put and DeleteRange arrive as one-op transactions). All writes share one
    /// revision; no revision is used when nothing changed.
    pub(super) fn apply_txn(&mut self, t: &TxnRequest, now: i64) -> Result<TxnResponse, V3Error> {
        let mut path = Vec::new();
        self.txn_path(t, &mut path);
        self.txn_check(t, &path, &mut 0)?;
        let begin = self.index;
        let mut at = 0;
        let mut resp = self.exec_txn(t, &path, &mut at, begin, now);
        let rev = self.commit_pending(begin + 1);
        resp.header = header(rev);
        Ok(resp)
    }

    fn exec_txn(
        &mut self,
        t: &TxnRequest,
        path: &[bool],
        at: &mut usize,
        begin: u64,
        now: i64,
    ) -> TxnResponse {
        let ok = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        let mut responses = Vec::new();
        for op in if ok { &t.success } else { &t.failure } {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    let cur = self.txn_rev(begin);
                    let mut rr = self.range_in(r, cur).unwrap_or_default();
                    rr.header = header(cur);
                    Some(response_op::Response::ResponseRange(rr))
                }
                Some(request_op::Request::RequestPut(p)) => Some(
                    response_op::Response::ResponsePut(self.exec_put(p, begin + 1, now)),
                ),
                Some(request_op::Request::RequestDeleteRange(d)) => Some(
                    response_op::Response::ResponseDeleteRange(self.exec_delete(d, begin, now)),
                ),
                Some(request_op::Request::RequestTxn(n)) => {
                    let mut r = self.exec_txn(n, path, at, begin, now);
                    r.header = header(self.txn_rev(begin));
                    Some(response_op::Response::ResponseTxn(r))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        TxnResponse {
            header: None,
            succeeded: ok,
            responses,
        }
    }

    /// The revision a read inside a transaction sees: the next one once the transaction wrote.
    fn txn_rev(&self, begin: u64) -> u64 {
        if self.mvcc.pending_v3.is_empty() {
            begin
        } else {
            begin + 1
        }
    }

    fn exec_put(&mut self, p: &PutRequest, rev: u64, now: i64) -> PutResponse {
        let prev = self.mvcc.kvs.get(&p.key).cloned();
        let value = match (&prev, p.ignore_value) {
            (Some(kv), true) => kv.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(kv), true) => kv.lease,
            _ => p.lease,
        };
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(rev_i64(rev), |k| k.create_revision),
            mod_revision: rev_i64(rev),
            version: prev.as_ref().map_or(1, |k| k.version + 1),
            value,
            lease,
        };
        self.set_kv(kv.clone(), prev.clone());
        self.tree_put(&kv, rev, now);
        PutResponse {
            header: header(rev),
            prev_kv: if p.prev_kv { prev } else { None },
        }
    }

    fn exec_delete(&mut self, d: &DeleteRangeRequest, begin: u64, now: i64) -> DeleteRangeResponse {
        let keys: Vec<KeyValue> = self
            .current_range(&d.key, &d.range_end)
            .into_iter()
            .cloned()
            .collect();
        let rev = begin + 1;
        for kv in &keys {
            self.delete_kv(&kv.key, rev, Action::Delete, now);
        }
        DeleteRangeResponse {
            header: header(self.txn_rev(begin)),
            deleted: keys.len() as i64,
            prev_kvs: if d.prev_kv { keys } else { Vec::new() },
        }
    }

    /// Records the pending changes as revision `rev` (if there are any); returns the store revision.
    pub(super) fn commit_pending(&mut self, rev: u64) -> u64 {
        if self.mvcc.pending_v3.is_empty() && self.mvcc.pending_v2.is_empty() {
            return self.index;
        }
        self.index = rev;
        let ch = Change {
            rev,
            v2: std::mem::take(&mut self.mvcc.pending_v2),
            v3: std::mem::take(&mut self.mvcc.pending_v3),
        };
        let ch = Arc::new(ch);
        self.history.push(ch.clone());
        self.committed.push(ch);
        rev
    }

    /// Stores `kv`, moving the key between leases, and records the put event.
    fn set_kv(&mut self, kv: KeyValue, prev: Option<KeyValue>) {
        if let Some(p) = &prev
            && p.lease != kv.lease
        {
            self.detach_lease(&kv.key, p.lease);
        }
        if kv.lease != 0
            && let Some(l) = self.mvcc.leases.get_mut(&kv.lease)
        {
            l.keys.insert(LeaseKey(kv.key.clone()));
        }
        self.mvcc.kvs.insert(kv.key.clone(), kv.clone());
        self.mvcc.pending_v3.push(Pb(mvccpb::Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev,
        }));
    }

    fn detach_lease(&mut self, key: &[u8], id: i64) {
        if id == 0 {
            return;
        }
        let drop = match self.mvcc.leases.get_mut(&id) {
            Some(l) => {
                l.keys.remove(&LeaseKey(key.to_vec()));
                l.v2 && l.keys.is_empty()
            }
            None => false,
        };
        if drop {
            self.mvcc.leases.remove(&id);
        }
    }

    /// Removes a key from the v3 view (and the tree, if it is a v2 file there), recording the events.
    fn delete_kv(&mut self, key: &[u8], rev: u64, action: Action, now: i64) {
        self.mirror_delete(key, rev);
        if let Some(p) = v2_path(key)
            && self.lookup(p).is_ok_and(|n| !n.is_dir())
            && let Some(node) = self.detach(p)
        {
            self.mvcc.pending_v2.push(Arc::new(Event {
                action,
                node: Some(NodeView {
                    key: p.to_string(),
                    modified_index: rev,
                    created_index: node.created,
                    ..Default::default()
                }),
                prev_node: Some(node.repr(p, false, now)),
                refresh: false,
                etcd_index: rev,
            }));
        }
    }

    /// Mirrors a v3 put into the tree when the key is a v2 file path that fits the tree.
    fn tree_put(&mut self, kv: &KeyValue, rev: u64, now: i64) {
        let Some(key) = v2_path(&kv.key) else {
            return;
        };
        // Every parent must be a dir (or missing), and the key itself not a dir.
        let mut cur = &self.root;
        let comps: Vec<&str> = path::components(key).collect();
        for (i, c) in comps.iter().enumerate() {
            let Some(children) = cur.children() else {
                return;
            };
            match children.get(*c) {
                Some(n) if i + 1 == comps.len() && n.is_dir() => return,
                Some(n) => cur = n,
                None => break,
            }
        }
        let expire = self.mvcc.leases.get(&kv.lease).map(|l| l.deadline);
        let value = String::from_utf8_lossy(&kv.value).into_owned();
        let prev = self.lookup(key).ok().map(|n| n.repr(key, false, now));
        let mut d = &mut self.root;
        for c in &comps[..comps.len() - 1] {
            let Some(children) = d.children_mut() else {
                return;
            };
            d = children
                .entry((*c).to_string())
                .or_insert_with(|| Node::dir(rev, None));
        }
        let node = Node {
            created: kv.create_revision as u64,
            modified: rev,
            expire,
            kind: node::Kind::File(value),
        };
        let view = node.repr(key, false, now);
        let name = comps[comps.len() - 1].to_string();
        let old = d.children_mut().and_then(|c| c.insert(name, node.clone()));
        if let Some(old) = old {
            self.untrack(key, &old);
        }
        self.track(key, &node);
        self.mvcc.pending_v2.push(Arc::new(Event {
            action: Action::Set,
            node: Some(view),
            prev_node: prev,
            refresh: false,
            etcd_index: rev,
        }));
    }

    /// Mirrors a v2 file write into the v3 view. A v2 TTL becomes a fresh lease; a new `created` (v2 `set`
    /// replaces the node) restarts the version at 1.
    pub(super) fn mirror_put(
        &mut self,
        key: &str,
        value: &str,
        created: u64,
        rev: u64,
        expire: Option<i64>,
        now: i64,
    ) {
        let k = key.as_bytes().to_vec();
        let prev = self.mvcc.kvs.get(&k).cloned();
        let lease = match expire {
            Some(deadline) => {
                self.mvcc.lease_seq += 1;
                let id = V2_LEASE_BASE + self.mvcc.lease_seq;
                let ttl = (deadline.saturating_sub(now) + 999_999_999) / 1_000_000_000;
                self.mvcc.leases.insert(
                    id,
                    Lease {
                        ttl,
                        deadline,
                        keys: BTreeSet::new(),
                        v2: true,
                    },
                );
                id
            }
            None => 0,
        };
        let version = match &prev {
            Some(p) if p.create_revision == rev_i64(created) => p.version + 1,
            _ => 1,
        };
        let kv = KeyValue {
            key: k,
            create_revision: rev_i64(created),
            mod_revision: rev_i64(rev),
            version,
            value: value.as_bytes().to_vec(),
            lease,
        };
        self.set_kv(kv, prev);
    }

    /// Mirrors the removal of a key from the v3 view.
    pub(super) fn mirror_delete(&mut self, key: &[u8], rev: u64) {
        let Some(prev) = self.mvcc.kvs.remove(key) else {
            return;
        };
        self.detach_lease(key, prev.lease);
        self.mvcc.pending_v3.push(Pb(mvccpb::Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue {
                key: key.to_vec(),
                mod_revision: rev_i64(rev),
                ..Default::default()
            }),
            prev_kv: Some(prev),
        }));
    }

    /// Mirrors the removal of a v2 subtree: every file in it leaves the v3 view.
    pub(super) fn mirror_delete_tree(&mut self, key: &str, node: &Node, rev: u64) {
        let mut files = Vec::new();
        node.each_file(key, &mut |k| files.push(k.as_bytes().to_vec()));
        for f in files {
            self.mirror_delete(&f, rev);
        }
    }

    /// Grants a lease.
    pub(super) fn lease_grant(&mut self, id: i64, ttl: i64, now: i64) -> Result<(), V3Error> {
        if ttl > MAX_LEASE_TTL {
            return Err(V3Error::LeaseTtlTooLarge);
        }
        if self.mvcc.leases.contains_key(&id) {
            return Err(V3Error::LeaseExists);
        }
        let deadline = now.saturating_add(ttl.saturating_mul(1_000_000_000));
        self.mvcc.leases.insert(
            id,
            Lease {
                ttl,
                deadline,
                keys: BTreeSet::new(),
                v2: false,
            },
        );
        self.mvcc.due.insert((deadline, id));
        Ok(())
    }

    /// Revokes a lease, deleting its keys in one revision.
    pub(super) fn lease_revoke(
        &mut self,
        id: i64,
        action: Action,
        now: i64,
    ) -> Result<(), V3Error> {
        let Some(l) = self.mvcc.leases.get(&id) else {
            return Err(V3Error::LeaseNotFound);
        };
        let keys: Vec<Vec<u8>> = l.keys.iter().map(|k| k.0.clone()).collect();
        self.mvcc.due.remove(&(l.deadline, id));
        let rev = self.index + 1;
        for k in keys {
            self.delete_kv(&k, rev, action, now);
        }
        self.mvcc.leases.remove(&id);
        self.commit_pending(rev);
        Ok(())
    }

    /// Renews a lease to `now + ttl` (also the expiry of its keys in the tree); returns the TTL.
    pub(super) fn lease_renew(&mut self, id: i64, now: i64) -> Result<i64, V3Error> {
        let Some(l) = self.mvcc.leases.get_mut(&id) else {
            return Err(V3Error::LeaseNotFound);
        };
        let old = l.deadline;
        let deadline = now
            .saturating_add(l.ttl.saturating_mul(1_000_000_000))
            .max(old);
        l.deadline = deadline;
        let (ttl, v2) = (l.ttl, l.v2);
        let keys: Vec<Vec<u8>> = l.keys.iter().map(|k| k.0.clone()).collect();
        if !v2 {
            self.mvcc.due.remove(&(old, id));
            self.mvcc.due.insert((deadline, id));
        }
        for k in keys {
            if let Some(p) = v2_path(&k) {
                self.set_node_expire(p, Some(deadline));
            }
        }
        Ok(ttl)
    }

    /// Renews every v3 lease (a new leader does, so no lease expires early across a leader change).
    pub(super) fn lease_extend_all(&mut self, now: i64) {
        let ids: Vec<i64> = self
            .mvcc
            .leases
            .iter()
            .filter(|(_, l)| !l.v2)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let _ = self.lease_renew(id, now);
        }
    }

    fn set_node_expire(&mut self, key: &str, expire: Option<i64>) {
        let Some(old) = self.lookup_mut(key).map(|n| n.clone()) else {
            return;
        };
        if old.is_dir() {
            return;
        }
        self.untrack(key, &old);
        if let Some(n) = self.lookup_mut(key) {
            n.expire = expire;
        }
        let mut new = old;
        new.expire = expire;
        self.track(key, &new);
    }

    /// Revokes every v3 lease due at `now`, one revision each.
    pub(super) fn expire_leases(&mut self, now: i64) {
        while let Some(&(t, id)) = self.mvcc.due.first() {
            if t > now {
                break;
            }
            if self.lease_revoke(id, Action::Expire, now).is_err() {
                self.mvcc.due.remove(&(t, id));
            }
        }
    }

    /// The earliest v3 lease deadline.
    pub fn next_lease_expiry(&self) -> Option<i64> {
        self.mvcc.due.first().map(|(t, _)| *t)
    }

    /// `LeaseTimeToLive`: the lease's TTLs and keys.
    pub fn lease_info(&self, id: i64, now: i64) -> Option<LeaseInfo> {
        let l = self.mvcc.leases.get(&id)?;
        let left = l.deadline.saturating_sub(now);
        Some(LeaseInfo {
            granted: l.ttl,
            // Whole seconds left, truncated as etcd's `int64(Remaining().Seconds())`.
            remaining: if left <= 0 { -1 } else { left / 1_000_000_000 },
            keys: l.keys.iter().map(|k| k.0.clone()).collect(),
        })
    }

    /// Every lease id.
    pub fn lease_ids(&self) -> Vec<i64> {
        self.mvcc.leases.keys().copied().collect()
    }

    /// Whether a lease exists.
    pub fn has_lease(&self, id: i64) -> bool {
        self.mvcc.leases.contains_key(&id)
    }

    /// Compacts the history to `rev`.
    pub(super) fn compact(&mut self, rev: i64) -> Result<(), V3Error> {
        if rev > rev_i64(self.index) {
            return Err(V3Error::FutureRev);
        }
        if rev <= 0 || (rev as u64) <= self.compacted() {
            return Err(V3Error::Compacted);
        }
        self.history.compact(rev as u64);
        Ok(())
    }

    /// Derives the v3 view from the tree (snapshots written before it existed): every file becomes a key at its
    /// v2 indexes, and every file with a TTL gets its lease.
    pub(super) fn rebuild_v3_view(&mut self) {
        let mut files = Vec::new();
        self.root.each_file("/", &mut |k| files.push(k.to_string()));
        for f in files {
            let Ok(n) = self.lookup(&f) else {
                continue;
            };
            let (created, modified, expire) = (n.created, n.modified, n.expire);
            let value = n.value().to_string();
            let now = expire.unwrap_or(0);
            self.mirror_put(&f, &value, created, modified, expire, now);
            if let Some(kv) = self.mvcc.kvs.get(f.as_bytes())
                && let Some(l) = self.mvcc.leases.get_mut(&kv.lease)
            {
                // The original TTL is unknown; what is left is the best estimate.
                l.ttl = l.ttl.max(1);
            }
        }
        self.mvcc.pending_v3.clear();
    }

    /// Checks that every v2 file is in the v3 view with the same revisions (for tests).
    pub fn check_views_agree(&self) -> Result<(), String> {
        let mut files = Vec::new();
        self.root.each_file("/", &mut |k| files.push(k.to_string()));
        for f in files {
            let n = self.lookup(&f).map_err(|e| e.to_string())?;
            let kv = self
                .kv(f.as_bytes())
                .ok_or_else(|| format!("v2 file {f} missing from the v3 view"))?;
            if kv.create_revision as u64 != n.created || kv.mod_revision as u64 != n.modified {
                return Err(format!(
                    "{f}: v2 created/modified {}/{} but v3 create/mod {}/{}",
                    n.created, n.modified, kv.create_revision, kv.mod_revision
                ));
            }
            if String::from_utf8_lossy(&kv.value) != n.value() {
                return Err(format!("{f}: values differ"));
            }
        }
        Ok(())
    }
}

/// Builds the one-op transaction a Put travels as.
pub fn put_txn(p: PutRequest) -> TxnRequest {
    TxnRequest {
        compare: Vec::new(),
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(p)),
        }],
        failure: Vec::new(),
    }
}

/// Builds the one-op transaction a DeleteRange travels as.
pub fn delete_txn(d: DeleteRangeRequest) -> TxnRequest {
    TxnRequest {
        compare: Vec::new(),
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(d)),
        }],
        failure: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proto::etcdserverpb::{RangeRequest, compare::CompareResult, compare::CompareTarget};

    use super::*;
    use crate::store::{Command, Op, V3Out};

    const NOW: i64 = 1_000_000_000_000;

    fn cmd(op: Op) -> Command {
        Command { now: NOW, op }
    }

    fn v2_set(s: &mut Store, key: &str, value: &str, ttl: Option<u64>) {
        let r = s.apply(&cmd(Op::Set {
            key: key.into(),
            value: value.into(),
            dir: false,
            ttl,
            refresh: false,
        }));
        assert!(matches!(r.reply, Some(Ok(_))), "{r:?}");
    }

    fn txn(s: &mut Store, t: TxnRequest) -> TxnResponse {
        match s.apply(&cmd(Op::Txn(Pb(t)))).v3.map(|r| r.result) {
            Some(Ok(V3Out::Txn(t))) => t.0,
            other => panic!("txn failed: {other:?}"),
        }
    }

    fn put(s: &mut Store, key: &str, value: &str, lease: i64) -> PutResponse {
        let t = txn(
            s,
            put_txn(PutRequest {
                key: key.into(),
                value: value.into(),
                lease,
                prev_kv: true,
                ..Default::default()
            }),
        );
        match t.responses.into_iter().next().and_then(|r| r.response) {
            Some(response_op::Response::ResponsePut(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    fn get(s: &Store, key: &str, end: &str, revision: i64) -> Result<Vec<KeyValue>, V3Error> {
        s.range(&RangeRequest {
            key: key.into(),
            range_end: end.into(),
            revision,
            ..Default::default()
        })
        .map(|r| r.kvs)
    }

    #[test]
    fn v2_writes_carry_v3_revisions_and_versions() {
        let mut s = Store::default();
        v2_set(&mut s, "/a/b", "1", None);
        let kv = s.kv(b"/a/b").cloned().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 1, 1));
        let r = s.apply(&cmd(Op::Update {
            key: "/a/b".into(),
            value: "2".into(),
            ttl: None,
            refresh: false,
        }));
        assert!(matches!(r.reply, Some(Ok(_))));
        let kv = s.kv(b"/a/b").cloned().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 2, 2));
        // v2 `set` replaces the node: a new createdIndex, so a new v3 life.
        v2_set(&mut s, "/a/b", "3", None);
        let kv = s.kv(b"/a/b").cloned().unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (3, 3, 1));
        assert_eq!(kv.value, b"3");
        // Dirs are not keys in v3; a recursive delete removes every file below, in one revision.
        v2_set(&mut s, "/a/c/d", "4", None);
        let r = s.apply(&cmd(Op::Delete {
            key: "/a".into(),
            dir: true,
            recursive: true,
        }));
        assert!(matches!(r.reply, Some(Ok(_))));
        assert_eq!(r.changes.len(), 1);
        assert_eq!(r.changes[0].v3.len(), 2);
        assert_eq!(s.kvs().count(), 0);
        s.check_views_agree().unwrap();
    }

    #[test]
    fn v3_puts_reach_the_tree_only_for_v2_paths() {
        let mut s = Store::default();
        let p = put(&mut s, "/x/y", "v", 0);
        assert_eq!(p.header.unwrap().revision, 1);
        let ev = s.get("/x/y", false, NOW).unwrap();
        let node = ev.node.unwrap();
        assert_eq!(
            (
                node.value.as_deref(),
                node.created_index,
                node.modified_index
            ),
            (Some("v"), 1, 1)
        );
        put(&mut s, "foo", "bar", 0);
        put(&mut s, "/x", "shadow", 0); // /x is a v2 dir: v3 only
        put(&mut s, "/x/y", "w", 0);
        assert_eq!(
            s.get("/x/y", false, NOW)
                .unwrap()
                .node
                .unwrap()
                .created_index,
            1
        );
        assert_eq!(s.kv(b"/x/y").unwrap().version, 2);
        assert!(s.get("/foo", false, NOW).is_err());
        assert!(s.get("/x", false, NOW).unwrap().node.unwrap().dir);
        s.check_views_agree().unwrap();
        // A v3 delete of a prefix removes the v2 files (and tells v2 watchers).
        let t = txn(
            &mut s,
            delete_txn(DeleteRangeRequest {
                key: "/x".into(),
                range_end: "/y".into(),
                prev_kv: true,
            }),
        );
        let rev = t.header.unwrap().revision;
        assert_eq!(rev, 5);
        assert!(s.get("/x/y", false, NOW).is_err());
        assert!(s.get("/x", false, NOW).unwrap().node.unwrap().dir);
        let ch = s.history().since(5).next().cloned().unwrap();
        assert_eq!(ch.v2.len(), 1);
        assert_eq!(ch.v2[0].action, Action::Delete);
        assert_eq!(ch.v3.len(), 2);
        // Nothing deleted: no revision used.
        let t = txn(
            &mut s,
            delete_txn(DeleteRangeRequest {
                key: "/nothing".into(),
                ..Default::default()
            }),
        );
        assert_eq!(t.header.unwrap().revision, 5);
        assert_eq!(s.index(), 5);
    }

    #[test]
    fn transactions_compare_then_run_one_branch_at_one_revision() {
        let mut s = Store::default();
        put(&mut s, "k", "1", 0);
        let cmp = |target: CompareTarget, result: CompareResult, u: compare::TargetUnion| Compare {
            result: result as i32,
            target: target as i32,
            key: b"k".to_vec(),
            range_end: Vec::new(),
            target_union: Some(u),
        };
        let op_put = |k: &str| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: k.into(),
                value: b"x".to_vec(),
                ..Default::default()
            })),
        };
        let op_get = |k: &str| RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: k.into(),
                ..Default::default()
            })),
        };
        let t = txn(
            &mut s,
            TxnRequest {
                compare: vec![cmp(
                    CompareTarget::Value,
                    CompareResult::Equal,
                    compare::TargetUnion::Value(b"1".to_vec()),
                )],
                success: vec![op_put("a"), op_put("b"), op_get("a")],
                failure: vec![op_put("c")],
            },
        );
        assert!(t.succeeded);
        assert_eq!(t.header.unwrap().revision, 2);
        assert_eq!(s.kv(b"a").unwrap().mod_revision, 2);
        assert_eq!(s.kv(b"b").unwrap().mod_revision, 2);
        match &t.responses[2].response {
            Some(response_op::Response::ResponseRange(r)) => {
                assert_eq!(r.kvs.len(), 1, "a read in the txn sees its writes");
                assert_eq!(r.header.as_ref().unwrap().revision, 2);
            }
            other => panic!("{other:?}"),
        }
        let t = txn(
            &mut s,
            TxnRequest {
                compare: vec![cmp(
                    CompareTarget::Version,
                    CompareResult::Greater,
                    compare::TargetUnion::Version(5),
                )],
                success: vec![op_put("a")],
                failure: vec![RequestOp {
                    request: Some(request_op::Request::RequestTxn(TxnRequest {
                        compare: vec![cmp(
                            CompareTarget::Create,
                            CompareResult::Less,
                            compare::TargetUnion::CreateRevision(2),
                        )],
                        success: vec![op_put("nested")],
                        failure: Vec::new(),
                    })),
                }],
            },
        );
        assert!(!t.succeeded);
        assert!(s.kv(b"nested").is_some());
        assert!(s.kv(b"c").is_none());
        // A missing key compares as zero values, but never by value.
        let t = txn(
            &mut s,
            TxnRequest {
                compare: vec![Compare {
                    key: b"missing".to_vec(),
                    ..cmp(
                        CompareTarget::Mod,
                        CompareResult::Equal,
                        compare::TargetUnion::ModRevision(0),
                    )
                }],
                success: vec![op_get("missing")],
                failure: Vec::new(),
            },
        );
        assert!(t.succeeded);
        assert_eq!(
            t.header.unwrap().revision,
            3,
            "a read-only txn uses no revision"
        );
        // A put with an unknown lease fails as a whole.
        let r = s.apply(&cmd(Op::Txn(Pb(put_txn(PutRequest {
            key: b"z".to_vec(),
            lease: 42,
            ..Default::default()
        })))));
        assert_eq!(r.v3.unwrap().result.unwrap_err(), V3Error::LeaseNotFound);
    }

    #[test]
    fn old_revisions_until_compaction() {
        let mut s = Store::default();
        put(&mut s, "k", "1", 0);
        put(&mut s, "k", "2", 0);
        put(&mut s, "j", "3", 0);
        let t = txn(
            &mut s,
            delete_txn(DeleteRangeRequest {
                key: "k".into(),
                ..Default::default()
            }),
        );
        assert_eq!(t.header.unwrap().revision, 4);
        assert_eq!(get(&s, "k", "", 1).unwrap()[0].value, b"1");
        assert_eq!(get(&s, "k", "", 2).unwrap()[0].value, b"2");
        assert_eq!(get(&s, "a", "z", 3).unwrap().len(), 2);
        assert!(get(&s, "k", "", 0).unwrap().is_empty());
        assert_eq!(get(&s, "k", "", 5), Err(V3Error::FutureRev));
        let r = s.apply(&cmd(Op::Compact { revision: 3 }));
        assert!(r.v3.unwrap().result.is_ok());
        assert_eq!(get(&s, "k", "", 2), Err(V3Error::Compacted));
        assert_eq!(get(&s, "k", "", 3).unwrap()[0].value, b"2");
        let r = s.apply(&cmd(Op::Compact { revision: 3 }));
        assert_eq!(r.v3.unwrap().result.unwrap_err(), V3Error::Compacted);
        let r = s.apply(&cmd(Op::Compact { revision: 9 }));
        assert_eq!(r.v3.unwrap().result.unwrap_err(), V3Error::FutureRev);
        // v2 waitIndex reads the same history: older than the compaction is 401.
        assert!(s.history().scan("/", true, 2, s.index(), 10).is_err());
    }

    #[test]
    fn leases_expire_through_commands_and_show_as_v2_ttls() {
        let mut s = Store::default();
        assert!(
            s.apply(&cmd(Op::LeaseGrant { id: 7, ttl: 10 }))
                .v3
                .unwrap()
                .result
                .is_ok()
        );
        let r = s.apply(&cmd(Op::LeaseGrant { id: 7, ttl: 10 }));
        assert_eq!(r.v3.unwrap().result.unwrap_err(), V3Error::LeaseExists);
        put(&mut s, "/l/a", "1", 7);
        put(&mut s, "b", "2", 7);
        let node = s.get("/l/a", false, NOW).unwrap().node.unwrap();
        assert_eq!(node.ttl, 10);
        let info = s.lease_info(7, NOW + 4_000_000_000).unwrap();
        assert_eq!((info.granted, info.remaining, info.keys.len()), (10, 6, 2));
        assert_eq!(s.lease_info(7, NOW + 4_500_000_000).unwrap().remaining, 5);
        // Keep-alive moves the deadline of the lease and of its v2 node.
        let later = NOW + 5_000_000_000;
        s.apply(&Command {
            now: later,
            op: Op::LeaseKeepAlive { id: 7 },
        });
        assert_eq!(s.next_expiry(), Some(later + 10_000_000_000));
        let out = s.apply(&Command {
            now: later + 10_000_000_000,
            op: Op::ExpireDue,
        });
        assert_eq!(out.changes.len(), 1, "one revision for the lease's keys");
        assert_eq!(out.notify.len(), 1);
        assert_eq!(out.notify[0].action, Action::Expire);
        assert_eq!(s.kvs().count(), 0);
        assert!(!s.has_lease(7));
        assert_eq!(s.next_expiry(), None);
        // A v2 TTL is a lease a v3 reader can look up.
        v2_set(&mut s, "/t", "v", Some(30));
        let id = s.kv(b"/t").unwrap().lease;
        assert!(id > V2_LEASE_BASE);
        let info = s.lease_info(id, NOW).unwrap();
        assert_eq!((info.granted, info.keys), (30, vec![b"/t".to_vec()]));
        v2_set(&mut s, "/t", "permanent", None);
        assert!(!s.has_lease(id), "a v2 lease goes with its last key");
        s.check_views_agree().unwrap();
    }

    #[test]
    fn snapshots_keep_the_v3_view_and_leases() {
        let mut s = Store::default();
        s.apply(&cmd(Op::LeaseGrant { id: 3, ttl: 100 }));
        put(&mut s, "bin\u{0}ary", "v", 3);
        v2_set(&mut s, "/d/f", "x", Some(5));
        let bytes = serde_json::to_vec(&s).unwrap();
        let r: Store = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            r.kvs().cloned().collect::<Vec<_>>(),
            s.kvs().cloned().collect::<Vec<_>>()
        );
        assert_eq!(r.lease_ids(), s.lease_ids());
        assert_eq!(r.next_expiry(), s.next_expiry());
        assert_eq!(get(&r, "a", "z", 1).unwrap(), get(&s, "a", "z", 1).unwrap());
    }

    #[test]
    fn snapshots_from_before_the_v3_view_load_with_one() {
        let old = r#"{"index":5,"history":{"capacity":10,"start":0,"events":[
            {"action":"set","node":{"key":"/d/a","value":"v","modifiedIndex":5,"createdIndex":4}}]},
            "nodes":[{"key":"/d","created":4,"modified":4,"expire":null,"value":null},
                     {"key":"/d/a","created":4,"modified":5,"expire":2000000000000,"value":"v"}]}"#;
        let s: Store = serde_json::from_str(old).unwrap();
        let kv = s.kv(b"/d/a").unwrap();
        assert_eq!(
            (kv.create_revision, kv.mod_revision, &kv.value[..]),
            (4, 5, &b"v"[..])
        );
        assert!(s.has_lease(kv.lease));
        assert_eq!(s.history().scan("/d/a", false, 5, 5, 1).unwrap().len(), 1);
        s.check_views_agree().unwrap();
    }

    #[derive(Debug, Clone)]
    enum MOp {
        Put(u8, u8),
        Del(u8),
        DelRange(u8, u8),
        V2Set(u8, u8),
        V2Del(u8),
        Compact,
    }

    fn mop() -> impl Strategy<Value = MOp> {
        prop_oneof![
            (0u8..6, 0u8..4).prop_map(|(k, v)| MOp::Put(k, v)),
            (0u8..6).prop_map(MOp::Del),
            (0u8..6, 0u8..7).prop_map(|(a, b)| MOp::DelRange(a, b)),
            (0u8..6, 0u8..4).prop_map(|(k, v)| MOp::V2Set(k, v)),
            (0u8..6).prop_map(MOp::V2Del),
            Just(MOp::Compact),
        ]
    }

    fn key(k: u8) -> String {
        format!("/k{k}")
    }

    /// The model: per key (value, create, mod, version).
    type Model = BTreeMap<String, (String, i64, i64, i64)>;

    proptest! {
        #[test]
        fn mvcc_matches_a_model(ops in proptest::collection::vec(mop(), 1..50)) {
            let mut s = Store::default();
            let mut model = Model::new();
            let mut snapshots: Vec<(u64, Model)> = vec![(0, Model::new())];
            for op in ops {
                let rev = s.index() as i64 + 1;
                let mut wrote = true;
                match op {
                    MOp::Put(k, v) => {
                        put(&mut s, &key(k), &v.to_string(), 0);
                        let e = model.entry(key(k)).or_insert((String::new(), rev, 0, 0));
                        *e = (v.to_string(), e.1, rev, e.3 + 1);
                    }
                    MOp::Del(k) => {
                        txn(&mut s, delete_txn(DeleteRangeRequest { key: key(k).into(), ..Default::default() }));
                        wrote = model.remove(&key(k)).is_some();
                    }
                    MOp::DelRange(a, b) => {
                        txn(&mut s, delete_txn(DeleteRangeRequest {
                            key: key(a).into(), range_end: key(b).into(), ..Default::default()
                        }));
                        let gone: Vec<String> = model.keys().filter(|k| **k >= key(a) && **k < key(b)).cloned().collect();
                        wrote = !gone.is_empty();
                        for k in gone { model.remove(&k); }
                    }
                    MOp::V2Set(k, v) => {
                        v2_set(&mut s, &key(k), &v.to_string(), None);
                        model.insert(key(k), (v.to_string(), rev, rev, 1));
                    }
                    MOp::V2Del(k) => {
                        let r = s.apply(&cmd(Op::Delete { key: key(k), dir: false, recursive: false }));
                        wrote = model.remove(&key(k)).is_some();
                        prop_assert_eq!(matches!(r.reply, Some(Ok(_))), wrote);
                    }
                    MOp::Compact => {
                        let _ = s.apply(&cmd(Op::Compact { revision: s.index() as i64 }));
                        wrote = false;
                    }
                }
                prop_assert_eq!(s.index() as i64, if wrote { rev } else { rev - 1 });
                let got: Model = s.kvs().map(|kv| (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    (String::from_utf8_lossy(&kv.value).into_owned(), kv.create_revision, kv.mod_revision, kv.version),
                )).collect();
                prop_assert_eq!(&got, &model);
                prop_assert!(s.check_views_agree().is_ok(), "{:?}", s.check_views_agree());
                if wrote {
                    snapshots.push((s.index(), model.clone()));
                }
            }
            // Every revision since the compaction reads as it was.
            for (rev, m) in &snapshots {
                let r = get(&s, "/", "0", *rev as i64);
                if *rev == 0 || *rev < s.compacted() {
                    continue;
                }
                let kvs = r.unwrap();
                let got: Model = kvs.iter().map(|kv| (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    (String::from_utf8_lossy(&kv.value).into_owned(), kv.create_revision, kv.mod_revision, kv.version),
                )).collect();
                prop_assert_eq!(&got, m, "at revision {}", rev);
            }
        }
    }
}
