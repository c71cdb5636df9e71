//! Applying a verified full payload to a target partition (REPLACE and
//! REPLACE_BZ), then checking what was written against the manifest.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use proto::chromeos_update_engine::InstallOperation;
use proto::chromeos_update_engine::install_operation::Type as OpType;
use sha2::{Digest, Sha256};

use super::{ParsedPayload, PayloadError};
use crate::gpt::PartitionExtent;

/// Writes every partition operation of `parsed` (read from `payload`) into
/// the partition `extent` of `disk`. `progress` gets (operations done, total).
pub fn apply_payload(
    payload: &mut File,
    parsed: &ParsedPayload,
    disk: &mut File,
    extent: PartitionExtent,
    mut progress: impl FnMut(usize, usize),
) -> Result<(), PayloadError> {
    let block_size = u64::from(parsed.manifest.block_size());
    if block_size == 0 {
        return Err(PayloadError::Manifest("block_size is 0".into()));
    }
    if let Some(info) = &parsed.manifest.new_partition_info
        && info.size() > extent.len
    {
        return Err(PayloadError::Operation {
            index: 0,
            reason: format!(
                "image of {} bytes does not fit the {}-byte partition",
                info.size(),
                extent.len
            ),
        });
    }
    let ops = &parsed.manifest.partition_operations;
    for (index, op) in ops.iter().enumerate() {
        apply_op(payload, parsed, disk, extent, block_size, index, op)?;
        progress(index + 1, ops.len());
    }
    disk.sync_all().map_err(PayloadError::Write)?;
    Ok(())
}

fn apply_op(
    payload: &mut File,
    parsed: &ParsedPayload,
    disk: &mut File,
    extent: PartitionExtent,
    block_size: u64,
    index: usize,
    op: &InstallOperation,
) -> Result<(), PayloadError> {
    let fail = |reason: String| PayloadError::Operation { index, reason };
    let len = u64::from(op.data_length());
    let mut data = vec![0u8; len as usize];
    payload
        .seek(SeekFrom::Start(
            parsed.data_start + u64::from(op.data_offset()),
        ))
        .map_err(PayloadError::Read)?;
    payload
        .read_exact(&mut data)
        .map_err(|e| fail(format!("reading {len} bytes of data: {e}")))?;
    if let Some(expected) = &op.data_sha256_hash
        && Sha256::digest(&data).as_slice() != expected.as_slice()
    {
        return Err(PayloadError::OperationHash { index });
    }
    write_op(disk, extent, block_size, index, op, &data)
}

/// Writes one operation's data blob (already read, hash checked or covered
/// by the payload hash) to its destination extents inside `extent`.
pub(crate) fn write_op(
    disk: &File,
    extent: PartitionExtent,
    block_size: u64,
    index: usize,
    op: &InstallOperation,
    data: &[u8],
) -> Result<(), PayloadError> {
    let fail = |reason: String| PayloadError::Operation { index, reason };
    let ty =
        OpType::try_from(op.r#type).map_err(|_| fail(format!("unknown type {}", op.r#type)))?;
    let decoded;
    let bytes: &[u8] = match ty {
        OpType::Replace => data,
        OpType::ReplaceBz => {
            let mut out = Vec::new();
            bzip2::read::BzDecoder::new(data)
                .read_to_end(&mut out)
                .map_err(|e| fail(format!("bzip2: {e}")))?;
            decoded = out;
            &decoded
        }
        OpType::Move | OpType::Bsdiff => {
            return Err(fail(format!(
                "{} operations belong to delta payloads, which are not supported",
                ty.as_str_name()
            )));
        }
    };
    let dst_total = op
        .dst_extents
        .iter()
        .try_fold(0u64, |acc, e| {
            e.num_blocks()
                .checked_mul(block_size)
                .and_then(|n| acc.checked_add(n))
        })
        .ok_or_else(|| fail("extent sizes overflow".into()))?;
    if dst_total != bytes.len() as u64 {
        return Err(fail(format!(
            "{} bytes of data for {dst_total} bytes of extents",
            bytes.len()
        )));
    }
    let mut pos = 0usize;
    for e in &op.dst_extents {
        let start = e.start_block().checked_mul(block_size);
        let n = e.num_blocks() * block_size; // bounded by dst_total above
        let Some(start) = start.filter(|s| s.checked_add(n).is_some_and(|end| end <= extent.len))
        else {
            return Err(fail(format!(
                "extent at block {} runs past the partition",
                e.start_block()
            )));
        };
        disk.write_all_at(&bytes[pos..pos + n as usize], extent.offset + start)
            .map_err(PayloadError::Write)?;
        pos += n as usize;
    }
    Ok(())
}

/// Read-back buffer size: large sequential reads.
const READ_BACK_BUF: usize = 8 << 20;

/// Hashes the first `new_partition_info.size` bytes of the partition and
/// compares them with the manifest's hash. A reader thread fills large
/// buffers while this thread hashes the previous one.
pub fn verify_written(
    disk: &mut File,
    parsed: &ParsedPayload,
    extent: PartitionExtent,
) -> Result<(), PayloadError> {
    let info =
        parsed.manifest.new_partition_info.as_ref().ok_or_else(|| {
            PayloadError::Verification("manifest has no new_partition_info".into())
        })?;
    let size = info.size();
    let disk: &File = disk;
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(3);
    for _ in 0..3 {
        let _ = empty_tx.send(vec![0u8; READ_BACK_BUF]);
    }
    let (read, digest) = std::thread::scope(|scope| {
        let reader = scope.spawn(move || -> std::io::Result<u64> {
            let mut done = 0u64;
            while done < size {
                let Ok(mut buf) = empty_rx.recv() else { break };
                let want = (size - done).min(READ_BACK_BUF as u64) as usize;
                buf.resize(want, 0);
                let mut got = 0;
                while got < want {
                    match disk.read_at(&mut buf[got..], extent.offset + done + got as u64) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf.truncate(got);
                done += got as u64;
                if full_tx.send(buf).is_err() || got < want {
                    break;
                }
            }
            Ok(done)
        });
        let mut hasher = Sha256::new();
        for buf in full_rx.iter() {
            hasher.update(&buf);
            let _ = empty_tx.send(buf);
        }
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("read-back thread panicked")));
        (read, hasher.finalize())
    });
    let n = read.map_err(PayloadError::Write)?;
    if n != size {
        return Err(PayloadError::Verification(format!(
            "read {n} of {size} bytes back"
        )));
    }
    if digest.as_slice() != info.hash() {
        return Err(PayloadError::Verification("sha256 differs".into()));
    }
    Ok(())
}
