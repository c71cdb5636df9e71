//! `ListenEvents`: a task per subscriber compares successive snapshots of the pod and image
//! stores and sends what changed as events (pod prepared/started/exited/collected, app
//! started/exited, image imported/removed).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use proto::tonic::Status;
use proto::v1alpha::{Event, EventFilter, EventType, KeyValue, ListenEventsResponse};
use tokio::sync::mpsc;

use crate::image::Store;
use crate::pod::{PodState, Pods};
use crate::timefmt::now_ns;

/// A pod's state with its apps' names and exit codes.
type PodView = (PodState, Vec<(String, Option<i32>)>);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Snapshot {
    /// uuid → state and apps
    pods: BTreeMap<String, PodView>,
    /// image id → name
    images: BTreeMap<String, String>,
}

/// The stores as they are now. A pod whose manifest cannot be read at this moment (gc is
/// renaming it between state directories) is left out and named in the second value: the
/// caller keeps what it saw of it before, so that a pod caught mid-rename is neither reported
/// without its apps nor as collected.
fn snapshot(dir: &std::path::Path) -> crate::Result<(Snapshot, Vec<String>)> {
    let mut s = Snapshot::default();
    let mut unreadable = Vec::new();
    for p in Pods::open(dir)?.all()? {
        let Ok(m) = p.manifest() else {
            unreadable.push(p.uuid.clone());
            continue;
        };
        let apps = m
            .apps
            .iter()
            .map(|a| (a.name.clone(), p.app_exit_code(&a.name)))
            .collect();
        s.pods.insert(p.uuid.clone(), (p.state, apps));
    }
    for i in Store::open(dir)?.images()? {
        s.images.insert(i.rkt_id(), i.name.clone());
    }
    Ok((s, unreadable))
}

/// Completes `next` with the earlier view of the pods it could not read.
fn keep_unreadable(last: &Snapshot, next: &mut Snapshot, unreadable: Vec<String>) {
    for uuid in unreadable {
        if let Some(v) = last.pods.get(&uuid) {
            next.pods.insert(uuid, v.clone());
        }
    }
}

fn event(kind: EventType, id: &str, from: &str, data: Vec<(&str, String)>) -> Event {
    Event {
        r#type: kind as i32,
        id: id.to_string(),
        from: from.to_string(),
        time: now_ns() / 1_000_000_000,
        data: data
            .into_iter()
            .map(|(k, v)| KeyValue {
                key: k.to_string(),
                value: v,
            })
            .collect(),
    }
}

fn running(s: PodState) -> bool {
    s == PodState::Running
}

fn finished(s: PodState) -> bool {
    matches!(
        s,
        PodState::Exited | PodState::ExitedGarbage | PodState::Garbage | PodState::Deleting
    )
}

/// The events that turn `old` into `new`.
fn diff(old: &Snapshot, new: &Snapshot) -> Vec<Event> {
    let mut out = Vec::new();
    for (uuid, (state, apps)) in &new.pods {
        let before = old.pods.get(uuid).map(|(s, _)| *s);
        if before == Some(*state) {
            continue;
        }
        let was_prepared = before == Some(PodState::Prepared);
        if *state == PodState::Prepared && !was_prepared {
            out.push(event(EventType::PodPrepared, uuid, "pod", vec![]));
        }
        if *state == PodState::AbortedPrepare {
            out.push(event(EventType::PodPrepareAborted, uuid, "pod", vec![]));
        }
        let was_started = before.is_some_and(|b| running(b) || finished(b));
        if (running(*state) || finished(*state)) && !was_started {
            out.push(event(EventType::PodStarted, uuid, "pod", vec![]));
            for (app, _) in apps {
                out.push(event(
                    EventType::AppStarted,
                    uuid,
                    "app",
                    vec![("app", app.clone())],
                ));
            }
        }
        let was_finished = before.is_some_and(finished);
        if finished(*state) && !was_finished {
            for (app, code) in apps {
                let code = code.map(|c| c.to_string()).unwrap_or_default();
                out.push(event(
                    EventType::AppExited,
                    uuid,
                    "app",
                    vec![("app", app.clone()), ("exit_code", code)],
                ));
            }
            out.push(event(EventType::PodExited, uuid, "pod", vec![]));
        }
    }
    for (uuid, (state, apps)) in &old.pods {
        if new.pods.contains_key(uuid) {
            continue;
        }
        // It exited and was collected between two looks: it did exit.
        if running(*state) {
            for (app, code) in apps {
                let code = code.map(|c| c.to_string()).unwrap_or_default();
                out.push(event(
                    EventType::AppExited,
                    uuid,
                    "app",
                    vec![("app", app.clone()), ("exit_code", code)],
                ));
            }
            out.push(event(EventType::PodExited, uuid, "pod", vec![]));
        }
        out.push(event(EventType::PodGarbageCollected, uuid, "pod", vec![]));
    }
    for (id, name) in &new.images {
        if !old.images.contains_key(id) {
            out.push(event(
                EventType::ImageImported,
                id,
                "image",
                vec![("name", name.clone())],
            ));
        }
    }
    for (id, name) in &old.images {
        if !new.images.contains_key(id) {
            out.push(event(
                EventType::ImageRemoved,
                id,
                "image",
                vec![("name", name.clone())],
            ));
        }
    }
    out
}

