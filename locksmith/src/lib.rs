//! locksmith: reboot strategies with a semaphore in etcd.
//!
//! Not built yet: this crate is an empty library until its issue is worked on.
