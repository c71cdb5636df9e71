//! rkt's integration tests: one binary, one module per area. They run as root (CI does) and use
//! Debian's busybox-static for images, umoci and skopeo for interoperability.

mod api;
mod common;
mod hostile;
mod images;
mod interop;
mod lifecycle;
mod logs;
mod net;
mod pods;
