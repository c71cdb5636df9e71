//! The rendered tree cache: an image's layers unpacked in order, once, under `cas/tree/<chain id>`,
//! shared read-only by every pod that runs the image (as the overlay lower directory).

use std::fs;
use std::path::{Path, PathBuf};

use super::digest::{HashingReader, chain_id};
use super::unpack::{UnpackOptions, maybe_gunzip, unpack_layer};
use super::{Digest, ImageRecord, Store};
use crate::error::{Error, IoContext, Result};
use crate::lock::{self, FileLock, LockMode};

/// A rendered tree, kept alive (safe from gc) while the shared lock is held.
#[derive(Debug)]
pub struct Tree {
    pub key: Digest,
    pub rootfs: PathBuf,
    pub lock: FileLock,
}

/// The cache key of an image: the chain id of its layers.
pub fn tree_key(rec: &ImageRecord) -> Digest {
    chain_id(&rec.diff_ids).unwrap_or_else(|| Digest::of(b""))
}

/// Returns the rendered tree of an image, rendering it first if needed.
pub fn render(store: &Store, rec: &ImageRecord) -> Result<Tree> {
    let key = tree_key(rec);
    let dir = store.cas().join("tree").join(key.hex());
    let lock_path = store
        .cas()
        .join("treelocks")
        .join(format!("{}.lock", key.hex()));
    let shared = lock::lock(&lock_path, LockMode::Shared)?;
    if dir.join("ok").exists() {
        return Ok(Tree {
            rootfs: dir.join("rootfs"),
            key,
            lock: shared,
        });
    }
    let excl = shared.convert(true)?;
    if !dir.join("ok").exists() {
        if dir.exists() {
            super::unpack::remove_tree(&dir)?;
        }
        let tmp = store.tmp_dir("tree")?;
        let rootfs = tmp.path().join("rootfs");
        fs::create_dir(&rootfs).ctx("creating", &rootfs)?;
        unpack_layers(store, rec, &rootfs, &UnpackOptions::default())?;
        fs::write(tmp.path().join("ok"), key.to_string()).ctx("writing", tmp.path().join("ok"))?;
        fs::rename(tmp.path(), &dir).ctx("renaming tree into place", &dir)?;
        tmp.keep();
    }
    Ok(Tree {
        rootfs: dir.join("rootfs"),
        key,
        lock: excl.convert(false)?,
    })
}

/// Unpacks an image's layers in order into `dest`, checking each against its diff id.
pub fn unpack_layers(
    store: &Store,
    rec: &ImageRecord,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<()> {
    for (layer, diff_id) in rec.layers.iter().zip(&rec.diff_ids) {
        let file = store.open_blob(&layer.digest)?;
        let mut compressed = HashingReader::new(file);
        let mut plain = HashingReader::new(
            maybe_gunzip(&mut compressed).ctx("reading layer", store.blob_path(&layer.digest))?,
        );
        unpack_layer(dest, &mut plain, opts)?;
        let (got, _) = plain
            .finish()
            .ctx("reading layer", store.blob_path(&layer.digest))?;
        if got != *diff_id {
            return Err(Error::DigestMismatch {
                what: format!("uncompressed layer {}", layer.digest),
                expected: diff_id.to_string(),
                actual: got.to_string(),
            });
        }
        let (got, _) = compressed
            .finish()
            .ctx("reading layer", store.blob_path(&layer.digest))?;
        if got != layer.digest {
            return Err(Error::DigestMismatch {
                what: "layer blob".to_string(),
                expected: layer.digest.to_string(),
                actual: got.to_string(),
            });
        }
    }
    Ok(())
}
