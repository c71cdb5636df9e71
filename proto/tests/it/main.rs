//! The shared client library against real servers.

mod etcd_client;
