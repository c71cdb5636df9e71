//! The Lease service: Grant, Revoke, KeepAlive (stream), TimeToLive and Leases. Every change to a lease is a
//! raft command, so expiry is decided by the leader's clock through the log.

use std::pin::Pin;
use std::sync::atomic::Ordering;

use futures::Stream;
use proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, lease_server::Lease,
};
use tonic::{Request, Response, Status, Streaming};

use super::V3;
use super::error;
use crate::store::{Op, V3Error, V3Out};

impl V3 {
    /// etcd's minimum lease TTL: 1.5 election timeouts, rounded up to seconds.
    fn min_ttl(&self) -> i64 {
        let ms = self.app.settings.election.as_millis() as i64 * 3 / 2;
        ((ms + 999) / 1000).max(1)
    }

    async fn keep_alive_once(&self, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
        let (reply, _) = self
            .app
            .node
            .write_v3(Op::LeaseKeepAlive { id })
            .await
            .map_err(error::raft)?;
        let ttl = match reply.result {
            Ok(V3Out::Lease { ttl }) => ttl,
            // etcd answers a keep-alive of an unknown lease with TTL 0, not an error.
            Err(V3Error::LeaseNotFound) => 0,
            Err(e) => return Err(error::v3(e)),
            Ok(_) => return Err(Status::internal("unexpected reply from the state machine")),
        };
        Ok(LeaseKeepAliveResponse {
            header: self.header(reply.revision),
            id,
            ttl,
        })
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for V3 {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let r = req.into_inner();
        let ttl = r.ttl.max(self.min_ttl());
        let chosen = r.id != 0;
        loop {
            let id = if chosen {
                r.id
            } else {
                self.lease_ids.fetch_add(1, Ordering::Relaxed) & i64::MAX
            };
            let (reply, _) = self
                .app
                .node
                .write_v3(Op::LeaseGrant { id, ttl })
                .await
                .map_err(error::raft)?;
            match reply.result {
                Ok(_) => {
                    return Ok(Response::new(LeaseGrantResponse {
                        header: self.header(reply.revision),
                        id,
                        ttl,
                        error: String::new(),
                    }));
                }
                Err(V3Error::LeaseExists) if !chosen => continue,
                Err(e) => return Err(error::v3(e)),
            }
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let id = req.into_inner().id;
        let (reply, _) = self
            .app
            .node
            .write_v3(Op::LeaseRevoke { id })
            .await
            .map_err(error::raft)?;
        reply.result.map_err(error::v3)?;
        Ok(Response::new(LeaseRevokeResponse {
            header: self.header(reply.revision),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let inbound = req.into_inner();
        let me = self.clone();
        let shutdown = self.app.shutdown.clone();
        let out = futures::stream::unfold(
            (inbound, me, shutdown),
            |(mut inbound, me, shutdown)| async move {
                let next = tokio::select! {
                    m = inbound.message() => m,
                    _ = shutdown.cancelled() => return None,
                };
                match next {
                    Ok(Some(r)) => {
                        let resp = me.keep_alive_once(r.id).await;
                        Some((resp, (inbound, me, shutdown)))
                    }
                    Ok(None) | Err(_) => None,
                }
            },
        );
        Ok(Response::new(Box::pin(out)))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        self.app.node.linearizable().await.map_err(error::raft)?;
        let now = crate::store::time::now_ns();
        let (info, rev) = self
            .app
            .node
            .kv()
            .with_store(|s| (s.lease_info(r.id, now), s.index()));
        // etcd answers for a lease it does not know (expired or revoked) with TTL -1, not an error.
        let info = info.unwrap_or(crate::store::mvcc::LeaseInfo {
            granted: 0,
            remaining: -1,
            keys: Vec::new(),
        });
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: self.header(rev),
            id: r.id,
            ttl: info.remaining,
            granted_ttl: info.granted,
            keys: if r.keys { info.keys } else { Vec::new() },
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let (ids, rev) = self
            .app
            .node
            .kv()
            .with_store(|s| (s.lease_ids(), s.index()));
        Ok(Response::new(LeaseLeasesResponse {
            header: self.header(rev),
            leases: ids.into_iter().map(|id| LeaseStatus { id }).collect(),
        }))
    }
}
