//! Consensus: openraft's type configuration, storage adapters and the [`RaftNode`] the rest of the crate uses.
//!
//! openraft types stay inside this module; callers see store commands, events and etcd errors.

// openraft's trait methods dictate `StorageError` (large) as the error type; boxing is not an option.
#![allow(clippy::result_large_err)]

mod log_store;
pub mod members;
mod network;
mod peer_server;
mod removal;
mod state_machine;
mod watchdog;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers, Config, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::cluster::Member;
use crate::storage::Backend;
use crate::store::{self, Command, Event, Kv, Op};
pub use members::{Attributes, MemberError, MemberStatus};
use network::{CallError, PeerConn, Rpc};
pub use network::{FollowerStats, PeerClientTls, PeerStats};

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
/// batch's apply) gave smaller batches, more flushes and ~25% less throughput than 1 on a 2-core VM; again
/// with the flush on the core's thread: 2 gave 6–20% less at 16 connections, 10–15% more at 64.
const MAX_IN_FLIGHT: usize = 1;

/// Proposes one batch (on the leader, or forwarded to it) and hands each caller its outcome.
async fn propose_batch(
    router: Router,
    cmds: Vec<Command>,
    txs: Vec<tokio::sync::oneshot::Sender<Committed>>,
) {
    match router.submit(Proposal(cmds)).await {
        Ok((reply, index, term)) => {
            let mut outcomes = reply.0.into_iter();
            for tx in txs {
                let _ = tx.send(Ok((outcomes.next().flatten(), index, term)));
            }
        }
        Err(e) => {
            for tx in txs {
                let _ = tx.send(Err(e.clone()));
            }
        }
    }
}

/// Proposes queued writes in batches (group commit); writes arriving meanwhile form the next batch.
async fn batcher(raft: Router, mut rx: tokio::sync::mpsc::Receiver<Pending>) {
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

/// A proposal handed to the leader's merger, with where its outcome goes.
type LeaderWrite = (
    Proposal,
    tokio::sync::oneshot::Sender<Result<(Reply, u64, u64), Refused>>,
);

/// Merged entries proposed but not yet applied. Measured on a 3-member cluster (64 connections, one machine):
/// 2, with the batchers at 2 as well, gave no more writes per second than 1.
const MERGE_IN_FLIGHT: usize = 1;

/// On the leader: merges the batches of its own batcher and the batches forwarded by followers into one raft
/// entry per round, so a round costs the leader one log flush however many members its writes came through.
async fn merger(router: Router, mut rx: tokio::sync::mpsc::Receiver<LeaderWrite>) {
    use futures::StreamExt;
    // The queue's sender lives in `Shared`, which this task holds too: the stop token ends it.
    let stop = router.shared.stop.clone();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    loop {
        let first = if in_flight.len() < MERGE_IN_FLIGHT {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
                p = rx.recv() => match p {
                    Some(p) => p,
                    None => return,
                },
            }
        } else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = in_flight.next() => continue,
            }
        };
        let mut n = first.0.0.len();
        let mut parts = vec![first];
        while n < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => {
                    n += p.0.0.len();
                    parts.push(p);
                }
                Err(_) => break,
            }
        }
        in_flight.push(merged_write(router.clone(), parts, n));
    }
}

