//! Consensus: openraft's type configuration, storage adapters and the [`RaftNode`] the rest of the crate uses.
//!
//! openraft types stay inside this module; callers see store commands, events and etcd errors.

// openraft's trait methods dictate `StorageError` (large) as the error type; boxing is not an option.
#![allow(clippy::result_large_err)]

mod log_store;
mod network;
mod state_machine;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::storage::Backend;
use crate::store::{self, Command, Event, Kv, Op};

pub(crate) type NodeId = u64;

/// One raft entry: the writes accepted since the previous entry was proposed (group commit: one log
/// append and one flush for all of them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Proposal(pub Vec<Command>);

/// What applying one write returned (none for writes without a reply, like expiry sweeps).
pub type Outcome = Option<store::kv::Reply>;

/// What applying one entry returned: one outcome per command of the proposal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Reply(pub Vec<Outcome>);

openraft::declare_raft_types!(
    /// Our raft types.
    pub(crate) TypeConfig:
        D = Proposal,
        R = Reply,
);

/// The most writes one raft entry carries.
const MAX_BATCH: usize = 1024;

type Committed = Result<(Outcome, u64, u64), store::Error>;
type Pending = (Command, tokio::sync::oneshot::Sender<Committed>);

/// Raft entries proposed but not yet applied. Measured: 2 (overlapping one batch's flush with the previous
/// batch's apply) gave smaller batches, more flushes and ~25% less throughput than 1 on a 2-core VM.
const MAX_IN_FLIGHT: usize = 1;

/// Proposes one batch and hands each caller its outcome.
async fn propose_batch(
    raft: openraft::Raft<TypeConfig>,
    cmds: Vec<Command>,
    txs: Vec<tokio::sync::oneshot::Sender<Committed>>,
) {
    match raft.client_write(Proposal(cmds)).await {
        Ok(resp) => {
            let (index, term) = (resp.log_id.index, resp.log_id.leader_id.term);
            let mut outcomes = resp.data.0.into_iter();
            for tx in txs {
                let _ = tx.send(Ok((outcomes.next().flatten(), index, term)));
            }
        }
        Err(e) => {
            for tx in txs {
                let _ = tx.send(Err(store::Error::new(
                    store::error::RAFT_INTERNAL,
                    e.to_string(),
                    0,
                )));
            }
        }
    }
}

/// Proposes queued writes in batches (group commit); writes arriving meanwhile form the next batch.
async fn batcher(raft: openraft::Raft<TypeConfig>, mut rx: tokio::sync::mpsc::Receiver<Pending>) {
    use futures::StreamExt;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut open = true;
    loop {
        if open && in_flight.len() < MAX_IN_FLIGHT {
            let first = if in_flight.is_empty() {
                rx.recv().await
            } else {
                tokio::select! {
                    p = rx.recv() => p,
                    Some(()) = in_flight.next() => continue,
                }
            };
            let Some(first) = first else {
                open = false;
                continue;
            };
            let mut cmds = vec![first.0];
            let mut txs = vec![first.1];
            while cmds.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok((c, t)) => {
                        cmds.push(c);
                        txs.push(t);
                    }
                    Err(_) => break,
                }
            }
            in_flight.push(propose_batch(raft.clone(), cmds, txs));
            continue;
        }
        if in_flight.next().await.is_none() && !open {
            return;
        }
    }
}

/// Raft timing and snapshot settings.
#[derive(Debug, Clone)]
pub struct RaftParams {
    /// This member's id.
    pub id: u64,
    /// This member's first peer URL.
    pub peer_url: String,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout.
    pub election: Duration,
    /// Applied entries between snapshots.
    pub snapshot_count: u64,
}

/// Where the log and the applied state stand.
#[derive(Debug, Clone, Copy, Default)]
pub struct Status {
    /// The leader's id, if known.
    pub leader: Option<u64>,
    /// Whether this member leads.
    pub is_leader: bool,
    /// The current term.
    pub term: u64,
    /// The last applied raft index.
    pub applied: u64,
}

