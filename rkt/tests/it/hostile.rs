//! Hostile layers: every escape technique is refused (or neutralised) and nothing outside the
//! tree changes. One test per technique, plus a property test over arbitrary archives.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rkt::image::unpack::{UnpackOptions, unpack_layer};

use crate::common::{TarBuilder, snapshot};

/// A sandbox: `root/` is the tree, `outside/` holds a canary that must never change.
struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    before: Vec<(String, String)>,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::create_dir_all(outside.join("sub")).expect("mkdir");
        std::fs::write(outside.join("canary"), "original").expect("write");
        std::fs::write(outside.join("sub/canary2"), "original").expect("write");
        let before = snapshot(tmp.path());
        Self {
            root,
            outside,
            before,
            _tmp: tmp,
        }
    }

    fn unpack(&self, tar: &[u8]) -> rkt::Result<rkt::image::unpack::UnpackReport> {
        unpack_layer(&self.root, tar, &UnpackOptions::default())
    }

    fn abs_outside(&self) -> String {
        self.outside.display().to_string()
    }

    /// Everything outside `root/` is byte-for-byte as before.
    fn assert_outside_unchanged(&self) {
        let parent = self.root.parent().expect("parent");
        let now: Vec<_> = snapshot(parent)
            .into_iter()
            .filter(|(p, _)| !p.starts_with("root"))
            .collect();
        let before: Vec<_> = self
            .before
            .iter()
            .filter(|(p, _)| !p.starts_with("root"))
            .cloned()
            .collect();
        assert_eq!(now, before, "something outside the tree changed");
    }
}

fn refused(res: rkt::Result<rkt::image::unpack::UnpackReport>, needle: &str) {
    match res {
        Err(rkt::Error::UnsafeEntry { reason, .. }) => {
            assert!(
                reason.contains(needle),
                "unexpected refusal reason {reason:?}, wanted {needle:?}"
            )
        }
        other => panic!("expected a refusal containing {needle:?}, got {other:?}"),
    }
}

#[test]
fn dotdot_path_is_refused() {
    let s = Sandbox::new();
    let tar = TarBuilder::new()
        .file("../outside/canary", b"pwned", 0o644)
        .finish();
    refused(s.unpack(&tar), "'..'");
    let tar = TarBuilder::new()
        .file("a/../../outside/new", b"pwned", 0o644)
        .finish();
    refused(s.unpack(&tar), "'..'");
    s.assert_outside_unchanged();
}

#[test]
fn absolute_path_is_refused() {
    let s = Sandbox::new();
    let target = format!("{}/canary", s.abs_outside());
    let tar = TarBuilder::new().file(&target, b"pwned", 0o644).finish();
    refused(s.unpack(&tar), "absolute path");
    s.assert_outside_unchanged();
}

#[test]
fn relative_symlink_escape_is_refused() {
    let s = Sandbox::new();
    let tar = TarBuilder::new()
        .symlink("link", "../outside")
        .file("link/canary", b"pwned", 0o644)
        .finish();
    refused(s.unpack(&tar), "escapes the tree through a symlink");
    s.assert_outside_unchanged();
    // The symlink itself may exist inside the tree; it is harmless there.
    assert!(s.root.join("link").symlink_metadata().is_ok());
}

#[test]
fn absolute_symlink_escape_is_refused() {
    let s = Sandbox::new();
    let tar = TarBuilder::new()
        .symlink("etc", &s.abs_outside())
        .file("etc/sub/canary2", b"pwned", 0o644)
        .finish();
    refused(s.unpack(&tar), "escapes the tree through a symlink");
    s.assert_outside_unchanged();
}

#[test]
fn chained_symlink_escape_is_refused() {
    let s = Sandbox::new();
    let tar = TarBuilder::new()
        .dir("a/")
        .symlink("a/b", "../c")
        .symlink("c", "..")
        .file("a/b/outside/canary", b"pwned", 0o644)
        .finish();
    refused(s.unpack(&tar), "escapes the tree through a symlink");
    s.assert_outside_unchanged();
}

#[test]
fn hardlink_to_outside_is_refused() {
    let s = Sandbox::new();
    let tar = TarBuilder::new()
        .hardlink("hl", "../outside/canary")
        .finish();
    refused(s.unpack(&tar), "outside the tree");
    let abs = format!("{}/canary", s.abs_outside());
    let tar = TarBuilder::new().hardlink("hl", &abs).finish();
    refused(s.unpack(&tar), "outside the tree");
    s.assert_outside_unchanged();
}

#[test]
fn hardlink_through_symlinked_dir_is_refused() {
    let s = Sandbox::new();
    let tar = TarBuilder::new()
        .symlink("out", &s.abs_outside())
        .hardlink("hl", "out/canary")
        .finish();
    refused(s.unpack(&tar), "escapes the tree through a symlink");
    s.assert_outside_unchanged();
}

#[test]
fn writing_over_a_symlink_replaces_the_link_not_its_target() {
    let s = Sandbox::new();
    let target = format!("{}/canary", s.abs_outside());
    let tar = TarBuilder::new()
        .symlink("x", &target)
        .file("x", b"pwned", 0o644)
        .symlink("y", &target)
        .hardlink("z", "y")
        .file("z", b"pwned", 0o644)
        .finish();
    s.unpack(&tar).expect("these entries are legal");
    s.assert_outside_unchanged();
    assert_eq!(std::fs::read(s.root.join("x")).expect("read"), b"pwned");
    assert!(
        std::fs::symlink_metadata(s.root.join("x"))
            .expect("stat")
            .is_file()
    );
}

