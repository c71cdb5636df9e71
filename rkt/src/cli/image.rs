//! `rkt fetch` and the `rkt image` verbs.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::{FetchArgs, ImageCommand, duration, print_json};
use crate::error::{Error, IoContext, Result};
use crate::image::transport::{ImageRef, fetch as fetch_image};
use crate::image::tree::{render, unpack_layers};
use crate::image::unpack::{UnpackOptions, remove_tree};
use crate::image::{ImageRecord, Store};
use crate::pod::status::tabwrite;
use crate::timefmt::{absolute, now_ns, relative};

/// `rkt fetch`: imports each image and prints its id.
pub fn fetch(dir: &Path, args: &FetchArgs) -> Result<i32> {
    let store = Store::open(dir)?;
    for img in &args.images {
        let rec = fetch_image(&store, &ImageRef::parse(img)?)?;
        if args.full {
            println!("{}", rec.rkt_id());
        } else {
            println!("{}", rec.short_id());
        }
    }
    Ok(0)
}

/// go-humanize's `IBytes`: `812 B`, `1.1 MiB`, `11 MiB`.
pub fn ibytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[i])
    } else {
        format!("{v:.0} {}", UNITS[i])
    }
}

fn field(rec: &ImageRecord, f: &str, full: bool, latest: bool, now: i64) -> Result<String> {
    let t = |ns: i64| {
        if full {
            absolute(ns)
        } else {
            relative(ns, now)
        }
    };
    Ok(match f {
        "id" => {
            if full {
                rec.rkt_id()
            } else {
                rec.short_id()
            }
        }
        "name" => rec.name.clone(),
        "importtime" => t(rec.import_time),
        "lastused" => t(rec.last_used),
        "size" => {
            if full {
                rec.size.to_string()
            } else {
                ibytes(rec.size)
            }
        }
        "latest" => latest.to_string(),
        other => return Err(Error::Usage(format!("--fields: unknown field {other:?}"))),
    })
}

fn header(f: &str) -> &'static str {
    match f {
        "id" => "ID",
        "name" => "NAME",
        "importtime" => "IMPORT TIME",
        "lastused" => "LAST USED",
        "size" => "SIZE",
        _ => "LATEST",
    }
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(src).ctx("inspecting", src)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(src).ctx("reading link", src)?;
        std::os::unix::fs::symlink(&target, dst).ctx("creating symlink", dst)?;
    } else if ft.is_dir() {
        fs::create_dir(dst).ctx("creating", dst)?;
        for e in fs::read_dir(src).ctx("listing", src)? {
            let e = e.ctx("listing", src)?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .ctx("chmod", dst)?;
    } else if ft.is_file() {
        fs::copy(src, dst).ctx("copying", dst)?;
    } else {
        // Device nodes, fifos and sockets are not part of rendered trees.
        return Ok(());
    }
    let _ = std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid()));
    if ft.is_file() {
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .ctx("chmod", dst)?;
    }
    Ok(())
}

fn prepare_out_dir(dir: &Path, overwrite: bool) -> Result<()> {
    if dir.exists() {
        let empty = fs::read_dir(dir).ctx("listing", dir)?.next().is_none();
        if !empty && !overwrite {
            return Err(Error::Usage(format!(
                "{} is not empty (use --overwrite)",
                dir.display()
            )));
        }
        remove_tree(dir)?;
    }
    fs::create_dir_all(dir).ctx("creating", dir)
}

