//! Single-pass processing of a payload as its bytes arrive: one SHA-256
//! over the whole payload (its state at the end of the signed bytes gives the
//! signature digest), REPLACE/REPLACE_BZ operations written to the target
//! partition as soon as their data blobs are complete, each operation's data
//! hash checked, and the written partition read back and hashed behind the
//! writes.
//!
//! Nothing here decides whether the payload is good: the caller checks the
//! digests and the signature once every byte is in, and only then marks the
//! partition bootable. Writing the passive partition early is safe because it
//! is not bootable until the GPT flip. Anything the streaming writer does not
//! handle (a manifest that does not parse, operations out of data order, an
//! operation failing, an operation whose data hash differs) only stops the
//! streaming writes; the caller then applies the verified file with
//! [`super::apply::apply_payload`], which reports the error with its usual
//! code.
//!
//! The work runs on four threads so that it overlaps: the caller's (file
//! appends and partition writes, with the kernel's writeback started every
//! [`WRITEBACK_WINDOW`] bytes so that the final fsync finds little left to
//! write), the payload hash, the operation hashes, and the read-back. The
//! read-back follows the writes when every operation writes behind the
//! previous ones (a full payload does): a region it has hashed is never
//! written again, so after the final fsync only the tail is left to read.
//! It reads through the page cache, as the original's verifier does.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;

use bytes::{Buf, Bytes};
use proto::chromeos_update_engine::InstallOperation;
use proto::chromeos_update_engine::install_operation::Type as OpType;
use sha2::{Digest, Sha256};

use super::{FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_MANIFEST_LEN, ParsedPayload, read_manifest};
use crate::gpt::PartitionExtent;

/// Compressed (gathered) operations with larger data blobs are left to the
/// file-based apply; REPLACE data is never gathered.
const MAX_STREAMED_OP: u64 = 64 << 20;
/// Bytes written to the partition between two starts of writeback.
pub const WRITEBACK_WINDOW: u64 = 16 << 20;
/// Largest read of the read-back.
const READ_BACK_BUF: usize = 8 << 20;

/// What the stream saw, once every byte has been fed.
#[derive(Debug)]
pub struct StreamSummary {
    /// Bytes fed.
    pub len: u64,
    /// SHA-256 of every byte fed.
    pub sha256: [u8; 32],
    /// SHA-256 of the bytes before the signature blob, when the manifest
    /// parsed and the stream reached the signature.
    pub signed_sha256: Option<[u8; 32]>,
    /// Every operation was written, its data hash matched, and the target
    /// was synced.
    pub applied: bool,
    /// Why the operations were not all written (for the log).
    pub not_applied: Option<String>,
    /// The read-back of the written partition, when `applied` and the
    /// operations were in partition order: [`ReadBack::finish`] gives the
    /// digest to check against the manifest.
    pub read_back: Option<ReadBack>,
    /// Time spent in the final sync of the target.
    pub sync_time: std::time::Duration,
    /// Time then spent waiting for the hashing threads to catch up.
    pub hash_wait_time: std::time::Duration,
}

enum Manifest {
    /// Header and manifest still arriving (buffered in `head`).
    Pending,
    Parsed(ParsedPayload),
    /// Not a manifest we can stream; the final checks will say why.
    Failed,
}

struct Writer {
    target: File,
    extent: PartitionExtent,
    block_size: u64,
    /// The next operation to write.
    next: usize,
    /// Bytes of its data already written (REPLACE data is written as it
    /// arrives).
    op_done: u64,
    /// Payload bytes from `buf_start` to the current stream position, in
    /// the chunks they arrived in (shared, not copied).
    pending: VecDeque<Bytes>,
    pending_len: u64,
    buf_start: u64,
    op_hasher: OpHasher,
    /// With the end (partition offset) of each operation's writes, when
    /// the operations are in partition order.
    read_back: Option<(ReadBack, Vec<u64>)>,
    /// Partition range written since writeback was last started.
    dirty: Option<(u64, u64)>,
}

impl Writer {
    fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.pending_len += data.len() as u64;
            self.pending.push_back(data);
        }
    }

    /// Drops the first `n` pending bytes.
    fn skip(&mut self, mut n: u64) {
        while n > 0 {
            let Some(front) = self.pending.front_mut() else {
                break;
            };
            let len = front.len() as u64;
            let k = len.min(n);
            if k == len {
                self.pending.pop_front();
            } else {
                front.advance(k as usize);
            }
            self.pending_len -= k;
            self.buf_start += k;
            n -= k;
        }
    }

    /// Takes the first `n` pending bytes (there must be that many).
    fn take(&mut self, mut n: u64) -> Vec<Bytes> {
        let mut out = Vec::new();
        while n > 0 {
            let Some(front) = self.pending.front_mut() else {
                break;
            };
            let len = front.len() as u64;
            let piece = if len <= n {
                self.pending.pop_front().unwrap_or_default()
            } else {
                front.split_to(n as usize)
            };
            let k = piece.len() as u64;
            self.pending_len -= k;
            self.buf_start += k;
            n -= k;
            out.push(piece);
        }
        out
    }

    /// Notes a write of `op`'s extents and starts writeback once a window
    /// of them has piled up.
    fn wrote(&mut self, op: &InstallOperation) {
        for e in &op.dst_extents {
            let start = e.start_block().saturating_mul(self.block_size);
            let end = start.saturating_add(e.num_blocks().saturating_mul(self.block_size));
            self.dirty = Some(match self.dirty {
                Some((lo, hi)) => (lo.min(start), hi.max(end)),
                None => (start, end),
            });
        }
        if let Some((lo, hi)) = self.dirty
            && hi - lo >= WRITEBACK_WINDOW
        {
            self.start_writeback();
        }
    }

    fn start_writeback(&mut self) {
        if let Some((lo, hi)) = self.dirty.take() {
            start_writeback(&self.target, self.extent.offset + lo, hi - lo);
        }
    }
}

