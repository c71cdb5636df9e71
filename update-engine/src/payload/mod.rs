//! The `CrAU` payload container: header, protobuf manifest, data blobs and
//! the signature blob; reading, signing, creating and applying full payloads.
//!
//! Layout: magic `CrAU`, u64 BE format version (1), u64 BE manifest size, the
//! `DeltaArchiveManifest`, then the data blobs; the `Signatures` message is
//! the last blob, and the signature covers every byte before it.

pub mod apply;
pub mod create;
pub mod sign;
pub mod stream;

use std::io::{Read, Seek, SeekFrom};

use proto::chromeos_update_engine::DeltaArchiveManifest;
use proto::prost::Message;

use crate::status::ErrorCode;

/// The container's magic bytes.
pub const MAGIC: &[u8; 4] = b"CrAU";
/// The only container version CoreOS shipped.
pub const FORMAT_VERSION: u64 = 1;
/// Magic + version + manifest size.
pub const HEADER_LEN: u64 = 20;
/// Manifests above this size are refused before allocating.
pub(crate) const MAX_MANIFEST_LEN: u64 = 64 << 20;

/// Errors of reading, verifying, creating and applying payloads.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("payload does not start with the CrAU magic")]
    BadMagic,
    #[error("unsupported payload format version {0}")]
    BadVersion(u64),
    #[error("payload manifest: {0}")]
    Manifest(String),
    #[error("reading the payload: {0}")]
    Read(std::io::Error),
    #[error("payload signature: {0}")]
    Signature(String),
    #[error("public key {path}: {reason}")]
    PublicKey { path: String, reason: String },
    #[error("private key {path}: {reason}")]
    PrivateKey { path: String, reason: String },
    #[error("operation {index}: data hash mismatch")]
    OperationHash { index: usize },
    #[error("operation {index}: {reason}")]
    Operation { index: usize, reason: String },
    #[error("writing the target partition: {0}")]
    Write(std::io::Error),
    #[error("the written partition does not match the manifest: {0}")]
    Verification(String),
    #[error("creating the payload: {0}")]
    Create(std::io::Error),
}

impl PayloadError {
    /// The ActionExitCode reported to Omaha for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            PayloadError::BadMagic | PayloadError::BadVersion(_) => {
                ErrorCode::DownloadInvalidMetadataMagicString
            }
            PayloadError::Manifest(_) => ErrorCode::DownloadManifestParseError,
            PayloadError::Read(_) => ErrorCode::DownloadOperationExecutionError,
            PayloadError::Signature(_) => ErrorCode::DownloadPayloadVerificationError,
            PayloadError::PublicKey { .. } | PayloadError::PrivateKey { .. } => {
                ErrorCode::DownloadPayloadPubKeyVerificationError
            }
            PayloadError::OperationHash { .. } => ErrorCode::DownloadOperationHashMismatch,
            PayloadError::Operation { .. } => ErrorCode::DownloadOperationExecutionError,
            PayloadError::Write(_) => ErrorCode::DownloadWriteError,
            PayloadError::Verification(_) => ErrorCode::NewRootfsVerificationError,
            PayloadError::Create(_) => ErrorCode::Error,
        }
    }
}

/// A payload's manifest and where its data blobs start.
#[derive(Clone, Debug)]
pub struct ParsedPayload {
    pub manifest: DeltaArchiveManifest,
    /// File offset of the first data blob.
    pub data_start: u64,
}

impl ParsedPayload {
    /// File offset where the signature blob starts (the end of the signed bytes).
    pub fn signed_len(&self) -> Result<u64, PayloadError> {
        let off = self
            .manifest
            .signatures_offset
            .ok_or_else(|| PayloadError::Signature("payload is not signed".into()))?;
        Ok(self.data_start + off)
    }
}

/// Encodes the 20-byte header for a manifest of `manifest_len` bytes.
pub fn encode_header(manifest_len: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..4].copy_from_slice(MAGIC);
    h[4..12].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    h[12..20].copy_from_slice(&manifest_len.to_be_bytes());
    h
}

/// Reads and decodes the header and manifest at the start of `reader`.
pub fn read_manifest<R: Read + Seek>(reader: &mut R) -> Result<ParsedPayload, PayloadError> {
    reader
        .seek(SeekFrom::Start(0))
        .map_err(PayloadError::Read)?;
    let mut header = [0u8; HEADER_LEN as usize];
    reader.read_exact(&mut header).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            PayloadError::BadMagic
        } else {
            PayloadError::Read(e)
        }
    })?;
    if &header[..4] != MAGIC {
        return Err(PayloadError::BadMagic);
    }
    let version = u64::from_be_bytes(header[4..12].try_into().unwrap_or_default());
    if version != FORMAT_VERSION {
        return Err(PayloadError::BadVersion(version));
    }
    let manifest_len = u64::from_be_bytes(header[12..20].try_into().unwrap_or_default());
    if manifest_len > MAX_MANIFEST_LEN {
        return Err(PayloadError::Manifest(format!(
            "manifest size {manifest_len} too large"
        )));
    }
    let mut buf = vec![0u8; manifest_len as usize];
    reader
        .read_exact(&mut buf)
        .map_err(|e| PayloadError::Manifest(format!("short manifest: {e}")))?;
    let manifest = DeltaArchiveManifest::decode(buf.as_slice())
        .map_err(|e| PayloadError::Manifest(e.to_string()))?;
    Ok(ParsedPayload {
        manifest,
        data_start: HEADER_LEN + manifest_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn header_round_trip_and_rejections() {
        let manifest = DeltaArchiveManifest {
            block_size: Some(4096),
            ..Default::default()
        };
        let body = manifest.encode_to_vec();
        let mut bytes = encode_header(body.len() as u64).to_vec();
        bytes.extend_from_slice(&body);
        let parsed = read_manifest(&mut Cursor::new(&bytes)).unwrap();
        assert_eq!(parsed.manifest.block_size(), 4096);
        assert_eq!(parsed.data_start, HEADER_LEN + body.len() as u64);

        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(
            read_manifest(&mut Cursor::new(&bad)),
            Err(PayloadError::BadMagic)
        ));
        let mut v2 = bytes.clone();
        v2[11] = 2;
        assert!(matches!(
            read_manifest(&mut Cursor::new(&v2)),
            Err(PayloadError::BadVersion(2))
        ));
        assert!(matches!(
            read_manifest(&mut Cursor::new(&bytes[..10])),
            Err(PayloadError::BadMagic)
        ));
    }
}
