//! When the engine checks: a first-check delay, then a fuzzed interval, with
//! exponential backoff after failures; and when it runs setgoodroot.

use std::time::Duration;

/// The check timings. The defaults are the original's.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// Delay between start-up and the first scheduled check (7 min).
    pub first_check_delay: Duration,
    /// Interval between checks (45 min).
    pub interval: Duration,
    /// Each interval is moved by a random amount in ±fuzz (10 min).
    pub fuzz: Duration,
    /// Backoff after failed checks doubles the interval up to this (4 h).
    pub max_backoff: Duration,
    /// Time after start-up at which the booted slot is marked good (45 s).
    pub setgoodroot_delay: Duration,
    /// Whether the engine checks on its own (else only on AttemptUpdate).
    pub periodic: bool,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            first_check_delay: Duration::from_secs(7 * 60),
            interval: Duration::from_secs(45 * 60),
            fuzz: Duration::from_secs(10 * 60),
            max_backoff: Duration::from_secs(4 * 3600),
            setgoodroot_delay: Duration::from_secs(45),
            periodic: true,
        }
    }
}

impl Schedule {
    /// The delay before the next check after `failures` consecutive failed
    /// checks; `jitter` in [-1, 1] picks the point within the fuzz.
    pub fn next_delay(&self, failures: u32, jitter: f64) -> Duration {
        let base = if failures == 0 {
            self.interval
        } else {
            let factor = 1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX);
            self.interval
                .checked_mul(factor)
                .unwrap_or(self.max_backoff)
                .min(self.max_backoff)
                .max(self.interval)
        };
        let fuzz = self.fuzz.as_secs_f64() * jitter.clamp(-1.0, 1.0);
        Duration::from_secs_f64((base.as_secs_f64() + fuzz).max(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_fuzz_and_backoff() {
        let s = Schedule::default();
        assert_eq!(s.next_delay(0, 0.0), Duration::from_secs(45 * 60));
        assert_eq!(s.next_delay(0, 1.0), Duration::from_secs(55 * 60));
        assert_eq!(s.next_delay(0, -1.0), Duration::from_secs(35 * 60));
        assert_eq!(s.next_delay(1, 0.0), Duration::from_secs(90 * 60));
        assert_eq!(s.next_delay(2, 0.0), Duration::from_secs(180 * 60));
        assert_eq!(s.next_delay(3, 0.0), Duration::from_secs(240 * 60));
        assert_eq!(s.next_delay(40, 0.0), Duration::from_secs(240 * 60));
        assert_eq!(s.next_delay(0, 7.0), Duration::from_secs(55 * 60));
    }
}
