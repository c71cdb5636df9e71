//! openraft's `RaftStateMachine`: applies committed commands to the v2 store; snapshots are the serialised store.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::members::{self, AttributeTable, Attributes, RemovedSet};
use super::{NodeId, Reply, TypeConfig};
use crate::storage::Backend;
use crate::store::{Kv, Op};

const SNAPSHOT_KEY: &str = "snapshot";

#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    meta: SnapshotMeta<NodeId, BasicNode>,
}

/// The applied state: the store (shared with the HTTP side) plus raft's bookkeeping.
pub struct StateMachine<B: Backend> {
    kv: Arc<Kv>,
    backend: Arc<B>,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    seq: u64,
    attrs: AttributeTable,
    removed: RemovedSet,
}

/// Builds a snapshot from a copy taken on the state machine's task.
pub struct SnapshotBuilder<B: Backend> {
    backend: Arc<B>,
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Result<Vec<u8>, String>,
}

fn encode(
    meta: &SnapshotMeta<NodeId, BasicNode>,
    data: &[u8],
) -> Result<Vec<u8>, serde_json::Error> {
    let header = serde_json::to_vec(&SnapshotHeader { meta: meta.clone() })?;
    let len = u32::try_from(header.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(4 + header.len() + data.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    Ok(out)
}

fn decode(blob: &[u8]) -> Option<(SnapshotMeta<NodeId, BasicNode>, &[u8])> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let header: SnapshotHeader = serde_json::from_slice(blob.get(4..4 + len)?).ok()?;
    Some((header.meta, blob.get(4 + len..)?))
}

impl<B: Backend> StateMachine<B> {
    /// Loads the last snapshot (if any) into `kv`.
    pub fn open(kv: Arc<Kv>, backend: Arc<B>) -> Result<Self, String> {
        let mut sm = StateMachine {
            kv,
            backend,
            applied: None,
            membership: StoredMembership::default(),
            seq: 0,
            attrs: AttributeTable::default(),
            removed: RemovedSet::default(),
        };
        if let Some(blob) = sm
            .backend
            .get_meta(SNAPSHOT_KEY)
            .map_err(|e| e.to_string())?
        {
            let (meta, data) = decode(&blob).ok_or("the stored snapshot cannot be decoded")?;
            let (attrs, data) = members::unpack_snapshot(data)?;
            sm.set_attributes(attrs);
            sm.kv
                .restore(data)
                .map_err(|e| format!("the stored snapshot cannot be decoded: {e}"))?;
            sm.applied = meta.last_log_id;
            sm.membership = meta.last_membership;
        }
        Ok(sm)
    }

    /// The replicated member attributes, shared with readers.
    pub fn attributes(&self) -> AttributeTable {
        self.attrs.clone()
    }

    /// The members seen removed, shared with the peers' side.
    pub fn removed(&self) -> RemovedSet {
        self.removed.clone()
    }

    fn set_attributes(&self, attrs: std::collections::BTreeMap<u64, Attributes>) {
        if let Ok(mut t) = self.attrs.write() {
            *t = attrs;
        }
    }
}

impl<B: Backend> RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder<B> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = self
            .data
            .clone()
            .map_err(|e| StorageIOError::read_state_machine(&std::io::Error::other(e)))?;
        let blob =
            encode(&self.meta, &data).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        self.backend
            .put_meta(SNAPSHOT_KEY, &blob)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        self.backend
            .flush()
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<B: Backend> RaftStateMachine<TypeConfig> for StateMachine<B> {
    type SnapshotBuilder = SnapshotBuilder<B>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            self.applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Reply(Vec::new())),
                EntryPayload::Normal(p) => {
                    for c in &p.0 {
                        if let Op::Publish {
                            member,
                            name,
                            client_urls,
                        } = &c.op
                            && let Ok(mut t) = self.attrs.write()
                        {
                            t.insert(
                                *member,
                                Attributes {
                                    name: name.clone(),
                                    client_urls: client_urls.clone(),
                                },
                            );
                        }
                    }
                    out.push(Reply(self.kv.apply_all(&p.0)))
                }
                EntryPayload::Membership(m) => {
                    // Recorded here, in log order on every member, rather than by watching metrics: a
                    // member that applies several changes between two looks would miss the removal.
                    let left: Vec<u64> = self
                        .membership
                        .membership()
                        .nodes()
                        .map(|(id, _)| *id)
                        .filter(|id| !m.nodes().any(|(n, _)| n == id))
                        .collect();
                    if let Ok(mut g) = self.removed.lock() {
                        g.extend(left);
                    }
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    // etcd records each membership change in its store, advancing the index.
                    self.kv.with_store_mut(|s| s.bump_index());
                    out.push(Reply(Vec::new()));
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.seq += 1;
        let snapshot_id = match self.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.seq),
            None => format!("--{}", self.seq),
        };
        SnapshotBuilder {
            backend: self.backend.clone(),
            meta: SnapshotMeta {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            data: self.kv.to_bytes().map_err(|e| e.to_string()).map(|store| {
                match self.attrs.read() {
                    Ok(a) => members::pack_snapshot(&a, &store),
                    Err(_) => store,
                }
            }),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let (attrs, store) = members::unpack_snapshot(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), &std::io::Error::other(e))
        })?;
        self.kv
            .restore(store)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.set_attributes(attrs);
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let blob = encode(meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.backend
            .put_meta(SNAPSHOT_KEY, &blob)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.backend
            .flush()
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let Some(blob) = self
            .backend
            .get_meta(SNAPSHOT_KEY)
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
        else {
            return Ok(None);
        };
        let Some((meta, data)) = decode(&blob) else {
            let e = std::io::Error::other("the stored snapshot cannot be decoded");
            return Err(StorageIOError::read_snapshot(None, &e).into());
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}
