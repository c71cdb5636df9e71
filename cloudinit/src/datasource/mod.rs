//! Datasources: where user-data and metadata come from, and how the first available one is chosen.
//!
//! All configured sources are polled at once, each with exponential backoff (100 ms up to 30 s); the first one
//! available wins; the overall wait is bounded (5 minutes by default, as the original).

mod cmdline;
mod configdrive;
mod ec2;
mod file;
mod url;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use cmdline::{PROC_CMDLINE, ProcCmdline};
pub use configdrive::ConfigDrive;
pub use ec2::{DEFAULT_EC2_URL, Ec2Metadata};
pub use file::LocalFile;
pub use url::Url;

use crate::metadata::Metadata;

/// The original's overall datasource timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// First retry delay of the availability poll.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest retry delay of the availability poll.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Timeout of a single HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors from a datasource.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP request failed.
    #[error("fetching {url}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// Metadata was malformed.
    #[error("parsing metadata from {what}: {message}")]
    Metadata {
        /// The source.
        what: String,
        /// Why.
        message: String,
    },
}

/// One place user-data may come from.
#[async_trait]
pub trait Datasource: Send + Sync {
    /// The original's type name, as logged (`local-file`, `url`, `cloud-drive`, ...).
    fn kind(&self) -> &'static str;
    /// Whether the source can be read now.
    async fn available(&self) -> bool;
    /// The raw user-data (possibly gzip-compressed; empty when there is none).
    async fn user_data(&self) -> Result<Vec<u8>, Error>;
    /// The metadata; empty for sources that have none.
    async fn metadata(&self) -> Result<Metadata, Error> {
        Ok(Metadata::default())
    }
}

/// Polls every source concurrently with backoff and returns the first available, or `None` after `timeout`.
pub async fn select(
    sources: Vec<Arc<dyn Datasource>>,
    timeout: Duration,
) -> Option<Arc<dyn Datasource>> {
    let mut set = tokio::task::JoinSet::new();
    for source in sources {
        set.spawn(async move {
            let mut delay = BACKOFF_START;
            loop {
                tracing::info!("Checking availability of {:?}", source.kind());
                if source.available().await {
                    return source;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(BACKOFF_MAX);
            }
        });
    }
    let first = tokio::time::timeout(timeout, async {
        while let Some(done) = set.join_next().await {
            if let Ok(source) = done {
                return Some(source);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    set.abort_all();
    first
}

/// An HTTP client for metadata services; installs the ring TLS provider once.
pub(crate) fn http_client() -> Result<reqwest::Client, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(|e| Error::Http {
            url: String::new(),
            message: e.to_string(),
        })
}

/// GETs `url`: `Ok(None)` on 404, the body on success, an error otherwise.
pub(crate) async fn get(client: &reqwest::Client, url: &str) -> Result<Option<Vec<u8>>, Error> {
    let err = |message: String| Error::Http {
        url: url.to_string(),
        message,
    };
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(err(format!("status {status}")));
    }
    let body = response.bytes().await.map_err(|e| err(e.to_string()))?;
    Ok(Some(body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct After(std::sync::atomic::AtomicUsize, usize, &'static str);

    #[async_trait]
    impl Datasource for After {
        fn kind(&self) -> &'static str {
            self.2
        }
        async fn available(&self) -> bool {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= self.1
        }
        async fn user_data(&self) -> Result<Vec<u8>, Error> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn first_available_wins_and_timeout_bounds_the_wait() {
        let never: Arc<dyn Datasource> = Arc::new(After(0.into(), usize::MAX, "never"));
        // Available on the third poll, i.e. after the 100 ms and 200 ms backoff steps.
        let third: Arc<dyn Datasource> = Arc::new(After(0.into(), 2, "third-try"));
        let started = std::time::Instant::now();
        let got = select(vec![never.clone(), third], Duration::from_secs(20)).await;
        assert_eq!(got.map(|s| s.kind()), Some("third-try"));
        assert!(started.elapsed() >= Duration::from_millis(300));
        let started = std::time::Instant::now();
        let got = select(vec![never], Duration::from_millis(500)).await;
        assert!(got.is_none());
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