/// Proposes `parts` as one entry and hands each its share of the outcomes.
async fn merged_write(router: Router, parts: Vec<LeaderWrite>, n: usize) {
    let mut cmds = Vec::with_capacity(n);
    let mut lens = Vec::with_capacity(parts.len());
    let mut txs = Vec::with_capacity(parts.len());
    for (p, tx) in parts {
        lens.push(p.0.len());
        cmds.extend(p.0);
        txs.push(tx);
    }
    match router.raft_write(Proposal(cmds)).await {
        Ok((reply, index, term)) => {
            let mut outcomes = reply.0.into_iter();
            for (len, tx) in lens.into_iter().zip(txs) {
                let part = Reply(outcomes.by_ref().take(len).collect());
                let _ = tx.send(Ok((part, index, term)));
            }
        }
        Err(e) => {
            for tx in txs {
                let _ = tx.send(Err(e.clone()));
            }
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
    /// The cluster id.
    pub cluster_id: u64,
    /// The cluster token (runtime-added member ids derive from it).
    pub token: String,
    /// The members of `--initial-cluster` (id → peer URLs), for a new cluster.
    pub initial_members: BTreeMap<u64, Vec<String>>,
    /// Joining an existing cluster: wait to be added instead of initialising.
    pub join_existing: bool,
    /// Refuse membership changes that would leave fewer started members than a quorum.
    pub strict_reconfig: bool,
    /// The client side of peer TLS, for `https://` peers.
    pub peer_tls: network::PeerClientTls,
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
    router: Router,
}

/// What a follower needs to hand requests to the leader, and what the leader needs to serve them.
#[derive(Clone)]
pub(crate) struct Router {
    raft: openraft::Raft<TypeConfig>,
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    id: u64,
    cluster_id: u64,
    token: String,
    strict_reconfig: bool,
    election: Duration,
    attrs: members::AttributeTable,
    stats: Arc<PeerStats>,
    conns: std::sync::Mutex<HashMap<u64, PeerConn>>,
    /// For connections to `https://` peers.
    peer_tls: network::PeerClientTls,
    stop: tokio_util::sync::CancellationToken,
    /// Read-index requests of concurrent linearizable reads, served one round for all: on the leader
    /// (`get_read_log_id`) and towards the leader (`ReadIndex`).
    leader_reads: std::sync::OnceLock<ReadBatch>,
    remote_reads: std::sync::OnceLock<ReadBatch>,
    /// Learners added with `learner: true`, which wait for an explicit promotion. Kept by the leader that
    /// added them only: after a leader change they are promoted once caught up, like other learners.
    stay_learners: std::sync::Mutex<BTreeSet<u64>>,
    /// The last append-entries from a leader, for [`watchdog`].
    last_heard: watchdog::LastHeard,
    /// The [`merger`]'s queue.
    leader_writes: std::sync::OnceLock<tokio::sync::mpsc::Sender<LeaderWrite>>,
    /// Fired once this member finds itself removed from the cluster (see [`removal`]).
    removed: tokio_util::sync::CancellationToken,
    /// Members this member saw removed, whose peer requests it refuses (etcd's 410 to removed peers).
    gone: members::RemovedSet,
}

/// The leader's answer to a forwarded proposal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Forwarded {
    reply: Reply,
    index: u64,
    term: u64,
    /// Each event's `X-Etcd-Index` (not part of the event's serialised form).
    etcd_indexes: Vec<u64>,
}

type IndexReply = Result<u64, Refused>;

/// Coalesces concurrent read-index requests: every request queued while a round runs is answered by the next
/// round, which starts after it arrived, so the index is as fresh as a round of its own would give.
#[derive(Clone)]
pub(crate) struct ReadBatch(
    tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Sender<IndexReply>>,
);

impl ReadBatch {
    fn spawn<F, Fut>(stop: tokio_util::sync::CancellationToken, round: F) -> ReadBatch
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = IndexReply> + Send,
    {
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<tokio::sync::oneshot::Sender<IndexReply>>();
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    _ = stop.cancelled() => return,
                    w = rx.recv() => match w {
                        Some(w) => w,
                        None => return,
                    },
                };
                let mut waiters = vec![first];
                while let Ok(w) = rx.try_recv() {
                    waiters.push(w);
                }
                let res = round().await;
                for w in waiters {
                    let _ = w.send(res.clone());
                }
            }
        });
        ReadBatch(tx)
    }

    async fn get(&self) -> IndexReply {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.0.send(tx).is_err() {
            return Err(Refused::Failed(internal("raft is stopped")));
        }
        rx.await
            .unwrap_or_else(|_| Err(Refused::Failed(internal("raft is stopped"))))
    }
}

/// A follower's reply when a request must go to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Refused {
    /// This member is not the leader (the leader it knows, if any).
    NotLeader(Option<u64>),
    /// The request failed.
    Failed(store::Error),
}

fn timed_out() -> store::Error {
    store::Error::new(
        store::error::RAFT_INTERNAL,
        "etcdserver: request timed out",
        0,
    )
}

fn internal(e: impl std::fmt::Display) -> store::Error {
    store::Error::new(store::error::RAFT_INTERNAL, e.to_string(), 0)
}

/// How long a membership change may take.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A membership change as openraft takes it, and the member to answer with.
type Planned = (ChangeMembers<NodeId, BasicNode>, Member);

/// How far behind the leader's log a learner may be when it is promoted.
const PROMOTE_LAG: u64 = 100;

/// How often the leader checks whether a learner can be promoted.
const PROMOTE_TICK: Duration = Duration::from_millis(300);

impl Router {
    fn id(&self) -> u64 {
        self.shared.id
    }

    /// The peer URLs of a member, from the membership config.
    fn addr_of(&self, id: u64) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    fn conn(&self, id: u64) -> Option<PeerConn> {
        let addr = self.addr_of(id)?;
        let mut conns = self.shared.conns.lock().ok()?;
        let c = conns
            .entry(id)
            .or_insert_with(|| PeerConn::new(&addr, &self.shared.peer_tls))
            .clone();
        Some(c)
    }

    fn forget_conn(&self, id: u64) {
        if let Ok(mut c) = self.shared.conns.lock() {
            c.remove(&id);
        }
    }

