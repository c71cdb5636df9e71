//! Request parameters from the query string and a form body (the body wins), parsed as etcd's `parseKeyRequest`.

use std::collections::HashMap;

use crate::store::{Error, error};

/// Parameter values by name; body values come before query values, so the first value wins.
#[derive(Debug, Default)]
pub struct Form(HashMap<String, Vec<String>>);

impl Form {
    /// Merges a form body (first) and a query string.
    pub fn parse(body: Option<&[u8]>, query: Option<&str>) -> Self {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        if let Some(b) = body {
            for (k, v) in url::form_urlencoded::parse(b) {
                m.entry(k.into_owned()).or_default().push(v.into_owned());
            }
        }
        if let Some(q) = query {
            for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
                m.entry(k.into_owned()).or_default().push(v.into_owned());
            }
        }
        Form(m)
    }

    /// The first value of `key`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.first()).map(String::as_str)
    }

    fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    fn boolean(&self, key: &str) -> Result<bool, Error> {
        match self.value(key) {
            None => Ok(false),
            Some(v) => go_bool(v).ok_or_else(|| {
                bad(
                    error::INVALID_FIELD,
                    &format!("invalid value for \"{key}\""),
                )
            }),
        }
    }

    fn uint(&self, key: &str, code: u16) -> Result<u64, Error> {
        match self.value(key) {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| bad(code, &format!("invalid value for \"{key}\""))),
        }
    }
}

fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn bad(code: u16, cause: &str) -> Error {
    Error::new(code, cause, 0)
}

/// A parsed keys-API request.
#[derive(Debug, Default)]
pub struct KeyRequest {
    pub value: String,
    pub dir: bool,
    pub ttl: Option<u64>,
    pub prev_exist: Option<bool>,
    pub prev_value: String,
    pub prev_index: u64,
    pub refresh: bool,
    pub recursive: bool,
    /// Validated only: children are always listed in key order.
    #[allow(dead_code)]
    pub sorted: bool,
    pub wait: bool,
    pub wait_index: u64,
    pub stream: bool,
    pub quorum: bool,
    pub no_value_on_success: bool,
}

impl KeyRequest {
    /// Parses in etcd's order, so the same bad request gets the same error.
    pub fn parse(form: &Form, is_get: bool) -> Result<Self, Error> {
        let mut r = KeyRequest {
            prev_index: form.uint("prevIndex", error::INDEX_NAN)?,
            wait_index: form.uint("waitIndex", error::INDEX_NAN)?,
            recursive: form.boolean("recursive")?,
            sorted: form.boolean("sorted")?,
            wait: form.boolean("wait")?,
            dir: form.boolean("dir")?,
            quorum: form.boolean("quorum")?,
            stream: form.boolean("stream")?,
            ..Default::default()
        };
        if r.wait && !is_get {
            return Err(bad(
                error::INVALID_FIELD,
                "\"wait\" can only be used with GET requests",
            ));
        }
        if form.has("prevValue") && form.value("prevValue") == Some("") {
            return Err(bad(
                error::PREV_VALUE_REQUIRED,
                "\"prevValue\" cannot be empty",
            ));
        }
        r.prev_value = form.value("prevValue").unwrap_or("").to_string();
        r.no_value_on_success = form.boolean("noValueOnSuccess")?;
        if let Some(t) = form.value("ttl").filter(|t| !t.is_empty()) {
            r.ttl = Some(
                t.parse()
                    .map_err(|_| bad(error::TTL_NAN, "invalid value for \"ttl\""))?,
            );
        }
        if form.has("prevExist") {
            let v = form.value("prevExist").and_then(go_bool);
            r.prev_exist =
                Some(v.ok_or_else(|| bad(error::INVALID_FIELD, "invalid value for prevExist"))?);
        }
        if form.has("refresh") {
            let v = form.value("refresh").and_then(go_bool);
            r.refresh = v.ok_or_else(|| bad(error::INVALID_FIELD, "invalid value for refresh"))?;
            if r.refresh {
                if form.value("value").is_some_and(|v| !v.is_empty()) {
                    return Err(bad(
                        error::REFRESH_VALUE,
                        "A value was provided on a refresh",
                    ));
                }
                if r.ttl.is_none() {
                    return Err(bad(error::REFRESH_TTL_REQUIRED, "No TTL value set"));
                }
            }
        }
        r.value = form.value("value").unwrap_or("").to_string();
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_input_parses_or_gives_an_etcd_error(body in proptest::collection::vec(any::<u8>(), 0..200), query in ".{0,120}") {
            let f = Form::parse(Some(&body), Some(&query));
            match KeyRequest::parse(&f, true) {
                Ok(r) => prop_assert!(r.ttl.is_some() == f.value("ttl").is_some_and(|t| !t.is_empty())),
                Err(e) => prop_assert!([201, 202, 203, 209, 211, 212].contains(&e.code) && e.index == 0),
            }
        }

        #[test]
        fn go_bools_round_trip(b in any::<bool>(), style in 0..4usize) {
            let text = match (b, style) {
                (true, 0) => "true", (true, 1) => "1", (true, 2) => "T", (true, _) => "TRUE",
                (false, 0) => "false", (false, 1) => "0", (false, 2) => "F", (false, _) => "False",
            };
            let f = Form::parse(None, Some(&format!("recursive={text}")));
            prop_assert_eq!(KeyRequest::parse(&f, true).map(|r| r.recursive).ok(), Some(b));
        }
    }

    #[test]
    fn body_wins_and_errors() {
        let f = Form::parse(Some(b"value=body"), Some("value=query&ttl=5"));
        let r = KeyRequest::parse(&f, false).unwrap();
        assert_eq!(r.value, "body");
        assert_eq!(r.ttl, Some(5));
        let code = |q: &str, get| {
            KeyRequest::parse(&Form::parse(None, Some(q)), get)
                .unwrap_err()
                .code
        };
        assert_eq!(code("ttl=abc", false), 202);
        assert_eq!(code("ttl=-1", false), 202);
        assert_eq!(code("prevIndex=x", false), 203);
        assert_eq!(code("recursive=maybe", true), 209);
        assert_eq!(code("wait=true", false), 209);
        assert_eq!(code("prevValue=", false), 201);
        assert_eq!(code("refresh=true&value=x&ttl=3", false), 211);
        assert_eq!(code("refresh=true", false), 212);
        assert_eq!(code("prevExist=zz", false), 209);
        assert!(
            KeyRequest::parse(&Form::parse(None, Some("ttl=")), false)
                .unwrap()
                .ttl
                .is_none()
        );
    }
}
