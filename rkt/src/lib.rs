//! rkt: a daemonless container runtime for OCI images.
//!
//! `image` holds the content-addressed store and safe layer unpacking, `pod` the on-disk pod
//! lifecycle, `stage1` the built-in namespace/cgroup/network runtime, `api` the read-only gRPC
//! service, and `cli` the command set the thin `rkt` binary parses into.

pub mod api;
pub mod cli;
pub mod error;
pub mod image;
pub mod lock;
pub mod pod;
pub mod stage1;
pub mod timefmt;

pub use error::{Error, Result};