/// Why starting raft failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The stored snapshot is unreadable.
    #[error("loading the state machine: {0}")]
    Snapshot(String),
    /// openraft refused to start.
    #[error("starting raft: {0}")]
    Raft(String),
}

/// A write's result with the raft position it was committed at.
pub struct Written {
    /// The event.
    pub event: Arc<Event>,
    /// Raft index of the entry.
    pub raft_index: u64,
    /// Raft term of the entry.
    pub raft_term: u64,
}

/// How long a proposal may wait for commit before etcd's "request timed out".
const WRITE_TIMEOUT: Duration = Duration::from_secs(7);

/// A running raft member with its state machine.
#[derive(Clone)]
pub struct RaftNode {
    raft: openraft::Raft<TypeConfig>,
    kv: Arc<Kv>,
    fresh: bool,
    proposals: tokio::sync::mpsc::Sender<Pending>,
}

fn timed_out() -> store::Error {
    store::Error::new(
        store::error::RAFT_INTERNAL,
        "etcdserver: request timed out",
        0,
    )
}

impl RaftNode {
    /// Starts raft over `backend`, bootstrapping a one-member cluster on a fresh data dir.
    pub async fn start<B: Backend>(
        params: RaftParams,
        backend: Arc<B>,
        kv: Arc<Kv>,
    ) -> Result<Self, StartError> {
        let heartbeat = params.heartbeat.as_millis().max(1) as u64;
        let election = params.election.as_millis().max(heartbeat as u128 * 2) as u64;
        let config = Config {
            cluster_name: "etcd".into(),
            heartbeat_interval: heartbeat,
            election_timeout_min: election,
            election_timeout_max: election * 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(params.snapshot_count.max(1)),
            max_in_snapshot_log_to_keep: 1000,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| StartError::Raft(e.to_string()))?,
        );
        let log = log_store::LogStore::new(backend.clone());
        let sm =
            state_machine::StateMachine::open(kv.clone(), backend).map_err(StartError::Snapshot)?;
        let raft = openraft::Raft::new(params.id, config, network::Network, log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized {
            let mut members = BTreeMap::new();
            members.insert(
                params.id,
                BasicNode {
                    addr: params.peer_url.clone(),
                },
            );
            raft.initialize(members)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
        } else {
            // A lone voter need not wait out an election timeout after a restart.
            let voters = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .count();
            if voters == 1 {
                let _ = raft.trigger().elect().await;
            }
        }
        let (proposals, rx) = tokio::sync::mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(batcher(raft.clone(), rx));
        Ok(RaftNode {
            raft,
            kv,
            fresh: !initialized,
            proposals,
        })
    }

    /// Whether this start bootstrapped a new cluster.
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// The store this member applies to.
    pub fn kv(&self) -> &Arc<Kv> {
        &self.kv
    }

