//! The store shared between the raft state machine (writes) and the HTTP handlers (reads, watches).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::mpsc;

use super::error::Error;
use super::event::Event;
use super::history::Change;
use super::watch::{Hub, STREAM_BUFFER};
use super::{Applied, Command, Stats, Store, V3Reply, path, watch_v3};

/// What applying one command returned to its proposer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Reply {
    /// A v2 command's event or error.
    V2(Result<Arc<Event>, Error>),
    /// A v3 command's result.
    V3(V3Reply),
}

/// The store plus its watch hubs. Lock order: store, then v2 hub, then v3 hub.
pub struct Kv {
    store: RwLock<Store>,
    hub: Mutex<Hub>,
    hub_v3: Mutex<watch_v3::Hub>,
    gets_success: AtomicU64,
    gets_fail: AtomicU64,
}

/// A registered watch: the store index when it started and the events it receives.
pub struct Watch {
    /// The store index when the watch started (`X-Etcd-Index` of a watch reply).
    pub start_index: u64,
    rx: mpsc::Receiver<Arc<Event>>,
    registered: Option<(Arc<Kv>, String, u64)>,
}

impl Watch {
    /// The next event; `None` when the watcher was dropped (it fell behind).
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        self.rx.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some((kv, key, id)) = self.registered.take() {
            kv.hub().remove(&key, id);
        }
    }
}

impl Kv {
    /// Wraps a store.
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Kv {
            store: RwLock::new(store),
            hub: Mutex::new(Hub::default()),
            hub_v3: Mutex::new(watch_v3::Hub::default()),
            gets_success: AtomicU64::new(0),
            gets_fail: AtomicU64::new(0),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
    }

    fn hub(&self) -> MutexGuard<'_, Hub> {
        self.hub.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hub_v3(&self) -> MutexGuard<'_, watch_v3::Hub> {
        self.hub_v3.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a command and notifies watchers; returns the v2 reply (none for expiry sweeps and v3 commands).
    pub fn apply(&self, cmd: &Command) -> Option<Result<Arc<Event>, Error>> {
        match self.apply_all(std::slice::from_ref(cmd)).pop().flatten() {
            Some(Reply::V2(r)) => Some(r),
            _ => None,
        }
    }

    /// Applies commands in order under one lock; returns each reply.
    pub fn apply_all(&self, cmds: &[Command]) -> Vec<Option<Reply>> {
        let mut store = self.write();
        let mut replies = Vec::with_capacity(cmds.len());
        let mut hub = None;
        let mut hub_v3 = None;
        for cmd in cmds {
            let out: Applied = store.apply(cmd);
            if !out.notify.is_empty() {
                let hub = hub.get_or_insert_with(|| self.hub());
                for ev in &out.notify {
                    hub.notify(ev);
                }
            }
            if !out.changes.is_empty() {
                let hub = hub_v3.get_or_insert_with(|| self.hub_v3());
                for ch in &out.changes {
                    hub.notify(ch);
                }
            }
            replies.push(match (out.reply, out.v3) {
                (Some(r), _) => Some(Reply::V2(r)),
                (None, Some(r)) => Some(Reply::V3(r)),
                (None, None) => None,
            });
        }
        replies
    }

    /// Runs `f` on the store under the read lock (v3 reads).
    pub fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.read())
    }

    /// Registers a v3 watcher from `start` (0: the next revision): returns its hub id, the retained revisions it
    /// must be sent first, and the current revision; or the compaction revision when `start` is older.
    pub fn watch_v3(
        &self,
        watch_id: i64,
        spec: watch_v3::Spec,
        start: u64,
        sink: watch_v3::Sink,
    ) -> Result<(u64, Vec<Arc<Change>>, u64), u64> {
        let store = self.read();
        let current = store.index();
        let compacted = store.compacted();
        if start > 0 && start < compacted {
            return Err(compacted);
        }
        let past: Vec<Arc<Change>> = if start > 0 && start <= current {
            store
                .history()
                .since(start)
                .filter(|c| c.v3.iter().any(|e| spec.wants(e)))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let since = start.max(current + 1);
        let id = self.hub_v3().add(watch_id, spec, since, sink);
        Ok((id, past, current))
    }

    /// Removes a v3 watcher.
    pub fn unwatch_v3(&self, id: u64) {
        self.hub_v3().remove(id);
    }

    /// How many v3 watchers are registered.
    pub fn watchers_v3(&self) -> usize {
        self.hub_v3().count()
    }

    /// Runs `f` on the store under the write lock (raft bookkeeping such as index bumps).
    pub fn with_store_mut<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.write())
    }

    /// A read of `key`.
    pub fn get(&self, key: &str, recursive: bool, now: i64) -> Result<Event, Error> {
        let r = self.read().get(key, recursive, now);
        if r.is_ok() {
            self.gets_success.fetch_add(1, Ordering::Relaxed);
        } else {
            self.gets_fail.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// The current store index.
    pub fn index(&self) -> u64 {
        self.read().index()
    }

    /// The earliest expiry time of any node.
    pub fn next_expiry(&self) -> Option<i64> {
        self.read().next_expiry()
    }

    /// Counters for `/v2/stats/store`.
    pub fn stats(&self) -> Stats {
        let mut s = self.read().stats().clone();
        s.gets_success = self.gets_success.load(Ordering::Relaxed);
        s.gets_fail = self.gets_fail.load(Ordering::Relaxed);
        s.watchers = self.hub().count() as u64;
        s
    }

    /// Starts a watch: scans the history from `wait_index` (0 = the next index), then waits for new events.
    pub fn watch(
        self: &Arc<Self>,
        key: &str,
        recursive: bool,
        stream: bool,
        wait_index: u64,
    ) -> Result<Watch, Error> {
        let key = path::clean(key);
        let store = self.read();
        let current = store.index();
        let since = if wait_index == 0 {
            current + 1
        } else {
            wait_index
        };
        let limit = if stream { STREAM_BUFFER } else { 1 };
        let past = store
            .history()
            .scan(&key, recursive, since, current, limit)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER + past.len());
        let found = !past.is_empty();
        for ev in past {
            // Capacity covers the replay, so this cannot fail.
            let _ = tx.try_send(ev);
        }
        let mut w = Watch {
            start_index: current,
            rx,
            registered: None,
        };
        if !found || stream {
            let since = since.max(current + 1);
            let id = self.hub().add(&key, recursive, stream, since, tx);
            w.registered = Some((self.clone(), key, id));
        }
        Ok(w)
    }

    /// Serialises the store for a snapshot.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&*self.read())
    }

    /// Replaces the store with a snapshot's content.
    pub fn restore(&self, bytes: &[u8]) -> Result<(), serde_json::Error> {
        let s: Store = serde_json::from_slice(bytes)?;
        *self.write() = s;
        Ok(())
    }
}
