//! Polling with a deadline: the harness's (and its users') only way to wait.

use std::time::{Duration, Instant};

/// Calls `check` every `interval` until it returns `Some`, or fails once
/// `timeout` has passed, naming `what` was awaited.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(interval);
    }
}
