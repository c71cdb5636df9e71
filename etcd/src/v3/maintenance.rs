//! The Maintenance service: Status, Alarm (none are raised), Defragment (nothing to do), Hash and HashKV.

use std::pin::Pin;

use futures::Stream;
use proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
    maintenance_server::Maintenance,
};
use tonic::{Request, Response, Status};

use super::V3;
use crate::config::ETCD_VERSION;

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

/// A CRC-32 (IEEE, as etcd's) of every key and value as of `revision` (0: the current one), with the
/// store's revision and compaction point.
fn hash_at(v3: &V3, revision: i64) -> Result<(u32, u64, u64), Status> {
    let r = v3.app.node.kv().with_store(|s| {
        let range = proto::etcdserverpb::RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision,
            ..Default::default()
        };
        s.range(&range).map(|r| (r.kvs, s.index(), s.compacted()))
    });
    let (kvs, rev, compacted) = r.map_err(super::error::v3)?;
    let mut h = crc32fast::Hasher::new();
    for kv in kvs {
        h.update(&kv.key);
        h.update(&kv.value);
    }
    Ok((h.finalize(), rev, compacted))
}

#[tonic::async_trait]
impl Maintenance for V3 {
    async fn alarm(&self, _req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        Ok(Response::new(AlarmResponse {
            header: self.header(self.revision()),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let st = self.app.node.status();
        let (rev, size) = self.app.node.kv().with_store(|s| {
            let size: usize = s.kvs().map(|kv| kv.key.len() + kv.value.len() + 48).sum();
            (s.index(), size as i64)
        });
        Ok(Response::new(StatusResponse {
            header: self.header(rev),
            version: ETCD_VERSION.to_string(),
            db_size: size,
            leader: st.leader.unwrap_or(0),
            raft_index: st.applied,
            raft_term: st.term,
            raft_applied_index: st.applied,
            errors: Vec::new(),
            db_size_in_use: size,
            is_learner: false,
        }))
    }

    async fn defragment(
        &self,
        _req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Ok(Response::new(DefragmentResponse {
            header: self.header(self.revision()),
        }))
    }

    /// etcd hashes its whole backend file; ours hashes every key and value at the current revision, which
    /// serves the same purpose (members with equal data answer equal hashes).
    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let (hash, rev, _) = hash_at(self, 0)?;
        Ok(Response::new(HashResponse {
            header: self.header(rev),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let (hash, rev, compacted) = hash_at(self, req.into_inner().revision)?;
        Ok(Response::new(HashKvResponse {
            header: self.header(rev),
            hash,
            compact_revision: compacted as i64,
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(Status::unimplemented("snapshot is not supported"))
    }

    async fn move_leader(
        &self,
        _req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(Status::unimplemented(
            "move-leader needs more than one member",
        ))
    }
}
