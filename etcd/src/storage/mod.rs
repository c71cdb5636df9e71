//! Durable storage for raft: the log, the vote and state-machine snapshots, behind [`Backend`].
//!
//! The log lives in our own write-ahead file ([`wal`]): one `pwrite` per batch of entries and one `fdatasync`
//! per flush. The vote, the purge marker and snapshots live in sled, written only when they change. This is
//! the only module that knows sled. Writes become durable only after [`Backend::flush`].

pub mod wal;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What can go wrong with the data dir.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database reported an error.
    #[error("storage: {0}")]
    Db(#[from] sled::Error),
    /// Making written data durable failed.
    #[error("storage: syncing the database file: {0}")]
    Sync(std::io::Error),
    /// The raft log failed.
    #[error("storage: {0}")]
    Wal(#[from] wal::WalError),
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
/// v1 kept the log in sled (tree `logs`); v2 keeps it in [`WAL_DIR`]. A v1 dir is migrated on open.
const FORMAT: &[u8] = b"etcd-rs v2";
const FORMAT_V1: &[u8] = b"etcd-rs v1";
const DB_DIR: &str = "db";
const WAL_DIR: &str = "wal";
/// The file inside [`DB_DIR`] where sled 0.34 keeps its log-structured pages.
const SLED_FILE: &str = "db";

/// The on-disk implementation: the log in a [`wal::Wal`], the rest in sled.
pub struct DiskBackend {
    wal: wal::Wal,
    db: sled::Db,
    meta: sled::Tree,
    /// sled holds writes that the next flush must make durable.
    meta_dirty: AtomicBool,
    /// sled's log file. sled's flush ends with `sync_file_range`, which neither flushes the device's
    /// write cache nor the file's metadata; an `fdatasync` of this file after it makes a flush
    /// durable against power loss.
    file: Arc<std::fs::File>,
}

impl DiskBackend {
    /// Whether `dir` holds a member's database (a member's data dir, not a proxy's).
    pub fn exists_in(dir: &Path) -> bool {
        dir.join(DB_DIR).is_dir()
    }

    /// Opens (or creates) the storage inside `dir`, refusing directories that are not ours.
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
            // A crash while creating a fresh dir may leave the log directory alone; `fixtures` holds the
            // certificates of `--auto-tls`/`--peer-auto-tls`, made before the storage is opened.
            others.retain(|n| n != WAL_DIR && n != "fixtures");
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
        let meta = db.open_tree("meta").map_err(|e| corrupt(e.to_string()))?;
        let wal_path = dir.join(WAL_DIR);
        let format = meta.get(FORMAT_KEY).map_err(|e| corrupt(e.to_string()))?;
        let wal = match format.as_deref() {
            Some(v) if v == FORMAT => {
                if !wal_path.is_dir() {
                    return Err(corrupt(format!(
                        "the raft log {} is missing",
                        wal_path.display()
                    )));
                }
                wal::Wal::open(&wal_path)?
            }
            Some(v) if v == FORMAT_V1 => {
                let wal = migrate_v1(&db, &wal_path)?;
                meta.insert(FORMAT_KEY, FORMAT)?;
                tracing::info!("moved the raft log from sled to {}", wal_path.display());
                wal
            }
            Some(v) => {
                return Err(corrupt(format!(
                    "unknown format {:?}",
                    String::from_utf8_lossy(v)
                )));
            }
            None if fresh => {
                std::fs::create_dir_all(&wal_path).map_err(io)?;
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io)?;
                // The marker goes last: a dir that has it has its log directory.
                meta.insert(FORMAT_KEY, FORMAT)?;
                wal::Wal::open(&wal_path)?
            }
            None => return Err(corrupt("the format marker is missing".into())),
        };
        db.flush()?;
        let file = std::fs::File::open(db_path.join(SLED_FILE))
            .map_err(|e| corrupt(format!("cannot open the database file: {e}")))?;
        file.sync_data().map_err(StorageError::Sync)?;
        Ok(DiskBackend {
            wal,
            db,
            meta,
            meta_dirty: AtomicBool::new(false),
            file: Arc::new(file),
        })
    }
}

