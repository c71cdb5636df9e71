//! The watch hub: long-poll and stream watchers, notified of applied events in index order.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::event::Event;
use super::path;

/// How many undelivered events a stream watcher may have before it is dropped (etcd: 100).
pub const STREAM_BUFFER: usize = 100;

struct Watcher {
    id: u64,
    recursive: bool,
    stream: bool,
    since: u64,
    tx: mpsc::Sender<Arc<Event>>,
}

/// Registered watchers by watched key.
#[derive(Default)]
pub struct Hub {
    next_id: u64,
    count: usize,
    by_key: BTreeMap<String, Vec<Watcher>>,
}

impl Hub {
    /// Registers a watcher; returns its id.
    pub fn add(
        &mut self,
        key: &str,
        recursive: bool,
        stream: bool,
        since: u64,
        tx: mpsc::Sender<Arc<Event>>,
    ) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.by_key
            .entry(key.to_string())
            .or_default()
            .push(Watcher {
                id,
                recursive,
                stream,
                since,
                tx,
            });
        self.count += 1;
        id
    }

    /// Removes a watcher (when its client goes away).
    pub fn remove(&mut self, key: &str, id: u64) {
        if let Some(list) = self.by_key.get_mut(key) {
            let before = list.len();
            list.retain(|w| w.id != id);
            self.count -= before - list.len();
            if list.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    /// How many watchers are registered.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Delivers one event to every interested watcher.
    pub fn notify(&mut self, ev: &Arc<Event>) {
        if self.by_key.is_empty() {
            return;
        }
        let key = ev.key().to_string();
        let index = ev.index();
        // Watchers on the key itself and on its ancestors.
        let mut paths = vec!["/".to_string()];
        let mut acc = String::new();
        for comp in path::components(&key) {
            acc.push('/');
            acc.push_str(comp);
            paths.push(acc.clone());
        }
        for p in paths {
            let original = p == key;
            if !original && path::hidden_below(&p, &key) {
                continue;
            }
            self.deliver(&p, ev, index, |w| w.recursive || original);
        }
        // Removing a dir reaches every watcher below it.
        if ev.removes_dir() {
            let below: Vec<String> = self
                .by_key
                .range(format!("{key}/")..)
                .take_while(|(k, _)| path::is_under(k, &key))
                .map(|(k, _)| k.clone())
                .collect();
            for p in below {
                self.deliver(&p, ev, index, |_| true);
            }
        }
    }

    fn deliver(&mut self, p: &str, ev: &Arc<Event>, index: u64, wants: impl Fn(&Watcher) -> bool) {
        let Some(list) = self.by_key.get_mut(p) else {
            return;
        };
        let before = list.len();
        list.retain(|w| {
            if !wants(w) || index < w.since {
                return true;
            }
            match w.tx.try_send(ev.clone()) {
                Ok(()) => w.stream,
                Err(_) => false,
            }
        });
        self.count -= before - list.len();
        if list.is_empty() {
            self.by_key.remove(p);
        }
    }
}
