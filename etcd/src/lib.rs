//! etcd: raft (openraft) over sled, serving the etcd v2 HTTP API.
//!
//! Not built yet: this crate is an empty library until its issue is worked on.
