//! The Cluster service: member list and runtime membership changes, carried out by the raft node (the same
//! operations `/v2/members` uses), with etcd 3.4's gRPC errors.

use proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, cluster_server::Cluster,
};
use tonic::{Request, Response, Status};

use super::V3;
use super::error;
use crate::raft::MemberStatus;

fn to_pb(m: MemberStatus) -> Member {
    Member {
        id: m.member.id,
        name: m.member.name,
        peer_ur_ls: m.member.peer_urls,
        client_ur_ls: m.member.client_urls,
        is_learner: m.is_learner,
    }
}

impl V3 {
    fn members(&self) -> Vec<Member> {
        self.app.node.members().into_iter().map(to_pb).collect()
    }
}

#[tonic::async_trait]
impl Cluster for V3 {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let req = req.into_inner();
        let peer_urls = error::peer_urls(&req.peer_ur_ls)?;
        let added = self
            .app
            .node
            .add_member(peer_urls, req.is_learner)
            .await
            .map_err(error::member)?;
        let member = Member {
            id: added.id,
            name: added.name,
            peer_ur_ls: added.peer_urls,
            client_ur_ls: added.client_urls,
            is_learner: req.is_learner,
        };
        // etcd's cluster responses carry no revision.
        Ok(Response::new(MemberAddResponse {
            header: self.header(0),
            member: Some(member),
            members: self.members(),
        }))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.app
            .node
            .remove_member(req.into_inner().id)
            .await
            .map_err(error::member)?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(0),
            members: self.members(),
        }))
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let req = req.into_inner();
        let peer_urls = error::peer_urls(&req.peer_ur_ls)?;
        self.app
            .node
            .update_member(req.id, peer_urls)
            .await
            .map_err(error::member)?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(0),
            members: self.members(),
        }))
    }

    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: self.header(0),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.app
            .node
            .promote_member(req.into_inner().id)
            .await
            .map_err(error::member)?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(0),
            members: self.members(),
        }))
    }
}
