//! The raft peer transport, server side: the `etcdraftpb.Peer` gRPC service on the peer URLs, handing raft
//! messages to openraft and a follower's writes, read-index requests and membership changes to the leader's
//! local paths; and etcd's `GET /members` over HTTP/1.1, which Go etcd's proxies and joining members ask.

use proto::etcdraftpb::Payload;
use proto::etcdraftpb::peer_server::{Peer, PeerServer};
use proto::tonic::{self, Request, Response, Status};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::network::{MAX_MESSAGE, REMOVED};
use super::{ClusterInfo, Proposal, Router, TypeConfig};

/// The peer port's routes: the gRPC service and etcd's `GET /members`.
pub(crate) fn routes(router: Router) -> tonic::service::Routes {
    tonic::service::Routes::from(self::router(router))
}

/// The same routes as an axum router, for the TLS accept loop.
pub(crate) fn router(router: Router) -> axum::Router {
    let svc = service(router.clone());
    tonic::service::Routes::new(svc).into_axum_router().route(
        "/members",
        axum::routing::get(move || std::future::ready(members(&router))),
    )
}

/// One member as etcd's peer `/members` lists it (a numeric id, unlike the client API's hex string).
#[derive(Serialize)]
struct PeerMember {
    id: u64,
    #[serde(rename = "peerURLs")]
    peer_urls: Vec<String>,
    name: String,
    #[serde(rename = "clientURLs")]
    client_urls: Vec<String>,
    #[serde(rename = "isLearner", skip_serializing_if = "std::ops::Not::not")]
    is_learner: bool,
}

/// etcd's reply: the members as a JSON array, and the cluster id in `X-Etcd-Cluster-ID`.
fn members(router: &Router) -> axum::response::Response {
    use axum::response::IntoResponse;
    let list: Vec<PeerMember> = router
        .members()
        .into_iter()
        .map(|m| PeerMember {
            id: m.member.id,
            peer_urls: m.member.peer_urls,
            name: m.member.name,
            client_urls: m.member.client_urls,
            is_learner: m.is_learner,
        })
        .collect();
    let body = serde_json::to_string(&list).unwrap_or_else(|_| "[]".into());
    (
        [
            ("content-type", "application/json".to_string()),
            (
                "x-etcd-cluster-id",
                format!("{:x}", router.shared.cluster_id),
            ),
        ],
        body,
    )
        .into_response()
}

/// The gRPC service for a member.
pub(crate) fn service(router: Router) -> PeerServer<Service> {
    PeerServer::new(Service { router })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

pub(crate) struct Service {
    router: Router,
}

fn decode<T: DeserializeOwned>(req: Request<Payload>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("bad payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    serde_json::to_vec(value)
        .map(|data| Response::new(Payload { data }))
        .map_err(|e| Status::internal(format!("encoding the reply: {e}")))
}

impl Service {
    /// etcd answers a removed member's raft messages with 410 Gone, which makes it stop; this is that answer.
    fn refuse_removed(&self, from: Option<u64>) -> Result<(), Status> {
        match from {
            Some(id) if self.router.was_removed(id) => {
                tracing::warn!(peer = %format!("{id:x}"), "rejected the request from the peer since it was removed");
                Err(Status::failed_precondition(REMOVED))
            }
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl Peer for Service {
    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(req)?;
        self.refuse_removed(req.vote.leader_id().voted_for())?;
        if req.vote.is_committed()
            && let Some(leader) = req.vote.leader_id().voted_for()
        {
            self.router.shared.last_heard.heard(leader);
        }
        self.router
            .shared
            .stats
            .received_appends
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        encode(&self.router.raft.append_entries(req).await)
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: openraft::raft::VoteRequest<u64> = decode(req)?;
        self.refuse_removed(req.vote.leader_id().voted_for())?;
        encode(&self.router.raft.vote(req).await)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: openraft::raft::InstallSnapshotRequest<TypeConfig> = decode(req)?;
        let done = req.done;
        let res = self.router.raft.install_snapshot(req).await;
        if done && res.is_ok() {
            self.router
                .shared
                .stats
                .snapshots_received
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        encode(&res)
    }

    async fn forward(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let p: Proposal = decode(req)?;
        encode(&self.router.forward_target(p).await)
    }

    async fn read_index(&self, _req: Request<Payload>) -> Result<Response<Payload>, Status> {
        encode(&self.router.local_read_index().await)
    }

    async fn change_members(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let change: super::members::Change = decode(req)?;
        encode(&self.router.local_change(change).await)
    }

    async fn cluster_info(&self, _req: Request<Payload>) -> Result<Response<Payload>, Status> {
        encode(&ClusterInfo {
            cluster_id: self.router.shared.cluster_id,
            members: self
                .router
                .members()
                .into_iter()
                .map(|m| m.member)
                .collect(),
        })
    }
}