    /// Waits until a leader is known or the deadline passes.
    async fn leader(&self, deadline: tokio::time::Instant) -> Option<u64> {
        let mut rx = self.raft.metrics();
        loop {
            if let Some(l) = rx.borrow().current_leader {
                return Some(l);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Gives raft a moment to learn about a new leader before a retry.
    async fn settle(&self, deadline: tokio::time::Instant) {
        let mut rx = self.raft.metrics();
        let until = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
        let _ = tokio::time::timeout_at(until, rx.changed()).await;
    }

    /// Proposes on the leader: locally if this member leads, otherwise through the leader's peer port.
    /// Retries only when the proposal cannot have been applied (no leader, not the leader, unreachable).
    async fn submit(&self, p: Proposal) -> Result<(Reply, u64, u64), store::Error> {
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        loop {
            let Some(leader) = self.leader(deadline).await else {
                return Err(timed_out());
            };
            let refused = if leader == self.id() {
                match self.local_write(p.clone()).await {
                    Ok(r) => return Ok(r),
                    Err(r) => r,
                }
            } else {
                let Some(mut conn) = self.conn(leader) else {
                    // The leader's address is not known here yet (a joining member).
                    if tokio::time::Instant::now() >= deadline {
                        return Err(timed_out());
                    }
                    self.settle(deadline).await;
                    continue;
                };
                let ttl = deadline.saturating_duration_since(tokio::time::Instant::now());
                let res: Result<Result<Forwarded, Refused>, CallError> =
                    conn.call(Rpc::Forward, &p, ttl).await;
                match res {
                    Ok(Ok(f)) => return self.forwarded(f, deadline).await,
                    Ok(Err(r)) => r,
                    Err(CallError::Unreachable { .. }) => {
                        self.forget_conn(leader);
                        Refused::NotLeader(None)
                    }
                    Err(e) => {
                        tracing::debug!("forwarding a write: {e}");
                        return Err(timed_out());
                    }
                }
            };
            match refused {
                Refused::Failed(e) => return Err(e),
                Refused::NotLeader(_) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(timed_out());
                    }
                    self.settle(deadline).await;
                }
            }
        }
    }

    /// A forwarded write's result, once this member has applied the entry too (so a read here sees it, as
    /// with etcd, where the proposing member replies after its own apply).
    async fn forwarded(
        &self,
        f: Forwarded,
        deadline: tokio::time::Instant,
    ) -> Result<(Reply, u64, u64), store::Error> {
        let Forwarded {
            mut reply,
            index,
            term,
            etcd_indexes,
        } = f;
        // The event's index is not serialised with it; the leader sends it alongside.
        for (outcome, ei) in reply.0.iter_mut().zip(etcd_indexes) {
            if let Some(store::kv::Reply::V2(Ok(ev))) = outcome {
                Arc::make_mut(ev).etcd_index = ei;
            }
        }
        let ttl = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.raft
            .wait(Some(ttl))
            .applied_index_at_least(Some(index), "forwarded write")
            .await
            .map_err(|_| timed_out())?;
        Ok((reply, index, term))
    }

    /// Proposes on this member for a follower, which must lead.
    pub(crate) async fn forward_target(&self, p: Proposal) -> Result<Forwarded, Refused> {
        let (reply, index, term) = self.local_write(p).await?;
        let etcd_indexes = reply
            .0
            .iter()
            .map(|o| match o {
                Some(store::kv::Reply::V2(Ok(ev))) => ev.etcd_index,
                _ => 0,
            })
            .collect();
        Ok(Forwarded {
            reply,
            index,
            term,
            etcd_indexes,
        })
    }

    /// Proposes on this member, which must lead, through the [`merger`].
    pub(crate) async fn local_write(&self, p: Proposal) -> Result<(Reply, u64, u64), Refused> {
        let stopped = || Refused::Failed(internal("raft is stopped"));
        let Some(queue) = self.shared.leader_writes.get() else {
            return self.raft_write(p).await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        queue.send((p, tx)).await.map_err(|_| stopped())?;
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Proposes one raft entry on this member, which must lead.
    async fn raft_write(&self, p: Proposal) -> Result<(Reply, u64, u64), Refused> {
        match self.raft.client_write(p).await {
            Ok(resp) => Ok((resp.data, resp.log_id.index, resp.log_id.leader_id.term)),
            Err(e) => match e.forward_to_leader() {
                Some(f) => Err(Refused::NotLeader(f.leader_id)),
                None => Err(Refused::Failed(internal(e))),
            },
        }
    }

    /// The read index on this member, which must lead (batched with concurrent requests).
    pub(crate) async fn local_read_index(&self) -> Result<u64, Refused> {
        match self.shared.leader_reads.get() {
            Some(b) => b.get().await,
            None => self.read_index_round().await,
        }
    }

    /// The read index from the leader (batched with concurrent requests).
    async fn remote_read_index(&self, deadline: tokio::time::Instant) -> Result<u64, Refused> {
        match self.shared.remote_reads.get() {
            Some(b) => b.get().await,
            None => self.remote_read_round(deadline).await,
        }
    }

    /// One read-index request to the current leader.
    async fn remote_read_round(&self, deadline: tokio::time::Instant) -> Result<u64, Refused> {
        let Some(leader) = self.leader(deadline).await else {
            return Err(Refused::NotLeader(None));
        };
        if leader == self.id() {
            return self.local_read_index().await;
        }
        let Some(mut conn) = self.conn(leader) else {
            // The leader's address is not known here yet (a joining member).
            return Err(Refused::NotLeader(None));
        };
        let ttl = deadline.saturating_duration_since(tokio::time::Instant::now());
        match conn
            .call::<_, Result<u64, Refused>>(Rpc::ReadIndex, &(), ttl)
            .await
        {
            Ok(r) => r,
            Err(CallError::Unreachable { .. }) => {
                self.forget_conn(leader);
                Err(Refused::NotLeader(None))
            }
            Err(e) => Err(Refused::Failed(internal(e))),
        }
    }

    /// One read-index round on this member, which must lead: the commit index once a heartbeat quorum
    /// confirmed the leadership.
    async fn read_index_round(&self) -> Result<u64, Refused> {
        match self.raft.get_read_log_id().await {
            Ok((read, _)) => Ok(read.map(|l| l.index).unwrap_or(0)),
            Err(e) => match e.forward_to_leader() {
                Some(f) => Err(Refused::NotLeader(f.leader_id)),
                None => Err(Refused::Failed(internal(e))),
            },
        }
    }

    /// Waits until a linearizable read may be served here: the leader confirms its read index, this member
    /// applies up to it.
    async fn linearizable(&self) -> Result<(), store::Error> {
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        loop {
            let Some(leader) = self.leader(deadline).await else {
                return Err(timed_out());
            };
            let res = if leader == self.id() {
                self.local_read_index().await
            } else {
                self.remote_read_index(deadline).await
            };
            match res {
                Ok(index) => {
                    let ttl = deadline.saturating_duration_since(tokio::time::Instant::now());
                    return self
                        .raft
                        .wait(Some(ttl))
                        .applied_index_at_least(Some(index), "linearizable read")
                        .await
                        .map(|_| ())
                        .map_err(|_| timed_out());
                }
                Err(Refused::Failed(e)) => return Err(e),
                Err(Refused::NotLeader(_)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(timed_out());
                    }
                    self.settle(deadline).await;
                }
            }
        }
    }

    /// Every member (voters and learners) with its published attributes, sorted by id.
    pub(crate) fn members(&self) -> Vec<MemberStatus> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let attrs = self
            .shared
            .attrs
            .read()
            .map(|a| a.clone())
            .unwrap_or_default();
        let list = membership
            .nodes()
            .map(|(id, node)| {
                let a = attrs.get(id).cloned().unwrap_or_default();
                MemberStatus {
                    member: Member {
                        id: *id,
                        name: a.name,
                        peer_urls: members::peer_urls(&node.addr),
                        client_urls: a.client_urls,
                    },
                    is_learner: !voters.contains(id),
                }
            })
            .collect();
        members::sorted(list)
    }

    /// Carries out a membership change on this member, which must lead.
    pub(crate) async fn local_change(
        &self,
        change: members::Change,
    ) -> Result<Result<(Member, u64), MemberError>, Refused> {
        let deadline = tokio::time::Instant::now() + CHANGE_TIMEOUT;
        loop {
            let (changes, reply) = match self.plan_change(change.clone())? {
                Ok(planned) => planned,
                Err(e) => return Ok(Err(e)),
            };
            let res =
                tokio::time::timeout_at(deadline, self.raft.change_membership(changes, false))
                    .await;
            match res {
                Err(_) => return Ok(Err(MemberError::Unavailable("request timed out".into()))),
                // One change at a time (a promotion may be under way): wait for it to finish, then plan
                // again, since it may have changed what this change has to do (a learner promoted
                // meanwhile must be removed as a voter).
                Ok(Err(openraft::error::RaftError::APIError(
                    openraft::error::ClientWriteError::ChangeMembershipError(
                        openraft::error::ChangeMembershipError::InProgress(_),
                    ),
                ))) => {
                    let mut rx = self.raft.metrics();
                    let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
                }
                Ok(Ok(resp)) => return Ok(Ok((reply, resp.log_id.index))),
                Ok(Err(e)) => {
                    return match e.forward_to_leader() {
                        Some(f) => Err(Refused::NotLeader(f.leader_id)),
                        None => Ok(Err(MemberError::Unavailable(e.to_string()))),
                    };
                }
            }
        }
    }

    /// What `change` means for openraft given the current membership, and the member to answer with.
    fn plan_change(
        &self,
        change: members::Change,
    ) -> Result<Result<Planned, MemberError>, Refused> {
        let st = self.raft.metrics().borrow().clone();
        if st.current_leader != Some(self.id()) {
            return Err(Refused::NotLeader(st.current_leader));
        }
        let membership = st.membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let current = self.members();
        let taken = |urls: &[String], except: Option<u64>| {
            current
                .iter()
                .filter(|m| Some(m.member.id) != except)
                .any(|m| m.member.peer_urls.iter().any(|u| urls.contains(u)))
        };
        let find = |id: u64| current.iter().find(|m| m.member.id == id).cloned();
        let planned: Planned = match change {
            members::Change::Add { peer_urls, learner } => {
                if taken(&peer_urls, None) {
                    return Ok(Err(MemberError::PeerUrlExists));
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                // etcd: sha1 of the sorted peer URLs, the token and the unix time of the request.
                let id =
                    crate::cluster::member_id(&peer_urls, &format!("{}{now}", self.shared.token));
                if find(id).is_some() {
                    return Ok(Err(MemberError::IdExists));
                }
                let node = BasicNode {
                    addr: peer_urls.join(","),
                };
                let reply = Member {
                    id,
                    name: String::new(),
                    peer_urls,
                    client_urls: Vec::new(),
                };
                if learner && let Ok(mut s) = self.shared.stay_learners.lock() {
                    s.insert(id);
                }
                (ChangeMembers::AddNodes(BTreeMap::from([(id, node)])), reply)
            }
            members::Change::Remove { id } => {
                let Some(m) = find(id) else {
                    return Ok(Err(MemberError::NotFound(id)));
                };
                if m.is_learner {
                    (ChangeMembers::RemoveNodes(BTreeSet::from([id])), m.member)
                } else {
                    let remaining: BTreeSet<u64> =
                        voters.iter().copied().filter(|v| *v != id).collect();
                    if remaining.is_empty() {
                        return Ok(Err(MemberError::Unavailable(
                            "cannot remove the last member".into(),
                        )));
                    }
                    if self.shared.strict_reconfig {
                        let started = self.started(&remaining);
                        if started < remaining.len() / 2 + 1 {
                            return Ok(Err(MemberError::NotEnoughStarted));
                        }
                    }
                    (ChangeMembers::RemoveVoters(BTreeSet::from([id])), m.member)
                }
            }
            members::Change::Update { id, peer_urls } => {
                let Some(mut m) = find(id) else {
                    return Ok(Err(MemberError::NotFound(id)));
                };
                if taken(&peer_urls, Some(id)) {
                    return Ok(Err(MemberError::PeerUrlExists));
                }
                let node = BasicNode {
                    addr: peer_urls.join(","),
                };
                m.member.peer_urls = peer_urls;
                self.forget_conn(id);
                (
                    ChangeMembers::SetNodes(BTreeMap::from([(id, node)])),
                    m.member,
                )
            }
            members::Change::Promote { id } => {
                let Some(m) = find(id) else {
                    return Ok(Err(MemberError::NotFound(id)));
                };
                if !m.is_learner {
                    return Ok(Err(MemberError::NotLearner));
                }
                if !self.caught_up(id) {
                    return Ok(Err(MemberError::LearnerNotReady));
                }
                if let Ok(mut s) = self.shared.stay_learners.lock() {
                    s.remove(&id);
                }
                (ChangeMembers::AddVoterIds(BTreeSet::from([id])), m.member)
            }
        };
        Ok(Ok(planned))
    }

    /// Voters among `ids` that are started: this member, and those that answered recently.
    fn started(&self, ids: &BTreeSet<u64>) -> usize {
        let heard = self.shared.stats.recently_heard(self.shared.election * 3);
        ids.iter()
            .filter(|id| **id == self.id() || heard.contains(id))
            .count()
    }

    /// Whether a learner's log is within [`PROMOTE_LAG`] entries of the leader's.
    fn caught_up(&self, id: u64) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        let last = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned().flatten())
            .map(|l| l.index);
        matched.is_some_and(|i| i + PROMOTE_LAG >= last)
    }

