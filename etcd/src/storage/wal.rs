//! The raft log's write-ahead file: segments of checksummed records, appended in place and made durable by
//! one `fdatasync` per flush (group commit).
//!
//! Layout: `<dir>/<first index as 16 hex digits>.wal`, each a run of records
//! `[payload length u32 LE][crc32 of index and payload u32 LE][index u64 LE][payload]` with consecutive
//! indexes. A segment is closed once it passes [`SEGMENT_BYTES`]; the next one is named after its first
//! index. Opening reads every segment: a torn or partly written record at the end of the last segment (a
//! crash during an append that was never acknowledged) is cut off; damage anywhere else is corruption.
//!
//! Segments are preallocated with zeros ahead of the last record, a chunk at a time by a background thread, so
//! that an append overwrites blocks that already exist and its `fdatasync` writes only data. An append that
//! grows the file also has to write the inode (ext4 records the new size), a second synchronous I/O: measured
//! on this project's VM, 258 µs per synced 4 KiB append against 139 µs for an overwrite. A run of zeros after
//! the last record is therefore the clean end of a segment, not damage.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// A segment is closed once it is this large (the last batch may overshoot it).
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Zeros written when a segment is created (synced by the first flush, with the first records).
const PREALLOC_FIRST: u64 = 1024 * 1024;
/// Zeros added (and synced) by the background thread each time ...
const PREALLOC_CHUNK: u64 = 4 * 1024 * 1024;
/// ... once fewer than this many preallocated bytes are left after the last record.
const PREALLOC_LOW: u64 = 2 * 1024 * 1024;
const HEADER: usize = 16;
const SUFFIX: &str = ".wal";

/// What can go wrong with the write-ahead log.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A read, write or sync failed.
    #[error("wal {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The log on disk is damaged somewhere a crash cannot explain.
    #[error("wal {path} is corrupt: {why}")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// An append that does not continue the log (a caller bug; nothing was written).
    #[error("wal: appending index {got} after index {last}")]
    Gap {
        /// The last index in the log.
        last: u64,
        /// The first index appended.
        got: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes of whole records.
    len: u64,
    /// Bytes of the file that exist on disk (records, then preallocated zeros): writes below this overwrite.
    allocated: u64,
}

/// Where one entry's payload lives.
#[derive(Clone, Copy)]
struct Loc {
    /// The `first` of its segment.
    segment: u64,
    offset: u64,
    len: u32,
}

#[derive(Default)]
struct Inner {
    segments: Vec<Segment>,
    /// The entry `first + i` is at `locs[i]`.
    locs: VecDeque<Loc>,
    first: u64,
    /// Files written (or cut) since the last sync, and whether they changed size downwards.
    unsynced: Vec<(Arc<File>, PathBuf)>,
    shrunk: bool,
    /// Segments were created or removed since the last sync.
    dir_dirty: bool,
    /// The background thread is writing zeros to this file from this offset on.
    extending: Option<(Arc<File>, u64)>,
}

impl Inner {
    fn last_index(&self) -> Option<u64> {
        (!self.locs.is_empty()).then(|| self.first + self.locs.len() as u64 - 1)
    }

    fn segment(&self, first: u64) -> Option<&Segment> {
        self.segments
            .binary_search_by_key(&first, |s| s.first)
            .ok()
            .map(|i| &self.segments[i])
    }

    fn mark(&mut self, i: usize) {
        let s = &self.segments[i];
        if !self.unsynced.iter().any(|(f, _)| Arc::ptr_eq(f, &s.file)) {
            self.unsynced.push((s.file.clone(), s.path.clone()));
        }
    }
}

/// The log's state, shared with the preallocating thread.
#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
    /// Signalled when a preallocation ends.
    extended: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated in a way later calls rely on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (releasing the lock) while `busy` says the preallocating thread is in the way.
    fn wait_while<'a>(
        &self,
        mut inner: MutexGuard<'a, Inner>,
        busy: impl Fn(&Inner) -> bool,
    ) -> MutexGuard<'a, Inner> {
        while busy(&inner) {
            inner = self.extended.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
        inner
    }
}

