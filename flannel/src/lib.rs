//! flannel: one subnet per machine leased in etcd, vxlan and host-gw backends.
//!
//! Not built yet: this crate is an empty library until its issue is worked on.
