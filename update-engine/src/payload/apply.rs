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
    write_op_pieces(disk, extent, block_size, index, op, &[data])
}

/// [`write_op`] with the data blob in pieces (as it came off the network):
/// REPLACE data is written piece by piece without being gathered first;
/// REPLACE_BZ data is gathered for the decoder.
pub(crate) fn write_op_pieces<P: AsRef<[u8]>>(
    disk: &File,
    extent: PartitionExtent,
    block_size: u64,
    index: usize,
    op: &InstallOperation,
    pieces: &[P],
) -> Result<(), PayloadError> {
    let fail = |reason: String| PayloadError::Operation { index, reason };
    let ty =
        OpType::try_from(op.r#type).map_err(|_| fail(format!("unknown type {}", op.r#type)))?;
    match ty {
        OpType::Replace => {
            let total = pieces.iter().map(|p| p.as_ref().len() as u64).sum();
            write_extents(disk, extent, block_size, index, op, total, 0, pieces)
        }
        OpType::ReplaceBz => {
            let mut data = Vec::new();
            for p in pieces {
                data.extend_from_slice(p.as_ref());
            }
            let mut out = Vec::new();
            bzip2::read::BzDecoder::new(data.as_slice())
                .read_to_end(&mut out)
                .map_err(|e| fail(format!("bzip2: {e}")))?;
            let total = out.len() as u64;
            write_extents(disk, extent, block_size, index, op, total, 0, &[out])
        }
        OpType::Move | OpType::Bsdiff => Err(fail(format!(
            "{} operations belong to delta payloads, which are not supported",
            ty.as_str_name()
        ))),
    }
}

/// Writes part of a REPLACE operation's data as it arrives: `pieces` are
/// the bytes of the data blob from offset `from` on. The whole operation
/// (data length against extents, every extent inside the partition) is
/// checked before each part is written.
pub(crate) fn write_replace_part<P: AsRef<[u8]>>(
    disk: &File,
    extent: PartitionExtent,
    block_size: u64,
    index: usize,
    op: &InstallOperation,
    from: u64,
    pieces: &[P],
) -> Result<(), PayloadError> {
    let total = u64::from(op.data_length());
    write_extents(disk, extent, block_size, index, op, total, from, pieces)
}

/// Writes `pieces` (concatenated), the bytes from `from` on of an
/// operation's `total` bytes of output, to its destination extents.
#[allow(clippy::too_many_arguments)]
fn write_extents<P: AsRef<[u8]>>(
    disk: &File,
    extent: PartitionExtent,
    block_size: u64,
    index: usize,
    op: &InstallOperation,
    total: u64,
    from: u64,
    pieces: &[P],
) -> Result<(), PayloadError> {
    let fail = |reason: String| PayloadError::Operation { index, reason };
    let dst_total = op
        .dst_extents
        .iter()
        .try_fold(0u64, |acc, e| {
            e.num_blocks()
                .checked_mul(block_size)
                .and_then(|n| acc.checked_add(n))
        })
        .ok_or_else(|| fail("extent sizes overflow".into()))?;
    if dst_total != total {
        return Err(fail(format!(
            "{total} bytes of data for {dst_total} bytes of extents"
        )));
    }
    let len: u64 = pieces.iter().map(|p| p.as_ref().len() as u64).sum();
    if from.checked_add(len).is_none_or(|end| end > total) {
        return Err(fail(format!(
            "{len} bytes at {from} overrun {total} bytes of data"
        )));
    }
    // Byte ranges (partition offsets) of the extents, all checked first.
    let mut ranges = Vec::with_capacity(op.dst_extents.len());
    for e in &op.dst_extents {
        let n = e.num_blocks() * block_size; // bounded by dst_total above
        let start = e
            .start_block()
            .checked_mul(block_size)
            .filter(|s| s.checked_add(n).is_some_and(|end| end <= extent.len))
            .ok_or_else(|| {
                fail(format!(
                    "extent at block {} runs past the partition",
                    e.start_block()
                ))
            })?;
        ranges.push((start, n));
    }
    // `data` is the offset in the operation's output of the next byte of
    // `pieces`; `ext_data` that of the current extent's first byte.
    let mut data = from;
    let mut ext_data = 0u64;
    let mut ranges = ranges.into_iter();
    let mut current = ranges.next();
    for p in pieces {
        let mut p = p.as_ref();
        while !p.is_empty() {
            let Some((start, n)) = current else {
                break; // unreachable: the lengths were checked above
            };
            if data >= ext_data + n {
                ext_data += n;
                current = ranges.next();
                continue;
            }
            let into = data - ext_data;
            let take = ((n - into) as usize).min(p.len());
            disk.write_all_at(&p[..take], extent.offset + start + into)
                .map_err(PayloadError::Write)?;
            p = &p[take..];
            data += take as u64;
        }
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
    check_written(parsed, n, &digest.into())
}

/// Compares a read-back of the partition (`read` bytes hashed to `digest`)
/// with the manifest's `new_partition_info`.
pub fn check_written(
    parsed: &ParsedPayload,
    read: u64,
    digest: &[u8; 32],
) -> Result<(), PayloadError> {
    let info =
        parsed.manifest.new_partition_info.as_ref().ok_or_else(|| {
            PayloadError::Verification("manifest has no new_partition_info".into())
        })?;
    let size = info.size();
    if read != size {
        return Err(PayloadError::Verification(format!(
            "read {read} of {size} bytes back"
        )));
    }
    if digest.as_slice() != info.hash() {
        return Err(PayloadError::Verification("sha256 differs".into()));
    }
    Ok(())
}
