//! Building a signed full payload from a filesystem image: the image is cut
//! into chunks, each stored as REPLACE_BZ when bzip2 makes it smaller and as
//! REPLACE otherwise.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use proto::chromeos_update_engine::install_operation::Type as OpType;
use proto::chromeos_update_engine::signatures::Signature;
use proto::chromeos_update_engine::{
    DeltaArchiveManifest, Extent, InstallOperation, PartitionInfo, Signatures,
};
use proto::prost::Message;
use rsa::RsaPrivateKey;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};

use super::sign::{HashWriter, SIGNATURE_VERSION, sign_digest};
use super::{PayloadError, encode_header};

/// Block size of the manifest (the original's default).
pub const BLOCK_SIZE: u32 = 4096;
/// Bytes of image per operation (a multiple of [`BLOCK_SIZE`]).
pub const CHUNK_SIZE: usize = 1 << 20;

/// What a created payload is, for the Omaha response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadSummary {
    pub size: u64,
    pub sha256: [u8; 32],
    pub image_size: u64,
}

/// Builds a full payload of `image` signed with `key` into `out`.
pub fn create_full_payload(
    image: &Path,
    key: &RsaPrivateKey,
    out: &Path,
) -> Result<PayloadSummary, PayloadError> {
    let mut img = File::open(image).map_err(PayloadError::Create)?;
    let blobs_path = sibling(out, ".blobs.tmp");
    let result = build(&mut img, key, out, &blobs_path);
    let _ = std::fs::remove_file(&blobs_path);
    result
}

fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn build(
    img: &mut File,
    key: &RsaPrivateKey,
    out: &Path,
    blobs_path: &Path,
) -> Result<PayloadSummary, PayloadError> {
    let mut blobs = BufWriter::new(File::create(blobs_path).map_err(PayloadError::Create)?);
    let mut ops = Vec::new();
    let mut image_hasher = Sha256::new();
    let mut image_size = 0u64;
    let mut data_offset = 0u64;
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut block = 0u64;
    loop {
        let n = read_full(img, &mut buf).map_err(PayloadError::Create)?;
        if n == 0 {
            break;
        }
        image_hasher.update(&buf[..n]);
        image_size += n as u64;
        // The last chunk is padded to whole blocks.
        let padded = n.div_ceil(BLOCK_SIZE as usize) * BLOCK_SIZE as usize;
        buf[n..padded].fill(0);
        let raw = &buf[..padded];
        let compressed = bzip(raw).map_err(PayloadError::Create)?;
        let (ty, data) = if compressed.len() < raw.len() {
            (OpType::ReplaceBz, compressed.as_slice())
        } else {
            (OpType::Replace, raw)
        };
        let num_blocks = (padded / BLOCK_SIZE as usize) as u64;
        let offset = u32::try_from(data_offset).map_err(|_| too_big())?;
        let length = u32::try_from(data.len()).map_err(|_| too_big())?;
        ops.push(InstallOperation {
            r#type: ty as i32,
            data_offset: Some(offset),
            data_length: Some(length),
            dst_extents: vec![Extent {
                start_block: Some(block),
                num_blocks: Some(num_blocks),
            }],
            dst_length: Some(padded as u64),
            data_sha256_hash: Some(Sha256::digest(data).to_vec()),
            ..Default::default()
        });
        blobs.write_all(data).map_err(PayloadError::Create)?;
        data_offset += data.len() as u64;
        block += num_blocks;
        if n < CHUNK_SIZE {
            break;
        }
    }
    blobs.flush().map_err(PayloadError::Create)?;
    drop(blobs);

    // The signature blob's size is fixed by the key size, so the manifest can
    // name it before signing.
    let sig_len = Signatures {
        signatures: vec![Signature {
            version: Some(SIGNATURE_VERSION),
            data: Some(vec![0u8; key.size()]),
        }],
    }
    .encoded_len() as u64;
    let manifest = DeltaArchiveManifest {
        partition_operations: ops,
        block_size: Some(BLOCK_SIZE),
        signatures_offset: Some(data_offset),
        signatures_size: Some(sig_len),
        new_partition_info: Some(PartitionInfo {
            size: Some(image_size),
            hash: Some(image_hasher.finalize().to_vec()),
        }),
        ..Default::default()
    };
    let manifest_bytes = manifest.encode_to_vec();

    let mut outf = BufWriter::new(File::create(out).map_err(PayloadError::Create)?);
    let mut signed = Sha256::new();
    let header = encode_header(manifest_bytes.len() as u64);
    for part in [&header[..], &manifest_bytes[..]] {
        signed.update(part);
        outf.write_all(part).map_err(PayloadError::Create)?;
    }
    let mut blobs = File::open(blobs_path).map_err(PayloadError::Create)?;
    blobs
        .seek(SeekFrom::Start(0))
        .map_err(PayloadError::Create)?;
    let mut tee = Tee {
        a: &mut outf,
        b: HashWriter(&mut signed),
    };
    std::io::copy(&mut blobs, &mut tee).map_err(PayloadError::Create)?;
    let digest = signed.finalize();
    let sigs = Signatures {
        signatures: vec![Signature {
            version: Some(SIGNATURE_VERSION),
            data: Some(sign_digest(key, &digest)?),
        }],
    }
    .encode_to_vec();
    if sigs.len() as u64 != sig_len {
        return Err(PayloadError::Signature(format!(
            "signature blob is {} bytes, {sig_len} expected",
            sigs.len()
        )));
    }
    outf.write_all(&sigs).map_err(PayloadError::Create)?;
    let file = outf
        .into_inner()
        .map_err(|e| PayloadError::Create(e.into_error()))?;
    file.sync_all().map_err(PayloadError::Create)?;
    drop(file);

    let mut whole = File::open(out).map_err(PayloadError::Create)?;
    let mut hasher = Sha256::new();
    let size =
        std::io::copy(&mut whole, &mut HashWriter(&mut hasher)).map_err(PayloadError::Create)?;
    Ok(PayloadSummary {
        size,
        sha256: hasher.finalize().into(),
        image_size,
    })
}

fn too_big() -> PayloadError {
    PayloadError::Create(std::io::Error::other(
        "payload data exceeds the manifest's 32-bit offsets",
    ))
}

fn bzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    enc.write_all(data)?;
    enc.finish()
}

/// Reads until `buf` is full or the input ends.
pub(crate) fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

struct Tee<'a, A: Write, B: Write> {
    a: &'a mut A,
    b: B,
}

impl<A: Write, B: Write> Write for Tee<'_, A, B> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.a.write(buf)?;
        self.b.write_all(&buf[..n])?;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.a.flush()?;
        self.b.flush()
    }
}
