//! Image transports: `oci:<layout dir>[:tag]`, `oci-archive:<tar>[:tag]`, `docker-archive:<tar>`,
//! and names or ids of images already in the store.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

use super::oci::{self, Descriptor, DockerArchiveEntry, ImageConfig, Index, Manifest};
use super::store::normalize_name;
use super::unpack::{UnpackOptions, clean_components, unpack_layer};
use super::{Digest, ImageRecord, Store};
use crate::error::{Error, IoContext, Result, from_json};
use crate::lock::LockMode;
use crate::timefmt::now_ns;

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    OciDir {
        path: PathBuf,
        tag: Option<String>,
    },
    OciArchive {
        path: PathBuf,
        tag: Option<String>,
    },
    DockerArchive {
        path: PathBuf,
    },
    /// A name or id of an image already in the store.
    Stored(String),
}

fn split_tag(s: &str) -> (PathBuf, Option<String>) {
    match s.rsplit_once(':') {
        Some((p, t)) if !t.is_empty() && !t.contains('/') && !p.is_empty() => {
            (PathBuf::from(p), Some(t.to_string()))
        }
        _ => (PathBuf::from(s), None),
    }
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("oci:") {
            let (path, tag) = split_tag(rest);
            return Ok(Self::OciDir { path, tag });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (path, tag) = split_tag(rest);
            return Ok(Self::OciArchive { path, tag });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            // A trailing `:repo:tag` selector is not supported: the first image is used.
            return Ok(Self::DockerArchive {
                path: PathBuf::from(rest),
            });
        }
        if s.contains("://") || s.is_empty() {
            return Err(Error::BadReference(s.to_string()));
        }
        Ok(Self::Stored(s.to_string()))
    }
}

/// Fetches (imports) an image into the store, or finds a stored one; returns its record.
pub fn fetch(store: &Store, reference: &ImageRef) -> Result<ImageRecord> {
    match reference {
        ImageRef::Stored(name) => store.resolve(name),
        ImageRef::OciDir { path, tag } => {
            let layout = Layout::open(path)?;
            import_layout(
                store,
                &layout,
                tag.as_deref(),
                &default_name(path, tag.as_deref()),
            )
        }
        ImageRef::OciArchive { path, tag } => {
            let tmp = store.tmp_dir("oci-archive")?;
            extract_archive(path, tmp.path())?;
            let layout = Layout::open(tmp.path())?;
            import_layout(
                store,
                &layout,
                tag.as_deref(),
                &default_name(path, tag.as_deref()),
            )
        }
        ImageRef::DockerArchive { path } => {
            let tmp = store.tmp_dir("docker-archive")?;
            extract_archive(path, tmp.path())?;
            let layout = Layout::open(tmp.path())?;
            import_docker(store, &layout, path)
        }
    }
}

fn default_name(path: &Path, tag: Option<&str>) -> String {
    let stem = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let stem = stem
        .strip_suffix(".tar")
        .or_else(|| stem.strip_suffix(".tar.gz"))
        .unwrap_or(&stem)
        .to_string();
    format!("{stem}:{}", tag.unwrap_or("latest"))
}

fn extract_archive(archive: &Path, dest: &Path) -> Result<()> {
    let file = File::open(archive).ctx("opening archive", archive)?;
    let reader = super::unpack::maybe_gunzip(file).ctx("reading archive", archive)?;
    let opts = UnpackOptions {
        allow_devices: false,
        preserve_owners: false,
        whiteouts: false,
    };
    unpack_layer(dest, reader, &opts)?;
    Ok(())
}

/// A directory whose files are opened strictly beneath its root (archives may hold hostile symlinks).
struct Layout {
    root: OwnedFd,
    path: PathBuf,
}

impl Layout {
    fn open(path: &Path) -> Result<Self> {
        let root = nix::fcntl::open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx("opening image layout", path)?;
        Ok(Self {
            root,
            path: path.to_path_buf(),
        })
    }

    fn open_file(&self, rel: &str) -> Result<File> {
        let comps = clean_components(rel.as_bytes())?;
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = openat2(&self.root, comps.join("/").as_str(), how)
            .ctx("opening", self.path.join(rel))?;
        Ok(File::from(fd))
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_file(rel)?
            .read_to_end(&mut buf)
            .ctx("reading", self.path.join(rel))?;
        Ok(buf)
    }

