//! `--from-configdrive`: an OpenStack config drive directory (`openstack/latest/{user_data,meta_data.json}`).

use std::path::PathBuf;

use async_trait::async_trait;

use super::{Datasource, Error};
use crate::metadata::Metadata;

/// A mounted config drive.
pub struct ConfigDrive {
    root: PathBuf,
}

impl ConfigDrive {
    /// The config drive mounted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> ConfigDrive {
        ConfigDrive { root: root.into() }
    }

    async fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, Error> {
        let path = self.root.join("openstack/latest").join(rel);
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }
}

#[async_trait]
impl Datasource for ConfigDrive {
    fn kind(&self) -> &'static str {
        "cloud-drive"
    }

    async fn available(&self) -> bool {
        tokio::fs::metadata(self.root.join("openstack"))
            .await
            .is_ok_and(|m| m.is_dir())
    }

    async fn user_data(&self) -> Result<Vec<u8>, Error> {
        Ok(self.read("user_data").await?.unwrap_or_default())
    }

    async fn metadata(&self) -> Result<Metadata, Error> {
        let Some(raw) = self.read("meta_data.json").await? else {
            return Ok(Metadata::default());
        };
        let json: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| Error::Metadata {
                what: "meta_data.json".into(),
                message: e.to_string(),
            })?;
        let mut keys: Vec<(String, String)> = json
            .get("public_keys")
            .and_then(|k| k.as_object())
            .map(|m| {
                m.iter()
                    .filter_map(|(n, k)| k.as_str().map(|k| (n.clone(), k.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        Ok(Metadata {
            hostname: json
                .get("hostname")
                .and_then(|h| h.as_str())
                .map(str::to_string),
            ssh_public_keys: keys.into_iter().map(|(_, k)| k).collect(),
            ..Default::default()
        })
    }
}
