//! The etcd v3 gRPC services (tonic) over the shared store: KV, Watch, Lease, Cluster, Maintenance.
//!
//! They are served on the client listeners beside the v2 HTTP API: `lib.rs` hands requests whose
//! content type is `application/grpc*` to [`routes`], everything else to the v2 router.

mod cluster;
pub mod error;
mod kv;
mod lease;
mod maintenance;
mod watch;

use std::sync::Arc;

use proto::etcdserverpb::ResponseHeader;
use proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};

use crate::http::App;

/// The services' shared state.
#[derive(Clone)]
pub struct V3 {
    app: Arc<App>,
    lease_ids: Arc<std::sync::atomic::AtomicI64>,
}

impl V3 {
    /// The response header etcd sends: cluster, member, revision, term.
    fn header(&self, revision: u64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.app.settings.cluster_id,
            member_id: self.app.settings.member_id,
            revision: i64::try_from(revision).unwrap_or(i64::MAX),
            raft_term: self.app.node.status().term,
        })
    }

    /// The store revision.
    fn revision(&self) -> u64 {
        self.app.node.kv().index()
    }

    /// Fills the cluster fields of a header the store wrote (it knows only the revision).
    fn complete(&self, h: &mut Option<ResponseHeader>) {
        let rev = h.as_ref().map_or(0, |h| h.revision);
        *h = self.header(u64::try_from(rev).unwrap_or(0));
    }
}

/// The gRPC services as one router.
pub fn routes(app: Arc<App>) -> axum::Router {
    // Lease ids a client did not choose: the member id's low bits, then a clock-seeded counter (as etcd's
    // idutil), so members never hand out the same id.
    let seed = ((app.settings.member_id as i64 & 0x7fff) << 48)
        | ((crate::store::time::now_ns() / 1_000_000) & 0xff_ffff_ffff) << 8;
    let v3 = V3 {
        app,
        lease_ids: Arc::new(std::sync::atomic::AtomicI64::new(seed)),
    };
    tonic::service::Routes::new(KvServer::new(v3.clone()))
        .add_service(WatchServer::new(v3.clone()))
        .add_service(LeaseServer::new(v3.clone()))
        .add_service(ClusterServer::new(v3.clone()))
        .add_service(MaintenanceServer::new(v3))
        .into_axum_router()
}