/// Feeds on payload bytes in order; see the module documentation.
pub struct StreamApplier {
    pos: u64,
    hasher: Hasher,
    head: Vec<u8>,
    manifest: Manifest,
    /// Taken (None) when streaming writes stop.
    target: Option<(File, PartitionExtent)>,
    writer: Option<Writer>,
    not_applied: Option<String>,
    ops_done: usize,
}

impl StreamApplier {
    /// A stream writing operations into `extent` of `target`; with `None`
    /// it only hashes.
    pub fn new(target: Option<(File, PartitionExtent)>) -> Self {
        let not_applied = target
            .is_none()
            .then(|| "no target to write to".to_string());
        StreamApplier {
            pos: 0,
            hasher: Hasher::spawn(),
            head: Vec::new(),
            manifest: Manifest::Pending,
            target,
            writer: None,
            not_applied,
            ops_done: 0,
        }
    }

    /// Bytes fed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// (operations written, total operations), once the manifest parsed.
    pub fn ops_progress(&self) -> Option<(usize, usize)> {
        match &self.manifest {
            Manifest::Parsed(p) => Some((self.ops_done, p.manifest.partition_operations.len())),
            _ => None,
        }
    }

    /// The next bytes of the payload.
    pub fn feed(&mut self, data: &[u8]) {
        self.feed_bytes(Bytes::copy_from_slice(data));
    }

    /// The next bytes of the payload, shared with the hashing threads
    /// without a copy.
    pub fn feed_bytes(&mut self, data: Bytes) {
        let mut appended = false;
        if matches!(self.manifest, Manifest::Pending) {
            self.head.extend_from_slice(&data);
            appended = true;
            self.try_parse();
            if let Manifest::Parsed(p) = &self.manifest {
                // Before this chunk's bytes: the end of the signed bytes
                // is never before the end of the manifest.
                self.hasher.send(HashMsg::SignedLen(p.signed_len().ok()));
            }
        }
        if let Some(w) = &mut self.writer
            && !appended
        {
            if let Manifest::Parsed(p) = &self.manifest
                && w.next < p.manifest.partition_operations.len()
            {
                w.push(data.clone());
            } else {
                w.buf_start += data.len() as u64;
            }
        }
        self.pos += data.len() as u64;
        self.hasher.send(HashMsg::Data(data));
        self.run_ops();
    }

    fn stop(&mut self, why: String) {
        if self.not_applied.is_none() {
            self.not_applied = Some(why);
        }
        self.writer = None;
        self.target = None;
    }

    fn try_parse(&mut self) {
        let h = &self.head;
        if h.len() < HEADER_LEN as usize {
            return;
        }
        let version = u64::from_be_bytes(h[4..12].try_into().unwrap_or_default());
        let manifest_len = u64::from_be_bytes(h[12..20].try_into().unwrap_or_default());
        if &h[..4] != MAGIC || version != FORMAT_VERSION || manifest_len > MAX_MANIFEST_LEN {
            self.manifest = Manifest::Failed;
            self.head = Vec::new();
            self.stop("bad payload header".into());
            return;
        }
        if (h.len() as u64) < HEADER_LEN + manifest_len {
            return;
        }
        let head = std::mem::take(&mut self.head);
        let parsed = match read_manifest(&mut std::io::Cursor::new(head.as_slice())) {
            Ok(p) => p,
            Err(e) => {
                self.manifest = Manifest::Failed;
                self.stop(e.to_string());
                return;
            }
        };
        let block_size = u64::from(parsed.manifest.block_size());
        let fits = |extent: &PartitionExtent| {
            parsed
                .manifest
                .new_partition_info
                .as_ref()
                .is_none_or(|i| i.size() <= extent.len)
        };
        match self.target.take() {
            Some((target, extent)) if block_size > 0 && fits(&extent) => {
                let ops = &parsed.manifest.partition_operations;
                let read_back = parsed
                    .manifest
                    .new_partition_info
                    .as_ref()
                    .and_then(|info| {
                        let ends = partition_order(ops, block_size)?;
                        let file = target.try_clone().ok()?;
                        Some((ReadBack::spawn(file, extent, info.size())?, ends))
                    });
                let mut writer = Writer {
                    target,
                    extent,
                    block_size,
                    next: 0,
                    op_done: 0,
                    pending: VecDeque::new(),
                    pending_len: 0,
                    buf_start: parsed.data_start,
                    op_hasher: OpHasher::spawn(),
                    read_back,
                    dirty: None,
                };
                writer.push(Bytes::copy_from_slice(&head[parsed.data_start as usize..]));
                self.writer = Some(writer);
            }
            Some(_) => self.stop("block size 0 or image larger than the partition".into()),
            None => {}
        }
        self.manifest = Manifest::Parsed(parsed);
    }