    /// Queues a command for the next raft entry and waits until it is applied.
    async fn propose(&self, op: Op) -> Committed {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cmd = Command {
            now: store::time::now_ns(),
            op,
        };
        self.proposals
            .send((cmd, tx))
            .await
            .map_err(|_| store::Error::new(store::error::RAFT_INTERNAL, "raft is stopped", 0))?;
        match tokio::time::timeout(WRITE_TIMEOUT, rx).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => Err(store::Error::new(
                store::error::RAFT_INTERNAL,
                "raft is stopped",
                0,
            )),
            Err(_) => Err(timed_out()),
        }
    }

    /// Proposes a v3 command and waits until it is applied; the outer error is raft's (or a timeout).
    pub async fn write_v3(&self, op: Op) -> Result<(store::V3Reply, u64), store::Error> {
        match self.propose(op).await? {
            (Some(store::kv::Reply::V3(r)), _, raft_term) => Ok((r, raft_term)),
            _ => Err(store::Error::new(
                store::error::RAFT_INTERNAL,
                "empty reply from the state machine",
                0,
            )),
        }
    }

    /// Renews every v3 lease (after this member became leader).
    pub async fn extend_leases(&self) -> Result<(), store::Error> {
        self.propose(Op::LeaseExtend).await.map(|_| ())
    }

    /// Proposes a write stamped with this member's clock and waits until it is applied.
    pub async fn write(&self, op: Op) -> Result<Written, store::Error> {
        match self.propose(op).await? {
            (Some(store::kv::Reply::V2(Ok(event))), raft_index, raft_term) => Ok(Written {
                event,
                raft_index,
                raft_term,
            }),
            (Some(store::kv::Reply::V2(Err(e))), _, _) => Err(e),
            (_, _, _) => Err(store::Error::new(
                store::error::RAFT_INTERNAL,
                "empty reply from the state machine",
                0,
            )),
        }
    }

    /// Records this member's start (etcd publishes member attributes, and on a new cluster the cluster
    /// version, through the store), waiting up to `timeout` for leadership.
    pub async fn publish(&self, fresh: bool, timeout: Duration) -> Result<(), store::Error> {
        if !self.wait_leader(timeout).await {
            return Err(store::Error::new(
                store::error::LEADER_ELECT,
                "no leader elected",
                0,
            ));
        }
        self.propose(Op::Internal {
            writes: if fresh { 2 } else { 1 },
        })
        .await
        .map(|_| ())
    }

    /// Removes expired keys through raft, so every member agrees on when they went.
    pub async fn expire_due(&self) -> Result<(), store::Error> {
        self.propose(Op::ExpireDue).await.map(|_| ())
    }

    /// Waits until this member may serve a linearizable read.
    pub async fn linearizable(&self) -> Result<(), store::Error> {
        let res = tokio::time::timeout(WRITE_TIMEOUT, self.raft.ensure_linearizable())
            .await
            .map_err(|_| timed_out())?;
        res.map(|_| ())
            .map_err(|e| store::Error::new(store::error::RAFT_INTERNAL, e.to_string(), 0))
    }

    /// The current leader, term and applied index.
    pub fn status(&self) -> Status {
        let m = self.raft.metrics();
        let m = m.borrow();
        Status {
            leader: m.current_leader,
            is_leader: m.current_leader == Some(m.id),
            term: m.current_term,
            applied: m.last_applied.map(|l| l.index).unwrap_or(0),
        }
    }

    /// Waits up to `timeout` for a leader to be known.
    pub async fn wait_leader(&self, timeout: Duration) -> bool {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if rx.borrow().current_leader.is_some() {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// Stops raft.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::StorageError;
    use openraft::testing::{StoreBuilder, Suite};
    use tempfile::TempDir;

    use super::log_store::LogStore;
    use super::state_machine::StateMachine;
    use super::{NodeId, TypeConfig};
    use crate::storage::SledBackend;
    use crate::store::{Kv, Store};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore<SledBackend>, StateMachine<SledBackend>, TempDir>
        for Builder
    {
        async fn build(
            &self,
        ) -> Result<(TempDir, LogStore<SledBackend>, StateMachine<SledBackend>), StorageError<NodeId>>
        {
            let dir = TempDir::new().map_err(|e| openraft::StorageIOError::write(&e))?;
            let backend = Arc::new(
                SledBackend::open(dir.path()).map_err(|e| openraft::StorageIOError::write(&e))?,
            );
            let sm = StateMachine::open(Kv::new(Store::default()), backend.clone())
                .map_err(|e| openraft::StorageIOError::write(&std::io::Error::other(e)))?;
            Ok((dir, LogStore::new(backend), sm))
        }
    }

    #[test]
    fn passes_openraft_storage_suite() {
        Suite::test_all(Builder).unwrap();
    }
}
