//! THE map from v3 failures to gRPC statuses, with etcd 3.4's codes and messages (its `rpctypes`).

use tonic::{Code, Status};

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
    /// A membership change this member cannot make yet.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// Promoting a voting member.
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    /// Adding a member without the peer transport.
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
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
    let code = match e {
        RequestError::MemberNotFound => Code::NotFound,
        RequestError::MemberNotLearner => Code::FailedPrecondition,
        RequestError::Unhealthy => Code::Unavailable,
        _ => Code::InvalidArgument,
    };
    Status::new(code, e.to_string())
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
