//! Cluster membership as etcd shows it: replicated member attributes (name, client URLs), the requests that
//! change membership, and their errors.
//!
//! Voters and learners live in openraft's membership config (a member's `BasicNode.addr` holds its peer URLs,
//! comma-separated); names and client URLs are published through the log (`Op::Publish`) and kept here, in
//! the state machine, next to (not inside) the v2 store.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::cluster::Member;

/// What a member publishes about itself when it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attributes {
    /// The member's name.
    pub name: String,
    /// Its advertised client URLs.
    pub client_urls: Vec<String>,
}

/// Attributes by member id, shared by the state machine (writer) and the HTTP side (readers).
pub type AttributeTable = Arc<RwLock<BTreeMap<u64, Attributes>>>;

/// Members seen leaving the applied membership (since the last start), shared by the state machine that
/// records them and the peers' side that refuses them.
pub type RemovedSet = Arc<std::sync::Mutex<std::collections::BTreeSet<u64>>>;

/// A member with its raft role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// The member as `/v2/members` shows it.
    pub member: Member,
    /// Whether it is a learner (catching up, not voting yet).
    pub is_learner: bool,
}

/// A membership change, carried to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Change {
    /// Add a member with these peer URLs (as a learner, promoted once it has caught up).
    Add {
        /// Its peer URLs.
        peer_urls: Vec<String>,
        /// Stay a learner until promoted explicitly.
        learner: bool,
    },
    /// Remove a member.
    Remove {
        /// Its id.
        id: u64,
    },
    /// Replace a member's peer URLs.
    Update {
        /// Its id.
        id: u64,
        /// The new peer URLs.
        peer_urls: Vec<String>,
    },
    /// Make a caught-up learner a voter.
    Promote {
        /// Its id.
        id: u64,
    },
}

/// Why a membership change was refused; mapped to HTTP in `http/members.rs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MemberError {
    /// No member has this id.
    #[error("No such member: {0:x}")]
    NotFound(u64),
    /// The member was removed earlier (etcd's `ErrIDRemoved`: 410 in v2, "member not found" in v3).
    #[error("Member permanently removed: {0:x}")]
    Removed(u64),
    /// Another member already uses one of the peer URLs.
    #[error("membership: peerURL exists")]
    PeerUrlExists,
    /// The id is taken.
    #[error("membership: ID exists")]
    IdExists,
    /// The change would leave fewer started members than a quorum (etcd's strict reconfiguration check).
    #[error(
        "etcdserver: re-configuration failed due to not enough started members (use --strict-reconfig-check=false to force)"
    )]
    NotEnoughStarted,
    /// The learner is not caught up.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// The member is not a learner.
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    /// No leader could carry the change out.
    #[error("etcdserver: {0}")]
    Unavailable(String),
}

/// Sorted by id, as etcd lists members.
pub(crate) fn sorted(mut members: Vec<MemberStatus>) -> Vec<MemberStatus> {
    members.sort_by_key(|m| m.member.id);
    members
}

/// Splits a `BasicNode.addr` into peer URLs.
pub(crate) fn peer_urls(addr: &str) -> Vec<String> {
    addr.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Prefix that marks a snapshot carrying member attributes before the store's bytes.
const SNAPSHOT_MAGIC: &[u8; 4] = b"EMB1";

/// Puts the attributes in front of the store's snapshot bytes.
pub(crate) fn pack_snapshot(attrs: &BTreeMap<u64, Attributes>, store: &[u8]) -> Vec<u8> {
    let head = serde_json::to_vec(attrs).unwrap_or_else(|_| b"{}".to_vec());
    let len = u32::try_from(head.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(8 + head.len() + store.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(store);
    out
}

/// Splits snapshot bytes into attributes and the store's bytes; a snapshot written before members were
/// replicated (a bare store) has no attributes.
pub(crate) fn unpack_snapshot(data: &[u8]) -> Result<(BTreeMap<u64, Attributes>, &[u8]), String> {
    let Some(rest) = data.strip_prefix(SNAPSHOT_MAGIC) else {
        return Ok((BTreeMap::new(), data));
    };
    let len = rest
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or("truncated member attributes in the snapshot")? as usize;
    let head = rest
        .get(4..4 + len)
        .ok_or("truncated member attributes in the snapshot")?;
    let attrs = serde_json::from_slice(head)
        .map_err(|e| format!("member attributes in the snapshot: {e}"))?;
    Ok((attrs, &rest[4 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trip_and_legacy() {
        let mut a = BTreeMap::new();
        a.insert(
            7,
            Attributes {
                name: "n1".into(),
                client_urls: vec!["http://x:1".into()],
            },
        );
        let packed = pack_snapshot(&a, b"{\"store\":1}");
        let (back, store) = unpack_snapshot(&packed).unwrap();
        assert_eq!(back, a);
        assert_eq!(store, b"{\"store\":1}");
        let (none, store) = unpack_snapshot(b"{\"legacy\":1}").unwrap();
        assert!(none.is_empty());
        assert_eq!(store, b"{\"legacy\":1}");
        assert!(unpack_snapshot(b"EMB1\0\0\0\x09{").is_err());
        assert!(unpack_snapshot(b"EMB1\0").is_err());
    }

    #[test]
    fn peer_url_lists() {
        assert_eq!(
            peer_urls("http://a:1, http://b:2,"),
            vec!["http://a:1", "http://b:2"]
        );
    }
}
