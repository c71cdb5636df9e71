//! The gRPC contracts of the project, generated from `proto/**/*.proto` by
//! tonic/prost, and the client library the daemons share.
//!
//! Only this crate knows protobuf: other crates use the generated types and
//! clients re-exported here. Generated modules follow the protobuf package
//! names (package `etcdserverpb` becomes `proto::etcdserverpb`).

pub mod etcd;

#[allow(clippy::all, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
}
pub use generated::*;

/// Re-exported so that users of the generated types (encode/decode, servers,
/// clients) need no protobuf dependency of their own.
pub use prost;
pub use tonic;
