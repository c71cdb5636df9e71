//! Hostile-input safe layer unpacking: every path is resolved beneath the tree root with `openat2`
//! (`RESOLVE_BENEATH`), and every file is created relative to an already-resolved parent directory.
//!
//! Refused with an error: absolute paths, `..` components, parents that escape through a symlink
//! (absolute or relative), hard links whose target is outside the tree, unsupported entry types.
//! Device nodes are created only when the caller allows them, otherwise skipped and reported.
//! OCI whiteouts (`.wh.<name>`, `.wh..wh..opq`) are applied against what lower layers left in the tree.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, fchmod, fstatat, mkdirat, mknodat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};

use crate::error::{Error, IoContext, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// What the unpacker may do besides creating plain files, directories and links.
#[derive(Clone, Debug)]
pub struct UnpackOptions {
    /// Create character and block device nodes (otherwise they are skipped and reported).
    pub allow_devices: bool,
    /// Apply the owners recorded in the archive (needs root).
    pub preserve_owners: bool,
    /// Interpret `.wh.` entries as OCI whiteouts (layers) rather than as plain files (archives).
    pub whiteouts: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            allow_devices: false,
            preserve_owners: nix::unistd::geteuid().is_root(),
            whiteouts: true,
        }
    }
}

/// What an unpack did that the caller may want to report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackReport {
    pub entries: usize,
    pub skipped_devices: Vec<String>,
}

fn refuse(entry: &str, reason: impl Into<String>) -> Error {
    Error::UnsafeEntry {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

/// Splits an archive path into safe components, refusing absolute paths and `..`.
pub fn clean_components(raw: &[u8]) -> Result<Vec<String>> {
    let shown = String::from_utf8_lossy(raw).into_owned();
    if raw.first() == Some(&b'/') {
        return Err(refuse(&shown, "absolute path"));
    }
    if raw.contains(&0) {
        return Err(refuse(&shown, "nul byte in path"));
    }
    let mut out = Vec::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(refuse(&shown, "path contains a '..' component")),
            c => out.push(String::from_utf8_lossy(c).into_owned()),
        }
    }
    // Lossy conversion must not have changed anything a path depends on.
    if out.iter().any(|c| c.contains('\u{FFFD}')) {
        return Err(refuse(&shown, "path is not valid utf-8"));
    }
    Ok(out)
}

/// Unpacks one tar (or tar.gz, detected by magic) stream into `root`, which must exist.
pub fn unpack_layer<R: Read>(root: &Path, reader: R, opts: &UnpackOptions) -> Result<UnpackReport> {
    let mut unpacker = Unpacker::new(root, opts)?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().ctx("reading layer", root)?;
    for entry in entries {
        let mut entry = entry.ctx("reading layer entry", root)?;
        unpacker.entry(&mut entry)?;
    }
    Ok(unpacker.report)
}

/// Wraps a reader so a gzip stream is decompressed and a plain tar passed through.
pub fn maybe_gunzip<'a, R: Read + 'a>(mut reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut magic = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        let n = reader.read(&mut magic[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = io::Cursor::new(magic[..got].to_vec());
    let chained = head.chain(reader);
    if got == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::GzDecoder::new(chained)))
    } else if got >= 2 && magic == [0x28, 0xb5] {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "zstd layers are not supported",
        ))
    } else {
        Ok(Box::new(chained))
    }
}

struct Unpacker<'o> {
    root: OwnedFd,
    root_path: std::path::PathBuf,
    opts: &'o UnpackOptions,
    /// Paths created by this layer, and their ancestors, for opaque whiteouts.
    touched: HashSet<Vec<String>>,
    report: UnpackReport,
}

