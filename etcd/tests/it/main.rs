//! Integration tests of the etcd crate: HTTP API, differential runs against Debian's etcd, crash safety.

mod api;
mod bench;
mod cluster;
mod crash;
mod differential;
mod etcdctl;
mod etcdctl_v3;
mod linearizability;
mod proxy;
mod support;
mod tls;
mod v3_cross;
mod v3_etcd_client;
mod v3_etcdctl;
