//! The pod manifest written at prepare time (`<pod>/pod`): appc's PodManifest shape, with the apps'
//! image configuration already merged with the command-line overrides, plus our stage1 settings.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ImageRef {
    pub name: String,
    /// `sha256-<hex>` of the manifest.
    pub id: String,
    /// The rendered tree (chain id hex) the app's rootfs is built on.
    pub tree: String,
}

/// Resource limits of one app (cgroups).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.memory_bytes.is_none() && self.cpu_millis.is_none() && self.pids.is_none()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub exec: Vec<String>,
    pub user: String,
    pub group: String,
    #[serde(default)]
    pub supplementary_gids: Vec<u32>,
    pub working_directory: String,
    pub environment: Vec<NameValue>,
    #[serde(default)]
    pub read_only_root_fs: bool,
    /// The capabilities kept (names like `CAP_CHOWN`).
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub interactive: bool,
    /// Where the app's stdout goes (`--stdout`).
    #[serde(default, skip_serializing_if = "Output::is_inherit")]
    pub stdout: Output,
    /// Where the app's stderr goes (`--stderr`).
    #[serde(default, skip_serializing_if = "Output::is_inherit")]
    pub stderr: Output,
}

/// Where an app's stdout or stderr goes.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// The stream of `rkt run` itself (the journal when rkt runs as a systemd service).
    #[default]
    Inherit,
    /// Discarded (`/dev/null`).
    Null,
    /// Recorded by stage1 in the app's log file (see `stage1::logs`).
    Log,
}

impl Output {
    pub fn is_inherit(&self) -> bool {
        *self == Output::Inherit
    }

    /// Parses a `--stdout`/`--stderr` value; the attach modes are refused.
    pub fn parse(flag: &str, v: &str) -> crate::Result<Self> {
        match v {
            "null" => Ok(Output::Null),
            "log" => Ok(Output::Log),
            "tty" | "stream" => Err(crate::Error::NotImplemented(format!(
                "--{flag}={v}: attaching to an app is not supported; use log or null (or leave it out to pass the stream through)"
            ))),
            o => Err(crate::Error::Usage(format!(
                "--{flag}: expected null, tty, stream or log, got {o:?}"
            ))),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mount {
    pub volume: String,
    pub path: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuntimeApp {
    pub name: String,
    pub image: ImageRef,
    pub app: App,
    #[serde(default)]
    pub mounts: Vec<Mount>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    /// `host` or `empty`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default = "default_true")]
    pub recursive: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodManifest {
    pub ac_version: String,
    pub ac_kind: String,
    pub apps: Vec<RuntimeApp>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub annotations: Vec<NameValue>,
    /// Stage1 settings (not in appc): hostname, network and DNS.
    pub stage1: Stage1Settings,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Stage1Settings {
    pub hostname: String,
    /// `host`, `none` or `default`.
    pub net: String,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub dns_search: Vec<String>,
    #[serde(default)]
    pub hosts_entries: Vec<String>,
    /// The resolved network for `--net=<name>` (none for host and none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::stage1::net::Network>,
}

impl PodManifest {
    pub fn app(&self, name: &str) -> Option<&RuntimeApp> {
        self.apps.iter().find(|a| a.name == name)
    }
}