    fn run_ops(&mut self) {
        let (Some(w), Manifest::Parsed(parsed)) = (&mut self.writer, &self.manifest) else {
            return;
        };
        let ops = &parsed.manifest.partition_operations;
        let mut failure = None;
        while let Some(op) = ops.get(w.next) {
            let start = parsed.data_start + u64::from(op.data_offset());
            let len = u64::from(op.data_length());
            let replace = op.r#type == OpType::Replace as i32;
            if w.op_done == 0 {
                if start < w.buf_start {
                    failure = Some(format!("operation {} data out of order", w.next));
                    break;
                }
                if len > MAX_STREAMED_OP && !replace {
                    failure = Some(format!("operation {} data too large to stream", w.next));
                    break;
                }
                // Drop the bytes before this operation's data.
                w.skip((start - w.buf_start).min(w.pending_len));
                if w.buf_start < start {
                    break; // waiting for more bytes
                }
            }
            let checked = op.data_sha256_hash.is_some();
            if replace {
                // Written as it arrives, while the bytes are still in
                // the CPU's caches.
                let part = w.pending_len.min(len - w.op_done);
                if part == 0 && len > 0 {
                    break;
                }
                let pieces = w.take(part);
                if let Err(e) = super::apply::write_replace_part(
                    &w.target,
                    w.extent,
                    w.block_size,
                    w.next,
                    op,
                    w.op_done,
                    &pieces,
                ) {
                    failure = Some(e.to_string());
                    break;
                }
                w.op_done += part;
                if checked {
                    w.op_hasher.data(pieces);
                }
                if w.op_done < len {
                    break;
                }
            } else {
                if w.pending_len < len {
                    break; // waiting for more bytes
                }
                let pieces = w.take(len);
                if let Err(e) = super::apply::write_op_pieces(
                    &w.target,
                    w.extent,
                    w.block_size,
                    w.next,
                    op,
                    &pieces,
                ) {
                    failure = Some(e.to_string());
                    break;
                }
                if checked {
                    w.op_hasher.data(pieces);
                }
            }
            if let Some(expected) = &op.data_sha256_hash {
                w.op_hasher.end(w.next, expected.clone());
            }
            w.op_done = 0;
            w.wrote(op);
            if let Some((read_back, ends)) = &w.read_back
                && let Some(end) = ends.get(w.next)
            {
                read_back.advance(*end);
            }
            w.next += 1;
            self.ops_done = w.next;
        }
        if w.next == ops.len() {
            // Past the last operation: nothing more to keep.
            w.buf_start += w.pending_len;
            w.pending.clear();
            w.pending_len = 0;
        }
        if let Some(why) = failure {
            self.stop(why);
        }
    }

    /// Ends the stream: syncs the target when every operation was written.
    pub fn finish(mut self) -> StreamSummary {
        let total_ops = match &self.manifest {
            Manifest::Parsed(p) => Some(p.manifest.partition_operations.len()),
            _ => None,
        };
        let mut applied = false;
        let t = std::time::Instant::now();
        let mut writer = self.writer.take();
        if let (Some(w), Some(total)) = (&mut writer, total_ops) {
            if w.next == total {
                w.start_writeback();
                match w.target.sync_all() {
                    Ok(()) => applied = true,
                    Err(e) => self.not_applied = Some(format!("syncing the target: {e}")),
                }
            } else {
                self.not_applied = Some(format!(
                    "the payload ended after {} of {total} operations",
                    w.next
                ));
            }
        } else if self.not_applied.is_none() {
            self.not_applied = Some("the payload manifest never arrived".into());
        }
        let sync_time = t.elapsed();
        let (sha256, signed_sha256) = self.hasher.finish();
        let mut read_back = None;
        if let Some(w) = writer {
            if let Some(index) = w.op_hasher.finish() {
                applied = false;
                self.not_applied = Some(format!("operation {index}: data hash mismatch"));
            }
            if applied && let Some((r, _)) = w.read_back {
                r.end();
                read_back = Some(r);
            }
        }
        let hash_wait_time = t.elapsed() - sync_time;
        StreamSummary {
            len: self.pos,
            sha256,
            signed_sha256,
            applied,
            not_applied: if applied { None } else { self.not_applied },
            read_back,
            sync_time,
            hash_wait_time,
        }
    }
}

/// The end (partition offset) of each operation's writes, when every extent
/// starts at or after the end of all the writes before it, so that a region
/// below an operation's end is never written again.
fn partition_order(ops: &[InstallOperation], block_size: u64) -> Option<Vec<u64>> {
    let mut end = 0u64;
    let mut ends = Vec::with_capacity(ops.len());
    for op in ops {
        for e in &op.dst_extents {
            let start = e.start_block().checked_mul(block_size)?;
            if start < end {
                return None;
            }
            end = start.checked_add(e.num_blocks().checked_mul(block_size)?)?;
        }
        ends.push(end);
    }
    Some(ends)
}

