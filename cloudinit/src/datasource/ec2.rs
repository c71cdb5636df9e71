//! `--from-ec2-metadata`: an EC2-style metadata service (`2009-04-04/user-data`, `2009-04-04/meta-data/...`).

use async_trait::async_trait;

use super::{Datasource, Error, get, http_client};
use crate::metadata::Metadata;

/// The EC2 metadata service's usual address.
pub const DEFAULT_EC2_URL: &str = "http://169.254.169.254/";
const API_VERSION: &str = "2009-04-04";

/// An EC2-compatible metadata service rooted at a URL.
pub struct Ec2Metadata {
    base: String,
}

impl Ec2Metadata {
    /// The service at `base` (e.g. `http://169.254.169.254/`).
    pub fn new(base: &str) -> Ec2Metadata {
        let base = if base.ends_with('/') {
            base.to_string()
        } else {
            format!("{base}/")
        };
        Ec2Metadata { base }
    }

    fn url(&self, rel: &str) -> String {
        format!("{}{API_VERSION}/{rel}", self.base)
    }

    async fn text(&self, client: &reqwest::Client, rel: &str) -> Result<Option<String>, Error> {
        Ok(get(client, &self.url(rel))
            .await?
            .map(|b| String::from_utf8_lossy(&b).trim().to_string()))
    }
}

#[async_trait]
impl Datasource for Ec2Metadata {
    fn kind(&self) -> &'static str {
        "ec2-metadata-service"
    }

    /// Available once the service answers for its API version at all (a listing, or a 404 from a server that only
    /// serves the leaf documents); connection errors and server errors mean "not yet".
    async fn available(&self) -> bool {
        match http_client() {
            Ok(client) => get(&client, &format!("{}{API_VERSION}/", self.base))
                .await
                .is_ok(),
            Err(_) => false,
        }
    }

    async fn user_data(&self) -> Result<Vec<u8>, Error> {
        let client = http_client()?;
        Ok(get(&client, &self.url("user-data"))
            .await?
            .unwrap_or_default())
    }

    async fn metadata(&self) -> Result<Metadata, Error> {
        let client = http_client()?;
        let mut keys = Vec::new();
        if let Some(list) = self.text(&client, "meta-data/public-keys").await? {
            for line in list.lines() {
                let Some((index, _name)) = line.split_once('=') else {
                    continue;
                };
                if let Some(key) = self
                    .text(
                        &client,
                        &format!("meta-data/public-keys/{index}/openssh-key"),
                    )
                    .await?
                {
                    keys.push(key);
                }
            }
        }
        Ok(Metadata {
            hostname: self.text(&client, "meta-data/hostname").await?,
            ssh_public_keys: keys,
            private_ipv4: self.text(&client, "meta-data/local-ipv4").await?,
            public_ipv4: self.text(&client, "meta-data/public-ipv4").await?,
            ..Default::default()
        })
    }
}
