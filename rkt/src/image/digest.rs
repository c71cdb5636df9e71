//! sha256 digests: parsing, validation (a digest becomes a file name) and hashing readers.

use std::fmt;
use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A validated `sha256:<64 lowercase hex>` digest; safe to use as a file name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<hex>` (or the rkt-style `sha256-<hex>`).
    pub fn parse(s: &str) -> Result<Self> {
        let hex = s
            .strip_prefix("sha256:")
            .or_else(|| s.strip_prefix("sha256-"))
            .ok_or_else(|| Error::BadDigest(s.to_string()))?;
        Self::from_hex(hex).map_err(|_| Error::BadDigest(s.to_string()))
    }

    /// Builds a digest from 64 lowercase hex characters.
    pub fn from_hex(hex: &str) -> Result<Self> {
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::BadDigest(hex.to_string()));
        }
        Ok(Self {
            hex: hex.to_string(),
        })
    }

    /// The digest of a byte string.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The rkt-style image id, `sha256-<hex>`.
    pub fn rkt_id(&self) -> String {
        format!("sha256-{}", self.hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads the rest of the stream, then returns its digest and length.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((
            Digest {
                hex: hex::encode(self.hasher.finalize()),
            },
            self.count,
        ))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Returns the inner writer, the digest and the length written.
    pub fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest {
                hex: hex::encode(self.hasher.finalize()),
            },
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The chain id of a stack of layers (OCI image spec: ChainID(L0|...|Ln)).
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    let mut iter = diff_ids.iter();
    let mut chain = iter.next()?.clone();
    for d in iter {
        chain = Digest::of(format!("{chain} {d}").as_bytes());
    }
    Some(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_paths_and_bad_hex() {
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse(&format!("sha512:{}", "a".repeat(64))).is_err());
        let d = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(d.rkt_id(), format!("sha256-{}", "a".repeat(64)));
        assert_eq!(Digest::parse(&d.rkt_id()).unwrap(), d);
    }

    #[test]
    fn chain_id_follows_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
        assert_eq!(
            chain_id(&[a.clone(), b.clone()]),
            Some(Digest::of(format!("{a} {b}").as_bytes()))
        );
        assert_eq!(chain_id(&[]), None);
    }
}
