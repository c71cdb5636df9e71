//! The gRPC contracts of the project, generated from `proto/**/*.proto` by
//! tonic/prost, and the client library the daemons share.
//!
//! Only this crate knows protobuf: other crates use the generated types and
//! clients re-exported here. Generated modules follow the protobuf package
//! names (package `etcdserverpb` becomes `proto::etcdserverpb`).

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/_includes.rs"));

/// Re-exported so that users of the generated types (encode/decode, servers,
/// clients) need no protobuf dependency of their own.
pub use prost;
pub use tonic;
