//! The validator: dispatch on the user-data kind, then the original's rules, as a line-numbered report.
//!
//! Entries come in rule order, then document order (the original walked Go maps, so sibling keys came in random
//! order; here they come as written).

mod rules;

use std::fmt;

use serde::Serialize;

use crate::userdata;
use crate::yaml;

/// How serious an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The config will not do what it says.
    Error,
    /// Probably a mistake.
    Warning,
    /// Worth knowing.
    Info,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Error => "error",
            Kind::Warning => "warning",
            Kind::Info => "info",
        })
    }
}

/// One finding; displays as `line N: kind: message` and serialises as `{"kind":..,"line":..,"message":..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Severity.
    pub kind: Kind,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.kind, self.message)
    }
}

/// All findings for one user-data document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Findings in rule order, then document order.
    pub entries: Vec<Entry>,
}

impl Report {
    pub(crate) fn push(&mut self, kind: Kind, line: usize, message: impl Into<String>) {
        self.entries.push(Entry {
            kind,
            line,
            message: message.into(),
        });
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether any entry is an error.
    pub fn has_errors(&self) -> bool {
        self.entries.iter().any(|e| e.kind == Kind::Error)
    }
}

/// Validates raw user-data: scripts, Ignition and empty input give an empty report.
pub fn validate(input: &[u8]) -> Report {
    let text = String::from_utf8_lossy(input).replace('\r', "");
    let mut report = Report::default();
    match userdata::kind_of(&text) {
        userdata::Kind::Empty | userdata::Kind::Script | userdata::Kind::Ignition => {}
        userdata::Kind::CloudConfig => validate_cloud_config(&text, &mut report),
        userdata::Kind::Unknown => report.push(
            Kind::Error,
            1,
            r##"must be "#cloud-config" or begin with "#!""##,
        ),
    }
    report
}

/// Runs the rules on a `#cloud-config` document (the header is not checked here).
pub fn validate_cloud_config(text: &str, report: &mut Report) {
    match yaml::parse(text) {
        Err(e) => report.push(Kind::Error, e.line, e.message),
        Ok(None) => {}
        Ok(Some(root)) => rules::run(&root, report),
    }
}

/// Whether `text` matches one of the schema's validity patterns (`schema::*_RE`).
pub fn matches_pattern(pattern: &str, text: &str) -> bool {
    rules::matches(pattern, text)
}

/// Whether the directory of `path` is /usr or below it (read-only on CoreOS).
pub fn is_under_usr(path: &str) -> bool {
    rules::under_usr(path)
}