    /// A membership change from any member: carried out here if this member leads, else by the leader.
    async fn change(&self, change: members::Change) -> Result<Member, MemberError> {
        let deadline = tokio::time::Instant::now() + CHANGE_TIMEOUT;
        let mut retried = false;
        loop {
            let Some(leader) = self.leader(deadline).await else {
                return Err(MemberError::Unavailable("no leader".into()));
            };
            let res = if leader == self.id() {
                self.local_change(change.clone()).await
            } else {
                let Some(mut conn) = self.conn(leader) else {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(MemberError::Unavailable("request timed out".into()));
                    }
                    self.settle(deadline).await;
                    continue;
                };
                let ttl = deadline.saturating_duration_since(tokio::time::Instant::now());
                match conn
                    .call::<_, Result<Result<(Member, u64), MemberError>, Refused>>(
                        Rpc::ChangeMembers,
                        &change,
                        ttl,
                    )
                    .await
                {
                    Ok(r) => r,
                    Err(CallError::Unreachable { .. }) => {
                        self.forget_conn(leader);
                        Err(Refused::NotLeader(None))
                    }
                    Err(e) => return Err(MemberError::Unavailable(e.to_string())),
                }
            };
            match res {
                Ok(Ok((member, _)))
                    if member.id == self.id()
                        && matches!(change, members::Change::Remove { .. }) =>
                {
                    // This member was removed: the leader need not replicate the rest to it.
                    return Ok(member);
                }
                Ok(Ok((member, index))) => {
                    // Like etcd, answer once this member has applied the change too, so its member list
                    // shows it.
                    let ttl = deadline.saturating_duration_since(tokio::time::Instant::now());
                    self.raft
                        .wait(Some(ttl))
                        .applied_index_at_least(Some(index), "membership change")
                        .await
                        .map_err(|_| MemberError::Unavailable("request timed out".into()))?;
                    return Ok(member);
                }
                // A leader that removed itself steps down before it can answer: the retry finds the
                // member gone, which is what was asked.
                Ok(Err(MemberError::NotFound(id)))
                    if retried && matches!(change, members::Change::Remove { .. }) =>
                {
                    return Ok(Member {
                        id,
                        name: String::new(),
                        peer_urls: Vec::new(),
                        client_urls: Vec::new(),
                    });
                }
                Ok(Err(e)) => return Err(e),
                Err(Refused::Failed(e)) => return Err(MemberError::Unavailable(e.to_string())),
                Err(Refused::NotLeader(_)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(MemberError::Unavailable("request timed out".into()));
                    }
                    retried = true;
                    self.settle(deadline).await;
                }
            }
        }
    }

    /// On the leader, promotes learners that have caught up (etcd adds voters directly; adding them as
    /// learners first means a member that never starts cannot cost the cluster its quorum).
    async fn promote_learners(self) {
        let mut tick = tokio::time::interval(PROMOTE_TICK);
        loop {
            tokio::select! {
                _ = self.shared.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let learners: Vec<u64> = {
                let m = self.raft.metrics();
                let m = m.borrow();
                if m.current_leader != Some(m.id) {
                    continue;
                }
                m.membership_config.membership().learner_ids().collect()
            };
            let stay = self
                .shared
                .stay_learners
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default();
            for id in learners {
                if !stay.contains(&id) && self.caught_up(id) {
                    tracing::info!(member = %format!("{id:x}"), "promoting the caught-up learner to voter");
                    if let Err(e) = self
                        .local_change(members::Change::Promote { id })
                        .await
                        .map_err(|_| MemberError::Unavailable("lost leadership".into()))
                        .and_then(|r| r)
                    {
                        tracing::warn!(member = %format!("{id:x}"), "promoting: {e}");
                    }
                }
            }
        }
    }
}

