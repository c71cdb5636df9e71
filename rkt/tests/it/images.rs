//! Image store: fetch through each transport, digest verification, the tree cache, whiteouts
//! across layers, and list/rm/gc/export/extract/render/cat-manifest.

use serde_json::json;

use crate::common::{Env, TarBuilder, busybox_layer, sha, show, stdout, write_layout};

#[test]
fn fetch_prints_ids_and_image_list_has_the_columns() {
    let env = Env::new();
    let short = env.ok(&["fetch", &env.image()]);
    assert!(
        short.trim().starts_with("sha256-") && short.trim().len() == 19,
        "{short:?}"
    );
    let full = env.ok(&["image", "fetch", "--full", &env.image()]);
    assert!(
        full.trim().starts_with(short.trim()) && full.trim().len() == 71,
        "{full:?}"
    );
    let list = env.ok(&["image", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    let header: Vec<&str> = lines[0].split('\t').filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["ID", "NAME", "SIZE", "IMPORT TIME", "LAST USED"]);
    let row: Vec<&str> = lines[1].split('\t').filter(|c| !c.is_empty()).collect();
    assert_eq!(row[0], short.trim());
    assert_eq!(row[1], "busybox:latest");
    assert!(
        row[2].ends_with("KiB") || row[2].ends_with("MiB"),
        "{row:?}"
    );
    assert_eq!(lines.len(), 2, "fetching twice stores one image");
    let custom = env.ok(&[
        "image",
        "list",
        "--fields=name,latest",
        "--no-legend",
        "--full",
    ]);
    assert_eq!(
        custom
            .split('\t')
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>(),
        ["busybox:latest", "true\n"]
    );
    // A stored image runs by name and by id prefix.
    let o = env.rkt(&["run", "--net=none", "busybox"]);
    assert_eq!(stdout(&o), "hello from busybox\n", "{}", show(&o));
    let o = env.rkt(&["run", "--net=none", short.trim(), "--exec=/bin/true"]);
    assert!(o.status.success(), "{}", show(&o));
}

#[test]
fn corrupted_blobs_are_rejected() {
    let env = Env::new();
    let blobs = env.layout.join("blobs/sha256");
    let layer = std::fs::read_dir(&blobs)
        .expect("blobs")
        .flatten()
        .max_by_key(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .expect("layer blob")
        .path();
    let mut bytes = std::fs::read(&layer).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&layer, &bytes).expect("write");
    let o = env.rkt(&["fetch", &env.image()]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("digest mismatch"),
        "{}",
        show(&o)
    );
    assert!(
        env.ok(&["image", "list", "--no-legend"]).is_empty(),
        "nothing was stored"
    );
}

#[test]
fn wrong_diff_id_is_rejected_at_render() {
    let env = Env::new();
    let tmp = env.tmp.path().join("bad");
    // A config claiming another layer's diff id.
    write_layout(
        &tmp,
        "latest",
        &[busybox_layer()],
        json!({"Cmd": ["/bin/true"]}),
    );
    let cfg_path = std::fs::read_dir(tmp.join("blobs/sha256"))
        .expect("blobs")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::read_to_string(p)
                .map(|s| s.contains("diff_ids"))
                .unwrap_or(false)
        })
        .expect("config");
    // Rewrite the whole chain with a bogus diff id.
    let cfg = std::fs::read_to_string(&cfg_path).expect("read");
    let v: serde_json::Value = serde_json::from_str(&cfg).expect("json");
    let real = v["rootfs"]["diff_ids"][0]
        .as_str()
        .expect("diff id")
        .to_string();
    let bogus = format!("sha256:{}", sha(b"not the layer"));
    let new_cfg = cfg.replace(&real, &bogus);
    let new_digest = sha(new_cfg.as_bytes());
    std::fs::write(tmp.join("blobs/sha256").join(&new_digest), &new_cfg).expect("write");
    let old_digest = cfg_path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let manifest_path = std::fs::read_dir(tmp.join("blobs/sha256"))
        .expect("blobs")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            std::fs::read_to_string(p)
                .map(|s| s.contains(&old_digest))
                .unwrap_or(false)
        })
        .expect("manifest");
    let manifest = std::fs::read_to_string(&manifest_path)
        .expect("read")
        .replace(&old_digest, &new_digest);
    let md = sha(manifest.as_bytes());
    std::fs::write(tmp.join("blobs/sha256").join(&md), &manifest).expect("write");
    let index = std::fs::read_to_string(tmp.join("index.json")).expect("read");
    let old_md = manifest_path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let index = index.replace(&old_md, &md).replace(
        &format!(
            "\"size\":{}",
            std::fs::metadata(&manifest_path).expect("stat").len()
        ),
        &format!("\"size\":{}", manifest.len()),
    );
    std::fs::write(tmp.join("index.json"), index).expect("write");
    let o = env.rkt(&["run", "--net=none", &format!("oci:{}", tmp.display())]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("digest mismatch for uncompressed layer"),
        "{}",
        show(&o)
    );
    let trees = std::fs::read_dir(env.dir.join("cas/tree"))
        .expect("trees")
        .count();
    assert_eq!(trees, 0, "a tree that failed verification is not cached");
}

