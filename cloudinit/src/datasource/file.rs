//! `--from-file`: user-data from a local file.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{Datasource, Error};

/// A local file.
pub struct LocalFile {
    path: PathBuf,
}

impl LocalFile {
    /// The file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> LocalFile {
        LocalFile { path: path.into() }
    }
}

#[async_trait]
impl Datasource for LocalFile {
    fn kind(&self) -> &'static str {
        "local-file"
    }

    async fn available(&self) -> bool {
        tokio::fs::metadata(&self.path)
            .await
            .is_ok_and(|m| m.is_file())
    }

    async fn user_data(&self) -> Result<Vec<u8>, Error> {
        tokio::fs::read(&self.path)
            .await
            .map_err(|source| Error::Io {
                path: self.path.display().to_string(),
                source,
            })
    }
}
