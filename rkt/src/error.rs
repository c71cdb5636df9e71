//! The crate's error type: every failure the library reports, with what failed and on what.

use std::path::PathBuf;

/// Everything that can go wrong in the image store, the pod store and stage1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {path}: {source}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("parsing {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "invalid image reference {0:?}: expected oci:<dir>[:tag], oci-archive:<tar>[:tag], docker-archive:<tar> or a stored image name or id"
    )]
    BadReference(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("invalid digest {0:?}")]
    BadDigest(String),
    #[error("invalid image: {0}")]
    BadImage(String),
    #[error("refusing layer entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    #[error("image {0:?} not found in the store")]
    ImageNotFound(String),
    #[error("image reference {0:?} is ambiguous")]
    AmbiguousImage(String),
    #[error("pod {0:?} not found")]
    PodNotFound(String),
    #[error("pod uuid {0:?} is ambiguous")]
    AmbiguousPod(String),
    #[error("pod {uuid} is {state}: {why}")]
    PodState {
        uuid: String,
        state: String,
        why: String,
    },
    #[error("invalid argument: {0}")]
    Usage(String),
    #[error("cgroup: {0}")]
    Cgroup(String),
    #[error("stage1: {0}")]
    Stage1(String),
    #[error("not implemented: {0}")]
    NotImplemented(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches the operation and path to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path.into(),
            source,
        })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Sys {
            op,
            path: path.into(),
            source,
        })
    }
}

/// Parses JSON, naming what was parsed in the error.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: what.to_string(),
        source,
    })
}

/// Makes sure `path` exists, creating it (and its parents) as a directory if needed. Where it
/// exists already, as the store's and the pod store's directories do on every run after the
/// first, this is one `mkdir` that fails, where `create_dir_all` would add a `stat`. (Something
/// else than a directory in its place makes the caller's next operation under it fail with
/// ENOTDIR, naming the path.)
pub(crate) fn ensure_dir(path: &std::path::Path) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(_) => std::fs::create_dir_all(path).ctx("creating", path),
    }
}
