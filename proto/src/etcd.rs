//! The etcd v3 client the daemons share (fleet, flannel, locksmith).
//!
//! A small typed layer over the generated `etcdserverpb` clients with what a
//! coordinating daemon needs, and the fault handling every one of them would
//! otherwise write again:
//!
//! - an endpoint list with failover: a call that finds its endpoint
//!   unavailable moves to the next one and retries with backoff, within a
//!   deadline ([`RetryPolicy`]);
//! - get, prefix get, put, delete, atomic create, compare-and-swap and
//!   compare-and-delete;
//! - [`LeaseKeeper`]: a lease kept alive in the background that reports its
//!   loss;
//! - [`Watch`]: a prefix watch that resumes after disconnects from the last
//!   revision it delivered (no event lost or repeated) and reports
//!   compaction;
//! - [`Client::list_and_watch`]: the snapshot-then-watch pattern.
//!
//! It speaks etcd's v3 wire API, so it works against our etcd and a real one.

use crate::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::etcdserverpb::kv_client::KvClient;
use crate::etcdserverpb::lease_client::LeaseClient;
use crate::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::etcdserverpb::range_request::SortOrder;
use crate::etcdserverpb::request_op::Request;
use crate::etcdserverpb::watch_client::WatchClient;
use crate::etcdserverpb::watch_request::RequestUnion;
use crate::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, StatusRequest, StatusResponse, TxnRequest,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
pub use crate::mvccpb::KeyValue;
use crate::mvccpb::event::EventType;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// What can go wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An endpoint URL is not usable.
    #[error("invalid etcd endpoint {endpoint:?}: {source}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// No endpoints were given.
    #[error("no etcd endpoints given")]
    NoEndpoints,
    /// The server answered with an error, or no endpoint could be reached
    /// within the retry deadline.
    #[error("etcd request failed: {0}")]
    Rpc(#[from] tonic::Status),
    /// A watch asked for history that compaction has removed; resume from a
    /// fresh read at or after `compact_revision`.
    #[error("etcd history before revision {compact_revision} was compacted")]
    Compacted {
        /// The oldest revision still available.
        compact_revision: i64,
    },
    /// The server cancelled a watch for another reason.
    #[error("etcd watch cancelled: {0}")]
    WatchCancelled(String),
}

/// How calls retry when an endpoint is unavailable.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Give up after this long (the last error is returned).
    pub deadline: Duration,
    /// First pause between attempts; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest pause between attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            // Long enough to ride out a leader election on a loaded machine.
            deadline: Duration::from_secs(15),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(500),
        }
    }
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed.
    Put(KeyValue),
    /// The key was deleted (the record carries the key and, as
    /// `mod_revision`, the deletion's revision).
    Delete(KeyValue),
}

impl WatchEvent {
    /// The key-value record of the event.
    pub fn kv(&self) -> &KeyValue {
        match self {
            WatchEvent::Put(kv) | WatchEvent::Delete(kv) => kv,
        }
    }
}

/// Whether a failed call may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idempotence {
    /// Reads: always safe to repeat.
    Read,
    /// Writes: repeated only when the failure shows the request was not
    /// applied (it never left, or the server refused it for want of a leader).
    Write,
}

/// A connection to an etcd cluster through any of its endpoints.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    endpoints: Vec<(String, Channel)>,
    /// The endpoint calls go to first; moves on when it fails.
    current: AtomicUsize,
    retry: RetryPolicy,
}

impl Client {
    /// A client of `endpoints` (`http://host:port`) with the default retry
    /// policy. Connections are made lazily, on first use.
    pub fn connect<S: AsRef<str>>(endpoints: &[S]) -> Result<Client, ClientError> {
        Client::with_retry(endpoints, RetryPolicy::default())
    }

