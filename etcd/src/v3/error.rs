//! THE map from v3 failures to gRPC statuses, with etcd 3.4's codes and messages (its `rpctypes`).

use tonic::{Code, Status};

use crate::raft::MemberError;
use crate::store::{self, V3Error};

/// Failures of the API layer that etcd reports before anything is proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// An empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// More than 128 compares or ops in one branch.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// Two writes to one key in a transaction.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// `ignore_value` with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A member change without peer URLs, or with one that is not a URL etcd accepts.
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
}

/// The gRPC status of a store failure.
pub fn v3(e: V3Error) -> Status {
    let code = match e {
        V3Error::Compacted | V3Error::FutureRev | V3Error::LeaseTtlTooLarge => Code::OutOfRange,
        V3Error::LeaseNotFound => Code::NotFound,
        V3Error::LeaseExists => Code::FailedPrecondition,
        V3Error::KeyNotFound => Code::InvalidArgument,
    };
    Status::new(code, e.to_string())
}

/// The gRPC status of a request rejected before proposal.
pub fn request(e: RequestError) -> Status {
    Status::new(Code::InvalidArgument, e.to_string())
}

/// The gRPC status of a refused membership change (etcd's v3 messages differ from its v2 ones).
pub fn member(e: MemberError) -> Status {
    let (code, msg) = match e {
        MemberError::NotFound(_) | MemberError::Removed(_) => {
            (Code::NotFound, "etcdserver: member not found".into())
        }
        MemberError::PeerUrlExists => (
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists".into(),
        ),
        MemberError::IdExists => (
            Code::FailedPrecondition,
            "etcdserver: member ID already exist".into(),
        ),
        MemberError::NotEnoughStarted => (
            Code::FailedPrecondition,
            "etcdserver: re-configuration failed due to not enough started members".into(),
        ),
        MemberError::LearnerNotReady | MemberError::NotLearner => {
            (Code::FailedPrecondition, e.to_string())
        }
        MemberError::Unavailable(_) => (Code::Unavailable, e.to_string()),
    };
    Status::new(code, msg)
}

/// Peer URLs of a member change, normalised; etcd's error if there are none or one is invalid.
pub fn peer_urls(urls: &[String]) -> Result<Vec<String>, Status> {
    if urls.is_empty() {
        return Err(request(RequestError::MemberBadUrls));
    }
    urls.iter()
        .map(|u| crate::cluster::peer_url(u).ok_or_else(|| request(RequestError::MemberBadUrls)))
        .collect()
}

/// The gRPC status of a raft failure (timeouts, no leader, stopping).
pub fn raft(e: store::Error) -> Status {
    let msg = if e.cause.starts_with("etcdserver: ") {
        e.cause
    } else if e.code == store::error::LEADER_ELECT {
        "etcdserver: no leader".to_string()
    } else {
        format!("etcdserver: {}", e.cause)
    };
    Status::new(Code::Unavailable, msg)
}
