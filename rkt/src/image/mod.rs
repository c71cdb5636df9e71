//! Images: OCI types, the content-addressed store, transports, safe layer unpacking and the tree cache.

pub mod digest;
pub mod export;
pub mod oci;
pub mod store;
pub mod transport;
pub mod tree;
pub mod unpack;

pub use digest::Digest;
pub use store::{ImageRecord, Store};
