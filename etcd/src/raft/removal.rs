//! A removed member stops itself, as etcd's does: it notices the removal in the applied membership, or from a
//! peer refusing its raft requests; the peers remember whom they saw removed (the state machine records it)
//! so they can refuse them.

use super::Router;

impl Router {
    /// Whether this member saw `id` removed from the cluster.
    pub(crate) fn was_removed(&self, id: u64) -> bool {
        id != self.id() && self.shared.gone.lock().is_ok_and(|g| g.contains(&id))
    }
}

/// How often the applied membership is looked at.
const CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Follows the applied membership: if this member leaves it, [`super::Shared::removed`] fires. Only applied
/// configurations count: one that is appended but not yet committed may still be replaced by a new leader.
/// (Which other members left is recorded by the state machine as it applies each change.)
pub(super) async fn watch(router: Router) {
    let rx = router.raft.metrics();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        let left = {
            let m = rx.borrow();
            let stored = &m.membership_config;
            let applied = m.last_applied.map(|l| l.index);
            let is_applied = stored
                .log_id()
                .is_some_and(|l| applied.is_some_and(|a| l.index <= a));
            let mut now = stored.membership().nodes().map(|(id, _)| *id).peekable();
            // A joining member starts with no membership; its first one includes it.
            is_applied && now.peek().is_some() && !now.any(|id| id == router.id())
        };
        if left {
            tracing::warn!(member = %format!("{:x}", router.id()), "this member is no longer in the applied membership: it was removed");
            router.shared.removed.cancel();
        }
        // A tick rather than every metrics change: those come with every applied batch, and a removal
        // noticed 200 ms later is as good.
        tokio::select! {
            _ = router.shared.stop.cancelled() => return,
            _ = router.shared.removed.cancelled() => return,
            _ = tick.tick() => {}
        }
    }
}
