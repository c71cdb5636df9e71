//! A linearizability checker for a single read/write register (one etcd key): Wing & Gong's search with
//! Lowe's memoisation of (linearized set, register state), so equivalent interleavings are explored once.
//!
//! A history is a list of operations with the wall-clock interval a client observed. A write whose outcome
//! the client could not learn (a timeout, a broken connection) is `pending`: it may take effect at any point
//! after its call, or never. Reads whose outcome is unknown carry no information and are left out.

use std::collections::HashSet;
use std::time::Instant;

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Set the register to the value.
    Write(String),
    /// Read the register (`None`: the key did not exist).
    Read(Option<String>),
}

/// One client operation.
#[derive(Debug, Clone)]
pub struct Op {
    /// The operation and its observed result.
    pub kind: Kind,
    /// When the client sent it (ns on a shared clock).
    pub call: u64,
    /// When the client got the reply; `None` if it never learned the outcome (a pending write).
    pub ret: Option<u64>,
}

/// Records operations from several client threads against one clock.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    ops: std::sync::Mutex<Vec<Op>>,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            start: Instant::now(),
            ops: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The shared clock.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn push(&self, op: Op) {
        self.ops.lock().expect("recorder lock").push(op);
    }

    pub fn history(&self) -> Vec<Op> {
        self.ops.lock().expect("recorder lock").clone()
    }
}

/// Why a history is not linearizable.
#[derive(Debug)]
pub struct NotLinearizable {
    /// How many operations the longest linearization found covered.
    pub longest: usize,
    /// How many completed operations had to be covered.
    pub required: usize,
}

impl std::fmt::Display for NotLinearizable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no linearization: the longest covered {} operations, {} completed operations must be covered",
            self.longest, self.required
        )
    }
}

/// Checks `history` against a register that starts absent.
pub fn check(history: &[Op]) -> Result<(), NotLinearizable> {
    // A pending write whose value no read returned can be dropped: "it never took effect" explains
    // everything any placement of it explains. This keeps timeouts during faults from blowing up the search.
    let read_values: HashSet<&str> = history
        .iter()
        .filter_map(|o| match &o.kind {
            Kind::Read(Some(v)) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    let ops: Vec<&Op> = history
        .iter()
        .filter(|o| match &o.kind {
            Kind::Write(v) => o.ret.is_some() || read_values.contains(v.as_str()),
            Kind::Read(_) => true,
        })
        .collect();
    let n = ops.len();
    let required: Vec<usize> = (0..n).filter(|&i| ops[i].ret.is_some()).collect();
    let words = n.div_ceil(64).max(1);
    let mut seen: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    let mut longest = 0;
    // Iterative DFS: each frame is (linearized set, state, count).
    let mut stack: Vec<(Vec<u64>, Option<String>, usize)> = vec![(vec![0; words], None, 0)];
    let is_set = |set: &[u64], i: usize| set[i / 64] & (1 << (i % 64)) != 0;
    while let Some((set, state, count)) = stack.pop() {
        longest = longest.max(count);
        if required.iter().all(|&i| is_set(&set, i)) {
            return Ok(());
        }
        // The earliest return among operations not yet linearized bounds which can go next: one called after
        // that return cannot precede it.
        let bound = (0..n)
            .filter(|&i| !is_set(&set, i))
            .filter_map(|i| ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..n {
            if is_set(&set, i) || ops[i].call > bound {
                continue;
            }
            let next = match &ops[i].kind {
                Kind::Write(v) => Some(v.clone()),
                Kind::Read(v) => {
                    if *v != state {
                        continue;
                    }
                    state.clone()
                }
            };
            let mut nset = set.clone();
            nset[i / 64] |= 1 << (i % 64);
            if seen.insert((nset.clone(), next.clone())) {
                stack.push((nset, next, count + 1));
            }
        }
    }
    Err(NotLinearizable {
        longest,
        required: required.len(),
    })
}

fn w(v: &str, call: u64, ret: Option<u64>) -> Op {
    Op {
        kind: Kind::Write(v.into()),
        call,
        ret,
    }
}

fn r(v: Option<&str>, call: u64, ret: u64) -> Op {
    Op {
        kind: Kind::Read(v.map(String::from)),
        call,
        ret: Some(ret),
    }
}

#[test]
fn sequential_histories_follow_the_register() {
    assert!(check(&[r(None, 0, 1), w("a", 2, Some(3)), r(Some("a"), 4, 5)]).is_ok());
    assert!(check(&[w("a", 0, Some(1)), w("b", 2, Some(3)), r(Some("b"), 4, 5)]).is_ok());
}

#[test]
fn a_stale_read_after_a_completed_write_is_rejected() {
    let h = [w("a", 0, Some(1)), w("b", 2, Some(3)), r(Some("a"), 4, 5)];
    assert!(check(&h).is_err());
}

#[test]
fn a_read_of_a_value_never_written_is_rejected() {
    assert!(check(&[w("a", 0, Some(1)), r(Some("z"), 2, 3)]).is_err());
    assert!(check(&[r(Some("a"), 0, 1)]).is_err());
}

#[test]
fn concurrent_operations_may_take_effect_in_either_order() {
    // The read overlaps the write: old or new value are both fine.
    assert!(check(&[w("a", 0, Some(10)), r(None, 1, 2)]).is_ok());
    assert!(check(&[w("a", 0, Some(10)), r(Some("a"), 1, 2)]).is_ok());
    // Two overlapping writes, then reads that agree on one order.
    let h = [
        w("a", 0, Some(10)),
        w("b", 1, Some(9)),
        r(Some("a"), 11, 12),
        r(Some("a"), 13, 14),
    ];
    assert!(check(&h).is_ok());
}

#[test]
fn reads_that_disagree_on_the_order_of_writes_are_rejected() {
    // After both writes finished, one reader sees a then b, another b then a: no single order explains it.
    let h = [
        w("a", 0, Some(10)),
        w("b", 1, Some(9)),
        r(Some("a"), 11, 12),
        r(Some("b"), 13, 14),
        r(Some("a"), 15, 16),
    ];
    assert!(check(&h).is_err());
}

#[test]
fn a_pending_write_may_or_may_not_take_effect() {
    assert!(check(&[w("a", 0, Some(1)), w("b", 2, None), r(Some("a"), 3, 4)]).is_ok());
    assert!(check(&[w("a", 0, Some(1)), w("b", 2, None), r(Some("b"), 3, 4)]).is_ok());
    // But not before it was called.
    assert!(check(&[w("a", 0, Some(1)), r(Some("b"), 2, 3), w("b", 4, None)]).is_err());
    // And once seen, it cannot be undone.
    let h = [
        w("a", 0, Some(1)),
        w("b", 2, None),
        r(Some("b"), 3, 4),
        r(Some("a"), 5, 6),
    ];
    assert!(check(&h).is_err());
}

#[test]
fn a_lost_acknowledged_write_is_rejected() {
    let h = [w("a", 0, Some(1)), r(None, 2, 3)];
    assert!(check(&h).is_err());
}

#[test]
fn long_concurrent_histories_are_checked_quickly() {
    // Four clients, 150 rounds: each round every client writes its value concurrently, then one read.
    let mut h = Vec::new();
    let mut t = 0;
    for round in 0..150 {
        for c in 0..4 {
            h.push(w(&format!("{round}-{c}"), t + c, Some(t + 10 + c)));
        }
        h.push(r(Some(&format!("{round}-2")), t + 20, t + 21));
        t += 30;
    }
    assert!(check(&h).is_ok());
}
