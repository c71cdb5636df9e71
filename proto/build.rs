//! Compiles every `.proto` file under `proto/` with tonic/prost, using the
//! vendored `protoc` so that a fresh machine needs no protobuf compiler.
//!
//! All packages are gathered into one generated module tree (`_includes.rs`),
//! so adding a contract is adding a `.proto` file: no build script change.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let root = PathBuf::from("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &mut files)?;
    files.sort();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    if files.is_empty() {
        std::fs::write(out.join("_includes.rs"), "")?;
        return Ok(());
    }
    tonic_prost_build::configure()
        .include_file("_includes.rs")
        .compile_protos(&files, &[root])?;
    Ok(())
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            files.push(path);
        }
    }
    Ok(())
}