/// The `rkt image` verbs other than fetch.
pub fn run(dir: &Path, cmd: ImageCommand) -> Result<i32> {
    let store = Store::open(dir)?;
    match cmd {
        ImageCommand::Fetch(a) => fetch(dir, &a),
        ImageCommand::List {
            fields,
            sort,
            order,
            full,
            no_legend,
        } => {
            let fields: Vec<&str> = fields
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .collect();
            let mut images = store.images()?;
            let latest_of = |r: &ImageRecord, all: &[ImageRecord]| {
                all.iter()
                    .filter(|o| o.name == r.name)
                    .all(|o| o.import_time <= r.import_time)
            };
            match sort.as_str() {
                "importtime" => images.sort_by_key(|i| i.import_time),
                "lastused" => images.sort_by_key(|i| i.last_used),
                "name" => images.sort_by(|a, b| a.name.cmp(&b.name)),
                "id" => images.sort_by(|a, b| a.id.cmp(&b.id)),
                "size" => images.sort_by_key(|i| i.size),
                other => return Err(Error::Usage(format!("--sort: unknown field {other:?}"))),
            }
            match order.as_str() {
                "asc" => {}
                "desc" => images.reverse(),
                other => {
                    return Err(Error::Usage(format!(
                        "--order: expected asc or desc, got {other:?}"
                    )));
                }
            }
            let now = now_ns();
            let mut rows = Vec::new();
            if !no_legend {
                rows.push(fields.iter().map(|f| header(f).to_string()).collect());
            }
            for r in &images {
                let latest = latest_of(r, &images);
                rows.push(
                    fields
                        .iter()
                        .map(|f| field(r, f, full, latest, now))
                        .collect::<Result<Vec<_>>>()?,
                );
            }
            print!("{}", tabwrite(&rows));
            Ok(0)
        }
        ImageCommand::Rm { images } => {
            let mut removed = 0;
            let mut failed = false;
            for i in &images {
                match store
                    .resolve(i)
                    .and_then(|r| store.remove_image(&r).map(|_| r))
                {
                    Ok(r) => {
                        println!("successfully removed aci for image: {:?}", r.rkt_id());
                        removed += 1;
                    }
                    Err(e) => {
                        eprintln!("rm: {e}");
                        failed = true;
                    }
                }
            }
            println!("rm: {removed} image(s) successfully removed");
            Ok(if failed { 254 } else { 0 })
        }
        ImageCommand::Gc { grace_period } => {
            let grace = duration("grace-period", &grace_period)?;
            // Images of pods that still exist are in use.
            let keep = pods_images(dir)?;
            let report = store.gc(grace, &keep)?;
            for i in &report.images {
                println!("successfully removed aci for image: {i:?}");
            }
            println!(
                "gc: removed {} image(s), {} blob(s), {} rendered tree(s)",
                report.images.len(),
                report.blobs,
                report.trees
            );
            Ok(0)
        }
        ImageCommand::Export {
            image,
            file,
            overwrite,
        } => {
            let rec = store.resolve(&image)?;
            crate::image::export::export(&store, &rec, &file, overwrite)?;
            Ok(0)
        }
        ImageCommand::Extract {
            rootfs_only,
            overwrite,
            image,
            target: out,
        } => {
            let rec = store.resolve(&image)?;
            prepare_out_dir(&out, overwrite)?;
            let rootfs = if rootfs_only {
                out.clone()
            } else {
                out.join("rootfs")
            };
            fs::create_dir_all(&rootfs).ctx("creating", &rootfs)?;
            unpack_layers(&store, &rec, &rootfs, &UnpackOptions::default())?;
            if !rootfs_only {
                fs::write(out.join("manifest"), store.read_blob(&rec.id)?)
                    .ctx("writing", out.join("manifest"))?;
            }
            Ok(0)
        }
        ImageCommand::Render {
            rootfs_only,
            overwrite,
            image,
            target: out,
        } => {
            let rec = store.resolve(&image)?;
            let tree = render(&store, &rec)?;
            prepare_out_dir(&out, overwrite)?;
            let rootfs = if rootfs_only {
                out.clone()
            } else {
                out.join("rootfs")
            };
            if rootfs_only {
                remove_tree(&rootfs)?;
            }
            copy_tree(&tree.rootfs, &rootfs)?;
            if !rootfs_only {
                fs::write(out.join("manifest"), store.read_blob(&rec.id)?)
                    .ctx("writing", out.join("manifest"))?;
            }
            Ok(0)
        }
        ImageCommand::CatManifest {
            pretty_print,
            image,
        } => {
            let rec = store.resolve(&image)?;
            print_json(&store.read_blob(&rec.id)?, pretty_print)?;
            Ok(0)
        }
    }
}

fn pods_images(dir: &Path) -> Result<Vec<crate::image::Digest>> {
    let pods = crate::pod::Pods::open(dir)?;
    let mut out = Vec::new();
    for p in pods.all()? {
        if let Ok(m) = p.manifest() {
            for a in m.apps {
                if let Ok(d) = crate::image::Digest::parse(&a.image.id) {
                    out.push(d);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibytes_like_go_humanize() {
        assert_eq!(ibytes(812), "812 B");
        assert_eq!(ibytes(1_153_434), "1.1 MiB");
        assert_eq!(ibytes(11 * 1024 * 1024), "11 MiB");
    }
}
