//! The event history that `waitIndex` watches scan (a bounded ring, oldest events dropped first).

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::{self, Error};
use super::event::{Action, Event};
use super::path;

/// How many events the history keeps by default: etcd keeps 1000, more spares watchers the 401.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// A bounded ring of the most recent events, in index order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    capacity: usize,
    /// The oldest index the history still answers for (0 until events were dropped).
    start: u64,
    events: VecDeque<Arc<Event>>,
}

impl History {
    /// An empty history keeping at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        History {
            capacity: capacity.max(1),
            start: 0,
            events: VecDeque::new(),
        }
    }

    /// Appends an event, dropping the oldest when full.
    pub fn push(&mut self, ev: Arc<Event>) {
        if self.events.len() >= self.capacity {
            self.events.pop_front();
            self.start = self
                .events
                .front()
                .map(|e| e.index())
                .unwrap_or_else(|| ev.index());
        }
        self.events.push_back(ev);
    }

    /// The oldest index the history answers for.
    pub fn start_index(&self) -> u64 {
        self.start
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

    /// Every matching (non-refresh) event with index >= `since`, oldest first, at most `limit`.
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
        let from = self.events.partition_point(|e| e.index() < since);
        Ok(self
            .events
            .range(from..)
            .filter(|e| !e.refresh && Self::matches(e, key, recursive))
            .take(limit)
            .cloned()
            .collect())
    }
}
