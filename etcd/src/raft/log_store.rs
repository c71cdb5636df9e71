//! openraft's `RaftLogStorage` over a [`Backend`]: appends and votes are flushed before they are acknowledged.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote,
};

use super::{NodeId, TypeConfig};
use crate::storage::Backend;

/// The raft log.
pub struct LogStore<B: Backend> {
    backend: Arc<B>,
}

impl<B: Backend> Clone for LogStore<B> {
    fn clone(&self) -> Self {
        LogStore {
            backend: self.backend.clone(),
        }
    }
}

impl<B: Backend> LogStore<B> {
    /// A log stored in `backend`.
    pub fn new(backend: Arc<B>) -> Self {
        LogStore { backend }
    }

    fn meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StorageError<NodeId>> {
        match self
            .backend
            .get_meta(key)
            .map_err(|e| StorageIOError::read(&e))?
        {
            Some(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).map_err(|e| StorageIOError::read(&e))?,
            )),
            None => Ok(None),
        }
    }

    fn put<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageIOError::write(&e))?;
        self.backend
            .put_meta(key, &bytes)
            .map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }
}

fn decode(bytes: &[u8]) -> Result<Entry<TypeConfig>, StorageError<NodeId>> {
    serde_json::from_slice(bytes).map_err(|e| StorageIOError::read_logs(&e).into())
}

impl<B: Backend> RaftLogReader<TypeConfig> for LogStore<B> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e.saturating_add(1),
            Bound::Excluded(e) => *e,
            Bound::Unbounded => u64::MAX,
        };
        let raw = self
            .backend
            .range(start, end)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        raw.iter().map(|b| decode(b)).collect()
    }
}

impl<B: Backend> RaftLogStorage<TypeConfig> for LogStore<B> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged: Option<LogId<NodeId>> = self.meta("last_purged")?;
        // The log does not record purges; entries up to the mark may still be there after a restart.
        if let Some(p) = last_purged {
            self.backend
                .purge(p.index)
                .map_err(|e| StorageIOError::write_logs(&e))?;
        }
        let last = match self
            .backend
            .last()
            .map_err(|e| StorageIOError::read_logs(&e))?
        {
            Some(bytes) => Some(decode(&bytes)?.log_id),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put("vote", vote)?;
        self.backend
            .flush()
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.meta("vote")
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Vec::new();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.push((entry.log_id.index, bytes));
        }
        self.backend
            .append(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        // One flush covers the whole batch: group commit without weakening durability.
        let res = self
            .backend
            .flush()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(res);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.backend
            .truncate(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.backend
            .flush()
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put("last_purged", &log_id)?;
        self.backend
            .flush()
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.backend
            .purge(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}
