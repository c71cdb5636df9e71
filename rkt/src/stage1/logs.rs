//! Per-app logs (`--stdout=log` / `--stderr=log`): the pod's init reads the app's stream from a
//! pipe on a logger thread and appends one record per line to `<pod>/apps/<app>/log`; the API
//! service's `GetLogs` reads them back. This module owns the file format in both directions.
//!
//! A record is `<unix time in ns> <stream> <text>\n`, with `stream` `stdout` or `stderr`. Lines
//! longer than [`MAX_LINE`] are split into several records; a last line without a newline is
//! recorded when the stream closes. Each file is capped at [`LOG_CAP`] bytes: when the next batch
//! would pass it, `log` becomes `log.1` (replacing the older one) and a new `log` starts, so an
//! app keeps at most twice the cap.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Size at which an app's log file is rotated.
pub const LOG_CAP: u64 = 8 << 20;
/// Longest text of one record; longer lines are split.
pub const MAX_LINE: usize = 16 << 10;

/// The app's current log file.
pub fn log_path(pod_dir: &Path, app: &str) -> PathBuf {
    pod_dir.join("apps").join(app).join("log")
}

/// The app's previous log file (the one rotated out).
pub fn rotated_path(pod_dir: &Path, app: &str) -> PathBuf {
    pod_dir.join("apps").join(app).join("log.1")
}

/// Which of the app's streams a record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line of an app's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// When the logger read it, in ns since the epoch.
    pub time_ns: i64,
    pub stream: Stream,
    pub text: String,
}

impl Record {
    /// Parses one record line (without its newline); `None` for anything malformed.
    pub fn parse(line: &[u8]) -> Option<Record> {
        let mut parts = line.splitn(3, |b| *b == b' ');
        let time_ns = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        let stream = match parts.next()? {
            b"stdout" => Stream::Stdout,
            b"stderr" => Stream::Stderr,
            _ => return None,
        };
        let text = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        Some(Record {
            time_ns,
            stream,
            text,
        })
    }
}

fn encode(out: &mut Vec<u8>, time_ns: i64, stream: Stream, text: &[u8]) {
    out.extend_from_slice(format!("{time_ns} {} ", stream.as_str()).as_bytes());
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// Apps' output may hold secrets: readable by root and the group only (and close-on-exec, as
/// std opens every file, so no app inherits it).
fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// An app's log file, appended to by the logger thread.
pub struct LogFile {
    path: PathBuf,
    rotated: PathBuf,
    file: File,
    size: u64,
    cap: u64,
    failed: bool,
}

impl LogFile {
    /// Opens (creating) `path` for appending; it rotates to `rotated` past `cap` bytes.
    pub fn open(path: PathBuf, rotated: PathBuf, cap: u64) -> std::io::Result<Self> {
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            rotated,
            file,
            size,
            cap,
            failed: false,
        })
    }

    /// Appends whole records, in one write unless the file must rotate first. A failing disk
    /// must not stall the app: the error is reported once and the records are dropped.
    fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.size > 0
            && self.size + bytes.len() as u64 > self.cap
            && let Err(e) = self.rotate()
        {
            self.report(&e);
        }
        match self.file.write_all(bytes) {
            Ok(()) => self.size += bytes.len() as u64,
            Err(e) => self.report(&e),
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        std::fs::rename(&self.path, &self.rotated)?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }

    fn report(&mut self, e: &std::io::Error) {
        if !self.failed {
            self.failed = true;
            eprintln!(
                "rkt: writing {}: {e} (dropping log lines)",
                self.path.display()
            );
        }
    }
}

/// The read end of one app stream's pipe and where its lines go.
pub struct Source {
    pub fd: OwnedFd,
    pub stream: Stream,
    /// Index of the app's [`LogFile`].
    pub sink: usize,
    partial: Vec<u8>,
}

impl Source {
    pub fn new(fd: OwnedFd, stream: Stream, sink: usize) -> Self {
        Self {
            fd,
            stream,
            sink,
            partial: Vec::new(),
        }
    }

    /// Takes the complete lines out of `partial` (all of it at `eof`) as records.
    fn drain(&mut self, now: i64, eof: bool, out: &mut Vec<u8>) {
        let mut start = 0;
        loop {
            let rest = &self.partial[start..];
            let nl = rest.iter().position(|b| *b == b'\n');
            let take = match nl {
                Some(i) if i <= MAX_LINE => i,
                _ if rest.len() > MAX_LINE => MAX_LINE,
                None if eof && !rest.is_empty() => rest.len(),
                _ => break,
            };
            encode(out, now, self.stream, &rest[..take]);
            start += take;
            if nl == Some(take) {
                start += 1;
            }
        }
        self.partial.drain(..start);
    }
}

