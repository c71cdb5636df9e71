//! The content-addressed image store under `<dir>/cas`: verified blobs, image records, and the locks
//! that keep concurrent fetches, runs and garbage collection from corrupting it.
//!
//! Layout: `cas/blobs/sha256/<hex>`, `cas/images/<manifest hex>.json`, `cas/tree/<chain hex>/rootfs`
//! (the rendered tree cache), `cas/treelocks/<chain hex>.lock`, `cas/tmp/`, `cas/lock` (store lock).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Digest;
use super::digest::HashingWriter;
use super::oci::{Descriptor, ImageConfig, Manifest};
use crate::error::{Error, IoContext, Result, from_json};
use crate::lock::{self, FileLock, LockMode};
use crate::timefmt::now_ns;

/// How precisely an image's last-used time is kept (1 s): see [`Store::touch`].
const TOUCH_GRANULARITY_NS: i64 = 1_000_000_000;

/// The metadata the store keeps per image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// The manifest digest: the image's identity.
    pub id: Digest,
    /// A human name such as `busybox:latest`.
    pub name: String,
    pub config: Digest,
    pub layers: Vec<Descriptor>,
    pub diff_ids: Vec<Digest>,
    /// Nanoseconds since the epoch.
    pub import_time: i64,
    pub last_used: i64,
    /// Bytes of manifest, config and layer blobs.
    pub size: u64,
}

impl ImageRecord {
    /// `sha256-<hex>`, rkt's image id format.
    pub fn rkt_id(&self) -> String {
        self.id.rkt_id()
    }

    /// The truncated id `sha256-<12 hex>` used by `image list` without `--full`.
    pub fn short_id(&self) -> String {
        format!("sha256-{}", &self.id.hex()[..12])
    }
}

/// A scratch directory under `cas/tmp`, removed on drop.
pub struct TmpDir {
    path: PathBuf,
}

impl TmpDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory (after it was renamed away).
    pub fn keep(mut self) {
        self.path = PathBuf::new();
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = super::unpack::remove_tree(&self.path);
        }
    }
}

/// Counts of what an image gc removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreGc {
    pub images: Vec<String>,
    pub blobs: usize,
    pub trees: usize,
}

/// The image store.
#[derive(Clone, Debug)]
pub struct Store {
    cas: PathBuf,
}

impl Store {
    /// Opens (creating) the store under `<dir>/cas`.
    pub fn open(dir: &Path) -> Result<Self> {
        let cas = dir.join("cas");
        for sub in ["blobs/sha256", "images", "tree", "treelocks", "tmp"] {
            crate::error::ensure_dir(&cas.join(sub))?;
        }
        Ok(Self { cas })
    }

    pub fn cas(&self) -> &Path {
        &self.cas
    }

