//! `rkt image export`: writes a stored image as an OCI archive (a tar of an OCI image layout).

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::oci::{self, Descriptor, Index};
use super::{ImageRecord, Store};
use crate::error::{Error, IoContext, Result};

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
    dest: &Path,
) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, bytes)
        .ctx("writing archive", dest)
}

/// Exports `rec` to `dest` as an oci-archive whose single manifest is tagged with the image's tag.
pub fn export(store: &Store, rec: &ImageRecord, dest: &Path, overwrite: bool) -> Result<()> {
    if dest.exists() && !overwrite {
        return Err(Error::Usage(format!(
            "{} already exists (use --overwrite)",
            dest.display()
        )));
    }
    let tmp = dest.with_extension(format!("tmp{:08x}", rand::random::<u32>()));
    let res = (|| {
        let file = File::create(&tmp).ctx("creating", &tmp)?;
        let mut tar = tar::Builder::new(file);
        append_bytes(
            &mut tar,
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#,
            dest,
        )?;
        let manifest = store.read_blob(&rec.id)?;
        let tag = rec
            .name
            .rsplit_once(':')
            .map(|(_, t)| t)
            .unwrap_or("latest");
        let index = Index {
            schema_version: 2,
            media_type: Some(oci::MEDIA_INDEX.to_string()),
            manifests: vec![Descriptor {
                media_type: oci::MEDIA_MANIFEST.to_string(),
                digest: rec.id.clone(),
                size: manifest.len() as u64,
                annotations: [(oci::ANNOTATION_REF_NAME.to_string(), tag.to_string())].into(),
                platform: None,
            }],
            annotations: Default::default(),
        };
        let index_bytes = serde_json::to_vec(&index).map_err(|source| Error::Json {
            what: "index.json".into(),
            source,
        })?;
        append_bytes(&mut tar, "index.json", &index_bytes, dest)?;
        let mut blobs = vec![rec.id.clone(), rec.config.clone()];
        blobs.extend(rec.layers.iter().map(|l| l.digest.clone()));
        for d in blobs {
            let path = store.blob_path(&d);
            let mut f = File::open(&path).ctx("opening blob", &path)?;
            tar.append_file(format!("blobs/sha256/{}", d.hex()), &mut f)
                .ctx("writing archive", dest)?;
        }
        let file = tar.into_inner().ctx("finishing archive", dest)?;
        file.sync_all().ctx("syncing", dest)
    })();
    match res {
        Ok(()) => std::fs::rename(&tmp, dest).ctx("renaming", dest),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}
