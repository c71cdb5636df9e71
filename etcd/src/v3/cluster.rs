//! The Cluster service. One member for now: MemberList answers it; changes answer etcd's errors until the
//! multi-member work (issue #4) fills them in.

use proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, cluster_server::Cluster,
};
use tonic::{Request, Response, Status};

use super::V3;
use super::error::{self, RequestError};

impl V3 {
    fn me(&self) -> Member {
        let s = &self.app.settings;
        Member {
            id: s.member_id,
            name: s.name.clone(),
            peer_ur_ls: s.peer_urls.clone(),
            client_ur_ls: s.advertise_client_urls.clone(),
            is_learner: false,
        }
    }

    fn known(&self, id: u64) -> Result<(), Status> {
        if id == self.app.settings.member_id {
            Ok(())
        } else {
            Err(error::request(RequestError::MemberNotFound))
        }
    }
}

#[tonic::async_trait]
impl Cluster for V3 {
    async fn member_add(
        &self,
        _req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(error::request(RequestError::Unhealthy))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.known(req.into_inner().id)?;
        Err(error::request(RequestError::Unhealthy))
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.known(req.into_inner().id)?;
        Err(error::request(RequestError::Unhealthy))
    }

    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        // etcd's cluster responses carry no revision.
        Ok(Response::new(MemberListResponse {
            header: self.header(0),
            members: vec![self.me()],
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.known(req.into_inner().id)?;
        Err(error::request(RequestError::MemberNotLearner))
    }
}
