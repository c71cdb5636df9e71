//! etcd v2 error codes, messages and the error body (`{"errorCode",...}`).

use serde::{Deserialize, Serialize};

/// Key not found.
pub const KEY_NOT_FOUND: u16 = 100;
/// Compare failed.
pub const TEST_FAILED: u16 = 101;
/// Not a file.
pub const NOT_FILE: u16 = 102;
/// Not a directory.
pub const NOT_DIR: u16 = 104;
/// Key already exists.
pub const NODE_EXIST: u16 = 105;
/// Root is read only.
pub const ROOT_RONLY: u16 = 107;
/// Directory not empty.
pub const DIR_NOT_EMPTY: u16 = 108;
/// Authentication required.
pub const UNAUTHORIZED: u16 = 110;
/// Empty prevValue.
pub const PREV_VALUE_REQUIRED: u16 = 201;
/// TTL is not a number.
pub const TTL_NAN: u16 = 202;
/// Index is not a number.
pub const INDEX_NAN: u16 = 203;
/// Invalid field.
pub const INVALID_FIELD: u16 = 209;
/// Invalid form.
pub const INVALID_FORM: u16 = 210;
/// Value on refresh.
pub const REFRESH_VALUE: u16 = 211;
/// No TTL on refresh.
pub const REFRESH_TTL_REQUIRED: u16 = 212;
/// Raft internal error.
pub const RAFT_INTERNAL: u16 = 300;
/// Leader election in progress.
pub const LEADER_ELECT: u16 = 301;
/// History cleared.
pub const EVENT_INDEX_CLEARED: u16 = 401;

/// The message etcd gives for each error code.
pub fn message(code: u16) -> &'static str {
    match code {
        100 => "Key not found",
        101 => "Compare failed",
        102 => "Not a file",
        103 => "Reached the max number of peers in the cluster",
        104 => "Not a directory",
        105 => "Key already exists",
        106 => "The prefix of given key is a keyword in etcd",
        107 => "Root is read only",
        108 => "Directory not empty",
        109 => "Peer address has existed",
        110 => "The request requires user authentication",
        200 => "Value is Required in POST form",
        201 => "PrevValue is Required in POST form",
        202 => "The given TTL in POST form is not a number",
        203 => "The given index in POST form is not a number",
        204 => "Value or TTL is required in POST form",
        205 => "The given timeout in POST form is not a number",
        206 => "Name is required in POST form",
        207 => "Index or value is required",
        208 => "Index and value cannot both be specified",
        209 => "Invalid field",
        210 => "Invalid POST form",
        211 => "Value provided on refresh",
        212 => "A TTL must be provided on refresh",
        300 => "Raft Internal Error",
        301 => "During Leader Election",
        400 => "watcher is cleared due to etcd recovery",
        401 => "The event in requested index is outdated and cleared",
        402 => "Standby Internal Error",
        403 => "Invalid active size",
        404 => "Standby remove delay",
        500 => "Client Internal Error",
        _ => "Unknown error",
    }
}

/// An etcd v2 error: code, cause and the store index it was raised at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {} ({cause}) [{index}]", message(*.code))]
pub struct Error {
    /// The etcd error code.
    pub code: u16,
    /// What caused it (a key, a comparison).
    pub cause: String,
    /// The store index when it happened (0 for request parse errors).
    pub index: u64,
}

impl Error {
    /// An error with the given code, cause and index.
    pub fn new(code: u16, cause: impl Into<String>, index: u64) -> Self {
        Error {
            code,
            cause: cause.into(),
            index,
        }
    }

    /// The JSON body etcd sends, with its trailing newline.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "errorCode")]
            code: u16,
            message: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            cause: &'a str,
            index: u64,
        }
        let body = Body {
            code: self.code,
            message: message(self.code),
            cause: &self.cause,
            index: self.index,
        };
        let mut s = serde_json::to_string(&body).unwrap_or_default();
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let e = Error::new(KEY_NOT_FOUND, "/a", 7);
        assert_eq!(
            e.to_json(),
            "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/a\",\"index\":7}\n"
        );
        let e = Error::new(INVALID_FIELD, "", 0);
        assert_eq!(
            e.to_json(),
            "{\"errorCode\":209,\"message\":\"Invalid field\",\"index\":0}\n"
        );
    }
}