/// Writes and syncs `len` zeros at `from` in `file`, then records them as allocated (unless the segment was
/// cut or removed meanwhile). Runs on its own thread; a failure (a full disk, say) only costs speed: appends
/// then grow the file themselves.
fn preallocate(shared: Arc<Shared>, file: Arc<File>, path: PathBuf, from: u64, len: u64) {
    let zeros = vec![0u8; len as usize];
    let res = file
        .write_all_at(&zeros, from)
        .and_then(|()| file.sync_data());
    let mut inner = shared.lock();
    inner.extending = None;
    match res {
        Ok(()) => {
            if let Some(seg) = inner
                .segments
                .iter_mut()
                .find(|s| Arc::ptr_eq(&s.file, &file))
                && seg.allocated == from
            {
                seg.allocated = from + len;
            }
        }
        Err(e) => tracing::warn!("wal {}: preallocating: {e}", path.display()),
    }
    drop(inner);
    shared.extended.notify_all();
}

/// The write-ahead log of raft entries (index → encoded entry).
pub struct Wal {
    dir: PathBuf,
    shared: Arc<Shared>,
}

impl Drop for Wal {
    fn drop(&mut self) {
        // A log opened again on the same files must not race a preallocation of this one.
        let inner = self.shared.lock();
        drop(self.shared.wait_while(inner, |i| i.extending.is_some()));
    }
}

/// The syncs one flush owes, taken from the log so that appends can go on meanwhile.
pub struct PendingSync {
    dir: Option<PathBuf>,
    files: Vec<(Arc<File>, PathBuf)>,
    full: bool,
}

impl PendingSync {
    /// Whether there is nothing to sync.
    pub fn is_empty(&self) -> bool {
        self.dir.is_none() && self.files.is_empty()
    }

    /// Syncs (blocking): the files' data, then the directory when segments came or went.
    pub fn run(self) -> Result<(), WalError> {
        self.run_ref()
    }

