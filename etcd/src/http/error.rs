//! The one place etcd error codes become HTTP replies.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::store::{Error, error};

/// The HTTP status etcd gives an error code; every code not listed gives 400.
pub fn status(code: u16) -> StatusCode {
    match code {
        error::KEY_NOT_FOUND => StatusCode::NOT_FOUND,
        error::NOT_FILE | error::DIR_NOT_EMPTY => StatusCode::FORBIDDEN,
        error::UNAUTHORIZED => StatusCode::UNAUTHORIZED,
        error::TEST_FAILED | error::NODE_EXIST => StatusCode::PRECONDITION_FAILED,
        error::RAFT_INTERNAL | error::LEADER_ELECT => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// An etcd error as an HTTP reply (body, status, `X-Etcd-Index`).
pub struct KeyError(pub Error);

impl IntoResponse for KeyError {
    fn into_response(self) -> Response {
        let mut r = (status(self.0.code), self.0.to_json()).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(super::names::X_ETCD_INDEX, HeaderValue::from(self.0.index));
        r
    }
}

/// A `{"message":...}` reply, as the members and stats endpoints give.
pub fn message(status: StatusCode, msg: &str) -> Response {
    let body = serde_json::json!({ "message": msg }).to_string();
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        assert_eq!(status(100), StatusCode::NOT_FOUND);
        assert_eq!(status(101), StatusCode::PRECONDITION_FAILED);
        assert_eq!(status(105), StatusCode::PRECONDITION_FAILED);
        assert_eq!(status(102), StatusCode::FORBIDDEN);
        assert_eq!(status(108), StatusCode::FORBIDDEN);
        assert_eq!(status(110), StatusCode::UNAUTHORIZED);
        assert_eq!(status(300), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status(401), StatusCode::BAD_REQUEST);
        assert_eq!(status(104), StatusCode::BAD_REQUEST);
    }
}
