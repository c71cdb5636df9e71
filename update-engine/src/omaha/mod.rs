//! Omaha v3 over XML: the request the engine sends (an update check or an
//! event) and the response the server gives, with writers and parsers for
//! both sides.

mod request;
mod response;
mod xml;

pub use request::{AppRequest, Event, Request};
pub use response::{AppResponse, Package, PostInstall, Response, UpdateCheck, UpdateOffer};

/// Errors of Omaha XML parsing and validation.
#[derive(Debug, thiserror::Error)]
pub enum OmahaError {
    #[error("malformed omaha xml: {0}")]
    Xml(String),
    #[error("invalid omaha document: {0}")]
    Invalid(String),
}
