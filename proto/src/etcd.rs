//! The etcd v3 client the daemons share (fleet, flannel, locksmith): a small
//! typed layer over the generated `etcdserverpb` clients, with the few
//! operations a coordinating daemon needs (get, prefix get, put, atomic
//! create and compare-and-swap, delete, leases, prefix watches).
//!
//! It speaks etcd's v3 wire API, so it works against our etcd and a real one.

use crate::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::etcdserverpb::kv_client::KvClient;
use crate::etcdserverpb::lease_client::LeaseClient;
use crate::etcdserverpb::maintenance_client::MaintenanceClient;
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
use std::time::Duration;
use tokio::sync::mpsc;
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
    /// The server answered with an error (or could not be reached).
    #[error("etcd request failed: {0}")]
    Rpc(#[from] tonic::Status),
    /// The watch was cancelled by the server.
    #[error("etcd watch cancelled: {reason}")]
    WatchCancelled {
        /// The server's reason.
        reason: String,
        /// Set when the start revision had been compacted away.
        compact_revision: i64,
    },
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed.
    Put(KeyValue),
    /// The key was deleted (the record carries the key and the deletion's
    /// revision).
    Delete(KeyValue),
}

/// A connection to an etcd cluster (any of the given endpoints).
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects lazily to `endpoints` (`http://host:port`), balancing over them.
    pub fn connect<S: AsRef<str>>(endpoints: &[S]) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let mut parsed = Vec::new();
        for endpoint in endpoints {
            let endpoint = endpoint.as_ref();
            let e = Endpoint::from_shared(endpoint.to_owned())
                .map_err(|source| ClientError::InvalidEndpoint {
                    endpoint: endpoint.into(),
                    source,
                })?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true);
            parsed.push(e);
        }
        let channel = Channel::balance_list(parsed.into_iter());
        Ok(Client { channel })
    }

    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }

    /// The value of `key`, if it exists.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>, ClientError> {
        let request = RangeRequest {
            key: key.into(),
            ..Default::default()
        };
        let response = self.kv().range(request).await?.into_inner();
        Ok(response.kvs.into_iter().next())
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
            sort_order: crate::etcdserverpb::range_request::SortOrder::Ascend as i32,
            ..Default::default()
        };
        let response = self.kv().range(request).await?.into_inner();
        let revision = response.header.map(|h| h.revision).unwrap_or_default();
        Ok((response.kvs, revision))
    }

    /// Sets `key` to `value` (attached to `lease` if not 0); returns the new revision.
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
        let response = self.kv().put(request).await?.into_inner();
        Ok(response.header.map(|h| h.revision).unwrap_or_default())
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
        self.put_if(guard, key, value.into(), lease).await
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
        self.put_if(guard, key, value.into(), lease).await
    }

    async fn put_if(
        &self,
        guard: Compare,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    ) -> Result<bool, ClientError> {
        let put = PutRequest {
            key,
            value,
            lease,
            ..Default::default()
        };
        let request = TxnRequest {
            compare: vec![guard],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(put)),
            }],
            failure: vec![],
        };
        Ok(self.kv().txn(request).await?.into_inner().succeeded)
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<bool, ClientError> {
        let request = DeleteRangeRequest {
            key: key.into(),
            ..Default::default()
        };
        Ok(self.kv().delete_range(request).await?.into_inner().deleted > 0)
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
        let request = TxnRequest {
            compare: vec![guard],
            success: vec![RequestOp {
                request: Some(Request::RequestDeleteRange(delete)),
            }],
            failure: vec![],
        };
        Ok(self.kv().txn(request).await?.into_inner().succeeded)
    }

    /// Grants a lease of `ttl`; returns its id.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<i64, ClientError> {
        let request = LeaseGrantRequest {
            ttl: ttl.as_secs().max(1) as i64,
            id: 0,
        };
        let response = LeaseClient::new(self.channel.clone())
            .lease_grant(request)
            .await?;
        Ok(response.into_inner().id)
    }

    /// Renews a lease once; returns its new TTL in seconds (0 or less: expired).
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64, ClientError> {
        let request = LeaseKeepAliveRequest { id };
        let mut responses = LeaseClient::new(self.channel.clone())
            .lease_keep_alive(tokio_stream::once(request))
            .await?
            .into_inner();
        match responses.message().await? {
            Some(response) => Ok(response.ttl),
            None => Err(tonic::Status::unavailable("lease keep-alive stream closed").into()),
        }
    }

    /// Revokes a lease, deleting its keys.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), ClientError> {
        LeaseClient::new(self.channel.clone())
            .lease_revoke(LeaseRevokeRequest { id })
            .await?;
        Ok(())
    }

    /// The server's status (version, leader, revision in the header).
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        let response = MaintenanceClient::new(self.channel.clone())
            .status(StatusRequest {})
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
        let create = WatchCreateRequest {
            range_end: prefix_end(&key),
            key,
            start_revision,
            ..Default::default()
        };
        let (requests, receiver) = mpsc::channel(4);
        let first = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        };
        // The channel is fresh and has room: this cannot fail.
        let _ = requests.try_send(first);
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
        let mut responses = WatchClient::new(self.channel.clone())
            .watch(stream)
            .await?
            .into_inner();
        // The first answer confirms (or refuses) the watch.
        match responses.message().await? {
            Some(created) if created.canceled => Err(cancelled(&created)),
            Some(_) => Ok(Watch {
                _requests: requests,
                responses,
                pending: Vec::new(),
            }),
            None => Err(tonic::Status::unavailable("watch stream closed").into()),
        }
    }
}

/// An open watch; [`Watch::next`] yields its events in revision order.
#[derive(Debug)]
pub struct Watch {
    // Dropping the request side closes the stream, which ends the watch.
    _requests: mpsc::Sender<WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
    pending: Vec<WatchEvent>,
}

impl Watch {
    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, ClientError> {
        loop {
            if !self.pending.is_empty() {
                return Ok(Some(self.pending.remove(0)));
            }
            let Some(response) = self.responses.message().await? else {
                return Ok(None);
            };
            if response.canceled {
                return Err(cancelled(&response));
            }
            for event in response.events {
                let Some(kv) = event.kv else { continue };
                self.pending.push(match EventType::try_from(event.r#type) {
                    Ok(EventType::Delete) => WatchEvent::Delete(kv),
                    _ => WatchEvent::Put(kv),
                });
            }
        }
    }
}

fn cancelled(response: &WatchResponse) -> ClientError {
    ClientError::WatchCancelled {
        reason: response.cancel_reason.clone(),
        compact_revision: response.compact_revision,
    }
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
    use super::prefix_end;

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
