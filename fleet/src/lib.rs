//! fleet: a cluster-wide init system (unit scheduling through etcd, agents driving systemd).
//!
//! Not built yet: this crate is an empty library until its issue is worked on.