    /// [`PendingSync::run`], keeping the syncs for a retry if it fails.
    pub fn run_ref(&self) -> Result<(), WalError> {
        for (f, path) in &self.files {
            if self.full {
                f.sync_all().map_err(io(path))?;
            } else {
                f.sync_data().map_err(io(path))?;
            }
        }
        if let Some(dir) = &self.dir {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn segment_name(first: u64) -> String {
    format!("{first:016x}{SUFFIX}")
}

fn encode(out: &mut Vec<u8>, index: u64, payload: &[u8]) -> Result<(), WalError> {
    let len = u32::try_from(payload.len()).map_err(|_| WalError::Corrupt {
        path: PathBuf::new(),
        why: format!("entry {index} is larger than 4 GiB"),
    })?;
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// The whole records at the start of `bytes`: (index, payload offset, payload length) each, and the length of
/// the valid prefix. Stops at the first incomplete or damaged record (or at the preallocated zeros).
fn scan(bytes: &[u8]) -> (Vec<(u64, u64, u32)>, u64) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(h) = bytes.get(at..at + HEADER) {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let index = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
        let start = at + HEADER;
        let Some(payload) = bytes.get(start..start + len as usize) else {
            break;
        };
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&index.to_le_bytes());
        hasher.update(payload);
        if hasher.finalize() != crc {
            break;
        }
        out.push((index, start as u64, len));
        at = start + len as usize;
    }
    (out, at as u64)
}

impl Wal {
    /// Opens the log in `dir` (which must exist), cutting off a torn last record.
    pub fn open(dir: &Path) -> Result<Wal, WalError> {
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(SUFFIX) else {
                continue;
            };
            let first = u64::from_str_radix(hex, 16).map_err(|_| WalError::Corrupt {
                path: entry.path(),
                why: "not a segment name".into(),
            })?;
            firsts.push(first);
        }
        firsts.sort_unstable();
        let mut inner = Inner::default();
        let count = firsts.len();
        for (n, first) in firsts.into_iter().enumerate() {
            let path = dir.join(segment_name(first));
            let last_segment = n + 1 == count;
            let corrupt = |why: String| WalError::Corrupt {
                path: path.clone(),
                why,
            };
            if let Some(last) = inner.last_index()
                && first != last + 1
            {
                return Err(corrupt(format!(
                    "it starts at index {first}, but the previous segment ends at {last}"
                )));
            }
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let (records, valid) = scan(&bytes);
            let size = bytes.len() as u64;
            // Only zeros after the last record: preallocated space, not damage.
            let clean = bytes[valid as usize..].iter().all(|b| *b == 0);
            if !clean && !last_segment {
                return Err(corrupt(format!("a damaged record at byte {valid}")));
            }
            if records.is_empty() && !last_segment {
                return Err(corrupt("an empty segment before the last".into()));
            }
            if inner.locs.is_empty() {
                inner.first = first;
            }
            for (i, (index, offset, len)) in records.iter().enumerate() {
                if *index != first + i as u64 {
                    return Err(corrupt(format!(
                        "record {i} holds index {index}, expected {}",
                        first + i as u64
                    )));
                }
                inner.locs.push_back(Loc {
                    segment: first,
                    offset: *offset,
                    len: *len,
                });
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            let mut allocated = size;
            if !clean {
                tracing::warn!(
                    "wal {}: cutting off {} bytes of an incomplete last write",
                    path.display(),
                    size - valid
                );
                file.set_len(valid).map_err(io(&path))?;
                file.sync_all().map_err(io(&path))?;
                allocated = valid;
            }
            inner.segments.push(Segment {
                first,
                path,
                file: Arc::new(file),
                len: valid,
                allocated,
            });
        }
        // A last segment left empty (cut to nothing) must not shadow the next append's index.
        if let Some(s) = inner.segments.last()
            && s.len == 0
        {
            std::fs::remove_file(&s.path).map_err(io(&s.path))?;
            inner.segments.pop();
            sync_dir(dir)?;
        }
        Ok(Wal {
            dir: dir.to_path_buf(),
            shared: Arc::new(Shared {
                inner: Mutex::new(inner),
                extended: Condvar::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    /// Appends entries (consecutive indexes continuing the log, or starting an empty one); durable after
    /// the next [`Wal::take_sync`]'s run.
    pub fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), WalError> {
        let Some((first_new, _)) = entries.first() else {
            return Ok(());
        };
        let mut inner = self.lock();
        if let Some(last) = inner.last_index()
            && *first_new != last + 1
        {
            return Err(WalError::Gap {
                last,
                got: *first_new,
            });
        }
        for (i, (index, _)) in entries.iter().enumerate() {
            if *index != first_new + i as u64 {
                return Err(WalError::Gap {
                    last: first_new + i as u64 - 1,
                    got: *index,
                });
            }
        }
        let rotate = inner.segments.last().is_none_or(|s| s.len >= SEGMENT_BYTES);
        if rotate {
            let path = self.dir.join(segment_name(*first_new));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(io(&path))?;
            // The first chunk of zeros reaches the disk with the first flush; a failure here only costs speed.
            let allocated = match file.write_all_at(&vec![0; PREALLOC_FIRST as usize], 0) {
                Ok(()) => PREALLOC_FIRST,
                Err(e) => {
                    tracing::warn!("wal {}: preallocating: {e}", path.display());
                    file.set_len(0).map_err(io(&path))?;
                    0
                }
            };
            inner.segments.push(Segment {
                first: *first_new,
                path,
                file: Arc::new(file),
                len: 0,
                allocated,
            });
            inner.dir_dirty = true;
        }
        let at = inner.segments.len() - 1;
        let (start, seg_first) = (inner.segments[at].len, inner.segments[at].first);
        let mut buf = Vec::with_capacity(entries.iter().map(|(_, b)| HEADER + b.len()).sum());
        let mut locs = Vec::with_capacity(entries.len());
        for (index, payload) in entries {
            let offset = start + (buf.len() + HEADER) as u64;
            encode(&mut buf, *index, payload)?;
            locs.push(Loc {
                segment: seg_first,
                offset,
                len: payload.len() as u32,
            });
        }
        let end = start + buf.len() as u64;
        // Never write where the preallocating thread is still writing zeros.
        let file = inner.segments[at].file.clone();
        let mut inner = self.shared.wait_while(inner, |i| {
            i.extending
                .as_ref()
                .is_some_and(|(f, from)| Arc::ptr_eq(f, &file) && end > *from)
        });
        let inner = &mut *inner;
        if inner.locs.is_empty() {
            inner.first = *first_new;
        }
        let seg = &mut inner.segments[at];
        if let Err(e) = seg.file.write_all_at(&buf, start) {
            // Leave no partial record behind for a later append to follow.
            let _ = if start < seg.allocated {
                seg.file.write_all_at(&vec![0; buf.len()], start)
            } else {
                seg.file.set_len(start)
            };
            return Err(io(&seg.path)(e));
        }
        seg.len = end;
        seg.allocated = seg.allocated.max(end);
        inner.locs.extend(locs);
        inner.mark(at);
        let seg = &inner.segments[at];
        if inner.extending.is_none()
            && seg.allocated < SEGMENT_BYTES
            && seg.allocated - seg.len < PREALLOC_LOW
        {
            let (file, path, from) = (seg.file.clone(), seg.path.clone(), seg.allocated);
            inner.extending = Some((file.clone(), from));
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("wal-prealloc".into())
                .spawn(move || preallocate(shared, file, path, from, PREALLOC_CHUNK));
            if let Err(e) = spawned {
                inner.extending = None;
                tracing::warn!("wal: cannot start preallocating: {e}");
            }
        }
        Ok(())
    }

    /// Payloads of the entries `start <= index < end` that are in the log, in order.
    pub fn range(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, WalError> {
        let inner = self.lock();
        let Some(last) = inner.last_index() else {
            return Ok(Vec::new());
        };
        let start = start.max(inner.first);
        let end = end.min(last + 1);
        let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
        let mut i = start;
        while i < end {
            // One read for the run of entries that share a segment.
            let head = inner.locs[(i - inner.first) as usize];
            let mut j = i + 1;
            while j < end && inner.locs[(j - inner.first) as usize].segment == head.segment {
                j += 1;
            }
            let tail = inner.locs[(j - 1 - inner.first) as usize];
            let seg = inner
                .segment(head.segment)
                .ok_or_else(|| WalError::Corrupt {
                    path: self.dir.clone(),
                    why: format!("no segment {}", head.segment),
                })?;
            let span_start = head.offset;
            let span_end = tail.offset + u64::from(tail.len);
            let mut span = vec![0; (span_end - span_start) as usize];
            seg.file
                .read_exact_at(&mut span, span_start)
                .map_err(io(&seg.path))?;
            for k in i..j {
                let l = inner.locs[(k - inner.first) as usize];
                let from = (l.offset - span_start) as usize;
                out.push(span[from..from + l.len as usize].to_vec());
            }
            i = j;
        }
        Ok(out)
    }

    /// The last entry's payload.
    pub fn last(&self) -> Result<Option<Vec<u8>>, WalError> {
        let last = self.lock().last_index();
        match last {
            Some(l) => Ok(self.range(l, l + 1)?.pop()),
            None => Ok(None),
        }
    }

    /// Removes the entries with index >= `from`.
    pub fn truncate(&self, from: u64) -> Result<(), WalError> {
        let mut inner = self.lock();
        let Some(last) = inner.last_index() else {
            return Ok(());
        };
        if from > last {
            return Ok(());
        }
        let keep = from.saturating_sub(inner.first) as usize;
        inner.locs.truncate(keep);
        // Whole segments that start at or after `from` go (all of them when nothing is kept: what precedes
        // `from` then is purged); the one holding `from` is cut.
        while inner
            .segments
            .last()
            .is_some_and(|s| s.first >= from || keep == 0)
        {
            if let Some(s) = inner.segments.pop() {
                std::fs::remove_file(&s.path).map_err(io(&s.path))?;
                inner.dir_dirty = true;
            }
        }
        if let Some(loc) = inner.locs.back().copied() {
            let at = inner.segments.len() - 1;
            let seg = &mut inner.segments[at];
            seg.len = loc.offset + u64::from(loc.len);
            // Cutting drops the preallocated zeros too; appends grow the file again and preallocation resumes.
            seg.file.set_len(seg.len).map_err(io(&seg.path))?;
            seg.allocated = seg.len;
            inner.shrunk = true;
            inner.mark(at);
        }
        Ok(())
    }

    /// Forgets the entries with index <= `upto`, removing the segments that hold nothing newer.
    pub fn purge(&self, upto: u64) -> Result<(), WalError> {
        let mut inner = self.lock();
        let last = inner.last_index();
        if last.is_none_or(|l| upto >= l) {
            inner.locs.clear();
            inner.first = upto.saturating_add(1);
        } else if upto >= inner.first {
            let n = (upto + 1 - inner.first) as usize;
            inner.locs.drain(..n);
            inner.first = upto + 1;
        }
        // A segment can go when the next one starts at or before the first kept entry.
        let first_kept = inner.first;
        while inner.segments.len() > 1 && inner.segments[1].first <= first_kept {
            let s = inner.segments.remove(0);
            std::fs::remove_file(&s.path).map_err(io(&s.path))?;
            inner.dir_dirty = true;
        }
        if inner.locs.is_empty()
            && let Some(s) = inner.segments.pop()
        {
            std::fs::remove_file(&s.path).map_err(io(&s.path))?;
            inner.dir_dirty = true;
        }
        Ok(())
    }

    /// The syncs owed for every earlier write, to be [`PendingSync::run`] off the async runtime.
    pub fn take_sync(&self) -> PendingSync {
        let mut inner = self.lock();
        let dir = std::mem::take(&mut inner.dir_dirty).then(|| self.dir.clone());
        PendingSync {
            dir,
            files: std::mem::take(&mut inner.unsynced),
            full: std::mem::take(&mut inner.shrunk),
        }
    }

    /// Gives back syncs that failed, so that the next flush retries them.
    pub fn restore_sync(&self, p: &PendingSync) {
        let mut inner = self.lock();
        inner.dir_dirty |= p.dir.is_some();
        inner.shrunk |= p.full;
        for f in &p.files {
            if !inner.unsynced.iter().any(|(g, _)| Arc::ptr_eq(g, &f.0)) {
                inner.unsynced.push(f.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entries(from: u64, to: u64) -> Vec<(u64, Vec<u8>)> {
        (from..=to)
            .map(|i| (i, format!("entry-{i}").into_bytes()))
            .collect()
    }

    fn all(w: &Wal) -> Vec<(u64, Vec<u8>)> {
        let inner = w.lock();
        let first = inner.first;
        let last = inner.last_index();
        drop(inner);
        match last {
            Some(l) => (first..=l).zip(w.range(first, l + 1).unwrap()).collect(),
            None => Vec::new(),
        }
    }

    #[test]
    fn appends_reads_truncates_purges_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open(dir.path()).unwrap();
        assert_eq!(w.last().unwrap(), None);
        w.append(&entries(1, 5)).unwrap();
        w.append(&entries(6, 9)).unwrap();
        assert!(matches!(
            w.append(&entries(11, 12)),
            Err(WalError::Gap { last: 9, got: 11 })
        ));
        assert_eq!(
            w.range(3, 5).unwrap(),
            vec![b"entry-3".to_vec(), b"entry-4".to_vec()]
        );
        w.truncate(7).unwrap();
        w.append(&[(7, b"new-7".to_vec())]).unwrap();
        w.purge(2).unwrap();
        w.take_sync().run().unwrap();
        drop(w);
        let w = Wal::open(dir.path()).unwrap();
        assert_eq!(w.last().unwrap(), Some(b"new-7".to_vec()));
        // Purged entries of a kept segment are still on disk; the caller's purge marker hides them.
        assert_eq!(w.range(3, 8).unwrap().len(), 5);
        w.purge(7).unwrap();
        assert_eq!(w.last().unwrap(), None);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // An emptied log starts again wherever the next append says.
        w.append(&entries(20, 21)).unwrap();
        drop(w);
        let w = Wal::open(dir.path()).unwrap();
        assert_eq!(all(&w), entries(20, 21));
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_damage_elsewhere_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open(dir.path()).unwrap();
        w.append(&entries(1, 3)).unwrap();
        drop(w);
        let seg = dir.path().join(segment_name(1));
        let full = std::fs::read(&seg).unwrap();
        let records_end = scan(&full).1 as usize;
        // Every cut inside the last record loses that record only, whether the file ends at the cut or
        // preallocated zeros follow it; the file is cut back to the last whole record.
        let last_start = records_end - (HEADER + b"entry-3".len());
        for cut in last_start + 1..records_end {
            for padded in [false, true] {
                let mut torn = full[..cut].to_vec();
                if padded {
                    torn.resize(full.len(), 0);
                }
                std::fs::write(&seg, &torn).unwrap();
                let w = Wal::open(dir.path()).unwrap();
                assert_eq!(all(&w), entries(1, 2), "cut at {cut}");
                assert_eq!(std::fs::metadata(&seg).unwrap().len(), last_start as u64);
            }
        }
        // Zeros where the last record began are the clean end of the log: the preallocation stays.
        let mut clean = full[..last_start].to_vec();
        clean.resize(full.len(), 0);
        std::fs::write(&seg, &clean).unwrap();
        let w = Wal::open(dir.path()).unwrap();
        assert_eq!(all(&w), entries(1, 2));
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), full.len() as u64);
        drop(w);
        // A flipped bit in the middle of the last segment loses the records from there on.
        let mut bad = full.clone();
        bad[HEADER + 2] ^= 1;
        std::fs::write(&seg, &bad).unwrap();
        let w = Wal::open(dir.path()).unwrap();
        assert_eq!(all(&w), Vec::new());
        drop(w);
        // ... but in a segment that is not the last, it is corruption.
        std::fs::write(&seg, &bad).unwrap();
        let mut next = Vec::new();
        encode(&mut next, 4, b"entry-4").unwrap();
        std::fs::write(dir.path().join(segment_name(4)), &next).unwrap();
        assert!(matches!(
            Wal::open(dir.path()),
            Err(WalError::Corrupt { .. })
        ));
    }

    #[test]
    fn appends_overwrite_preallocated_zeros_that_keep_ahead_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join(segment_name(1));
        let w = Wal::open(dir.path()).unwrap();
        w.append(&entries(1, 1)).unwrap();
        let records = |w: &Wal| w.lock().segments[0].len;
        // The segment starts with PREALLOC_FIRST of zeros, less than PREALLOC_LOW: the first append already
        // has the thread add a chunk.
        let allocated = w
            .shared
            .wait_while(w.lock(), |i| i.extending.is_some())
            .segments[0]
            .allocated;
        assert_eq!(allocated, PREALLOC_FIRST + PREALLOC_CHUNK);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), allocated);
        // 12 MiB of records: the background thread must extend the file ahead of them (appends that catch
        // up with it wait), and every record must survive its zeros.
        let big = vec![9u8; 100 * 1024];
        let mut want = entries(1, 1);
        for i in 2..=120 {
            w.append(&[(i, big.clone())]).unwrap();
            want.push((i, big.clone()));
        }
        let (len, allocated) = {
            let inner = w.shared.wait_while(w.lock(), |i| i.extending.is_some());
            (inner.segments[0].len, inner.segments[0].allocated)
        };
        assert!(
            allocated > len,
            "{allocated} bytes allocated for {len} of records"
        );
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), allocated);
        w.take_sync().run().unwrap();
        drop(w);
        let w = Wal::open(dir.path()).unwrap();
        assert_eq!(all(&w), want);
        assert_eq!(records(&w), len);
        // Cutting the log drops the zeros after the cut; appending afterwards still works.
        w.truncate(100).unwrap();
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), records(&w));
        w.append(&entries(100, 101)).unwrap();
        drop(w);
        want.truncate(99);
        want.extend(entries(100, 101));
        assert_eq!(all(&Wal::open(dir.path()).unwrap()), want);
    }

    #[test]
    fn segments_rotate_and_purge_removes_whole_ones() {
        let dir = tempfile::tempdir().unwrap();
        let w = Wal::open(dir.path()).unwrap();
        let big = vec![7u8; (SEGMENT_BYTES / 2) as usize];
        for i in 1..=5 {
            w.append(&[(i, big.clone())]).unwrap();
        }
        let segments = || std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(segments(), 3);
        assert_eq!(w.range(4, 5).unwrap(), vec![big.clone()]);
        w.purge(3).unwrap();
        assert_eq!(segments(), 2);
        w.truncate(5).unwrap();
        w.append(&[(5, b"x".to_vec())]).unwrap();
        drop(w);
        let w = Wal::open(dir.path()).unwrap();
        assert_eq!(w.last().unwrap(), Some(b"x".to_vec()));
        assert_eq!(w.range(4, 5).unwrap(), vec![big]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(u8),
        Truncate(u8),
        Purge(u8),
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u8..6).prop_map(Op::Append),
            1 => any::<u8>().prop_map(Op::Truncate),
            1 => any::<u8>().prop_map(Op::Purge),
            1 => Just(Op::Reopen),
        ]
    }