/// Starts writeback of `len` bytes of `file` at `offset` without waiting
/// for it, so that the disk works while the stream goes on. A hint: errors
/// are left to the final fsync, which reports any failed writeback.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range reads only its integer arguments; the file
    // descriptor is open for the duration of the call (borrowed from
    // `file`).
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

/// SHA-256 of the whole payload and of its signed bytes.
type Digests = ([u8; 32], Option<[u8; 32]>);

enum HashMsg {
    /// Where the signed bytes end (`None`: unknown, no signature digest).
    SignedLen(Option<u64>),
    Data(Bytes),
}

/// SHA-256 on its own thread, so hashing overlaps the writes: one hash of
/// the whole payload, its state at the end of the signed bytes cloned for
/// the signature digest.
struct Hasher {
    tx: Option<std::sync::mpsc::SyncSender<HashMsg>>,
    thread: Option<std::thread::JoinHandle<Digests>>,
}

/// Chunks queued for the hashing thread.
const HASH_QUEUE: usize = 64;

impl Hasher {
    fn spawn() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<HashMsg>(HASH_QUEUE);
        let thread = std::thread::Builder::new()
            .name("payload-sha256".into())
            .spawn(move || {
                let mut whole = Sha256::new();
                let mut pos = 0u64;
                let mut signed_len = None;
                let mut signed = None;
                for msg in rx {
                    let data = match msg {
                        HashMsg::SignedLen(n) => {
                            signed_len = n;
                            continue;
                        }
                        HashMsg::Data(d) => d,
                    };
                    match signed_len {
                        Some(end) if signed.is_none() && end >= pos => {
                            let cut = end - pos;
                            if cut <= data.len() as u64 {
                                let (a, b) = data.split_at(cut as usize);
                                whole.update(a);
                                signed = Some(whole.clone().finalize().into());
                                whole.update(b);
                            } else {
                                whole.update(&data);
                            }
                        }
                        _ => whole.update(&data),
                    }
                    pos += data.len() as u64;
                }
                (whole.finalize().into(), signed)
            });
        match thread {
            Ok(t) => Hasher {
                tx: Some(tx),
                thread: Some(t),
            },
            // No thread: the digest stays unknown and the sha256 check
            // fails (error 10).
            Err(_) => Hasher {
                tx: None,
                thread: None,
            },
        }
    }

    fn send(&mut self, msg: HashMsg) {
        if let Some(tx) = &self.tx
            && tx.send(msg).is_err()
        {
            self.tx = None;
        }
    }

    fn finish(mut self) -> Digests {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(digests)) => digests,
            // Unreachable in practice; a digest nobody can match fails the
            // sha256 check (error 10) instead of passing it.
            _ => ([0u8; 32], None),
        }
    }
}

enum OpHashMsg {
    /// The next bytes of the current operation's data.
    Data(Bytes),
    /// The current operation's data is complete: (index, expected SHA-256).
    End(usize, Vec<u8>),
}

/// The operations' data hashes, checked on their own thread (or inline
/// when no thread could be started); remembers the first mismatch.
struct OpHasher {
    tx: Option<std::sync::mpsc::SyncSender<OpHashMsg>>,
    thread: Option<std::thread::JoinHandle<Option<usize>>>,
    /// Inline state: the current operation's hash and the first mismatch.
    inline: Sha256,
    mismatch: Option<usize>,
}

/// Chunks queued for the operation hash thread.
const OP_HASH_QUEUE: usize = 64;

/// Applies one message to a running operation hash; `Some(index)` on a
/// mismatch.
fn op_hash_step(h: &mut Sha256, msg: OpHashMsg) -> Option<usize> {
    match msg {
        OpHashMsg::Data(d) => {
            h.update(&d);
            None
        }
        OpHashMsg::End(index, expected) => {
            let got = std::mem::take(h).finalize();
            (got.as_slice() != expected.as_slice()).then_some(index)
        }
    }
}