#[test]
fn layers_stack_with_whiteouts_and_the_tree_is_reused() {
    let env = Env::new();
    let lower = TarBuilder::new()
        .dir("data/")
        .file("data/keep", b"keep", 0o644)
        .file("data/gone", b"gone", 0o644)
        .dir("opq/")
        .file("opq/old", b"old", 0o644)
        .finish();
    let upper = TarBuilder::new()
        .file("data/.wh.gone", b"", 0o644)
        .file("data/keep", b"updated", 0o644)
        .dir("opq/")
        .file("opq/.wh..wh..opq", b"", 0o644)
        .file("opq/new", b"new", 0o644)
        .finish();
    let layout = write_layout(
        &env.tmp.path().join("stacked"),
        "v1",
        &[busybox_layer(), lower, upper],
        json!({"Cmd": ["/bin/sh", "-c", "cat /data/keep; echo; ls /data /opq | tr '\\n' ' '"]}),
    );
    let img = format!("oci:{}:v1", layout.display());
    let o = env.rkt(&["run", "--net=none", &img]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(stdout(&o), "updated\n/data: keep  /opq: new ");
    env.rkt(&["run", "--net=none", &img]);
    let trees: Vec<_> = std::fs::read_dir(env.dir.join("cas/tree"))
        .expect("trees")
        .flatten()
        .collect();
    assert_eq!(trees.len(), 1, "one rendered tree shared by both pods");
    // The tree is keyed by the chain id of the layers.
    let name = trees[0].file_name().to_string_lossy().into_owned();
    assert_eq!(name.len(), 64);
}

#[test]
fn image_rm_gc_and_cat_manifest() {
    let env = Env::new();
    let id = env
        .ok(&["fetch", "--full", &env.image()])
        .trim()
        .to_string();
    let m: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "cat-manifest", "busybox"])).expect("json");
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["layers"].as_array().expect("layers").len(), 1);
    let pretty = env.ok(&["image", "cat-manifest", "--pretty-print", &id]);
    assert!(pretty.lines().count() > 5);
    env.ok(&[
        "image",
        "render",
        "busybox",
        env.tmp.path().join("r").to_str().expect("utf8"),
    ]);
    assert!(env.dir.join("cas/tree").read_dir().expect("trees").count() == 1);
    let out = env.ok(&["image", "rm", &id]);
    assert!(
        out.contains(&format!("successfully removed aci for image: {id:?}")),
        "{out}"
    );
    assert!(out.contains("rm: 1 image(s) successfully removed"));
    assert!(env.ok(&["image", "list", "--no-legend"]).is_empty());
    let out = env.ok(&["image", "gc"]);
    assert!(out.contains("3 blob(s), 1 rendered tree(s)"), "{out}");
    assert_eq!(
        env.dir
            .join("cas/blobs/sha256")
            .read_dir()
            .expect("blobs")
            .count(),
        0
    );
    assert_eq!(
        env.dir.join("cas/tree").read_dir().expect("trees").count(),
        0
    );
    assert!(!env.rkt(&["image", "rm", "busybox"]).status.success());
}

#[test]
fn image_gc_keeps_images_of_existing_pods() {
    let env = Env::new();
    env.ok(&["run", "--net=none", &env.image(), "--exec=/bin/true"]);
    let out = env.ok(&["image", "gc", "--grace-period=0s"]);
    assert!(out.contains("removed 0 image(s)"), "{out}");
    env.ok(&["gc", "--grace-period=0s"]);
    let out = env.ok(&["image", "gc", "--grace-period=0s"]);
    assert!(out.contains("removed 1 image(s)"), "{out}");
}

