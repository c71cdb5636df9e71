//! The CrAU payload: created by the library and by `update-server payload
//! create`, signature checks with the right and wrong keys, tampering, and
//! applying REPLACE / REPLACE_BZ operations to a GPT partition.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::process::Command;

use proto::chromeos_update_engine::install_operation::Type as OpType;
use update_engine::gpt::GptDisk;
use update_engine::payload::{self, PayloadError, apply, sign};

use crate::common::{PART_A, PART_B, data, image, make_disk, read_partition, run};

#[test]
fn create_verify_apply() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let img = image(2, 3 << 20);
    let image_path = dir.path().join("usr.img");
    std::fs::write(&image_path, &img)?;
    let out = dir.path().join("update.gz");
    let key = sign::load_private_key(&data("test-key.pem"))?;
    let summary = payload::create::create_full_payload(&image_path, &key, &out)?;
    assert_eq!(summary.size, std::fs::metadata(&out)?.len());
    assert_eq!(summary.image_size, img.len() as u64);

    let mut f = std::fs::File::open(&out)?;
    let parsed = payload::read_manifest(&mut f)?;
    let types: Vec<i32> = parsed
        .manifest
        .partition_operations
        .iter()
        .map(|o| o.r#type)
        .collect();
    assert!(types.contains(&(OpType::Replace as i32)), "{types:?}");
    assert!(types.contains(&(OpType::ReplaceBz as i32)), "{types:?}");
    assert_eq!(parsed.manifest.block_size(), 4096);

    let good = sign::load_public_key(&data("test-key.pub.pem"))?;
    let other = sign::load_public_key(&data("other-key.pub.pem"))?;
    sign::verify_payload(&mut f, &parsed, &good)?;
    assert!(matches!(
        sign::verify_payload(&mut f, &parsed, &other),
        Err(PayloadError::Signature(_))
    ));

    let disk = make_disk(dir.path(), b"the old usr")?;
    let before_a = read_partition(&disk, PART_A)?;
    let extent = GptDisk::open(&disk)?.extent(PART_B)?;
    let mut target = OpenOptions::new().read(true).write(true).open(&disk)?;
    let mut calls = 0;
    apply::apply_payload(&mut f, &parsed, &mut target, extent, |_, _| calls += 1)?;
    assert_eq!(calls, parsed.manifest.partition_operations.len());
    apply::verify_written(&mut target, &parsed, extent)?;
    assert_eq!(&read_partition(&disk, PART_B)?[..img.len()], &img[..]);
    assert_eq!(read_partition(&disk, PART_A)?, before_a);

    // A changed byte in the written partition is caught.
    target.seek(SeekFrom::Start(extent.offset + 5))?;
    target.write_all(&[img[5] ^ 0xff])?;
    assert!(matches!(
        apply::verify_written(&mut target, &parsed, extent),
        Err(PayloadError::Verification(_))
    ));
    Ok(())
}

#[test]
fn tampering_breaks_the_signature() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let image_path = dir.path().join("usr.img");
    std::fs::write(&image_path, image(3, 64 << 10))?;
    let out = dir.path().join("update.gz");
    let key = sign::load_private_key(&data("other-key.pem"))?;
    payload::create::create_full_payload(&image_path, &key, &out)?;
    let good = sign::load_public_key(&data("other-key.pub.pem"))?;
    let mut bytes = std::fs::read(&out)?;
    let parsed = payload::read_manifest(&mut std::io::Cursor::new(&bytes))?;
    sign::verify_payload(&mut std::io::Cursor::new(&bytes), &parsed, &good)?;
    let i = parsed.data_start as usize + 10;
    bytes[i] ^= 1;
    assert!(sign::verify_payload(&mut std::io::Cursor::new(&bytes), &parsed, &good).is_err());
    bytes[i] ^= 1;
    bytes.truncate(bytes.len() - 1);
    assert!(sign::verify_payload(&mut std::io::Cursor::new(&bytes), &parsed, &good).is_err());
    Ok(())
}

#[test]
fn payload_create_command() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let image_path = dir.path().join("usr.img");
    let img = image(4, (1 << 20) + 1000);
    std::fs::write(&image_path, &img)?;
    let out = dir.path().join("update.gz");
    let stdout = run(Command::new(env!("CARGO_BIN_EXE_update-server"))
        .args(["payload", "create", "--key"])
        .arg(data("test-key.pem"))
        .arg("--image")
        .arg(&image_path)
        .arg("--output")
        .arg(&out))?;
    assert!(stdout.contains("sha256"), "{stdout}");
    let bytes = std::fs::read(&out)?;
    assert_eq!(&bytes[..4], b"CrAU");
    let parsed = payload::read_manifest(&mut std::io::Cursor::new(&bytes))?;
    let info = parsed
        .manifest
        .new_partition_info
        .clone()
        .unwrap_or_default();
    assert_eq!(info.size(), img.len() as u64);
    let good = sign::load_public_key(&data("test-key.pub.pem"))?;
    sign::verify_payload(&mut std::io::Cursor::new(&bytes), &parsed, &good)?;
    // A missing key is a clear error, not a payload.
    let bad = Command::new(env!("CARGO_BIN_EXE_update-server"))
        .args(["payload", "create", "--key", "/nonexistent.pem", "--image"])
        .arg(&image_path)
        .arg("--output")
        .arg(dir.path().join("x.gz"))
        .output()?;
    assert!(!bad.status.success());
    assert!(!dir.path().join("x.gz").exists());
    Ok(())
}

#[test]
fn hostile_extents_are_errors_not_panics() -> anyhow::Result<()> {
    use proto::chromeos_update_engine::{DeltaArchiveManifest, Extent, InstallOperation};
    use proto::prost::Message;
    let dir = tempfile::tempdir()?;
    let disk = make_disk(dir.path(), b"old")?;
    let before_a = read_partition(&disk, PART_A)?;
    let extent = GptDisk::open(&disk)?.extent(PART_B)?;
    let data = vec![7u8; 4096];
    for (start, blocks) in [
        (0, u64::MAX / 2), // size overflow
        (u64::MAX / 2, 1), // offset overflow
        (1 << 20, 1),      // past the partition
        (0, 2),            // more extent than data
    ] {
        let manifest = DeltaArchiveManifest {
            partition_operations: vec![InstallOperation {
                r#type: OpType::Replace as i32,
                data_offset: Some(0),
                data_length: Some(data.len() as u32),
                dst_extents: vec![Extent {
                    start_block: Some(start),
                    num_blocks: Some(blocks),
                }],
                ..Default::default()
            }],
            block_size: Some(4096),
            ..Default::default()
        };
        let body = manifest.encode_to_vec();
        let mut bytes = payload::encode_header(body.len() as u64).to_vec();
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&data);
        let file = dir.path().join("p.bin");
        std::fs::write(&file, &bytes)?;
        let mut f = std::fs::File::open(&file)?;
        let parsed = payload::read_manifest(&mut f)?;
        let mut target = OpenOptions::new().read(true).write(true).open(&disk)?;
        let res = apply::apply_payload(&mut f, &parsed, &mut target, extent, |_, _| {});
        assert!(
            matches!(res, Err(PayloadError::Operation { .. })),
            "({start}, {blocks}): {res:?}"
        );
    }
    assert_eq!(read_partition(&disk, PART_A)?, before_a);
    Ok(())
}
