//! The v3 watch hub: watchers of key ranges, handed whole revisions ([`Change`]s) without blocking the apply path.
//!
//! Each gRPC watch stream has one bounded channel shared by its watchers. When it is full the watcher is taken
//! out of the hub and the revision it missed is recorded as a lag; the stream drains what it has, then replays
//! the rest from the history (or reports compaction, as etcd cancels a watcher that fell behind compaction).
//! Nothing is lost and the apply path never waits for a slow client.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use proto::mvccpb::{self, event::EventType};
use tokio::sync::{Notify, mpsc};

use super::history::Change;

/// How many revisions a watch stream may have undelivered before its watchers are resynced from history.
pub const STREAM_BUFFER: usize = 1024;

/// What a watcher watches.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// The key (or the range start).
    pub key: Vec<u8>,
    /// The range end (empty: one key; `\0`: every key from `key`).
    pub end: Vec<u8>,
    /// Leave out put events.
    pub no_put: bool,
    /// Leave out delete events.
    pub no_delete: bool,
    /// Send each event's previous value.
    pub prev_kv: bool,
}

impl Spec {
    /// Whether the watcher receives `ev`.
    pub fn wants(&self, ev: &mvccpb::Event) -> bool {
        let Some(k) = ev.kv.as_ref().map(|kv| kv.key.as_slice()) else {
            return false;
        };
        let put = ev.r#type == EventType::Put as i32;
        if (put && self.no_put) || (!put && self.no_delete) {
            return false;
        }
        if self.end.is_empty() {
            k == self.key
        } else if self.end == [0] {
            k >= self.key.as_slice()
        } else {
            k >= self.key.as_slice() && k < self.end.as_slice()
        }
    }

    /// The events of `ch` this watcher receives, shaped as it asked.
    pub fn events(&self, ch: &Change) -> Vec<mvccpb::Event> {
        ch.v3
            .iter()
            .filter(|e| self.wants(e))
            .map(|e| {
                let mut e = e.0.clone();
                if !self.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }
}

/// A revision for one watch of a stream.
pub type Delivery = (i64, Arc<Change>);

/// The stream side shared with the hub: where revisions go and where lags are reported.
#[derive(Clone)]
pub struct Sink {
    /// Revisions for the stream's watchers.
    pub tx: mpsc::Sender<Delivery>,
    /// (watch id, first revision not delivered) of watchers taken out for lagging.
    pub lagged: Arc<Mutex<Vec<(i64, u64)>>>,
    /// Woken when a lag is recorded.
    pub wake: Arc<Notify>,
}

struct Watcher {
    watch_id: i64,
    spec: Spec,
    since: u64,
    sink: Sink,
}

/// Every registered v3 watcher.
#[derive(Default)]
pub struct Hub {
    next: u64,
    watchers: BTreeMap<u64, Watcher>,
}

impl Hub {
    /// Registers a watcher that receives revisions from `since` on; returns its hub id.
    pub fn add(&mut self, watch_id: i64, spec: Spec, since: u64, sink: Sink) -> u64 {
        self.next += 1;
        self.watchers.insert(
            self.next,
            Watcher {
                watch_id,
                spec,
                since,
                sink,
            },
        );
        self.next
    }

    /// Removes a watcher.
    pub fn remove(&mut self, id: u64) {
        self.watchers.remove(&id);
    }

    /// How many watchers are registered.
    pub fn count(&self) -> usize {
        self.watchers.len()
    }

    /// Hands a revision to every watcher with an event in it; never waits.
    pub fn notify(&mut self, ch: &Arc<Change>) {
        if self.watchers.is_empty() || ch.v3.is_empty() {
            return;
        }
        self.watchers.retain(|_, w| {
            if ch.rev < w.since || !ch.v3.iter().any(|e| w.spec.wants(e)) {
                return true;
            }
            match w.sink.tx.try_send((w.watch_id, ch.clone())) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    w.sink
                        .lagged
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((w.watch_id, ch.rev));
                    w.sink.wake.notify_one();
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Pb;
    use proto::mvccpb::KeyValue;

    fn change(rev: u64, key: &str) -> Arc<Change> {
        Arc::new(Change {
            rev,
            v2: Vec::new(),
            v3: vec![Pb(mvccpb::Event {
                r#type: EventType::Put as i32,
                kv: Some(KeyValue {
                    key: key.into(),
                    mod_revision: rev as i64,
                    ..Default::default()
                }),
                prev_kv: None,
            })],
        })
    }

    #[test]
    fn a_full_stream_is_taken_out_and_told_where_it_stopped() {
        let (tx, mut rx) = mpsc::channel(1);
        let sink = Sink {
            tx,
            lagged: Arc::new(Mutex::new(Vec::new())),
            wake: Arc::new(Notify::new()),
        };
        let mut hub = Hub::default();
        let spec = Spec {
            key: b"a".to_vec(),
            end: b"b".to_vec(),
            ..Default::default()
        };
        hub.add(7, spec, 2, sink.clone());
        hub.notify(&change(1, "a1")); // before `since`
        hub.notify(&change(2, "zz")); // not in range
        hub.notify(&change(3, "a3"));
        hub.notify(&change(4, "a4")); // the buffer is full
        hub.notify(&change(5, "a5"));
        assert_eq!(hub.count(), 0);
        assert_eq!(*sink.lagged.lock().unwrap(), vec![(7, 4)]);
        let (id, ch) = rx.try_recv().unwrap();
        assert_eq!((id, ch.rev), (7, 3));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn filters_and_ranges() {
        let put = change(1, "k");
        let one = Spec {
            key: b"k".to_vec(),
            ..Default::default()
        };
        assert!(one.wants(&put.v3[0]));
        let from = Spec {
            key: b"a".to_vec(),
            end: vec![0],
            ..Default::default()
        };
        assert!(from.wants(&put.v3[0]));
        let no_put = Spec {
            no_put: true,
            ..one
        };
        assert!(!no_put.wants(&put.v3[0]));
    }
}
