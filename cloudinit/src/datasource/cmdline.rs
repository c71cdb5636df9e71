//! `--from-proc-cmdline`: user-data from the `cloud-config-url=` kernel parameter.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{Datasource, Error, get, http_client};

/// The kernel command line (a file path, `/proc/cmdline` by default, so tests can pass their own).
pub struct ProcCmdline {
    path: PathBuf,
}

/// The real kernel command line.
pub const PROC_CMDLINE: &str = "/proc/cmdline";

impl ProcCmdline {
    /// Reads the command line from `path`.
    pub fn new(path: impl Into<PathBuf>) -> ProcCmdline {
        ProcCmdline { path: path.into() }
    }

    async fn url(&self) -> Option<String> {
        let text = tokio::fs::read_to_string(&self.path).await.ok()?;
        find_url(&text)
    }
}

/// The last `cloud-config-url=` value on a kernel command line.
pub fn find_url(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .filter_map(|arg| arg.strip_prefix("cloud-config-url="))
        .next_back()
        .map(|u| u.trim_matches('"').to_string())
}

#[async_trait]
impl Datasource for ProcCmdline {
    fn kind(&self) -> &'static str {
        "proc-cmdline"
    }

    async fn available(&self) -> bool {
        self.url().await.is_some()
    }

    async fn user_data(&self) -> Result<Vec<u8>, Error> {
        let url = self.url().await.ok_or_else(|| Error::Metadata {
            what: self.path.display().to_string(),
            message: "no cloud-config-url".into(),
        })?;
        let client = http_client()?;
        get(&client, &url).await?.ok_or_else(|| Error::Http {
            url,
            message: "not found".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_url() {
        assert_eq!(
            find_url("BOOT_IMAGE=/vmlinuz root=/dev/sda cloud-config-url=http://x/y quiet\n")
                .as_deref(),
            Some("http://x/y")
        );
        assert_eq!(find_url("root=/dev/sda"), None);
    }
}