    /// A client of `endpoints` with the given retry policy.
    pub fn with_retry<S: AsRef<str>>(
        endpoints: &[S],
        retry: RetryPolicy,
    ) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let mut channels = Vec::new();
        for endpoint in endpoints {
            let endpoint = endpoint.as_ref();
            let channel = Endpoint::from_shared(endpoint.to_owned())
                .map_err(|source| ClientError::InvalidEndpoint {
                    endpoint: endpoint.into(),
                    source,
                })?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .connect_lazy();
            channels.push((endpoint.to_owned(), channel));
        }
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints: channels,
                current: AtomicUsize::new(0),
                retry,
            }),
        })
    }

    /// The endpoint calls currently go to.
    pub fn current_endpoint(&self) -> &str {
        let i = self.inner.current.load(Ordering::Relaxed) % self.inner.endpoints.len();
        &self.inner.endpoints[i].0
    }

    /// Runs `call` on the current endpoint, failing over to the next one and
    /// retrying with backoff while the failure allows it and time remains.
    async fn call<T, F, Fut>(&self, kind: Idempotence, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let policy = self.inner.retry;
        let deadline = Instant::now() + policy.deadline;
        let mut backoff = policy.initial_backoff;
        loop {
            let index = self.inner.current.load(Ordering::Relaxed);
            let channel = self.inner.endpoints[index % self.inner.endpoints.len()]
                .1
                .clone();
            match call(channel).await {
                Ok(value) => return Ok(value),
                Err(status) if retryable(kind, &status) && Instant::now() < deadline => {
                    tracing::debug!(endpoint = %self.current_endpoint(), "etcd call failed, failing over: {status}");
                    // Move on, unless another caller already did.
                    let next = (index + 1) % self.inner.endpoints.len();
                    let _ = self.inner.current.compare_exchange(
                        index,
                        next,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    tokio::time::sleep(backoff.min(deadline - Instant::now())).await;
                    backoff = (backoff * 2).min(policy.max_backoff);
                }
                Err(status) => return Err(status.into()),
            }
        }
    }

    /// The value of `key`, if it exists.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>, ClientError> {
        let request = RangeRequest {
            key: key.into(),
            ..Default::default()
        };
        let response = self
            .call(Idempotence::Read, |ch| {
                let request = request.clone();
                async move { KvClient::new(ch).range(request).await }
            })
            .await?;
        Ok(response.into_inner().kvs.into_iter().next())
    }

    /// Every key under `prefix`, sorted by key, and the store revision they
    /// were read at (a watch from `revision + 1` misses nothing).
    pub async fn get_prefix(
        &self,
        prefix: impl Into<Vec<u8>>,
    ) -> Result<(Vec<KeyValue>, i64), ClientError> {
        let key = prefix.into();
        let request = RangeRequest {
            range_end: prefix_end(&key),
            key,
            sort_order: SortOrder::Ascend as i32,
            ..Default::default()
        };
        let response = self
            .call(Idempotence::Read, |ch| {
                let request = request.clone();
                async move { KvClient::new(ch).range(request).await }
            })
            .await?
            .into_inner();
        let revision = response.header.map(|h| h.revision).unwrap_or_default();
        Ok((response.kvs, revision))
    }

    /// Sets `key` to `value` (attached to `lease` unless 0); returns the new
    /// store revision.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Result<i64, ClientError> {
        let request = PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
            ..Default::default()
        };
        let response = self
            .call(Idempotence::Write, |ch| {
                let request = request.clone();
                async move { KvClient::new(ch).put(request).await }
            })
            .await?;
        Ok(response
            .into_inner()
            .header
            .map(|h| h.revision)
            .unwrap_or_default())
    }

    /// Creates `key` only if it does not exist; returns whether it did.
    pub async fn create(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Result<bool, ClientError> {
        let key = key.into();
        let guard = compare(&key, CompareTarget::Create, TargetUnion::CreateRevision(0));
        let put = PutRequest {
            key,
            value: value.into(),
            lease,
            ..Default::default()
        };
        self.txn_if(guard, Request::RequestPut(put)).await
    }

    /// Replaces `key`'s value only if its last modification was at
    /// `mod_revision`; returns whether it did.
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Vec<u8>>,
        mod_revision: i64,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Result<bool, ClientError> {
        let key = key.into();
        let guard = compare(
            &key,
            CompareTarget::Mod,
            TargetUnion::ModRevision(mod_revision),
        );
        let put = PutRequest {
            key,
            value: value.into(),
            lease,
            ..Default::default()
        };
        self.txn_if(guard, Request::RequestPut(put)).await
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<bool, ClientError> {
        let request = DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        };
        let response = self
            .call(Idempotence::Write, |ch| {
                let request = request.clone();
                async move { KvClient::new(ch).delete_range(request).await }
            })
            .await?;
        Ok(response.into_inner().deleted > 0)
    }

    /// Deletes `key` only if its last modification was at `mod_revision`.
    pub async fn compare_and_delete(
        &self,
        key: impl Into<Vec<u8>>,
        mod_revision: i64,
    ) -> Result<bool, ClientError> {
        let key = key.into();
        let guard = compare(
            &key,
            CompareTarget::Mod,
            TargetUnion::ModRevision(mod_revision),
        );
        let delete = DeleteRangeRequest {
            key,
            ..Default::default()
        };
        self.txn_if(guard, Request::RequestDeleteRange(delete))
            .await
    }

    /// Runs `then` if `guard` holds; returns whether it did.
    async fn txn_if(&self, guard: Compare, then: Request) -> Result<bool, ClientError> {
        let request = TxnRequest {
            compare: vec![guard],
            success: vec![RequestOp {
                request: Some(then),
            }],
            failure: vec![],
        };
        self.txn(request).await.map(|response| response.succeeded)
    }

    /// Runs a raw transaction.
    pub async fn txn(
        &self,
        request: TxnRequest,
    ) -> Result<crate::etcdserverpb::TxnResponse, ClientError> {
        let response = self
            .call(Idempotence::Write, |ch| {
                let request = request.clone();
                async move { KvClient::new(ch).txn(request).await }
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Grants a lease of `ttl` (whole seconds, at least 1); returns its id.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<i64, ClientError> {
        let request = LeaseGrantRequest {
            ttl: ttl.as_secs().max(1) as i64,
            id: 0,
        };
        let response = self
            .call(Idempotence::Write, |ch| async move {
                LeaseClient::new(ch).lease_grant(request).await
            })
            .await?;
        Ok(response.into_inner().id)
    }

    /// Renews a lease once; returns its new TTL in seconds (0 or less: the
    /// lease is gone).
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, ClientError> {
        self.call(Idempotence::Read, |ch| async move {
            let request = LeaseKeepAliveRequest { id };
            let mut responses = LeaseClient::new(ch)
                .lease_keep_alive(tokio_stream::once(request))
                .await?
                .into_inner();
            match responses.message().await? {
                Some(response) => Ok(response.ttl),
                None => Err(tonic::Status::unavailable("lease keep-alive stream closed")),
            }
        })
        .await
    }

    /// Revokes a lease, deleting its keys.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), ClientError> {
        self.call(Idempotence::Write, |ch| async move {
            LeaseClient::new(ch)
                .lease_revoke(LeaseRevokeRequest { id })
                .await
        })
        .await?;
        Ok(())
    }

    /// Grants a lease of `ttl` and keeps it alive in the background until
    /// the keeper is dropped or revoked.
    pub async fn lease_keeper(&self, ttl: Duration) -> Result<LeaseKeeper, ClientError> {
        let id = self.lease_grant(ttl).await?;
        let (lost_tx, lost) = watch::channel(false);
        let client = self.clone();
        let ttl = ttl.max(Duration::from_secs(1));
        let task = tokio::spawn(async move {
            keep_alive_loop(client, id, ttl).await;
            let _ = lost_tx.send(true);
        });
        Ok(LeaseKeeper {
            id,
            client: self.clone(),
            lost,
            task,
        })
    }

    /// The server's status (version, leader, revision in the header).
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        let response = self
            .call(Idempotence::Read, |ch| async move {
                MaintenanceClient::new(ch).status(StatusRequest {}).await
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Watches every key under `prefix` from `start_revision` (0: from now).
    pub async fn watch_prefix(
        &self,
        prefix: impl Into<Vec<u8>>,
        start_revision: i64,
    ) -> Result<Watch, ClientError> {
        let key = prefix.into();
        let mut watch = Watch {
            client: self.clone(),
            range_end: prefix_end(&key),
            key,
            next_revision: start_revision,
            stream: None,
            pending: VecDeque::new(),
        };
        watch.open().await?;
        Ok(watch)
    }

    /// Reads every key under `prefix` and watches it from just after that
    /// read: the snapshot plus the watch's events are the whole history.
    pub async fn list_and_watch(
        &self,
        prefix: impl Into<Vec<u8>>,
    ) -> Result<(Vec<KeyValue>, Watch), ClientError> {
        let prefix = prefix.into();
        let (kvs, revision) = self.get_prefix(prefix.clone()).await?;
        let watch = self.watch_prefix(prefix, revision + 1).await?;
        Ok((kvs, watch))
    }
}

/// Renews lease `id` every third of its TTL; returns when the lease is lost
/// (expired, revoked, or not renewed in time).
async fn keep_alive_loop(client: Client, id: i64, ttl: Duration) {
    let mut expires = Instant::now() + ttl;
    loop {
        tokio::time::sleep(ttl / 3).await;
        // Each attempt may fail over; it must finish before the lease would.
        let attempt = tokio::time::timeout_at(expires, client.lease_keep_alive(id)).await;
        match attempt {
            Ok(Ok(remaining)) if remaining > 0 => {
                expires = Instant::now() + Duration::from_secs(remaining as u64);
            }
            Ok(Ok(_)) => {
                tracing::warn!(lease = id, "etcd lease expired");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = id, "etcd lease keep-alive failed: {e}");
                if Instant::now() >= expires {
                    return;
                }
            }
            Err(_) => {
                tracing::warn!(lease = id, "etcd lease not renewed before its expiry");
                return;
            }
        }
    }
}

/// A lease kept alive in the background. Dropping it stops the renewals
/// (the lease then expires on its own); [`LeaseKeeper::revoke`] ends it now.
#[derive(Debug)]
pub struct LeaseKeeper {
    id: i64,
    client: Client,
    lost: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseKeeper {
    /// The lease id, to attach keys to.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Whether the lease has been lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves once the lease is lost (expired, revoked elsewhere, or not
    /// renewable in time): whatever it guarded must be given up.
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        // An error means the renewal task is gone, which also means lost.
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// Stops the renewals and revokes the lease, deleting its keys.
    pub async fn revoke(self) -> Result<(), ClientError> {
        self.task.abort();
        self.client.lease_revoke(self.id).await
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A prefix watch that survives disconnects: when its stream breaks it is
/// re-created (failing over between endpoints) from the revision after the
/// last event it delivered, so no event is lost or repeated.
#[derive(Debug)]
pub struct Watch {
    client: Client,
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The revision to resume from (0 until the server has told us "now").
    next_revision: i64,
    stream: Option<WatchStream>,
    pending: VecDeque<WatchEvent>,
}

#[derive(Debug)]
struct WatchStream {
    // Dropping the request side closes the stream, which ends the watch.
    _requests: mpsc::Sender<WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
}

impl Watch {
    /// The next event, in revision order. Waits as long as it takes;
    /// reconnects as needed. Fails on compaction or a server cancellation.
    pub async fn next(&mut self) -> Result<WatchEvent, ClientError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            if self.stream.is_none() {
                self.open().await?;
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            let response = match stream.responses.message().await {
                Ok(Some(response)) => response,
                Ok(None) | Err(_) => {
                    tracing::debug!(
                        "etcd watch stream broke; resuming at {}",
                        self.next_revision
                    );
                    self.stream = None;
                    continue;
                }
            };
            self.absorb(response)?;
        }
    }

    /// The revision the watch would resume from.
    pub fn next_revision(&self) -> i64 {
        self.next_revision
    }

    /// Takes in one response: queues its events and advances the resume point.
    fn absorb(&mut self, response: WatchResponse) -> Result<(), ClientError> {
        if response.canceled {
            self.stream = None;
            return Err(cancellation(&response));
        }
        for event in response.events {
            let Some(kv) = event.kv else { continue };
            if kv.mod_revision < self.next_revision {
                continue; // already delivered before a reconnect
            }
            self.next_revision = kv.mod_revision + 1;
            self.pending
                .push_back(match EventType::try_from(event.r#type) {
                    Ok(EventType::Delete) => WatchEvent::Delete(kv),
                    _ => WatchEvent::Put(kv),
                });
        }
        Ok(())
    }

    /// (Re)creates the server-side watch from `next_revision`.
    async fn open(&mut self) -> Result<(), ClientError> {
        let create = WatchCreateRequest {
            key: self.key.clone(),
            range_end: self.range_end.clone(),
            start_revision: self.next_revision,
            ..Default::default()
        };
        let (stream, created) = self
            .client
            .call(Idempotence::Read, |ch| {
                let create = create.clone();
                async move {
                    let (requests, receiver) = mpsc::channel(1);
                    let first = WatchRequest {
                        request_union: Some(RequestUnion::CreateRequest(create)),
                    };
                    // A fresh channel has room for one message.
                    let _ = requests.try_send(first);
                    let outgoing = tokio_stream::wrappers::ReceiverStream::new(receiver);
                    let mut responses = WatchClient::new(ch).watch(outgoing).await?.into_inner();
                    match responses.message().await? {
                        Some(created) => Ok((
                            WatchStream {
                                _requests: requests,
                                responses,
                            },
                            created,
                        )),
                        None => Err(tonic::Status::unavailable("watch stream closed")),
                    }
                }
            })
            .await?;
        if created.canceled {
            return Err(cancellation(&created));
        }
        if self.next_revision == 0 {
            // "From now": resume points count from the creation's revision.
            self.next_revision = created.header.map(|h| h.revision + 1).unwrap_or(0);
        }
        self.stream = Some(stream);
        self.absorb(created)
    }
}

fn cancellation(response: &WatchResponse) -> ClientError {
    if response.compact_revision > 0 {
        ClientError::Compacted {
            compact_revision: response.compact_revision,
        }
    } else {
        ClientError::WatchCancelled(response.cancel_reason.clone())
    }
}

/// What a failed call tells about its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The request cannot have been applied: the connection failed before it
    /// was sent, or the server refused it for want of a leader.
    NotApplied,
    /// The request may or may not have been applied (the connection broke
    /// while it was in flight).
    Unknown,
    /// The server answered: repeating the call would not change the answer.
    Answered,
}

/// Whether a failed call of this kind may be repeated (on another endpoint).
fn retryable(kind: Idempotence, status: &tonic::Status) -> bool {
    match (classify(status), kind) {
        (Failure::NotApplied, _) | (Failure::Unknown, Idempotence::Read) => true,
        (Failure::Unknown, Idempotence::Write) | (Failure::Answered, _) => false,
    }
}

fn classify(status: &tonic::Status) -> Failure {
    use std::io::ErrorKind;
    const NOT_APPLIED: &[&str] = &[
        "tcp connect error",
        "Connection refused",
        "error trying to connect",
        "no leader",
        "leader changed",
    ];
    let transport = match status.code() {
        Code::Unavailable => true,
        // tonic reports a connection that broke under a call as Unknown.
        Code::Unknown => std::error::Error::source(status).is_some(),
        _ => false,
    };
    if !transport {
        return Failure::Answered;
    }
    if NOT_APPLIED
        .iter()
        .any(|sign| status.message().contains(sign))
    {
        return Failure::NotApplied;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            // Refused: never connected. Broken pipe: the peer was already
            // gone when the request was written, so it never read it.
            if matches!(
                io.kind(),
                ErrorKind::ConnectionRefused | ErrorKind::BrokenPipe
            ) {
                return Failure::NotApplied;
            }
        }
        let text = error.to_string();
        if NOT_APPLIED.iter().any(|sign| text.contains(sign)) {
            return Failure::NotApplied;
        }
        source = error.source();
    }
    Failure::Unknown
}

fn compare(key: &[u8], target: CompareTarget, value: TargetUnion) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: key.to_vec(),
        target_union: Some(value),
        range_end: Vec::new(),
    }
}

/// The end of the range of keys starting with `prefix`, as etcd defines it:
/// the prefix with its last byte below 0xff incremented (and what follows
/// dropped); `"\0"` (every key) when there is no such byte.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }

    #[test]
    fn writes_are_retried_only_when_they_cannot_have_been_applied() {
        let refused = tonic::Status::unavailable("tcp connect error: Connection refused");
        let no_leader = tonic::Status::unavailable("etcdserver: no leader");
        let broken = tonic::Status::unavailable("error reading a body from connection");
        let invalid = tonic::Status::invalid_argument("etcdserver: key is not provided");
        let pipe = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stream closed");
        let dead_connection = tonic::Status::from_error(Box::new(pipe));
        assert_eq!(classify(&dead_connection), Failure::NotApplied);
        assert!(retryable(Idempotence::Write, &refused));
        assert!(retryable(Idempotence::Write, &no_leader));
        assert!(
            !retryable(Idempotence::Write, &broken),
            "a write cut mid-flight may have applied"
        );
        assert!(retryable(Idempotence::Read, &broken));
        assert!(!retryable(Idempotence::Read, &invalid));
    }

    fn event(kind: EventType, key: &str, revision: i64) -> crate::mvccpb::Event {
        crate::mvccpb::Event {
            r#type: kind as i32,
            kv: Some(KeyValue {
                key: key.into(),
                mod_revision: revision,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[tokio::test]
    async fn a_resumed_watch_skips_what_it_already_delivered() {
        let client = Client::connect(&["http://127.0.0.1:1"]).unwrap();
        let mut watch = Watch {
            client,
            key: b"/p/".to_vec(),
            range_end: prefix_end(b"/p/"),
            next_revision: 5,
            stream: None,
            pending: VecDeque::new(),
        };
        let response = WatchResponse {
            events: vec![
                event(EventType::Put, "/p/old", 4),
                event(EventType::Put, "/p/a", 5),
                event(EventType::Delete, "/p/b", 7),
            ],
            ..Default::default()
        };
        watch.absorb(response).unwrap();
        let keys: Vec<_> = watch.pending.iter().map(|e| e.kv().key.clone()).collect();
        assert_eq!(keys, [b"/p/a".to_vec(), b"/p/b".to_vec()]);
        assert!(matches!(watch.pending[1], WatchEvent::Delete(_)));
        assert_eq!(watch.next_revision(), 8);

        let compacted = WatchResponse {
            canceled: true,
            compact_revision: 6,
            ..Default::default()
        };
        assert!(matches!(
            watch.absorb(compacted),
            Err(ClientError::Compacted {
                compact_revision: 6
            })
        ));
    }
}