    fn blob_rel(d: &Digest) -> String {
        format!("blobs/sha256/{}", d.hex())
    }

    /// Reads a small blob and checks it against its descriptor.
    fn read_blob(&self, d: &Descriptor, what: &str) -> Result<Vec<u8>> {
        let bytes = self.read(&Self::blob_rel(&d.digest))?;
        let actual = Digest::of(&bytes);
        if actual != d.digest {
            return Err(Error::DigestMismatch {
                what: what.to_string(),
                expected: d.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }
}

fn is_index(media_type: &str) -> bool {
    media_type == oci::MEDIA_INDEX || media_type == oci::DOCKER_MANIFEST_LIST
}

/// Picks the manifest for `tag` (or the only one, or `latest`) from an index, descending into nested
/// indexes by platform (linux/amd64 first).
fn select_manifest(layout: &Layout, index: &Index, tag: Option<&str>) -> Result<Descriptor> {
    let by_ref = |t: &str| {
        index.manifests.iter().find(|m| {
            m.annotations
                .get(oci::ANNOTATION_REF_NAME)
                .map(String::as_str)
                == Some(t)
        })
    };
    let chosen = match tag {
        Some(t) => by_ref(t)
            .ok_or_else(|| Error::BadImage(format!("no manifest tagged {t:?} in the layout")))?,
        None if index.manifests.len() == 1 => &index.manifests[0],
        None => by_ref("latest").ok_or_else(|| {
            Error::BadImage("the layout holds several manifests: name one with :<tag>".into())
        })?,
    };
    if is_index(&chosen.media_type) {
        let nested: Index = from_json(&layout.read_blob(chosen, "nested index")?, "nested index")?;
        let arch = host_arch();
        let pick = nested
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == arch)
            })
            .or_else(|| nested.manifests.first())
            .ok_or_else(|| Error::BadImage("empty nested index".into()))?;
        return Ok(pick.clone());
    }
    Ok(chosen.clone())
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn import_layout(
    store: &Store,
    layout: &Layout,
    tag: Option<&str>,
    name: &str,
) -> Result<ImageRecord> {
    let marker: oci::OciLayout = from_json(&layout.read("oci-layout")?, "oci-layout")?;
    if !marker.image_layout_version.starts_with("1.") {
        return Err(Error::BadImage(format!(
            "unsupported imageLayoutVersion {:?}",
            marker.image_layout_version
        )));
    }
    let index: Index = from_json(&layout.read("index.json")?, "index.json")?;
    let name = index
        .manifests
        .iter()
        .find_map(|m| m.annotations.get(oci::ANNOTATION_CONTAINERD_NAME).cloned())
        .filter(|_| index.manifests.len() == 1)
        .map(|n| normalize_name(&n))
        .unwrap_or_else(|| name.to_string());
    let desc = select_manifest(layout, &index, tag)?;
    let manifest_bytes = layout.read_blob(&desc, "image manifest")?;
    let manifest: Manifest = from_json(&manifest_bytes, "image manifest")?;
    let config_bytes = layout.read_blob(&manifest.config, "image config")?;
    let config: ImageConfig = from_json(&config_bytes, "image config")?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::BadImage(format!(
            "{} layers but {} diff_ids",
            manifest.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    let _guard = store.lock(LockMode::Shared)?;
    for layer in &manifest.layers {
        let f = layout.open_file(&Layout::blob_rel(&layer.digest))?;
        store.put_blob(Some(&layer.digest), f, &format!("layer {}", layer.digest))?;
    }
    store.put_blob(
        Some(&manifest.config.digest),
        config_bytes.as_slice(),
        "image config",
    )?;
    let (id, _) = store.put_blob(
        Some(&desc.digest),
        manifest_bytes.as_slice(),
        "image manifest",
    )?;
    save_record(
        store,
        id,
        name,
        &manifest,
        &config,
        manifest_bytes.len() as u64,
        config_bytes.len() as u64,
    )
}

fn save_record(
    store: &Store,
    id: Digest,
    name: String,
    manifest: &Manifest,
    config: &ImageConfig,
    manifest_len: u64,
    config_len: u64,
) -> Result<ImageRecord> {
    let now = now_ns();
    let existing = store.image(&id)?;
    let rec = ImageRecord {
        id,
        name,
        config: manifest.config.digest.clone(),
        layers: manifest.layers.clone(),
        diff_ids: config.rootfs.diff_ids.clone(),
        import_time: existing.as_ref().map(|e| e.import_time).unwrap_or(now),
        last_used: existing.as_ref().map(|e| e.last_used).unwrap_or(now),
        size: manifest_len + config_len + manifest.layers.iter().map(|l| l.size).sum::<u64>(),
    };
    store.save_image(&rec)?;
    Ok(rec)
}

/// Imports the first image of a `docker save` archive, converting it to an OCI manifest.
fn import_docker(store: &Store, layout: &Layout, archive: &Path) -> Result<ImageRecord> {
    let entries: Vec<DockerArchiveEntry> =
        from_json(&layout.read("manifest.json")?, "docker manifest.json")?;
    let entry = entries
        .first()
        .ok_or_else(|| Error::BadImage("docker archive holds no image".into()))?;
    let config_bytes = layout.read(&entry.config)?;
    let config: ImageConfig = from_json(&config_bytes, "docker image config")?;
    if config.rootfs.diff_ids.len() != entry.layers.len() {
        return Err(Error::BadImage(format!(
            "{} layers but {} diff_ids",
            entry.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    let _guard = store.lock(LockMode::Shared)?;
    let mut layers = Vec::new();
    for rel in &entry.layers {
        let mut f = layout.open_file(rel)?;
        let mut magic = [0u8; 2];
        let n = f.read(&mut magic).ctx("reading", layout.path.join(rel))?;
        let media_type = if n == 2 && magic == [0x1f, 0x8b] {
            oci::MEDIA_LAYER_GZIP
        } else {
            oci::MEDIA_LAYER_TAR
        };
        let f = layout.open_file(rel)?;
        let (digest, size) = store.put_blob(None, f, rel)?;
        layers.push(Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            annotations: Default::default(),
            platform: None,
        });
    }
    let (config_digest, config_len) =
        store.put_blob(None, config_bytes.as_slice(), "docker image config")?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_MANIFEST.to_string()),
        config: Descriptor {
            media_type: oci::MEDIA_CONFIG.to_string(),
            digest: config_digest,
            size: config_len,
            annotations: Default::default(),
            platform: None,
        },
        layers,
        annotations: Default::default(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|source| Error::Json {
        what: "converted manifest".into(),
        source,
    })?;
    let (id, _) = store.put_blob(None, manifest_bytes.as_slice(), "converted manifest")?;
    let name = entry
        .repo_tags
        .as_ref()
        .and_then(|t| t.first())
        .map(|n| {
            // Docker's canonical names carry the default registry; rkt shows the short form.
            let short = n
                .strip_prefix("docker.io/library/")
                .or_else(|| n.strip_prefix("docker.io/"))
                .unwrap_or(n);
            normalize_name(short)
        })
        .unwrap_or_else(|| default_name(archive, None));
    save_record(
        store,
        id,
        name,
        &manifest,
        &config,
        manifest_bytes.len() as u64,
        config_len,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transports() {
        assert_eq!(
            ImageRef::parse("oci:/x/busybox:1.35").unwrap(),
            ImageRef::OciDir {
                path: "/x/busybox".into(),
                tag: Some("1.35".into())
            }
        );
        assert_eq!(
            ImageRef::parse("oci:/x/busybox").unwrap(),
            ImageRef::OciDir {
                path: "/x/busybox".into(),
                tag: None
            }
        );
        assert_eq!(
            ImageRef::parse("oci-archive:a.tar").unwrap(),
            ImageRef::OciArchive {
                path: "a.tar".into(),
                tag: None
            }
        );
        assert_eq!(
            ImageRef::parse("docker-archive:/t/d.tar").unwrap(),
            ImageRef::DockerArchive {
                path: "/t/d.tar".into()
            }
        );
        assert_eq!(
            ImageRef::parse("busybox").unwrap(),
            ImageRef::Stored("busybox".into())
        );
        assert!(ImageRef::parse("docker://busybox").is_err());
    }
}