fn wanted(e: &Event, f: &EventFilter) -> bool {
    (f.types.is_empty() || f.types.contains(&e.r#type))
        && (f.ids.is_empty() || f.ids.iter().any(|i| e.id.starts_with(i.as_str())))
        && (f.names.is_empty() || e.data.iter().any(|kv| f.names.contains(&kv.value)))
        && (f.since_time == 0 || e.time >= f.since_time)
        && (f.until_time == 0 || e.time <= f.until_time)
}

/// Starts a watcher for one subscriber; it stops when the subscriber goes away.
pub async fn spawn(
    dir: PathBuf,
    filter: EventFilter,
    every: Duration,
) -> Result<mpsc::Receiver<Result<ListenEventsResponse, Status>>, Status> {
    let d = dir.clone();
    let (mut last, _) = tokio::task::spawn_blocking(move || snapshot(&d))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tick.tick() => {}
            }
            let d = dir.clone();
            let next = match tokio::task::spawn_blocking(move || snapshot(&d)).await {
                Ok(Ok((mut s, unreadable))) => {
                    keep_unreadable(&last, &mut s, unreadable);
                    s
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "event snapshot failed");
                    continue;
                }
                Err(_) => return,
            };
            let events: Vec<Event> = diff(&last, &next)
                .into_iter()
                .filter(|e| wanted(e, &filter))
                .collect();
            last = next;
            if !events.is_empty() && tx.send(Ok(ListenEventsResponse { events })).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_turns_state_changes_into_events() {
        let mut a = Snapshot::default();
        let mut b = Snapshot::default();
        b.pods
            .insert("p1".into(), (PodState::Running, vec![("web".into(), None)]));
        b.images.insert("sha256-x".into(), "busybox:latest".into());
        let kinds: Vec<i32> = diff(&a, &b).iter().map(|e| e.r#type).collect();
        assert_eq!(
            kinds,
            [
                EventType::PodStarted as i32,
                EventType::AppStarted as i32,
                EventType::ImageImported as i32
            ]
        );
        a = b.clone();
        b.pods.insert(
            "p1".into(),
            (PodState::Exited, vec![("web".into(), Some(3))]),
        );
        let ev = diff(&a, &b);
        assert_eq!(ev[0].r#type, EventType::AppExited as i32);
        assert_eq!(ev[0].data[1].value, "3");
        assert_eq!(ev[1].r#type, EventType::PodExited as i32);
        a = b.clone();
        b.pods.clear();
        b.images.clear();
        let kinds: Vec<i32> = diff(&a, &b).iter().map(|e| e.r#type).collect();
        assert_eq!(
            kinds,
            [
                EventType::PodGarbageCollected as i32,
                EventType::ImageRemoved as i32
            ]
        );
        let f = EventFilter {
            types: vec![EventType::ImageRemoved as i32],
            ..Default::default()
        };
        assert_eq!(diff(&a, &b).iter().filter(|e| wanted(e, &f)).count(), 1);
    }

    #[test]
    fn a_pod_caught_mid_rename_keeps_its_earlier_view() {
        let mut last = Snapshot::default();
        let running = (PodState::Running, vec![("web".to_string(), None)]);
        last.pods.insert("p1".into(), running.clone());
        // p1 is being renamed by gc, p2 appeared and is being renamed too.
        let mut next = Snapshot::default();
        keep_unreadable(&last, &mut next, vec!["p1".into(), "p2".into()]);
        assert_eq!(next.pods.get("p1"), Some(&running));
        assert!(!next.pods.contains_key("p2"));
        assert!(
            diff(&last, &next).is_empty(),
            "no event from a half-seen pod"
        );
    }
}
