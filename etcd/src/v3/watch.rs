//! The Watch service: one task per bidirectional stream, many watches per stream.
//!
//! A watch first gets the retained revisions from its start revision (or a compaction notice), then live
//! revisions from the hub. A stream that falls behind is resynced from the history (see `store::watch_v3`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use proto::etcdserverpb::{
    WatchCreateRequest, WatchRequest, WatchResponse, watch_create_request::FilterType,
    watch_request::RequestUnion, watch_server::Watch,
};
use tokio::sync::{Notify, mpsc};
use tonic::{Request, Response, Status, Streaming};

use super::V3;
use crate::store::Kv;
use crate::store::watch_v3::{Delivery, STREAM_BUFFER, Sink, Spec};

/// etcd's progress notification interval for watches created with `progress_notify`.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

/// The most revisions sent in one response when replaying history (etcd's `watchBatchMaxRevs`).
const MAX_REVS_PER_RESPONSE: usize = 1000;

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

struct Entry {
    hub_id: u64,
    spec: Spec,
    progress: bool,
}

struct Session {
    v3: V3,
    kv: Arc<Kv>,
    sink: Sink,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    watches: HashMap<i64, Entry>,
    next_id: i64,
}

impl Session {
    async fn send(&self, r: WatchResponse) -> bool {
        self.out.send(Ok(r)).await.is_ok()
    }

    /// Registers a watch from `start` and sends what the history holds for it; false when the client is gone.
    async fn register(&mut self, id: i64, spec: Spec, start: u64, progress: bool) -> bool {
        match self.kv.watch_v3(id, spec.clone(), start, self.sink.clone()) {
            Ok((hub_id, past, current)) => {
                self.watches.insert(
                    id,
                    Entry {
                        hub_id,
                        spec: spec.clone(),
                        progress,
                    },
                );
                for chunk in past.chunks(MAX_REVS_PER_RESPONSE) {
                    let events: Vec<_> = chunk.iter().flat_map(|c| spec.events(c)).collect();
                    if events.is_empty() {
                        continue;
                    }
                    let r = WatchResponse {
                        header: self.v3.header(current),
                        watch_id: id,
                        events,
                        ..Default::default()
                    };
                    if !self.send(r).await {
                        return false;
                    }
                }
                true
            }
            Err(compacted) => {
                self.send(WatchResponse {
                    header: self.v3.header(self.kv.index()),
                    watch_id: id,
                    canceled: true,
                    compact_revision: compacted as i64,
                    ..Default::default()
                })
                .await
            }
        }
    }

    async fn create(&mut self, c: WatchCreateRequest) -> bool {
        let current = self.kv.index();
        let id = if c.watch_id != 0 {
            c.watch_id
        } else {
            while self.watches.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        if self.watches.contains_key(&id) || id < 0 {
            return self
                .send(WatchResponse {
                    header: self.v3.header(current),
                    watch_id: id,
                    created: true,
                    canceled: true,
                    cancel_reason: "mvcc: duplicate watch ID provided on the WatchStream"
                        .to_string(),
                    ..Default::default()
                })
                .await;
        }
        let spec = Spec {
            key: c.key,
            end: c.range_end,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: c.prev_kv,
        };
        let start = if c.start_revision > 0 {
            c.start_revision as u64
        } else {
            current + 1
        };
        if !self
            .send(WatchResponse {
                header: self.v3.header(current),
                watch_id: id,
                created: true,
                ..Default::default()
            })
            .await
        {
            return false;
        }
        self.register(id, spec, start, c.progress_notify).await
    }

    async fn cancel(&mut self, id: i64) -> bool {
        let Some(e) = self.watches.remove(&id) else {
            return true;
        };
        self.kv.unwatch_v3(e.hub_id);
        self.send(WatchResponse {
            header: self.v3.header(self.kv.index()),
            watch_id: id,
            canceled: true,
            ..Default::default()
        })
        .await
    }

    async fn deliver(&self, (id, ch): Delivery) -> bool {
        let Some(e) = self.watches.get(&id) else {
            return true;
        };
        let events = e.spec.events(&ch);
        if events.is_empty() {
            return true;
        }
        self.send(WatchResponse {
            header: self.v3.header(ch.rev),
            watch_id: id,
            events,
            ..Default::default()
        })
        .await
    }

    /// Watches that lagged: deliver what is queued, then replay the rest from the history.
    async fn resync(&mut self, rx: &mut mpsc::Receiver<Delivery>) -> bool {
        let lagged: Vec<(i64, u64)> =
            std::mem::take(&mut *self.sink.lagged.lock().unwrap_or_else(|e| e.into_inner()));
        if lagged.is_empty() {
            return true;
        }
        while let Ok(d) = rx.try_recv() {
            if !self.deliver(d).await {
                return false;
            }
        }
        for (id, from) in lagged {
            let Some(e) = self.watches.remove(&id) else {
                continue;
            };
            if !self.register(id, e.spec, from, e.progress).await {
                return false;
            }
        }
        true
    }

    async fn progress(&self) -> bool {
        let rev = self.kv.index();
        for (id, e) in &self.watches {
            if e.progress
                && !self
                    .send(WatchResponse {
                        header: self.v3.header(rev),
                        watch_id: *id,
                        ..Default::default()
                    })
                    .await
            {
                return false;
            }
        }
        true
    }

    async fn run(mut self, mut inbound: Streaming<WatchRequest>, mut rx: mpsc::Receiver<Delivery>) {
        let shutdown = self.v3.app.shutdown.clone();
        let wake = self.sink.wake.clone();
        let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
        tick.tick().await;
        loop {
            let alive = tokio::select! {
                m = inbound.message() => match m {
                    Ok(Some(req)) => match req.request_union {
                        Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
                        Some(RequestUnion::CancelRequest(c)) => self.cancel(c.watch_id).await,
                        Some(RequestUnion::ProgressRequest(_)) => {
                            let r = WatchResponse {
                                header: self.v3.header(self.kv.index()),
                                watch_id: -1,
                                ..Default::default()
                            };
                            self.send(r).await
                        }
                        None => true,
                    },
                    Ok(None) | Err(_) => false,
                },
                Some(d) = rx.recv() => self.deliver(d).await,
                _ = wake.notified() => self.resync(&mut rx).await,
                _ = tick.tick() => self.progress().await,
                _ = shutdown.cancelled() => false,
            };
            if !alive {
                break;
            }
        }
        for e in self.watches.values() {
            self.kv.unwatch_v3(e.hub_id);
        }
    }
}

#[tonic::async_trait]
impl Watch for V3 {
    type WatchStream = WatchStream;

    #[tracing::instrument(level = "debug", skip_all)]
    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let (out, out_rx) = mpsc::channel(64);
        let session = Session {
            v3: self.clone(),
            kv: self.app.node.kv().clone(),
            sink: Sink {
                tx,
                lagged: Arc::new(Mutex::new(Vec::new())),
                wake: Arc::new(Notify::new()),
            },
            out,
            watches: HashMap::new(),
            next_id: 0,
        };
        tokio::spawn(session.run(inbound, rx));
        let stream = futures::stream::unfold(out_rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