impl<'o> Unpacker<'o> {
    fn new(root: &Path, opts: &'o UnpackOptions) -> Result<Self> {
        let fd = nix::fcntl::open(
            root,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx("opening tree root", root)?;
        Ok(Self {
            root: fd,
            root_path: root.to_path_buf(),
            opts,
            touched: HashSet::new(),
            report: UnpackReport::default(),
        })
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            return Ok(());
        }
        let comps = clean_components(&raw)?;
        let Some((name, parents)) = comps.split_last() else {
            // The archive's root directory itself ("./"): nothing to create.
            return Ok(());
        };
        self.report.entries += 1;

        if self.opts.whiteouts && name.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&shown, parents, name);
        }

        let parent = self.open_dir(&shown, parents, true)?;
        for i in 1..=comps.len() {
            self.touched.insert(comps[..i].to_vec());
        }
        let header = entry.header();
        let mode = Mode::from_bits_truncate(header.mode().unwrap_or(0o644) & 0o7777);
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let owner = self
            .opts
            .preserve_owners
            .then(|| (Uid::from_raw(uid as u32), Gid::from_raw(gid as u32)));

        match kind {
            tar::EntryType::Directory => {
                match fstatat(&parent, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st)
                        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
                            == SFlag::S_IFDIR => {}
                    Ok(_) => {
                        remove_at(&parent, name).ctx("replacing", self.path(&comps))?;
                        mkdirat(&parent, name.as_str(), Mode::from_bits_truncate(0o700))
                            .ctx("creating directory", self.path(&comps))?;
                    }
                    Err(Errno::ENOENT) => {
                        mkdirat(&parent, name.as_str(), Mode::from_bits_truncate(0o700))
                            .ctx("creating directory", self.path(&comps))?
                    }
                    Err(e) => return Err(e).ctx("inspecting", self.path(&comps)),
                }
                let dir = openat(
                    &parent,
                    name.as_str(),
                    OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .ctx("opening directory", self.path(&comps))?;
                if let Some((u, g)) = owner {
                    fchown(&dir, Some(u), Some(g)).ctx("chown", self.path(&comps))?;
                }
                fchmod(&dir, mode).ctx("chmod", self.path(&comps))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                if kind == tar::EntryType::GNUSparse {
                    return Err(refuse(&shown, "sparse files are not supported"));
                }
                self.clear(&parent, name, &comps)?;
                let fd = openat(
                    &parent,
                    name.as_str(),
                    OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_WRONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .ctx("creating file", self.path(&comps))?;
                let mut file = File::from(fd);
                io::copy(entry, &mut file).ctx("writing file", self.path(&comps))?;
                if let Some((u, g)) = owner {
                    fchown(&file, Some(u), Some(g)).ctx("chown", self.path(&comps))?;
                }
                // After chown, which clears set-id bits.
                fchmod(&file, mode).ctx("chmod", self.path(&comps))?;
                if let Ok(mtime) = entry.header().mtime() {
                    let t = nix::sys::time::TimeSpec::new(mtime as i64, 0);
                    let _ = nix::sys::stat::futimens(&file, &t, &t);
                }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse(&shown, "symlink without a target"))?
                    .into_owned();
                if target.contains(&0) {
                    return Err(refuse(&shown, "nul byte in symlink target"));
                }
                self.clear(&parent, name, &comps)?;
                symlinkat(std::ffi::OsStr::from_bytes(&target), &parent, name.as_str())
                    .ctx("creating symlink", self.path(&comps))?;
                if let Some((u, g)) = owner {
                    fchownat(
                        &parent,
                        name.as_str(),
                        Some(u),
                        Some(g),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .ctx("chown", self.path(&comps))?;
                }
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refuse(&shown, "hard link without a target"))?
                    .into_owned();
                let tcomps = clean_components(&target).map_err(|_| {
                    refuse(
                        &shown,
                        format!(
                            "hard link target {:?} is outside the tree",
                            String::from_utf8_lossy(&target)
                        ),
                    )
                })?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(refuse(&shown, "hard link to the tree root"));
                };
                let tparent = self.open_dir(&shown, tparents, false)?;
                match fstatat(&tparent, tname.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st)
                        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
                            == SFlag::S_IFDIR =>
                    {
                        return Err(refuse(&shown, "hard link to a directory"));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return Err(refuse(
                            &shown,
                            "hard link target does not exist in the tree",
                        ));
                    }
                }
                if tcomps == comps {
                    return Ok(());
                }
                self.clear(&parent, name, &comps)?;
                linkat(
                    &tparent,
                    tname.as_str(),
                    &parent,
                    name.as_str(),
                    AtFlags::empty(),
                )
                .ctx("creating hard link", self.path(&comps))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                if !self.opts.allow_devices {
                    tracing::warn!(entry = %shown, "skipping device node: devices are not allowed in this tree");
                    self.report.skipped_devices.push(shown);
                    return Ok(());
                }
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                let kind_flag = if kind == tar::EntryType::Char {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                self.clear(&parent, name, &comps)?;
                mknodat(
                    &parent,
                    name.as_str(),
                    kind_flag,
                    mode,
                    nix::sys::stat::makedev(major as u64, minor as u64),
                )
                .ctx("creating device node", self.path(&comps))?;
            }
            tar::EntryType::Fifo => {
                self.clear(&parent, name, &comps)?;
                mknodat(&parent, name.as_str(), SFlag::S_IFIFO, mode, 0)
                    .ctx("creating fifo", self.path(&comps))?;
            }
            other => return Err(refuse(&shown, format!("unsupported entry type {other:?}"))),
        }
        // Special files were just created by us (never a symlink), so chmod by name is safe.
        if let Some((u, g)) = owner
            && matches!(
                kind,
                tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block
            )
        {
            fchownat(
                &parent,
                name.as_str(),
                Some(u),
                Some(g),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .ctx("chown", self.path(&comps))?;
            nix::sys::stat::fchmodat(&parent, name.as_str(), mode, FchmodatFlags::FollowSymlink)
                .ctx("chmod", self.path(&comps))?;
        }
        Ok(())
    }

    fn path(&self, comps: &[String]) -> std::path::PathBuf {
        let mut p = self.root_path.clone();
        p.extend(comps);
        p
    }

    /// Removes whatever a lower layer left at `name` (directories only when replaced by a non-directory).
    fn clear(&self, parent: &OwnedFd, name: &str, comps: &[String]) -> Result<()> {
        match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => remove_at(parent, name).ctx("replacing", self.path(comps)),
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e).ctx("inspecting", self.path(comps)),
        }
    }

    /// Opens the directory `comps` beneath the root, creating missing directories when asked.
    fn open_dir(&self, shown: &str, comps: &[String], create: bool) -> Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let map = |e: Errno, prefix: &[String]| -> Error {
            let at = prefix.join("/");
            match e {
                Errno::EXDEV => refuse(shown, format!("{at:?} escapes the tree through a symlink")),
                Errno::ELOOP => refuse(shown, format!("{at:?} has too many levels of symlinks")),
                Errno::ENOTDIR => refuse(shown, format!("{at:?} is not a directory")),
                Errno::ENOENT => refuse(shown, format!("{at:?} does not exist")),
                e => Error::Sys {
                    op: "resolving",
                    path: self.path(prefix),
                    source: e,
                },
            }
        };
        if comps.is_empty() {
            return openat2(&self.root, ".", how).map_err(|e| map(e, comps));
        }
        match openat2(&self.root, comps.join("/").as_str(), how) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) if create => {}
            Err(e) => return Err(map(e, comps)),
        }
        let mut cur = openat2(&self.root, ".", how).map_err(|e| map(e, &[]))?;
        for i in 0..comps.len() {
            let prefix = &comps[..=i];
            match openat2(&self.root, prefix.join("/").as_str(), how) {
                Ok(fd) => cur = fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(&cur, comps[i].as_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(map(e, prefix)),
                    }
                    cur = openat2(&self.root, prefix.join("/").as_str(), how)
                        .map_err(|e| map(e, prefix))?;
                }
                Err(e) => return Err(map(e, prefix)),
            }
        }
        Ok(cur)
    }

    fn whiteout(&mut self, shown: &str, parents: &[String], name: &str) -> Result<()> {
        let parent = match self.open_dir(shown, parents, false) {
            Ok(fd) => fd,
            // Nothing below to hide.
            Err(Error::UnsafeEntry { reason, .. }) if reason.ends_with("does not exist") => {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if name == OPAQUE_WHITEOUT {
            return self.opaque(&parent, parents);
        }
        let target = &name[WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target == "." || target == ".." {
            return Err(refuse(shown, "malformed whiteout"));
        }
        match fstatat(&parent, target, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => {
                let mut comps = parents.to_vec();
                comps.push(target.to_string());
                remove_at(&parent, target).ctx("applying whiteout", self.path(&comps))
            }
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e).ctx("inspecting", self.path(parents)),
        }
    }

    /// Hides everything lower layers put in `dir`, keeping what this layer already added.
    fn opaque(&self, dir: &OwnedFd, comps: &[String]) -> Result<()> {
        for child in list_dir(dir).ctx("listing", self.path(comps))? {
            let mut sub = comps.to_vec();
            sub.push(child.clone());
            if !self.touched.contains(&sub) {
                remove_at(dir, &child).ctx("applying opaque whiteout", self.path(&sub))?;
            } else if let Ok(fd) = openat(
                dir,
                child.as_str(),
                OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                self.opaque(&fd, &sub)?;
            }
        }
        Ok(())
    }
}

/// Lists a directory given by fd (names only, without `.` and `..`).
pub(crate) fn list_dir(dir: &OwnedFd) -> nix::Result<Vec<String>> {
    let dup = nix::unistd::dup(dir)?;
    let mut d = nix::dir::Dir::from_fd(dup)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(String::from_utf8_lossy(n).into_owned());
        }
    }
    Ok(out)
}

/// Removes `name` under `parent` recursively without ever following a symlink.
pub(crate) fn remove_at(parent: &OwnedFd, name: &str) -> nix::Result<()> {
    let st = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
        let dir = openat(
            parent,
            name,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        for child in list_dir(&dir)? {
            remove_at(&dir, &child)?;
        }
        unlinkat(parent, name, UnlinkatFlags::RemoveDir)
    } else {
        unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
    }
}

/// Removes a whole tree by path, without following symlinks inside it.
pub fn remove_tree(path: &Path) -> Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::Usage(format!(
            "refusing to remove {}",
            path.display()
        )));
    };
    let pfd = match nix::fcntl::open(
        parent,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e).ctx("opening", parent),
    };
    match remove_at(&pfd, &name.to_string_lossy()) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e).ctx("removing", path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_components_refuses_escapes() {
        assert!(clean_components(b"/etc/passwd").is_err());
        assert!(clean_components(b"a/../../b").is_err());
        assert!(clean_components(b"..").is_err());
        assert_eq!(clean_components(b"./a//b/.").unwrap(), vec!["a", "b"]);
        assert!(clean_components(b"./").unwrap().is_empty());
    }
}