/// The cluster id and members, as a joining member asks for them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClusterInfo {
    pub cluster_id: u64,
    pub members: Vec<Member>,
}

/// Asks the members at `peers` (peer URLs) for the cluster, to learn this member's id when it joins an existing
/// cluster: the member whose peer URLs equal `own`. Retries until `timeout`.
pub async fn discover_identity(
    peers: &[String],
    own: &[String],
    timeout: Duration,
    tls: &network::PeerClientTls,
) -> Result<(u64, u64), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut own_sorted = own.to_vec();
    own_sorted.sort();
    let mut last = String::from("no peers to ask");
    loop {
        for p in peers {
            let mut c = PeerConn::new(p, tls);
            match c
                .call::<_, ClusterInfo>(Rpc::ClusterInfo, &(), Duration::from_secs(2))
                .await
            {
                Ok(info) => {
                    for m in &info.members {
                        let mut urls = m.peer_urls.clone();
                        urls.sort();
                        if urls == own_sorted {
                            return Ok((m.id, info.cluster_id));
                        }
                    }
                    return Err(format!(
                        "member with peer URLs {own:?} is not in the cluster {:x} (add it first: etcdctl member add)",
                        info.cluster_id
                    ));
                }
                Err(e) => last = e.to_string(),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "could not reach any member of the existing cluster: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks the member at `peer` (a peer URL) for the cluster id and its members, as a proxy does.
pub async fn cluster_members(
    peer: &str,
    timeout: Duration,
    tls: &network::PeerClientTls,
) -> Result<(u64, Vec<Member>), String> {
    PeerConn::new(peer, tls)
        .call::<_, ClusterInfo>(Rpc::ClusterInfo, &(), timeout)
        .await
        .map(|i| (i.cluster_id, i.members))
        .map_err(|e| e.to_string())
}

impl RaftNode {
    /// Starts raft over `backend`. A fresh data dir of a new cluster is initialised with every member of
    /// `--initial-cluster` as a voter; every member does this with the identical configuration, which openraft
    /// allows (they all write the same entry at index 0), so any start order works. A member joining an
    /// existing cluster does not initialise: the leader adds it.
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
            // openraft waits out a leader lease (= election_timeout_max) before its randomised election
            // timeout, so a follower elects 1.0-1.5 election timeouts after the leader's last heartbeat
            // (etcd: 1-2).
            election_timeout_min: (election / 4).max(heartbeat + 1),
            election_timeout_max: (election * 3 / 4).max(heartbeat + 2),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(params.snapshot_count.max(1)),
            // Entries kept behind a snapshot for followers that lag a little; one further behind gets the
            // snapshot. Bounded, so the log (and memory) stays bounded under hours of writes.
            max_in_snapshot_log_to_keep: params.snapshot_count.clamp(1, 1000),
            // Small chunks keep each snapshot RPC well inside its timeout on a loaded machine.
            snapshot_max_chunk_size: 1024 * 1024,
            install_snapshot_timeout: election.max(2000),
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
        let attrs = sm.attributes();
        let gone = sm.removed();
        let stats = Arc::new(PeerStats::default());
        let removed = tokio_util::sync::CancellationToken::new();
        let net = network::Network {
            stats: stats.clone(),
            removed: removed.clone(),
            tls: params.peer_tls.clone(),
        };
        let lease = Duration::from_millis(config.election_timeout_max);
        let raft = openraft::Raft::new(params.id, config, net, log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized && !params.join_existing {
            let mut members = BTreeMap::new();
            for (id, urls) in &params.initial_members {
                members.insert(
                    *id,
                    BasicNode {
                        addr: urls.join(","),
                    },
                );
            }
            if members.is_empty() {
                members.insert(
                    params.id,
                    BasicNode {
                        addr: params.peer_url.clone(),
                    },
                );
            }
            raft.initialize(members)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
        } else if initialized {
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
        let router = Router {
            raft: raft.clone(),
            shared: Arc::new(Shared {
                id: params.id,
                cluster_id: params.cluster_id,
                token: params.token.clone(),
                strict_reconfig: params.strict_reconfig,
                election: params.election,
                attrs,
                stats,
                conns: std::sync::Mutex::new(HashMap::new()),
                peer_tls: params.peer_tls.clone(),
                stop: tokio_util::sync::CancellationToken::new(),
                stay_learners: std::sync::Mutex::new(BTreeSet::new()),
                removed,
                gone,
                leader_reads: std::sync::OnceLock::new(),
                remote_reads: std::sync::OnceLock::new(),
                last_heard: watchdog::LastHeard::default(),
                leader_writes: std::sync::OnceLock::new(),
            }),
        };
        {
            let (tx, rx) = tokio::sync::mpsc::channel(MAX_BATCH);
            let _ = router.shared.leader_writes.set(tx);
            tokio::spawn(merger(router.clone(), rx));
        }
        {
            let r = router.clone();
            let _ = router.shared.leader_reads.set(ReadBatch::spawn(
                router.shared.stop.clone(),
                move || {
                    let r = r.clone();
                    async move { r.read_index_round().await }
                },
            ));
            let r = router.clone();
            let _ = router.shared.remote_reads.set(ReadBatch::spawn(
                router.shared.stop.clone(),
                move || {
                    let r = r.clone();
                    async move {
                        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
                        r.remote_read_round(deadline).await
                    }
                },
            ));
        }
        let (proposals, rx) = tokio::sync::mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(batcher(router.clone(), rx));
        tokio::spawn(router.clone().promote_learners());
        tokio::spawn(watchdog::run(
            router.clone(),
            Duration::from_millis(heartbeat),
            lease,
        ));
        tokio::spawn(removal::watch(router.clone()));
        Ok(RaftNode {
            raft,
            kv,
            fresh: !initialized && !params.join_existing,
            proposals,
            router,
        })
    }

    /// Serves the peer protocol on already-bound listeners until [`RaftNode::shutdown`]; over TLS on those
    /// that come with a server configuration (`https://` peer URLs).
    pub fn serve_peers(
        &self,
        listeners: Vec<(std::net::TcpListener, Option<Arc<rustls::ServerConfig>>)>,
    ) -> Result<(), std::io::Error> {
        for (l, tls) in listeners {
            l.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(l)?;
            let addr = l.local_addr().ok();
            let stop = self.router.shared.stop.clone();
            if let Some(config) = tls {
                // Everything the plain port serves (raft gRPC over HTTP/2, `GET /members` over HTTP/1.1),
                // behind the handshake that enforces `--peer-client-cert-auth`.
                let router = peer_server::router(self.router.clone());
                tokio::spawn(crate::tls::serve(l, router, config, stop));
                continue;
            }
            let routes = peer_server::routes(self.router.clone());
            let incoming =
                proto::tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
            tokio::spawn(async move {
                // HTTP/1.1 too, for etcd's `GET /members` (raft traffic stays HTTP/2).
                if let Err(e) = proto::tonic::transport::Server::builder()
                    .accept_http1(true)
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                    .await
                {
                    tracing::error!(?addr, "peer listener failed: {e}");
                }
            });
        }
        Ok(())
    }

    /// Whether this start bootstrapped a new cluster.
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.router.shared.id
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> u64 {
        self.router.shared.cluster_id
    }

    /// The store this member applies to.
    pub fn kv(&self) -> &Arc<Kv> {
        &self.kv
    }

    /// Transport counters for `/v2/stats`.
    pub fn peer_stats(&self) -> &Arc<PeerStats> {
        &self.router.shared.stats
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
        // The batcher gives up at WRITE_TIMEOUT; this margin only guards against a lost reply.
        match tokio::time::timeout(WRITE_TIMEOUT + Duration::from_secs(1), rx).await {
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

    /// Records this member's start: etcd publishes the member's name and client URLs (and, on a new
    /// cluster, the cluster version) through the log. Retries every `timeout` until it succeeds or
    /// `shutdown` fires: a member of a new cluster waits for its peers to start.
    pub async fn publish(
        &self,
        fresh: bool,
        timeout: Duration,
        attrs: Attributes,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<(), store::Error> {
        let mut ops = Vec::new();
        if fresh {
            ops.push(Op::Internal { writes: 1 });
        }
        ops.push(Op::Publish {
            member: self.id(),
            name: attrs.name,
            client_urls: attrs.client_urls,
        });
        for op in ops {
            loop {
                let attempt = async {
                    if !self.wait_leader(timeout).await {
                        return Err(store::Error::new(
                            store::error::LEADER_ELECT,
                            "no leader elected",
                            0,
                        ));
                    }
                    self.propose(op.clone()).await.map(|_| ())
                };
                let res = tokio::select! {
                    r = attempt => r,
                    _ = shutdown.cancelled() => {
                        return Err(store::Error::new(store::error::RAFT_INTERNAL, "shutting down", 0));
                    }
                };
                match res {
                    Ok(()) => break,
                    Err(e) => tracing::warn!("publishing member attributes (retrying): {e}"),
                }
            }
        }
        Ok(())
    }

    /// Removes expired keys through raft, so every member agrees on when they went.
    pub async fn expire_due(&self) -> Result<(), store::Error> {
        self.propose(Op::ExpireDue).await.map(|_| ())
    }

    /// Waits until this member may serve a linearizable read (read index from the leader, applied here).
    pub async fn linearizable(&self) -> Result<(), store::Error> {
        self.router.linearizable().await
    }

    /// Every member, sorted by id.
    pub fn members(&self) -> Vec<MemberStatus> {
        self.router.members()
    }

    /// Adds a member with `peer_urls`. It joins as a learner; unless `learner`, the leader promotes it to voter
    /// once it has caught up. Returns the new member (unnamed until it starts).
    pub async fn add_member(
        &self,
        peer_urls: Vec<String>,
        learner: bool,
    ) -> Result<Member, MemberError> {
        self.router
            .change(members::Change::Add { peer_urls, learner })
            .await
    }

    /// Removes a member.
    pub async fn remove_member(&self, id: u64) -> Result<Member, MemberError> {
        match self.router.change(members::Change::Remove { id }).await {
            Err(MemberError::NotFound(n)) if self.router.was_removed(n) => {
                Err(MemberError::Removed(n))
            }
            r => r,
        }
    }

    /// Replaces a member's peer URLs.
    pub async fn update_member(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<Member, MemberError> {
        self.router
            .change(members::Change::Update { id, peer_urls })
            .await
    }

    /// Makes a caught-up learner a voter.
    pub async fn promote_member(&self, id: u64) -> Result<Member, MemberError> {
        self.router.change(members::Change::Promote { id }).await
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

    /// Resolves once this member has been removed from the cluster (it must then stop, as etcd does).
    pub async fn removed(&self) {
        self.router.shared.removed.cancelled().await
    }

    /// Stops raft, then the peer listeners.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        self.router.shared.stop.cancel();
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
    use crate::storage::DiskBackend;
    use crate::store::{Kv, Store};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore<DiskBackend>, StateMachine<DiskBackend>, TempDir>
        for Builder
    {
        async fn build(
            &self,
        ) -> Result<(TempDir, LogStore<DiskBackend>, StateMachine<DiskBackend>), StorageError<NodeId>>
        {
            let dir = TempDir::new().map_err(|e| openraft::StorageIOError::write(&e))?;
            let backend = Arc::new(
                DiskBackend::open(dir.path()).map_err(|e| openraft::StorageIOError::write(&e))?,
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
