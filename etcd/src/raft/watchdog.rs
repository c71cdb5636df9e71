//! A follower's fast path for a crashed leader: when the leader's heartbeats stop and its peer port refuses
//! connections (the process is gone, as after `kill -9` or a crash), campaign as soon as the leader's lease
//! has run out instead of waiting for the randomised election timer on top of it.
//!
//! Only the timing changes: the campaign is the one the election timer would start, and the other voters
//! still refuse it until the lease they granted the old leader has expired, so safety is openraft's. A
//! partition (connections time out rather than being refused) leaves the ordinary timers in charge.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::ServerState;

use super::Router;
use super::members::peer_urls;

/// When this member last heard from a leader, and which.
#[derive(Default)]
pub(crate) struct LastHeard(Mutex<Option<(u64, Instant)>>);

impl LastHeard {
    /// Records an append-entries (or heartbeat) from `leader`.
    pub(crate) fn heard(&self, leader: u64) {
        if let Ok(mut l) = self.0.lock() {
            *l = Some((leader, Instant::now()));
        }
    }

    fn get(&self) -> Option<(u64, Instant)> {
        self.0.lock().ok().and_then(|l| *l)
    }
}

/// Whether nothing listens on `peer_url`'s port any more (connection refused); a timeout or any other
/// failure says nothing.
async fn refused(peer_url: &str, within: Duration) -> bool {
    let Ok(u) = url::Url::parse(peer_url) else {
        return false;
    };
    let (Some(host), Some(port)) = (u.host_str(), u.port_or_known_default()) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    matches!(
        tokio::time::timeout(within, tokio::net::TcpStream::connect((host, port))).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// Runs until the member stops. `heartbeat` is the leader's heartbeat interval, `lease` how long a voter
/// refuses other candidates after hearing from its leader (openraft's `election_timeout_max`).
pub(crate) async fn run(router: Router, heartbeat: Duration, lease: Duration) {
    let stop = router.shared.stop.clone();
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (leader, addr) = {
            let m = router.raft.metrics();
            let m = m.borrow();
            let Some(leader) = m.current_leader else {
                continue;
            };
            if m.state != ServerState::Follower || leader == router.shared.id {
                continue;
            }
            let addr = m
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.addr.clone());
            (leader, addr)
        };
        let Some((from, at)) = router.shared.last_heard.get() else {
            continue;
        };
        if from != leader || at.elapsed() < heartbeat * 2 {
            continue;
        }
        let Some(url) = addr
            .as_deref()
            .map(peer_urls)
            .and_then(|u| u.into_iter().next())
        else {
            continue;
        };
        if !refused(&url, heartbeat).await {
            continue;
        }
        // Campaign just after the lease the other voters granted the dead leader runs out; the jitter keeps
        // two followers that both noticed from splitting the vote.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = Duration::from_millis(20 + u64::from(nanos % 50) + router.shared.id % 31);
        let when = at + lease + jitter;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(when.into()) => {}
        }
        let still = {
            let m = router.raft.metrics();
            let m = m.borrow();
            m.state == ServerState::Follower
                && m.current_leader == Some(leader)
                && router.shared.last_heard.get().map(|(_, t)| t) == Some(at)
        };
        if still {
            tracing::info!(
                leader,
                "the leader's peer port refuses connections: campaigning"
            );
            let _ = router.raft.trigger().elect().await;
        }
    }
}