impl OpHasher {
    fn spawn() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<OpHashMsg>(OP_HASH_QUEUE);
        let thread = std::thread::Builder::new()
            .name("op-sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                let mut mismatch = None;
                for msg in rx {
                    if let Some(i) = op_hash_step(&mut h, msg) {
                        mismatch = mismatch.or(Some(i));
                    }
                }
                mismatch
            });
        let (tx, thread) = match thread {
            Ok(t) => (Some(tx), Some(t)),
            Err(_) => (None, None),
        };
        OpHasher {
            tx,
            thread,
            inline: Sha256::new(),
            mismatch: None,
        }
    }

    fn send(&mut self, msg: OpHashMsg) {
        let msg = match &self.tx {
            Some(tx) => match tx.send(msg) {
                Ok(()) => return,
                // The thread is gone; `finish` fails the check.
                Err(e) => {
                    self.tx = None;
                    self.mismatch = self.mismatch.or(Some(0));
                    e.0
                }
            },
            None => msg,
        };
        if self.thread.is_none()
            && let Some(i) = op_hash_step(&mut self.inline, msg)
        {
            self.mismatch = self.mismatch.or(Some(i));
        }
    }

    fn data(&mut self, pieces: Vec<Bytes>) {
        for p in pieces {
            self.send(OpHashMsg::Data(p));
        }
    }

    fn end(&mut self, index: usize, expected: Vec<u8>) {
        self.send(OpHashMsg::End(index, expected));
    }

    /// The first operation whose data hash differs.
    fn finish(mut self) -> Option<usize> {
        self.tx = None;
        let threaded = match self.thread.take().map(|t| t.join()) {
            Some(Ok(m)) => m,
            // The thread died: its operations are unchecked, so fail them.
            Some(Err(_)) => Some(0),
            None => None,
        };
        match (self.mismatch, threaded) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Bytes read back and their SHA-256.
type ReadBackDigest = (u64, [u8; 32]);

enum ReadBackMsg {
    /// The partition's bytes below this offset are final.
    Final(u64),
    /// Every byte is final (the target is synced): read to the end.
    End,
}

/// The written partition read back and hashed on its own thread, following
/// the writes (see the module documentation).
pub struct ReadBack {
    tx: Option<std::sync::mpsc::Sender<ReadBackMsg>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<ReadBackDigest>>>,
    /// Set when dropped unfinished: the thread stops reading.
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for ReadBack {
    fn drop(&mut self) {
        self.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for ReadBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadBack")
    }
}

impl ReadBack {
    /// Hashes the first `size` bytes of `extent` in `file` as they become
    /// final; `None` when no thread could be started.
    fn spawn(file: File, extent: PartitionExtent, size: u64) -> Option<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<ReadBackMsg>();
        let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cancelled = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("read-back".into())
            .spawn(move || {
                let abandoned = || std::io::Error::other("read-back abandoned");
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; READ_BACK_BUF];
                let (mut done, mut limit, mut end, mut eof) = (0u64, 0u64, false, false);
                loop {
                    // Wait for more final bytes unless some are unread.
                    let mut msg = if (done >= limit || eof) && !end {
                        Some(rx.recv().map_err(|_| abandoned())?)
                    } else {
                        None
                    };
                    loop {
                        match msg {
                            Some(ReadBackMsg::Final(n)) => limit = limit.max(n.min(size)),
                            Some(ReadBackMsg::End) => {
                                end = true;
                                limit = size;
                            }
                            None => {}
                        }
                        msg = match rx.try_recv() {
                            Ok(m) => Some(m),
                            Err(std::sync::mpsc::TryRecvError::Empty) => break,
                            Err(std::sync::mpsc::TryRecvError::Disconnected) if end => break,
                            Err(_) => return Err(abandoned()),
                        };
                    }
                    if end && (done >= size || eof) {
                        return Ok((done, hasher.finalize().into()));
                    }
                    if cancelled.load(std::sync::atomic::Ordering::Relaxed) {
                        return Err(abandoned());
                    }
                    if eof || done >= limit {
                        continue;
                    }
                    let want = (limit - done).min(READ_BACK_BUF as u64) as usize;
                    let n = loop {
                        match file.read_at(&mut buf[..want], extent.offset + done) {
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            other => break other?,
                        }
                    };
                    if n == 0 {
                        eof = true; // the check reports the short read
                        continue;
                    }
                    hasher.update(&buf[..n]);
                    done += n as u64;
                }
            });
        Some(ReadBack {
            tx: Some(tx),
            thread: Some(thread.ok()?),
            cancel,
        })
    }

    fn advance(&self, upto: u64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(ReadBackMsg::Final(upto));
        }
    }

    fn end(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(ReadBackMsg::End);
        }
    }

    /// Waits for the read-back: (bytes read, their SHA-256), to compare
    /// with the manifest ([`super::apply::check_written`]).
    pub fn finish(mut self) -> std::io::Result<ReadBackDigest> {
        self.tx = None;
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            _ => Err(std::io::Error::other("read-back thread failed")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::create::create_full_payload;
    use crate::payload::encode_header;
    use crate::payload::sign::load_private_key;
    use proto::chromeos_update_engine::install_operation::Type as OpType;
    use proto::chromeos_update_engine::{
        DeltaArchiveManifest, Extent, InstallOperation, PartitionInfo,
    };
    use proto::prost::Message;
    use std::path::Path;

    const PART_LEN: u64 = 8 << 20;
    const PART_OFF: u64 = 4096;

    fn image(len: usize) -> Vec<u8> {
        let mut x: u32 = 0x1234_5678;
        (0..len)
            .map(|i| {
                if (i >> 20) % 2 == 1 {
                    return 0; // compressible: REPLACE_BZ
                }
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// A file standing in for the disk: the "partition" at PART_OFF.
    fn target(dir: &Path) -> (File, PartitionExtent) {
        let path = dir.join("disk");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        f.set_len(PART_OFF + PART_LEN + 4096).unwrap();
        let extent = PartitionExtent {
            offset: PART_OFF,
            len: PART_LEN,
        };
        (f, extent)
    }

    fn partition(f: &File, len: usize) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, PART_OFF).unwrap();
        buf
    }

    fn feed_in(stream: &mut StreamApplier, bytes: &[u8], chunk: usize) {
        for c in bytes.chunks(chunk) {
            stream.feed(c);
        }
    }

    #[test]
    fn streams_a_signed_payload_in_any_chunking() {
        let dir = tempfile::tempdir().unwrap();
        let img = image(3 * (1 << 20) + 12345);
        std::fs::write(dir.path().join("img"), &img).unwrap();
        let key_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/test-key.pem");
        let key = load_private_key(&key_path).unwrap();
        let out = dir.path().join("payload");
        create_full_payload(&dir.path().join("img"), &key, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let parsed = read_manifest(&mut std::io::Cursor::new(&bytes)).unwrap();
        let signed_len = parsed.signed_len().unwrap() as usize;
        let types: Vec<i32> = parsed
            .manifest
            .partition_operations
            .iter()
            .map(|o| o.r#type)
            .collect();
        assert!(types.contains(&(OpType::Replace as i32)));
        assert!(types.contains(&(OpType::ReplaceBz as i32)));
        for chunk in [1usize, 7, 4096, 65_537, 1 << 20, bytes.len()] {
            let (f, extent) = target(dir.path());
            let check = f.try_clone().unwrap();
            let mut stream = StreamApplier::new(Some((f, extent)));
            // Byte-at-a-time is slow: only over the header and manifest.
            if chunk == 1 {
                let head = parsed.data_start as usize + 10;
                feed_in(&mut stream, &bytes[..head], 1);
                feed_in(&mut stream, &bytes[head..], 8192);
            } else {
                feed_in(&mut stream, &bytes, chunk);
            }
            assert_eq!(stream.ops_progress(), Some((types.len(), types.len())));
            let s = stream.finish();
            assert!(s.applied, "chunk {chunk}: {:?}", s.not_applied);
            assert_eq!(s.len, bytes.len() as u64);
            assert_eq!(s.sha256, <[u8; 32]>::from(Sha256::digest(&bytes)));
            assert_eq!(
                s.signed_sha256,
                Some(Sha256::digest(&bytes[..signed_len]).into())
            );
            assert!(partition(&check, img.len()) == img, "chunk {chunk}");
            // The read-back followed the writes and hashed the partition.
            let (n, digest) = s.read_back.expect("in partition order").finish().unwrap();
            assert_eq!(n, img.len() as u64);
            assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&img)));
            crate::payload::apply::check_written(&parsed, n, &digest).unwrap();
        }
    }

    #[test]
    fn the_read_back_reads_the_partition_not_the_stream() {
        // Operations write blocks 0 and 2; block 1 is never written by the
        // payload and holds what was on the partition before. The read-back
        // hash covers it, so it can only match if it read the partition.
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let blobs: Vec<u8> = [1u8, 3].iter().flat_map(|b| vec![*b; 4096]).collect();
        let ops = vec![replace(0, 0), replace(4096, 2)];
        let mut on_disk = blobs[..4096].to_vec();
        on_disk.extend_from_slice(&[0xab; 4096]);
        on_disk.extend_from_slice(&blobs[4096..]);
        for (old_block_1, good) in [(0xabu8, true), (0x00, false)] {
            let info = PartitionInfo {
                size: Some(on_disk.len() as u64),
                hash: Some(Sha256::digest(&on_disk).to_vec()),
            };
            let bytes = raw_payload_with(ops.clone(), &blobs, Some(info));
            let parsed = read_manifest(&mut std::io::Cursor::new(&bytes)).unwrap();
            let (f, extent) = target(dir.path());
            f.write_all_at(&[old_block_1; 4096], PART_OFF + 4096)
                .unwrap();
            let mut stream = StreamApplier::new(Some((f, extent)));
            feed_in(&mut stream, &bytes, 1000);
            let s = stream.finish();
            assert!(s.applied, "{:?}", s.not_applied);
            let (n, digest) = s.read_back.expect("in partition order").finish().unwrap();
            assert_eq!(n, on_disk.len() as u64);
            let check = crate::payload::apply::check_written(&parsed, n, &digest);
            assert_eq!(check.is_ok(), good, "{check:?}");
        }
    }

    #[test]
    fn an_operation_data_hash_mismatch_stops_the_streamed_apply() {
        let dir = tempfile::tempdir().unwrap();
        let blobs: Vec<u8> = [1u8, 2, 3].iter().flat_map(|b| vec![*b; 4096]).collect();
        let mut ops: Vec<InstallOperation> =
            (0..3u32).map(|i| replace(i * 4096, u64::from(i))).collect();
        for (i, op) in ops.iter_mut().enumerate() {
            op.data_sha256_hash = Some(Sha256::digest(&blobs[i * 4096..(i + 1) * 4096]).to_vec());
        }
        // Operation 1 claims the hash of operation 2's data.
        ops[1].data_sha256_hash = ops[2].data_sha256_hash.clone();
        let bytes = raw_payload(ops, &blobs);
        let (f, extent) = target(dir.path());
        let mut stream = StreamApplier::new(Some((f, extent)));
        feed_in(&mut stream, &bytes, 3000);
        let s = stream.finish();
        assert!(!s.applied);
        assert!(s.read_back.is_none());
        assert_eq!(
            s.not_applied.as_deref(),
            Some("operation 1: data hash mismatch")
        );
        assert_eq!(s.sha256, <[u8; 32]>::from(Sha256::digest(&bytes)));
    }

    #[test]
    fn replace_data_split_across_extents_and_chunks() {
        // Two operations of three one-block extents each, scattered (not in
        // partition order: no early read-back), fed in chunks that cut
        // through extent and operation boundaries.
        let dir = tempfile::tempdir().unwrap();
        let blobs: Vec<u8> = (0..6 * 4096u32).map(|i| (i / 97) as u8).collect();
        let extents = |blocks: [u64; 3]| {
            blocks
                .iter()
                .map(|b| Extent {
                    start_block: Some(*b),
                    num_blocks: Some(1),
                })
                .collect()
        };
        let op = |i: u32, blocks: [u64; 3]| InstallOperation {
            r#type: OpType::Replace as i32,
            data_offset: Some(i * 3 * 4096),
            data_length: Some(3 * 4096),
            dst_extents: extents(blocks),
            data_sha256_hash: Some(
                Sha256::digest(&blobs[i as usize * 3 * 4096..(i as usize + 1) * 3 * 4096]).to_vec(),
            ),
            ..Default::default()
        };
        let layout = [[5u64, 1, 3], [0, 4, 2]];
        let bytes = raw_payload(vec![op(0, layout[0]), op(1, layout[1])], &blobs);
        for chunk in [1000usize, 4095, 4097, 12_289] {
            let (f, extent) = target(dir.path());
            let check = f.try_clone().unwrap();
            let mut stream = StreamApplier::new(Some((f, extent)));
            feed_in(&mut stream, &bytes, chunk);
            let s = stream.finish();
            assert!(s.applied, "chunk {chunk}: {:?}", s.not_applied);
            assert!(s.read_back.is_none());
            let part = partition(&check, 6 * 4096);
            for (i, blocks) in layout.iter().enumerate() {
                for (j, b) in blocks.iter().enumerate() {
                    let src = (i * 3 + j) * 4096;
                    let dst = *b as usize * 4096;
                    assert!(
                        part[dst..dst + 4096] == blobs[src..src + 4096],
                        "chunk {chunk}: operation {i} extent {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn hostile_extents_stop_the_stream_before_any_write() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 8192];
        for (start, blocks) in [
            (0, u64::MAX / 2), // size overflow
            (u64::MAX / 2, 2), // offset overflow
            (1 << 20, 2),      // past the partition
            (0, 3),            // more extent than data
        ] {
            let ops = vec![InstallOperation {
                r#type: OpType::Replace as i32,
                data_offset: Some(0),
                data_length: Some(data.len() as u32),
                dst_extents: vec![
                    Extent {
                        start_block: Some(0),
                        num_blocks: Some(0),
                    },
                    Extent {
                        start_block: Some(start),
                        num_blocks: Some(blocks),
                    },
                ],
                ..Default::default()
            }];
            let bytes = raw_payload(ops, &data);
            let (f, extent) = target(dir.path());
            let check = f.try_clone().unwrap();
            let mut stream = StreamApplier::new(Some((f, extent)));
            feed_in(&mut stream, &bytes, 1000);
            let s = stream.finish();
            assert!(!s.applied, "({start}, {blocks})");
            assert!(
                partition(&check, 3 * 4096).iter().all(|b| *b == 0),
                "({start}, {blocks}): written"
            );
        }
    }

    #[test]
    fn partition_order_needs_every_write_behind_the_previous_ones() {
        let op = |blocks: &[(u64, u64)]| InstallOperation {
            dst_extents: blocks
                .iter()
                .map(|(s, n)| Extent {
                    start_block: Some(*s),
                    num_blocks: Some(*n),
                })
                .collect(),
            ..Default::default()
        };
        assert_eq!(
            partition_order(&[op(&[(0, 2)]), op(&[(2, 1), (5, 1)]), op(&[(6, 2)])], 4096),
            Some(vec![2 * 4096, 6 * 4096, 8 * 4096])
        );
        // A gap is fine (never written by a later operation either).
        assert_eq!(
            partition_order(&[op(&[(3, 1)]), op(&[(9, 1)])], 10),
            Some(vec![40, 100])
        );
        // Going back, overlapping, or overflowing: no early read-back.
        assert_eq!(partition_order(&[op(&[(4, 1)]), op(&[(0, 1)])], 4096), None);
        assert_eq!(partition_order(&[op(&[(0, 2)]), op(&[(1, 1)])], 4096), None);
        assert_eq!(partition_order(&[op(&[(5, 1), (4, 1)])], 4096), None);
        assert_eq!(partition_order(&[op(&[(u64::MAX, 1)])], 4096), None);
    }

    fn raw_payload(ops: Vec<InstallOperation>, blobs: &[u8]) -> Vec<u8> {
        raw_payload_with(ops, blobs, None)
    }

    fn raw_payload_with(
        ops: Vec<InstallOperation>,
        blobs: &[u8],
        new_partition_info: Option<PartitionInfo>,
    ) -> Vec<u8> {
        let manifest = DeltaArchiveManifest {
            partition_operations: ops,
            block_size: Some(4096),
            signatures_offset: Some(blobs.len() as u64),
            signatures_size: Some(0),
            new_partition_info,
            ..Default::default()
        };
        let body = manifest.encode_to_vec();
        let mut bytes = encode_header(body.len() as u64).to_vec();
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(blobs);
        bytes
    }

    fn replace(offset: u32, block: u64) -> InstallOperation {
        InstallOperation {
            r#type: OpType::Replace as i32,
            data_offset: Some(offset),
            data_length: Some(4096),
            dst_extents: vec![Extent {
                start_block: Some(block),
                num_blocks: Some(1),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_failing_operation_stops_the_writes_but_not_the_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs: Vec<u8> = [1u8, 2, 3].iter().flat_map(|b| vec![*b; 4096]).collect();
        // The second operation's extent is past the partition.
        let ops = vec![
            replace(0, 0),
            replace(4096, PART_LEN / 4096),
            replace(8192, 2),
        ];
        let bytes = raw_payload(ops, &blobs);
        let (f, extent) = target(dir.path());
        let check = f.try_clone().unwrap();
        let mut stream = StreamApplier::new(Some((f, extent)));
        feed_in(&mut stream, &bytes, 1000);
        assert_eq!(stream.ops_progress(), Some((1, 3)));
        let s = stream.finish();
        assert!(!s.applied);
        assert!(
            s.not_applied
                .as_deref()
                .unwrap_or("")
                .contains("past the partition"),
            "{:?}",
            s.not_applied
        );
        assert_eq!(s.sha256, <[u8; 32]>::from(Sha256::digest(&bytes)));
        let part = partition(&check, 3 * 4096);
        assert!(part[..4096].iter().all(|b| *b == 1));
        assert!(
            part[4096..].iter().all(|b| *b == 0),
            "nothing after the failure"
        );
    }

    #[test]
    fn out_of_order_data_and_bad_headers_fall_back() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = vec![5u8; 8192];
        let bytes = raw_payload(vec![replace(4096, 1), replace(0, 0)], &blobs);
        let (f, extent) = target(dir.path());
        let mut stream = StreamApplier::new(Some((f, extent)));
        feed_in(&mut stream, &bytes, 4096);
        let s = stream.finish();
        assert!(!s.applied);
        assert!(s.not_applied.unwrap_or_default().contains("out of order"));

        let mut bad = bytes.clone();
        bad[0] = b'X';
        let (f, extent) = target(dir.path());
        let mut stream = StreamApplier::new(Some((f, extent)));
        feed_in(&mut stream, &bad, 4096);
        let s = stream.finish();
        assert!(!s.applied);
        assert_eq!(s.signed_sha256, None);
        assert_eq!(s.sha256, <[u8; 32]>::from(Sha256::digest(&bad)));
    }

    #[test]
    fn a_truncated_stream_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = vec![9u8; 3 * 4096];
        let bytes = raw_payload(
            vec![replace(0, 0), replace(4096, 1), replace(8192, 2)],
            &blobs,
        );
        let (f, extent) = target(dir.path());
        let mut stream = StreamApplier::new(Some((f, extent)));
        let cut = bytes.len() - 4096 - 100;
        feed_in(&mut stream, &bytes[..cut], 3000);
        assert_eq!(stream.position(), cut as u64);
        assert_eq!(stream.ops_progress(), Some((1, 3)));
        let s = stream.finish();
        assert!(!s.applied);
        assert!(s.not_applied.unwrap_or_default().contains("after 1 of 3"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn any_chunking_writes_and_hashes_the_same(
            cuts in proptest::collection::vec(1usize..9000, 1..40),
            fill in proptest::collection::vec(proptest::prelude::any::<u8>(), 4),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let blobs: Vec<u8> = fill.iter().flat_map(|b| vec![*b; 4096]).collect();
            let ops = (0..4u32).map(|i| replace(i * 4096, u64::from(3 - i))).collect();
            let bytes = raw_payload(ops, &blobs);
            let (f, extent) = target(dir.path());
            let check = f.try_clone().unwrap();
            let mut stream = StreamApplier::new(Some((f, extent)));
            let mut at = 0;
            for c in cuts.iter().cycle() {
                if at == bytes.len() {
                    break;
                }
                let end = (at + c).min(bytes.len());
                stream.feed(&bytes[at..end]);
                at = end;
            }
            let s = stream.finish();
            proptest::prop_assert!(s.applied, "{:?}", s.not_applied);
            proptest::prop_assert_eq!(s.sha256, <[u8; 32]>::from(Sha256::digest(&bytes)));
            proptest::prop_assert_eq!(s.signed_sha256, Some(Sha256::digest(&bytes).into()));
            let part = partition(&check, 4 * 4096);
            for i in 0..4 {
                let block = &part[(3 - i) * 4096..(4 - i) * 4096];
                proptest::prop_assert!(block.iter().all(|b| *b == fill[i]));
            }
        }
    }
}
