//! coreos-cloudinit: parses, validates and applies #cloud-config.
//!
//! Not built yet: this crate is an empty library until its issue is worked on.