#[test]
fn whiteout_through_symlink_is_refused() {
    let s = Sandbox::new();
    let tar = TarBuilder::new()
        .symlink("out", &s.abs_outside())
        .file("out/.wh.canary", b"", 0o644)
        .finish();
    refused(s.unpack(&tar), "escapes the tree through a symlink");
    let tar = TarBuilder::new().file(".wh...", b"", 0o644).finish();
    assert!(
        s.unpack(&tar).is_err(),
        "a whiteout of '..' must be refused"
    );
    s.assert_outside_unchanged();
}

#[test]
fn opaque_whiteout_through_symlink_is_refused() {
    let s = Sandbox::new();
    let tar = TarBuilder::new()
        .symlink("out", "../outside")
        .file("out/.wh..wh..opq", b"", 0o644)
        .finish();
    refused(s.unpack(&tar), "escapes the tree through a symlink");
    s.assert_outside_unchanged();
}

#[test]
fn device_nodes_only_where_allowed() {
    let s = Sandbox::new();
    let tar = TarBuilder::new()
        .dir("dev/")
        .chardev("dev/mem", 1, 1)
        .finish();
    let report = s.unpack(&tar).expect("devices are skipped, not fatal");
    assert_eq!(report.skipped_devices, vec!["dev/mem".to_string()]);
    assert!(
        s.root.join("dev/mem").symlink_metadata().is_err(),
        "no device node may be created"
    );

    let opts = UnpackOptions {
        allow_devices: true,
        ..UnpackOptions::default()
    };
    let tar = TarBuilder::new()
        .dir("dev/")
        .chardev("dev/null", 1, 3)
        .finish();
    unpack_layer(&s.root, tar.as_slice(), &opts).expect("allowed");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(s.root.join("dev/null"))
            .expect("stat")
            .file_type()
            .is_char_device()
    );
    s.assert_outside_unchanged();
}

#[test]
fn whiteouts_apply_to_lower_layers() {
    let s = Sandbox::new();
    let lower = TarBuilder::new()
        .dir("etc/")
        .file("etc/keep", b"1", 0o644)
        .file("etc/gone", b"1", 0o644)
        .dir("opq/")
        .file("opq/old", b"1", 0o644)
        .dir("opq/sub/")
        .file("opq/sub/old", b"1", 0o644)
        .finish();
    s.unpack(&lower).expect("lower");
    let upper = TarBuilder::new()
        .file("etc/.wh.gone", b"", 0o644)
        .dir("opq/")
        .file("opq/new", b"2", 0o644)
        .file("opq/.wh..wh..opq", b"", 0o644)
        .finish();
    s.unpack(&upper).expect("upper");
    assert!(s.root.join("etc/keep").exists());
    assert!(!s.root.join("etc/gone").exists());
    assert!(!s.root.join("etc/.wh.gone").exists());
    assert!(
        s.root.join("opq/new").exists(),
        "same-layer entries survive an opaque whiteout"
    );
    assert!(!s.root.join("opq/old").exists());
    assert!(!s.root.join("opq/sub").exists());
    assert!(!s.root.join("opq/.wh..wh..opq").exists());
}

#[derive(Clone, Debug)]
enum Ent {
    File(String),
    Dir(String),
    Sym(String, String),
    Hard(String, String),
}

fn path_strategy() -> impl Strategy<Value = String> {
    let comp = prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just("link".to_string()),
        Just(".wh.a".to_string()),
        Just(".wh..wh..opq".to_string()),
        Just("".to_string()),
    ];
    (
        proptest::bool::weighted(0.1),
        proptest::collection::vec(comp, 1..4),
    )
        .prop_map(|(abs, comps)| {
            let p = comps.join("/");
            if abs { format!("/{p}") } else { p }
        })
}

fn target_strategy(outside: String) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_string()),
        Just("../..".to_string()),
        Just("/".to_string()),
        Just(outside.clone()),
        Just(format!("{outside}/canary")),
        Just("a".to_string()),
        Just("a/b".to_string()),
        Just("../outside".to_string()),
        Just(".".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_archives_never_escape(
        ents in proptest::collection::vec(
            (0u8..4, path_strategy(), target_strategy("OUTSIDE".into())), 1..12)
    ) {
        let s = Sandbox::new();
        let outside = s.abs_outside();
        let ents: Vec<Ent> = ents.into_iter().map(|(k, p, t)| {
            let t = t.replace("OUTSIDE", &outside);
            match k { 0 => Ent::File(p), 1 => Ent::Dir(p), 2 => Ent::Sym(p, t), _ => Ent::Hard(p, t) }
        }).collect();
        let mut b = TarBuilder::new();
        for e in &ents {
            match e {
                Ent::File(p) => { b.file(p, b"pwned", 0o644); }
                Ent::Dir(p) => { b.dir(p); }
                Ent::Sym(p, t) => { b.symlink(p, t); }
                Ent::Hard(p, t) => { b.hardlink(p, t); }
            }
        }
        let tar = b.finish();
        let _ = s.unpack(&tar);
        // A second layer on top of whatever the first left must not escape either.
        let _ = s.unpack(&tar);
        s.assert_outside_unchanged();
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let s = Sandbox::new();
        let _ = s.unpack(&bytes);
        s.assert_outside_unchanged();
    }
}

#[allow(dead_code)]
fn _unused(_: &Path) {}
