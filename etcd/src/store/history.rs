//! The revision history shared by both APIs: one [`Change`] per revision (its v2 events and its v3 events),
//! kept until compaction. v2 `waitIndex` watches and v3 watches and historical ranges all read it.

use std::collections::VecDeque;
use std::sync::Arc;

use proto::mvccpb;
use serde::{Deserialize, Serialize};

use super::error::{self, Error};
use super::event::{Action, Event};
use super::path;
use super::pb::Pb;

/// How many revisions the history keeps by default before the oldest are compacted away (etcd's v2 keeps
/// 1000 events; etcd's v3 keeps everything until a compaction, which is unbounded memory for us).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// What one revision changed, as each API sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Change {
    /// The revision (= the v2 index of the write).
    pub rev: u64,
    /// The v2 events (several for a v3 transaction touching several v2-visible keys).
    pub v2: Vec<Arc<Event>>,
    /// The v3 events, each with its `prev_kv` (stripped for watchers that did not ask for it).
    pub v3: Vec<Pb<mvccpb::Event>>,
}

/// The retained changes, in revision order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "Stored")]
pub struct History {
    capacity: usize,
    /// The compaction revision: every change with `rev >= compacted` is retained (0: nothing dropped yet).
    compacted: u64,
    changes: VecDeque<Arc<Change>>,
}

/// A history as snapshots hold it: this format, or the v2-only event ring of earlier versions.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Current {
        capacity: usize,
        compacted: u64,
        changes: VecDeque<Arc<Change>>,
    },
    V2Ring {
        capacity: usize,
        start: u64,
        events: VecDeque<Arc<Event>>,
    },
}

impl From<Stored> for History {
    fn from(s: Stored) -> Self {
        match s {
            Stored::Current {
                capacity,
                compacted,
                changes,
            } => History {
                capacity: capacity.max(1),
                compacted,
                changes,
            },
            Stored::V2Ring {
                capacity,
                start,
                events,
            } => History {
                capacity: capacity.max(1),
                compacted: start,
                changes: events
                    .into_iter()
                    .map(|e| {
                        Arc::new(Change {
                            rev: e.index(),
                            v2: vec![e],
                            v3: Vec::new(),
                        })
                    })
                    .collect(),
            },
        }
    }
}

impl History {
    /// An empty history keeping at most `capacity` revisions.
    pub fn new(capacity: usize) -> Self {
        History {
            capacity: capacity.max(1),
            compacted: 0,
            changes: VecDeque::new(),
        }
    }

    /// Appends a change, compacting the oldest revision away when full.
    pub fn push(&mut self, ch: Arc<Change>) {
        if self.changes.len() >= self.capacity
            && let Some(old) = self.changes.pop_front()
        {
            self.compacted = self.compacted.max(old.rev + 1);
        }
        self.changes.push_back(ch);
    }

    /// Drops every change older than `rev`.
    pub fn compact(&mut self, rev: u64) {
        while self.changes.front().is_some_and(|c| c.rev < rev) {
            self.changes.pop_front();
        }
        self.compacted = self.compacted.max(rev);
    }

    /// The oldest index the history answers for (the compaction revision).
    pub fn start_index(&self) -> u64 {
        self.compacted
    }

    /// The retained changes with `rev >= since`, oldest first.
    pub fn since(&self, since: u64) -> impl DoubleEndedIterator<Item = &Arc<Change>> {
        let from = self.changes.partition_point(|c| c.rev < since);
        self.changes.range(from..)
    }

    /// Whether `ev` is seen by a watch on `key` (`recursive` for the subtree), as etcd's history scan decides.
    pub fn matches(ev: &Event, key: &str, recursive: bool) -> bool {
        let ek = ev.key();
        let mut ok = ek == key;
        if recursive {
            ok = ok || path::is_under(ek, key);
        }
        if matches!(ev.action, Action::Delete | Action::Expire)
            && let Some(prev) = &ev.prev_node
            && prev.dir
        {
            ok = ok || key.starts_with(prev.key.as_str());
        }
        ok
    }

    /// Every matching (non-refresh) v2 event with index >= `since`, oldest first, at most `limit`.
    /// Fails with 401 when `since` is older than the history (`current` is the store index).
    pub fn scan(
        &self,
        key: &str,
        recursive: bool,
        since: u64,
        current: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Event>>, Error> {
        let start = self.start_index();
        if since < start {
            return Err(Error::new(
                error::EVENT_INDEX_CLEARED,
                format!("the requested history has been cleared [{start}/{since}]"),
                current,
            ));
        }
        Ok(self
            .since(since)
            .flat_map(|c| c.v2.iter())
            .filter(|e| !e.refresh && Self::matches(e, key, recursive))
            .take(limit)
            .cloned()
            .collect())
    }
}