/// Copies every source into its log until all of them are closed (every process holding a
/// write end has exited), then returns: joining it drains the pipes.
pub fn run(mut sinks: Vec<LogFile>, mut sources: Vec<Source>) {
    let mut buf = vec![0u8; 64 << 10];
    while !sources.is_empty() {
        let mut fds: Vec<libc::pollfd> = sources
            .iter()
            .map(|s| libc::pollfd {
                fd: s.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // Cannot happen with valid fds; stop rather than spin.
            eprintln!("rkt: logger: poll: {}", std::io::Error::last_os_error());
            return;
        }
        let mut closed = Vec::new();
        for (i, p) in fds.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            let src = &mut sources[i];
            let got = nix::unistd::read(&src.fd, &mut buf);
            let mut out = Vec::new();
            let now = crate::timefmt::now_ns();
            match got {
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
                Ok(0) | Err(_) => {
                    src.drain(now, true, &mut out);
                    closed.push(i);
                }
                Ok(n) => {
                    src.partial.extend_from_slice(&buf[..n]);
                    src.drain(now, false, &mut out);
                }
            }
            sinks[src.sink].append(&out);
        }
        for i in closed.into_iter().rev() {
            sources.remove(i);
        }
    }
}

/// Where a reader of an app's log is: the current file (by inode) and the offset after the last
/// complete record read from it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    ino: Option<u64>,
    offset: u64,
}

/// Reads the complete records of the file at `path` from `offset`; returns them, the file's
/// inode and the offset after them. A missing file reads as empty.
fn read_file(path: &Path, offset: u64) -> std::io::Result<(Vec<Record>, Option<u64>, u64)> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], None, 0)),
        Err(e) => return Err(e),
    };
    let ino = f.metadata()?.ino();
    f.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    // A record being written is left for the next read.
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let records = bytes[..whole]
        .split(|b| *b == b'\n')
        .filter_map(Record::parse)
        .collect();
    Ok((records, Some(ino), offset + whole as u64))
}

/// Everything an app's logs hold (the rotated file, then the current one), and a cursor after it.
pub fn read_all(pod_dir: &Path, app: &str) -> std::io::Result<(Vec<Record>, Cursor)> {
    let (mut records, _, _) = read_file(&rotated_path(pod_dir, app), 0)?;
    let (current, ino, offset) = read_file(&log_path(pod_dir, app), 0)?;
    records.extend(current);
    Ok((records, Cursor { ino, offset }))
}