/// Moves a v1 data dir's log out of sled into a fresh WAL (redone from scratch if interrupted).
fn migrate_v1(db: &sled::Db, wal_path: &Path) -> Result<wal::Wal, StorageError> {
    let io = |source| StorageError::Io {
        path: wal_path.to_path_buf(),
        source,
    };
    if wal_path.exists() {
        std::fs::remove_dir_all(wal_path).map_err(io)?;
    }
    std::fs::create_dir_all(wal_path).map_err(io)?;
    let logs = db.open_tree("logs")?;
    let wal = wal::Wal::open(wal_path)?;
    let mut batch = Vec::new();
    for item in logs.iter() {
        let (k, v) = item?;
        let index = <[u8; 8]>::try_from(k.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| StorageError::Corrupt {
                path: wal_path.to_path_buf(),
                why: "a v1 log key is not an index".into(),
            })?;
        batch.push((index, v.to_vec()));
    }
    wal.append(&batch)?;
    wal.take_sync().run()?;
    db.drop_tree("logs")?;
    Ok(wal)
}

impl Backend for DiskBackend {
    fn append(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<(), StorageError> {
        Ok(self.wal.append(&entries)?)
    }

    async fn flush(&self) -> Result<(), StorageError> {
        let meta = self.meta_dirty.swap(false, Ordering::AcqRel);
        let wal = self.wal.take_sync();
        if !meta && wal.is_empty() {
            return Ok(());
        }
        // The log alone is synced on the calling worker thread, not handed to the blocking pool: the raft
        // core awaits this flush before it does anything else (openraft 0.9), so blocking it costs nothing,
        // while the hand-off and the wake-up back cost two context switches per group commit, ~15% of v3
        // Put throughput at 16 connections on the 2-core VM (BENCHMARKS.md). Tasks queued behind it on
        // this worker are stolen by the others; the rare sled flush still goes to the blocking pool.
        if !meta {
            return match wal.run_ref() {
                Ok(()) => Ok(()),
                Err(e) => {
                    self.wal.restore_sync(&wal);
                    Err(e.into())
                }
            };
        }
        let db = self.db.clone();
        let file = self.file.clone();
        let res = tokio::task::spawn_blocking(move || {
            let res = if meta {
                db.flush()
                    .map_err(StorageError::from)
                    .and_then(|_| file.sync_data().map_err(StorageError::Sync))
            } else {
                Ok(())
            };
            let res = res.and_then(|()| wal.run_ref().map_err(StorageError::from));
            (res, wal)
        })
        .await;
        let failed = match res {
            Ok((Ok(()), _)) => return Ok(()),
            Ok((Err(e), wal)) => {
                self.wal.restore_sync(&wal);
                e
            }
            Err(e) => StorageError::Sync(std::io::Error::other(e)),
        };
        // The next flush tries again.
        self.meta_dirty.fetch_or(meta, Ordering::AcqRel);
        Err(failed)
    }

    fn range(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, StorageError> {
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(self.wal.range(start, end)?)
    }

    fn last(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.wal.last()?)
    }

    fn truncate(&self, from: u64) -> Result<(), StorageError> {
        Ok(self.wal.truncate(from)?)
    }

    fn purge(&self, upto: u64) -> Result<(), StorageError> {
        Ok(self.wal.purge(upto)?)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StorageError> {
        self.meta.insert(key, value)?;
        self.meta_dirty.store(true, Ordering::Release);
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
            let b = DiskBackend::open(dir.path()).unwrap();
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
            match DiskBackend::open(dir.path()) {
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
        let e = DiskBackend::open(foreign.path()).err().unwrap();
        assert!(e.to_string().contains("Go etcd"), "{e}");
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("notes.txt"), "x").unwrap();
        assert!(matches!(
            DiskBackend::open(other.path()),
            Err(StorageError::Foreign { .. })
        ));
    }

    #[tokio::test]
    async fn a_v1_dir_with_the_log_in_sled_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path().join(DB_DIR)).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(FORMAT_KEY, FORMAT_V1)
                .unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert("vote", b"v".as_slice())
                .unwrap();
            let logs = db.open_tree("logs").unwrap();
            for i in 5u64..=7 {
                logs.insert(i.to_be_bytes(), format!("e{i}").as_bytes())
                    .unwrap();
            }
            db.flush().unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let b = loop {
            match DiskBackend::open(dir.path()) {
                Ok(b) => break b,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "opening: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            }
        };
        assert_eq!(
            b.range(0, 100).unwrap(),
            vec![b"e5".to_vec(), b"e6".to_vec(), b"e7".to_vec()]
        );
        assert_eq!(b.get_meta("vote").unwrap(), Some(b"v".to_vec()));
        assert_eq!(b.get_meta(FORMAT_KEY).unwrap(), Some(FORMAT.to_vec()));
        assert!(!b.db.tree_names().iter().any(|n| n.as_ref() == b"logs"));
        b.append(vec![(8, b"e8".to_vec())]).unwrap();
        b.flush().await.unwrap();
    }
}
