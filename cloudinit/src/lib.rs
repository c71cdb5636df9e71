//! coreos-cloudinit: parses, validates and applies #cloud-config.
//!
//! Layers, bottom up: [`yaml`] (line-numbered nodes, YAML 1.1 scalars), [`schema`] (every key as data),
//! [`config`] (the typed `CloudConfig`), [`validate`] (the line-numbered report), [`userdata`] (kinds),
//! [`metadata`] (merge and `$private_ipv4` substitution), [`apply`] (writing it all under a root prefix, with
//! [`systemd`] and accounts seams).

pub mod apply;
pub mod config;
pub mod datasource;
pub mod metadata;
pub mod run;
pub mod schema;
pub mod systemd;
pub mod userdata;
pub mod validate;
pub mod web;
pub mod yaml;

pub use apply::{Env, apply};
pub use config::CloudConfig;
