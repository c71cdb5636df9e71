//! Single-pass processing of a payload as its bytes arrive: one SHA-256
//! over the whole payload (its state at the end of the signed bytes gives the
//! signature digest), and REPLACE/REPLACE_BZ operations written to the
//! target partition as soon as their data blobs are complete.
//!
//! Nothing here decides whether the payload is good: the caller checks the
//! digests and the signature once every byte is in, and only then marks the
//! partition bootable. Writing the passive partition early is safe because it
//! is not bootable until the GPT flip. Anything the streaming writer does not
//! handle (a manifest that does not parse, operations out of data order, an
//! operation failing) only stops the streaming writes; the caller then
//! applies the verified file with [`super::apply::apply_payload`], which
//! reports the error with its usual code.

use std::fs::File;

use sha2::{Digest, Sha256};

use super::{FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_MANIFEST_LEN, ParsedPayload, read_manifest};
use crate::gpt::PartitionExtent;

/// Operations with larger data blobs are left to the file-based apply.
const MAX_STREAMED_OP: u64 = 64 << 20;

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
    /// Every operation was written and the target synced.
    pub applied: bool,
    /// Why the operations were not all written (for the log).
    pub not_applied: Option<String>,
    /// Time spent in the final sync of the target.
    pub sync_time: std::time::Duration,
    /// Time then spent waiting for the hashing thread to catch up.
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
    /// Payload bytes from `buf_start` to the current stream position.
    buf: Vec<u8>,
    buf_start: u64,
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
        self.feed_bytes(bytes::Bytes::copy_from_slice(data));
    }

    /// The next bytes of the payload, shared with the hashing thread
    /// without a copy.
    pub fn feed_bytes(&mut self, data: bytes::Bytes) {
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
                w.buf.extend_from_slice(&data);
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
                self.writer = Some(Writer {
                    target,
                    extent,
                    block_size,
                    next: 0,
                    buf: head[parsed.data_start as usize..].to_vec(),
                    buf_start: parsed.data_start,
                });
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
            if start < w.buf_start {
                failure = Some(format!("operation {} data out of order", w.next));
                break;
            }
            if len > MAX_STREAMED_OP {
                failure = Some(format!("operation {} data too large to stream", w.next));
                break;
            }
            // Drop the bytes before this operation's data.
            let skip = (start - w.buf_start).min(w.buf.len() as u64);
            w.buf.drain(..skip as usize);
            w.buf_start += skip;
            if w.buf_start < start || (w.buf.len() as u64) < len {
                break; // waiting for more bytes
            }
            let data = &w.buf[..len as usize];
            if let Err(e) =
                super::apply::write_op(&w.target, w.extent, w.block_size, w.next, op, data)
            {
                failure = Some(e.to_string());
                break;
            }
            w.buf.drain(..len as usize);
            w.buf_start += len;
            w.next += 1;
            self.ops_done = w.next;
        }
        if w.next == ops.len() {
            // Past the last operation: nothing more to keep.
            w.buf_start += w.buf.len() as u64;
            w.buf = Vec::new();
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
        if let (Some(w), Some(total)) = (&self.writer, total_ops) {
            if w.next == total {
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
        let hash_wait_time = t.elapsed() - sync_time;
        StreamSummary {
            len: self.pos,
            sha256,
            signed_sha256,
            applied,
            not_applied: if applied { None } else { self.not_applied },
            sync_time,
            hash_wait_time,
        }
    }
}

/// SHA-256 of the whole payload and of its signed bytes.
type Digests = ([u8; 32], Option<[u8; 32]>);

enum HashMsg {
    /// Where the signed bytes end (`None`: unknown, no signature digest).
    SignedLen(Option<u64>),
    Data(bytes::Bytes),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::create::create_full_payload;
    use crate::payload::encode_header;
    use crate::payload::sign::load_private_key;
    use proto::chromeos_update_engine::install_operation::Type as OpType;
    use proto::chromeos_update_engine::{DeltaArchiveManifest, Extent, InstallOperation};
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
        }
    }

    fn raw_payload(ops: Vec<InstallOperation>, blobs: &[u8]) -> Vec<u8> {
        let manifest = DeltaArchiveManifest {
            partition_operations: ops,
            block_size: Some(4096),
            signatures_offset: Some(blobs.len() as u64),
            signatures_size: Some(0),
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
