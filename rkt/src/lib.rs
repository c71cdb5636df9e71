//! rkt: a daemonless container runtime for OCI images.
//!
//! Not built yet: this crate is an empty library until its issue is worked on.
