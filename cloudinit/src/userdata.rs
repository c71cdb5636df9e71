//! User-data kinds: `#cloud-config`, `#!` scripts, Ignition JSON, empty, or unrecognised; gzip is undone first.

use std::io::Read;

/// What a piece of user-data is, decided from its first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Nothing but whitespace: a no-op.
    Empty,
    /// Starts with `#!`: run as a script.
    Script,
    /// First line is exactly `#cloud-config` (trailing whitespace allowed).
    CloudConfig,
    /// JSON with `ignitionVersion` or `ignition.version`: not ours.
    Ignition,
    /// Anything else: an error.
    Unknown,
}

/// Errors from decoding user-data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gzip stream was corrupt.
    #[error("decompressing gzip user-data: {0}")]
    Gzip(#[source] std::io::Error),
}

/// Undoes gzip compression when the data starts with the gzip magic, otherwise returns it unchanged.
pub fn decompress(data: &[u8]) -> Result<Vec<u8>, Error> {
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .map_err(Error::Gzip)?;
        Ok(out)
    } else {
        Ok(data.to_vec())
    }
}

/// Classifies user-data text.
pub fn kind_of(text: &str) -> Kind {
    if text.trim().is_empty() {
        return Kind::Empty;
    }
    let first = text.lines().next().unwrap_or_default();
    if first.starts_with("#!") {
        Kind::Script
    } else if first.trim_end() == "#cloud-config" {
        Kind::CloudConfig
    } else if is_ignition(text) {
        Kind::Ignition
    } else {
        Kind::Unknown
    }
}

fn is_ignition(text: &str) -> bool {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) else {
        return false;
    };
    map.contains_key("ignitionVersion")
        || map
            .get("ignition")
            .and_then(|i| i.as_object())
            .is_some_and(|i| i.contains_key("version"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(kind_of(""), Kind::Empty);
        assert_eq!(kind_of(" \n\n"), Kind::Empty);
        assert_eq!(kind_of("#!/bin/sh\necho"), Kind::Script);
        assert_eq!(kind_of("#cloud-config\nhostname: a"), Kind::CloudConfig);
        assert_eq!(kind_of("#cloud-config \t\n"), Kind::CloudConfig);
        assert_eq!(kind_of("#cloud-conf\n"), Kind::Unknown);
        assert_eq!(kind_of("hostname: a\n"), Kind::Unknown);
        assert_eq!(
            kind_of(r#"{"ignition":{"version":"3.0.0"}}"#),
            Kind::Ignition
        );
        assert_eq!(kind_of(r#"{"ignitionVersion":1}"#), Kind::Ignition);
        assert_eq!(kind_of("{}"), Kind::Unknown);
    }

    #[test]
    fn gzip_is_undone() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"#cloud-config\n").unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(decompress(&gz).unwrap(), b"#cloud-config\n");
        assert_eq!(decompress(b"plain").unwrap(), b"plain");
        assert!(decompress(&[0x1f, 0x8b, 0, 1]).is_err());
    }
}