/// The records written since `cursor`, following a rotation; advances `cursor`.
pub fn read_new(pod_dir: &Path, app: &str, cursor: &mut Cursor) -> std::io::Result<Vec<Record>> {
    let path = log_path(pod_dir, app);
    let ino = match std::fs::metadata(&path) {
        Ok(m) => Some(m.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    if cursor.ino.is_some() && ino.is_some() && ino != cursor.ino {
        // Rotated since the last read: finish the file we were reading, now `log.1`.
        let (rest, old, _) = read_file(&rotated_path(pod_dir, app), cursor.offset)?;
        if old == cursor.ino {
            out.extend(rest);
        }
        *cursor = Cursor::default();
    }
    let (new, ino, offset) = read_file(&path, cursor.offset)?;
    if ino.is_some() {
        out.extend(new);
        *cursor = Cursor { ino, offset };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(records: &[Record]) -> Vec<(Stream, String)> {
        records.iter().map(|r| (r.stream, r.text.clone())).collect()
    }

    #[test]
    fn lines_are_split_capped_and_flushed_at_eof() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        let mut src = Source::new(r, Stream::Stderr, 0);
        let mut out = Vec::new();
        src.partial.extend_from_slice(b"one\ntwo\nthr");
        src.drain(7, false, &mut out);
        assert_eq!(out, b"7 stderr one\n7 stderr two\n");
        assert_eq!(src.partial, b"thr");
        out.clear();
        src.partial.extend(std::iter::repeat_n(b'x', MAX_LINE + 5));
        src.drain(8, false, &mut out);
        let line = String::from_utf8(out.clone()).unwrap();
        assert_eq!(line.len(), "8 stderr ".len() + MAX_LINE + 1);
        assert!(line.starts_with("8 stderr thrxxx"));
        assert_eq!(src.partial.len(), 3 + 5);
        out.clear();
        src.drain(9, true, &mut out);
        assert_eq!(out, b"9 stderr xxxxxxxx\n");
        assert!(src.partial.is_empty());
        out.clear();
        src.drain(9, true, &mut out);
        assert!(out.is_empty(), "nothing left, nothing recorded");
    }

    #[test]
    fn records_parse_and_reject_garbage() {
        assert_eq!(
            Record::parse(b"12 stdout hello world"),
            Some(Record {
                time_ns: 12,
                stream: Stream::Stdout,
                text: "hello world".into()
            })
        );
        assert_eq!(
            Record::parse(b"12 stderr ").map(|r| r.text),
            Some("".into())
        );
        assert_eq!(Record::parse(b"x stdout a"), None);
        assert_eq!(Record::parse(b"12 stdin a"), None);
        assert_eq!(Record::parse(b""), None);
    }

    #[test]
    fn rotation_keeps_two_files_and_readers_follow_it() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = tmp.path();
        std::fs::create_dir_all(pod.join("apps/a")).unwrap();
        let mut log = LogFile::open(log_path(pod, "a"), rotated_path(pod, "a"), 64).unwrap();
        let rec = |n: i64| {
            let mut v = Vec::new();
            encode(&mut v, n, Stream::Stdout, format!("line {n:02}").as_bytes());
            v
        };
        // Each record is 17 bytes: three fit in 64.
        for n in 0..3 {
            log.append(&rec(n));
        }
        let (all, mut cursor) = read_all(pod, "a").unwrap();
        assert_eq!(all.len(), 3);
        assert!(!rotated_path(pod, "a").exists());
        log.append(&rec(3));
        log.append(&rec(4));
        assert!(rotated_path(pod, "a").exists());
        let new = read_new(pod, "a", &mut cursor).unwrap();
        assert_eq!(
            text(&new),
            vec![
                (Stream::Stdout, "line 03".into()),
                (Stream::Stdout, "line 04".into())
            ]
        );
        assert!(read_new(pod, "a", &mut cursor).unwrap().is_empty());
        for n in 5..9 {
            log.append(&rec(n));
        }
        // The second rotation dropped 0..=2: the files hold 3..=5 and 6..=8.
        let (all, _) = read_all(pod, "a").unwrap();
        let times: Vec<i64> = all.iter().map(|r| r.time_ns).collect();
        assert_eq!(times, vec![3, 4, 5, 6, 7, 8]);
        assert!(std::fs::metadata(log_path(pod, "a")).unwrap().len() <= 64);
        let new = read_new(pod, "a", &mut cursor).unwrap();
        let times: Vec<i64> = new.iter().map(|r| r.time_ns).collect();
        assert_eq!(
            times,
            vec![5, 6, 7, 8],
            "a reader between rotations misses nothing"
        );
    }

    #[test]
    fn logger_drains_every_source_until_closed() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = tmp.path();
        std::fs::create_dir_all(pod.join("apps/a")).unwrap();
        let log = LogFile::open(log_path(pod, "a"), rotated_path(pod, "a"), LOG_CAP).unwrap();
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        let (err_r, err_w) = nix::unistd::pipe().unwrap();
        let t = std::thread::spawn(move || {
            run(
                vec![log],
                vec![
                    Source::new(out_r, Stream::Stdout, 0),
                    Source::new(err_r, Stream::Stderr, 0),
                ],
            )
        });
        let mut out = File::from(out_w);
        let mut err = File::from(err_w);
        out.write_all(b"a\nb").unwrap();
        err.write_all(b"oops\n").unwrap();
        drop(err);
        out.write_all(b"c\nd").unwrap();
        drop(out);
        t.join().unwrap();
        let (all, _) = read_all(pod, "a").unwrap();
        let mut outs: Vec<_> = text(&all)
            .into_iter()
            .filter(|(s, _)| *s == Stream::Stdout)
            .collect();
        assert_eq!(
            outs.drain(..).map(|(_, t)| t).collect::<Vec<_>>(),
            vec!["a", "bc", "d"]
        );
        assert!(text(&all).contains(&(Stream::Stderr, "oops".into())));
        assert_eq!(all.len(), 4);
    }
}