    proptest! {
        /// The log behaves like a map from index to payload under any sequence of operations and reopens.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let mut w = Wal::open(dir.path()).unwrap();
            let mut model: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
            let mut next = 1u64;
            let mut n = 0u64;
            let mut purged = 0u64;
            for op in ops {
                match op {
                    Op::Append(k) => {
                        let batch: Vec<_> = (next..next + u64::from(k))
                            .map(|i| { n += 1; (i, format!("{i}:{n}").into_bytes()) })
                            .collect();
                        w.append(&batch).unwrap();
                        model.extend(batch);
                        next += u64::from(k);
                    }
                    Op::Truncate(t) => {
                        let from = u64::from(t) % (next + 1);
                        let from = from.max(model.keys().next().copied().unwrap_or(next));
                        w.truncate(from).unwrap();
                        model.retain(|i, _| *i < from);
                        next = next.min(from);
                    }
                    Op::Purge(p) => {
                        let upto = u64::from(p) % (next + 1);
                        w.purge(upto).unwrap();
                        purged = purged.max(upto);
                        model.retain(|i, _| *i > upto);
                        next = next.max(upto + 1);
                    }
                    Op::Reopen => {
                        w.take_sync().run().unwrap();
                        drop(w);
                        w = Wal::open(dir.path()).unwrap();
                        // Purging is not recorded in the log: its owner keeps the mark and purges again.
                        w.purge(purged).unwrap();
                    }
                }
                let first = model.keys().next().copied().unwrap_or(next);
                let got = w.range(first, next).unwrap();
                let want: Vec<Vec<u8>> = model.values().cloned().collect();
                prop_assert_eq!(got, want);
                prop_assert_eq!(w.last().unwrap(), model.values().last().cloned());
            }
        }
    }
}
