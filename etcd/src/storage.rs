//! Durable storage for raft: the log, the vote and state-machine snapshots, behind [`Backend`].
//!
//! This is the only module that knows sled. Writes become durable only after [`Backend::flush`].

use std::future::Future;
use std::path::{Path, PathBuf};

/// What can go wrong with the data dir.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database reported an error.
    #[error("storage: {0}")]
    Db(#[from] sled::Error),
    /// Making written data durable failed.
    #[error("storage: syncing the database file: {0}")]
    Sync(std::io::Error),
    /// The directory is not ours (e.g. a real etcd's, or unrelated files).
    #[error("data dir {path} is not an etcd-rs data dir: {why}")]
    Foreign {
        /// The data dir.
        path: PathBuf,
        /// What was found.
        why: String,
    },
    /// The directory is ours but unreadable.
    #[error("data dir {path} is corrupt: {why}")]
    Corrupt {
        /// The data dir.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Creating or reading the directory failed.
    #[error("data dir {path}: {source}")]
    Io {
        /// The data dir.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The persistence raft needs: an ordered log of encoded entries plus a few named metadata blobs.
pub trait Backend: Send + Sync + 'static {
    /// Stores entries (index, bytes); durable after the next [`Backend::flush`].
    fn append(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<(), StorageError>;
    /// Makes every earlier write durable.
    fn flush(&self) -> impl Future<Output = Result<(), StorageError>> + Send;
    /// Entries with `start <= index < end`, in order.
    fn range(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, StorageError>;
    /// The last entry.
    fn last(&self) -> Result<Option<Vec<u8>>, StorageError>;
    /// Removes entries with index >= `from`.
    fn truncate(&self, from: u64) -> Result<(), StorageError>;
    /// Removes entries with index <= `upto`.
    fn purge(&self, upto: u64) -> Result<(), StorageError>;
    /// Reads a metadata blob.
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError>;
    /// Writes a metadata blob; durable after the next flush.
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError>;
}

const FORMAT_KEY: &str = "format";
const FORMAT: &[u8] = b"etcd-rs v1";
const DB_DIR: &str = "db";
/// The file inside [`DB_DIR`] where sled 0.34 keeps its log-structured pages.
const SLED_FILE: &str = "db";

/// The sled implementation.
pub struct SledBackend {
    db: sled::Db,
    logs: sled::Tree,
    meta: sled::Tree,
    /// sled's log file. sled's flush ends with `sync_file_range`, which neither flushes the device's
    /// write cache nor the file's metadata; an `fdatasync` of this file after it makes a flush
    /// durable against power loss, as etcd's WAL `fdatasync` is.
    file: std::sync::Arc<std::fs::File>,
}

impl SledBackend {
    /// Whether `dir` holds a member's database (a member's data dir, not a proxy's).
    pub fn exists_in(dir: &Path) -> bool {
        dir.join(DB_DIR).is_dir()
    }

    /// Opens (or creates) the database inside `dir`, refusing directories that are not ours.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let io = |source| StorageError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let db_path = dir.join(DB_DIR);
        let fresh = !db_path.exists();
        if fresh {
            let mut others = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(io)? {
                let entry = entry.map_err(io)?;
                others.push(entry.file_name().to_string_lossy().into_owned());
            }
            if others.iter().any(|n| n == "member") {
                return Err(StorageError::Foreign {
                    path: dir.to_path_buf(),
                    why: "it holds a 'member' directory (a data dir of Go etcd?)".into(),
                });
            }
            if !others.is_empty() {
                others.sort();
                return Err(StorageError::Foreign {
                    path: dir.to_path_buf(),
                    why: format!("it holds unknown files: {}", others.join(", ")),
                });
            }
        }
        let corrupt = |why: String| StorageError::Corrupt {
            path: dir.to_path_buf(),
            why,
        };
        let db = sled::Config::new()
            .path(&db_path)
            .cache_capacity(64 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            // Durability comes from explicit flushes; the periodic one only adds latency spikes.
            .flush_every_ms(None)
            .open()
            .map_err(|e| corrupt(format!("cannot open the database: {e}")))?;
        let logs = db.open_tree("logs").map_err(|e| corrupt(e.to_string()))?;
        let meta = db.open_tree("meta").map_err(|e| corrupt(e.to_string()))?;
        match meta.get(FORMAT_KEY).map_err(|e| corrupt(e.to_string()))? {
            Some(v) if v.as_ref() == FORMAT => {}
            Some(v) => {
                return Err(corrupt(format!(
                    "unknown format {:?}",
                    String::from_utf8_lossy(&v)
                )));
            }
            None if fresh => {
                meta.insert(FORMAT_KEY, FORMAT)?;
                db.flush()?;
            }
            None => return Err(corrupt("the format marker is missing".into())),
        }
        let file = std::fs::File::open(db_path.join(SLED_FILE))
            .map_err(|e| corrupt(format!("cannot open the database file: {e}")))?;
        Ok(SledBackend {
            db,
            logs,
            meta,
            file: std::sync::Arc::new(file),
        })
    }
}

impl Backend for SledBackend {
    fn append(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for (i, bytes) in entries {
            batch.insert(&i.to_be_bytes(), bytes);
        }
        self.logs.apply_batch(batch)?;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_async().await?;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.sync_data())
            .await
            .map_err(|e| StorageError::Sync(std::io::Error::other(e)))?
            .map_err(StorageError::Sync)?;
        Ok(())
    }

    fn range(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, StorageError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for item in self.logs.range(start.to_be_bytes()..end.to_be_bytes()) {
            let (_, v) = item?;
            out.push(v.to_vec());
        }
        Ok(out)
    }

    fn last(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.logs.last()?.map(|(_, v)| v.to_vec()))
    }

    fn truncate(&self, from: u64) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.logs.range(from.to_be_bytes()..) {
            let (k, _) = item?;
            batch.remove(k);
        }
        self.logs.apply_batch(batch)?;
        Ok(())
    }

    fn purge(&self, upto: u64) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.logs.range(..=upto.to_be_bytes()) {
            let (k, _) = item?;
            batch.remove(k);
        }
        self.logs.apply_batch(batch)?;
        Ok(())
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.meta.insert(key, value)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_and_refuses_foreign_dirs() {
        let dir = tempfile::tempdir().unwrap();
        {
            let b = SledBackend::open(dir.path()).unwrap();
            b.append(vec![
                (1, b"a".to_vec()),
                (2, b"b".to_vec()),
                (3, b"c".to_vec()),
            ])
            .unwrap();
            b.put_meta("vote", b"v").unwrap();
            b.flush().await.unwrap();
            assert_eq!(b.range(2, 10).unwrap(), vec![b"b".to_vec(), b"c".to_vec()]);
            b.truncate(3).unwrap();
            b.purge(1).unwrap();
            assert_eq!(b.range(0, 10).unwrap(), vec![b"b".to_vec()]);
            b.flush().await.unwrap();
        }
        // sled releases its lock when its last background reference goes: poll for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let b = loop {
            match SledBackend::open(dir.path()) {
                Ok(b) => break b,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "reopening: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        };
        assert_eq!(b.last().unwrap(), Some(b"b".to_vec()));
        assert_eq!(b.get_meta("vote").unwrap(), Some(b"v".to_vec()));

        let foreign = tempfile::tempdir().unwrap();
        std::fs::create_dir(foreign.path().join("member")).unwrap();
        let e = SledBackend::open(foreign.path()).err().unwrap();
        assert!(e.to_string().contains("Go etcd"), "{e}");
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("notes.txt"), "x").unwrap();
        assert!(matches!(
            SledBackend::open(other.path()),
            Err(StorageError::Foreign { .. })
        ));
    }
}
