//! RSA PKCS#1 v1.5 signatures over SHA-256 of the payload bytes before the
//! signature blob, checked with the update payload public key.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use proto::chromeos_update_engine::Signatures;
use proto::prost::Message;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};

use super::{ParsedPayload, PayloadError};

/// The signature message version written by the payload tool.
pub const SIGNATURE_VERSION: u32 = 1;

/// Loads a PEM public key (SubjectPublicKeyInfo or PKCS#1).
pub fn load_public_key(path: &Path) -> Result<RsaPublicKey, PayloadError> {
    let err = |reason: String| PayloadError::PublicKey {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    RsaPublicKey::from_public_key_pem(&pem)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(&pem))
        .map_err(|e| err(e.to_string()))
}

/// Loads a PEM private key (PKCS#8 or PKCS#1).
pub fn load_private_key(path: &Path) -> Result<RsaPrivateKey, PayloadError> {
    let err = |reason: String| PayloadError::PrivateKey {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    RsaPrivateKey::from_pkcs8_pem(&pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
        .map_err(|e| err(e.to_string()))
}

/// Signs a SHA-256 digest, giving the signature bytes.
pub fn sign_digest(key: &RsaPrivateKey, digest: &[u8]) -> Result<Vec<u8>, PayloadError> {
    key.sign(Pkcs1v15Sign::new::<Sha256>(), digest)
        .map_err(|e| PayloadError::Signature(e.to_string()))
}

/// SHA-256 of the first `len` bytes of `reader`.
pub fn hash_prefix<R: Read + Seek>(reader: &mut R, len: u64) -> Result<[u8; 32], PayloadError> {
    reader
        .seek(SeekFrom::Start(0))
        .map_err(PayloadError::Read)?;
    let mut hasher = Sha256::new();
    let mut limited = reader.take(len);
    let copied =
        std::io::copy(&mut limited, &mut HashWriter(&mut hasher)).map_err(PayloadError::Read)?;
    if copied != len {
        return Err(PayloadError::Signature(format!(
            "payload ends at {copied} bytes, before its signature at {len}"
        )));
    }
    Ok(hasher.finalize().into())
}

/// Checks the payload's signature blob against `key`: at least one
/// signature must verify over SHA-256 of the bytes before the blob, and the
/// blob must end the payload.
pub fn verify_payload<R: Read + Seek>(
    reader: &mut R,
    parsed: &ParsedPayload,
    key: &RsaPublicKey,
) -> Result<(), PayloadError> {
    let digest = hash_prefix(reader, parsed.signed_len()?)?;
    verify_with_digest(reader, parsed, &digest, key)
}

/// [`verify_payload`] with the SHA-256 of the signed bytes already computed
/// (so a caller hashing the whole payload anyway reads it only once).
pub fn verify_with_digest<R: Read + Seek>(
    reader: &mut R,
    parsed: &ParsedPayload,
    digest: &[u8; 32],
    key: &RsaPublicKey,
) -> Result<(), PayloadError> {
    let signed_len = parsed.signed_len()?;
    let sig_size = parsed
        .manifest
        .signatures_size
        .ok_or_else(|| PayloadError::Signature("manifest has no signatures_size".into()))?;
    let total = reader.seek(SeekFrom::End(0)).map_err(PayloadError::Read)?;
    if signed_len.checked_add(sig_size) != Some(total) {
        return Err(PayloadError::Signature(format!(
            "signature blob at {signed_len}+{sig_size} does not end the {total}-byte payload"
        )));
    }
    let mut blob = vec![0u8; sig_size as usize];
    reader
        .seek(SeekFrom::Start(signed_len))
        .map_err(PayloadError::Read)?;
    reader.read_exact(&mut blob).map_err(PayloadError::Read)?;
    let sigs = Signatures::decode(blob.as_slice())
        .map_err(|e| PayloadError::Signature(format!("decoding the signature blob: {e}")))?;
    if sigs.signatures.is_empty() {
        return Err(PayloadError::Signature(
            "no signature in the payload".into(),
        ));
    }
    let ok = sigs.signatures.iter().any(|s| {
        key.verify(Pkcs1v15Sign::new::<Sha256>(), digest, s.data())
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PayloadError::Signature(
            "no signature verifies with the public key".into(),
        ))
    }
}

/// Adapts a hasher to `io::Write`.
pub(crate) struct HashWriter<'a, D: Digest>(pub &'a mut D);

impl<D: Digest> std::io::Write for HashWriter<'_, D> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
