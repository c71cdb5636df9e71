//! update_engine: A/B partition updates over Omaha.
//!
//! Not built yet: this crate is an empty library until its issue is worked on.
