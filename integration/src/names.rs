//! Unique, short names for namespaces, machines and cgroups.
//!
//! A name is `<kind><owner pid>x<counter>`: unique across the concurrent test
//! processes of one machine, short enough for interface and machine names,
//! and it tells whose it is, so leftovers of a killed test can be reaped.

use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh name for an object of `kind` (one or two letters) owned by this process.
pub(crate) fn unique(kind: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{kind}{}x{n}", std::process::id())
}

/// The owner pid of a name made by [`unique`] with this `kind`, if it is one.
pub(crate) fn owner(kind: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(kind)?;
    let (pid, n) = rest.split_once('x')?;
    let (pid_ok, n_ok) = (
        pid.parse::<u32>().ok()?,
        n.split(|c: char| !c.is_ascii_digit()).next()?,
    );
    n_ok.parse::<u32>().ok()?;
    Some(pid_ok)
}

/// Whether the process that owns a harness object is gone.
pub(crate) fn owner_is_dead(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_carry_their_owner() {
        let a = unique("ih");
        let b = unique("ih");
        assert_ne!(a, b);
        assert_eq!(owner("ih", &a), Some(std::process::id()));
        assert_eq!(owner("ih", "ihx1"), None);
        assert_eq!(owner("ih", "other12x3"), None);
        assert_eq!(owner("ih", &format!("{a}h2")), Some(std::process::id()));
    }
}
