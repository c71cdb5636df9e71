//! The update cycle on a real block device: the GPT image attached to a loop
//! device, partition nodes made with `partx -a` (this kernel does not scan
//! GPT by itself), the engine writing through the whole-disk node.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use update_engine::engine::{Outcome, split_partition_device};
use update_engine::gpt;

use crate::common::*;
use crate::flow::{IMG_LEN, SUCCESS_STATES, attempt};

/// A loop device attached to an image; detached (dropping its partitions)
/// on drop.
struct Loop {
    dev: String,
}

impl Loop {
    async fn attach(image: &Path) -> anyhow::Result<Loop> {
        Self::attach_with(image, &[]).await
    }

    async fn attach_with(image: &Path, extra: &[&str]) -> anyhow::Result<Loop> {
        // Another process may grab the free device between lookup and
        // attach; retry a few times.
        let mut last = None;
        for _ in 0..10 {
            match run(Command::new("losetup")
                .args(["-f", "--show", "-P"])
                .args(extra)
                .arg(image))
            {
                Ok(out) => {
                    let dev = out.trim().to_owned();
                    let lo = Loop { dev };
                    if !lo.part(3).exists() {
                        run(Command::new("partx").arg("-a").arg(&lo.dev))?;
                    }
                    poll("partition nodes", Duration::from_secs(20), async || {
                        (lo.part(3).exists() && lo.part(4).exists()).then_some(())
                    })
                    .await?;
                    return Ok(lo);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("losetup failed")))
    }

    fn part(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}p{n}", self.dev))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn read_node(path: &Path, len: usize) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; len];
    std::fs::File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .read_exact(&mut buf)?;
    Ok(buf)
}

#[tokio::test]
async fn update_cycle_on_a_loop_device() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let old = image(1, IMG_LEN);
    let image_file = make_disk(dir.path(), &old)?;
    let lo = Loop::attach(&image_file).await?;
    let usr_a = lo.part(PART_A);
    let blkid = run(Command::new("blkid").arg("-p").arg(lo.part(PART_B)))?;
    assert!(blkid.contains("PART_ENTRY_NAME=\"USR-B\""), "{blkid}");

    // The daemon finds its disk from the /usr partition node like this.
    let (disk, active) =
        split_partition_device(&usr_a.to_string_lossy()).context("splitting the partition node")?;
    assert_eq!(
        (disk.to_string_lossy().as_ref(), active),
        (lo.dev.as_str(), PART_A)
    );

    let releases = dir.path().join("releases");
    let v2 = image(2, IMG_LEN);
    add_release(&releases, "stable", "2.0.0", &v2, "test-key.pem")?;
    let server = Server::start(&releases, None).await?;
    let settings = engine_settings(
        &dir.path().join("root"),
        &disk,
        active,
        &server.update_url(),
        "stable",
        "1.0.0",
    )?;
    let (states, outcome) = attempt(settings).await?;
    assert_eq!(states, SUCCESS_STATES);
    assert_eq!(
        outcome,
        Outcome::Updated {
            version: "2.0.0".into(),
            partition: PART_B
        }
    );
    // Read back through the partition nodes.
    assert!(
        read_node(&lo.part(PART_B), IMG_LEN)? == v2,
        "USR-B does not hold the new image"
    );
    assert!(read_node(&usr_a, IMG_LEN)? == old, "USR-A changed");
    assert_eq!(sgdisk_attrs(&disk, PART_B)?, "0012000000000000");
    let verify = run(Command::new("sgdisk").arg("-v").arg(&disk))?;
    assert!(verify.contains("No problems found"), "{verify}");
    // The boot loader would try B, then fall back to A without setgoodroot.
    assert_eq!(gpt::boot_attempt(&disk)?, Some(PART_B));
    assert_eq!(gpt::boot_attempt(&disk)?, Some(PART_A));
    Ok(())
}

#[tokio::test]
async fn disk_write_error_is_error_14() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let old = image(1, IMG_LEN);
    let image_file = make_disk(dir.path(), &old)?;
    let before = std::fs::read(&image_file)?;
    let lo = Loop::attach_with(&image_file, &["-r"]).await?;
    let disk = PathBuf::from(&lo.dev);
    let ro = run(Command::new("blockdev").arg("--getro").arg(&disk))?;
    assert_eq!(ro.trim(), "1", "{} is not read-only", lo.dev);
    let releases = dir.path().join("releases");
    add_release(
        &releases,
        "stable",
        "2.0.0",
        &image(2, 64 << 10),
        "test-key.pem",
    )?;
    let server = Server::start(&releases, None).await?;
    let settings = engine_settings(
        &dir.path().join("root"),
        &disk,
        PART_A,
        &server.update_url(),
        "stable",
        "1.0.0",
    )?;
    let machine = settings.machine_id.clone();
    let (states, outcome) = attempt(settings).await?;
    // Root may open a read-only device for writing, but every write fails
    // (EPERM): a disk write error, 14, and back to IDLE.
    assert!(
        matches!(outcome, Outcome::Failed { code: 14, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        states.last(),
        Some(&update_engine::status::UpdateStatus::Idle)
    );
    let report = server.status().await?;
    let codes: Vec<Option<u32>> = report.machines[&machine]
        .events
        .iter()
        .filter(|e| e.event_type == 3 && e.event_result == 0)
        .map(|e| e.error_code)
        .collect();
    assert_eq!(codes, vec![Some(14)]);
    drop(lo);
    assert!(std::fs::read(&image_file)? == before, "the disk changed");
    Ok(())
}