    /// The store-wide lock: shared for readers and importers, exclusive for gc and rm.
    pub fn lock(&self, mode: LockMode) -> Result<FileLock> {
        lock::lock(&self.cas.join("lock"), mode)
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.cas.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// A fresh scratch directory.
    pub fn tmp_dir(&self, prefix: &str) -> Result<TmpDir> {
        let path = self
            .cas
            .join("tmp")
            .join(format!("{prefix}-{:016x}", rand::random::<u64>()));
        fs::create_dir(&path).ctx("creating", &path)?;
        Ok(TmpDir { path })
    }

    /// Writes a blob, verifying it against `expected`; returns its digest and size.
    pub fn put_blob(
        &self,
        expected: Option<&Digest>,
        mut reader: impl Read,
        what: &str,
    ) -> Result<(Digest, u64)> {
        if let Some(d) = expected
            && self.has_blob(d)
        {
            let size = fs::metadata(self.blob_path(d))
                .ctx("stat", self.blob_path(d))?
                .len();
            return Ok((d.clone(), size));
        }
        let tmp = self
            .cas
            .join("tmp")
            .join(format!("blob-{:016x}", rand::random::<u64>()));
        let file = fs::File::create(&tmp).ctx("creating", &tmp)?;
        let mut w = HashingWriter::new(file);
        let res = std::io::copy(&mut reader, &mut w).ctx("copying blob", &tmp);
        let (file, digest, size) = w.finish();
        let res = res.and_then(|_| file.sync_all().ctx("syncing", &tmp));
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        if let Some(exp) = expected
            && *exp != digest
        {
            let _ = fs::remove_file(&tmp);
            return Err(Error::DigestMismatch {
                what: what.to_string(),
                expected: exp.to_string(),
                actual: digest.to_string(),
            });
        }
        let dst = self.blob_path(&digest);
        fs::rename(&tmp, &dst).ctx("storing blob", &dst)?;
        Ok((digest, size))
    }

    /// Reads a whole (small) blob, verifying its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        let bytes = fs::read(&p).ctx("reading blob", &p)?;
        let actual = Digest::of(&bytes);
        if actual != *d {
            return Err(Error::DigestMismatch {
                what: format!("stored blob {d}"),
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Opens a (large) blob for streaming; callers verify what they read.
    pub fn open_blob(&self, d: &Digest) -> Result<fs::File> {
        let p = self.blob_path(d);
        fs::File::open(&p).ctx("opening blob", &p)
    }

    fn record_path(&self, id: &Digest) -> PathBuf {
        self.cas.join("images").join(format!("{}.json", id.hex()))
    }

    /// Writes an image record atomically.
    pub fn save_image(&self, rec: &ImageRecord) -> Result<()> {
        let path = self.record_path(&rec.id);
        let tmp = path.with_extension(format!("tmp{:08x}", rand::random::<u32>()));
        let bytes = serde_json::to_vec_pretty(rec).map_err(|source| Error::Json {
            what: "image record".into(),
            source,
        })?;
        let mut f = fs::File::create(&tmp).ctx("creating", &tmp)?;
        f.write_all(&bytes).ctx("writing", &tmp)?;
        fs::rename(&tmp, &path).ctx("renaming", &path)
    }

    pub fn image(&self, id: &Digest) -> Result<Option<ImageRecord>> {
        let path = self.record_path(id);
        match fs::read(&path) {
            Ok(b) => Ok(Some(from_json(&b, &path.display().to_string())?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx("reading", path),
        }
    }

    /// Every image record, oldest import first.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.cas.join("images");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).ctx("listing", &dir)? {
            let e = e.ctx("listing", &dir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            let Ok(d) = Digest::from_hex(hex) else {
                continue;
            };
            if let Some(r) = self.image(&d)? {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.import_time.cmp(&b.import_time).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    /// Finds an image by id (`sha256-<hex prefix>` / `sha256:<hex prefix>`) or by name (`name[:tag]`,
    /// tag defaulting to `latest`); the most recent import wins among same-name images.
    pub fn resolve(&self, reference: &str) -> Result<ImageRecord> {
        let images = self.images()?;
        let prefix = reference
            .strip_prefix("sha256-")
            .or_else(|| reference.strip_prefix("sha256:"));
        if let Some(prefix) = prefix {
            let hits: Vec<_> = images
                .iter()
                .filter(|i| i.id.hex().starts_with(prefix))
                .collect();
            return match hits.len() {
                0 => Err(Error::ImageNotFound(reference.to_string())),
                1 => Ok(hits[0].clone()),
                _ => Err(Error::AmbiguousImage(reference.to_string())),
            };
        }
        let want = normalize_name(reference);
        images
            .into_iter()
            .rev()
            .find(|i| i.name == want)
            .ok_or_else(|| Error::ImageNotFound(reference.to_string()))
    }

    /// Marks an image used now, to a precision of [`TOUCH_GRANULARITY_NS`]: a record used more
    /// recently than that is left alone, which spares back-to-back `rkt run`s a rewrite and
    /// rename of the record each (on a filesystem mounted with `discard`, freeing the replaced
    /// inode waits for the device).
    pub fn touch(&self, rec: &ImageRecord) -> Result<()> {
        let now = now_ns();
        if (0..TOUCH_GRANULARITY_NS).contains(&now.saturating_sub(rec.last_used)) {
            return Ok(());
        }
        let mut r = rec.clone();
        r.last_used = now;
        self.save_image(&r)
    }

    /// The parsed manifest and config of an image.
    pub fn manifest(&self, rec: &ImageRecord) -> Result<(Manifest, Vec<u8>)> {
        let bytes = self.read_blob(&rec.id)?;
        Ok((from_json(&bytes, "image manifest")?, bytes))
    }

    pub fn config(&self, rec: &ImageRecord) -> Result<ImageConfig> {
        let bytes = self.read_blob(&rec.config)?;
        from_json(&bytes, "image config")
    }

    /// Removes image records (blobs and trees go at the next gc).
    pub fn remove_image(&self, rec: &ImageRecord) -> Result<()> {
        let _guard = self.lock(LockMode::Exclusive)?;
        let p = self.record_path(&rec.id);
        fs::remove_file(&p).ctx("removing", &p)
    }

    /// Removes images unused for `grace` (except `keep`), then every blob and tree no image refers
    /// to; trees that a running pod holds (a shared lock) are kept.
    pub fn gc(&self, grace: Duration, keep: &[Digest]) -> Result<StoreGc> {
        let _guard = self.lock(LockMode::Exclusive)?;
        let mut report = StoreGc::default();
        let now = now_ns();
        let mut live = Vec::new();
        for img in self.images()? {
            let last = img.last_used.max(img.import_time);
            if now - last > grace.as_nanos() as i64 && !keep.contains(&img.id) {
                let p = self.record_path(&img.id);
                fs::remove_file(&p).ctx("removing", &p)?;
                report.images.push(img.rkt_id());
            } else {
                live.push(img);
            }
        }
        let mut blobs = std::collections::HashSet::new();
        let mut trees = std::collections::HashSet::new();
        for img in &live {
            blobs.insert(img.id.hex().to_string());
            blobs.insert(img.config.hex().to_string());
            for l in &img.layers {
                blobs.insert(l.digest.hex().to_string());
            }
            trees.insert(super::tree::tree_key(img).hex().to_string());
        }
        let bdir = self.cas.join("blobs/sha256");
        for e in fs::read_dir(&bdir).ctx("listing", &bdir)? {
            let e = e.ctx("listing", &bdir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !blobs.contains(&name) {
                fs::remove_file(e.path()).ctx("removing", e.path())?;
                report.blobs += 1;
            }
        }
        let tdir = self.cas.join("tree");
        for e in fs::read_dir(&tdir).ctx("listing", &tdir)? {
            let e = e.ctx("listing", &tdir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if trees.contains(&name) {
                continue;
            }
            let lock_path = self.cas.join("treelocks").join(format!("{name}.lock"));
            if let Some(_l) = lock::try_lock(&lock_path, LockMode::Exclusive)? {
                super::unpack::remove_tree(&e.path())?;
                let _ = fs::remove_file(&lock_path);
                report.trees += 1;
            }
        }
        Ok(report)
    }
}

/// `busybox` means `busybox:latest`.
pub fn normalize_name(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(last_used: i64) -> ImageRecord {
        ImageRecord {
            id: Digest::of(b"manifest"),
            name: "busybox:latest".into(),
            config: Digest::of(b"config"),
            layers: Vec::new(),
            diff_ids: Vec::new(),
            import_time: 1,
            last_used,
            size: 0,
        }
    }

    #[test]
    fn touch_rewrites_only_a_stale_last_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();

        let stale = record(now_ns() - 2 * TOUCH_GRANULARITY_NS);
        store.save_image(&stale).unwrap();
        store.touch(&stale).unwrap();
        let touched = store.image(&stale.id).unwrap().unwrap();
        assert!(touched.last_used > stale.last_used);

        // Used again within the granularity: the record stays as it is.
        store.touch(&touched).unwrap();
        assert_eq!(store.image(&stale.id).unwrap().unwrap(), touched);

        // A last-used time in the future (clock stepped back) is corrected.
        let future = record(now_ns() + 10 * TOUCH_GRANULARITY_NS);
        store.save_image(&future).unwrap();
        store.touch(&future).unwrap();
        assert!(store.image(&future.id).unwrap().unwrap().last_used < future.last_used);
    }
}