#[test]
fn export_reimports_as_oci_archive() {
    let env = Env::new();
    let id = env
        .ok(&["fetch", "--full", &env.image()])
        .trim()
        .to_string();
    let archive = env.tmp.path().join("busybox.tar");
    let a = archive.to_str().expect("utf8");
    env.ok(&["image", "export", "busybox", a]);
    assert!(
        !env.rkt(&["image", "export", "busybox", a]).status.success(),
        "no overwrite without --overwrite"
    );
    env.ok(&["image", "export", "--overwrite", "busybox", a]);
    let other = Env::new();
    let id2 = other
        .ok(&["fetch", "--full", &format!("oci-archive:{a}:latest")])
        .trim()
        .to_string();
    assert_eq!(id, id2, "the manifest digest survives export and import");
    let o = other.rkt(&["run", "--net=none", &format!("oci-archive:{a}")]);
    assert_eq!(stdout(&o), "hello from busybox\n", "{}", show(&o));
}

#[test]
fn extract_and_render() {
    let env = Env::new();
    env.ok(&["fetch", &env.image()]);
    let out = env.tmp.path().join("x");
    let o = out.to_str().expect("utf8");
    env.ok(&["image", "extract", "busybox", o]);
    assert!(out.join("rootfs/bin/busybox").is_file());
    assert!(out.join("manifest").is_file());
    assert!(
        !env.rkt(&["image", "extract", "busybox", o])
            .status
            .success(),
        "not empty"
    );
    env.ok(&[
        "image",
        "extract",
        "--overwrite",
        "--rootfs-only",
        "busybox",
        o,
    ]);
    assert!(out.join("bin/busybox").is_file() && !out.join("manifest").exists());
    let r = env.tmp.path().join("r");
    env.ok(&[
        "image",
        "render",
        "--rootfs-only",
        "busybox",
        r.to_str().expect("utf8"),
    ]);
    assert_eq!(
        std::fs::read_link(r.join("bin/sh")).expect("link").to_str(),
        Some("busybox")
    );
    assert_eq!(
        std::fs::read(r.join("etc/passwd")).expect("read"),
        std::fs::read(out.join("etc/passwd")).expect("read")
    );
}

#[test]
fn docker_archive_imports() {
    let env = Env::new();
    let layer = busybox_layer();
    let layer_id = sha(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/echo", "from docker"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_id}")]}
    }))
    .expect("json");
    let config_name = format!("{}.json", sha(&config));
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name, "RepoTags": ["example.com/dbox:1.0"], "Layers": [format!("{layer_id}/layer.tar")]
    }]))
    .expect("json");
    let tar = TarBuilder::new()
        .file("manifest.json", &manifest, 0o644)
        .file(&config_name, &config, 0o644)
        .dir(&format!("{layer_id}/"))
        .file(&format!("{layer_id}/layer.tar"), &layer, 0o644)
        .finish();
    let path = env.tmp.path().join("docker.tar");
    std::fs::write(&path, tar).expect("write");
    env.ok(&["fetch", &format!("docker-archive:{}", path.display())]);
    let list = env.ok(&["image", "list", "--fields=name", "--no-legend"]);
    assert_eq!(list.trim(), "example.com/dbox:1.0");
    let o = env.rkt(&["run", "--net=none", "example.com/dbox:1.0"]);
    assert_eq!(stdout(&o), "from docker\n", "{}", show(&o));
}

#[test]
fn hostile_archive_is_refused() {
    let env = Env::new();
    let tar = TarBuilder::new().file("../../escape", b"x", 0o644).finish();
    let path = env.tmp.path().join("evil.tar");
    std::fs::write(&path, tar).expect("write");
    let o = env.rkt(&["fetch", &format!("oci-archive:{}", path.display())]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refusing layer entry"),
        "{}",
        show(&o)
    );
    assert!(!env.tmp.path().join("escape").exists());
    let evil_layer = TarBuilder::new()
        .symlink("bin", "/usr")
        .file("bin/pwned", b"x", 0o644)
        .finish();
    let layout = write_layout(
        &env.tmp.path().join("evil"),
        "latest",
        &[evil_layer],
        json!({"Cmd": ["/x"]}),
    );
    let o = env.rkt(&["run", "--net=none", &format!("oci:{}", layout.display())]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("escapes the tree through a symlink"),
        "{}",
        show(&o)
    );
    assert!(!std::path::Path::new("/usr/pwned").exists());
}
