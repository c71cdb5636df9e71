//! GPT slot logic on real disk images made by sgdisk: our bits agree with
//! sgdisk's, and simulated boots, failed boots and rollbacks follow the boot
//! loader's rule.

use std::process::Command;

use update_engine::gpt::{self, GptDisk, PrioAttrs};

use crate::common::{PART_A, PART_B, make_disk, run, sgdisk_attrs};

fn attrs(priority: u8, tries: u8, successful: bool) -> PrioAttrs {
    PrioAttrs {
        priority,
        tries,
        successful,
    }
}

#[test]
fn reads_what_sgdisk_wrote() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let disk = make_disk(dir.path(), b"old")?;
    let g = GptDisk::open(&disk)?;
    let slots = g.usr_slots();
    assert_eq!(
        slots.iter().map(|s| s.number).collect::<Vec<_>>(),
        vec![PART_A, PART_B]
    );
    assert_eq!(g.attrs(PART_A)?, attrs(1, 0, true));
    assert_eq!(g.attrs(PART_B)?, attrs(0, 0, false));
    assert_eq!(g.label(PART_B).as_deref(), Some("USR-B"));
    // The spec's layout: A at sector 20480, 16 MiB.
    let a = g.extent(PART_A)?;
    assert_eq!((a.offset, a.len), (20480 * 512, 16 << 20));
    assert!(g.attrs(9).is_err(), "ROOT is not a USR slot");
    Ok(())
}

#[test]
fn postinst_flip_matches_sgdisk_and_cgpt_layout() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let disk = make_disk(dir.path(), b"old")?;
    gpt::mark_for_next_boot(&disk, PART_B)?;
    // What the spec's sgdisk recipe gives for the flip.
    assert_eq!(sgdisk_attrs(&disk, PART_B)?, "0012000000000000");
    assert_eq!(sgdisk_attrs(&disk, PART_A)?, "0101000000000000");
    let verify = run(Command::new("sgdisk").arg("-v").arg(&disk))?;
    assert!(verify.contains("No problems found"), "{verify}");
    // sgdisk writes bits that we read back.
    run(Command::new("sgdisk").args(["-A", "4:set:56"]).arg(&disk))?;
    assert_eq!(GptDisk::open(&disk)?.attrs(PART_B)?, attrs(2, 1, true));
    Ok(())
}

#[test]
fn boots_failed_boots_and_rollback() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let disk = make_disk(dir.path(), b"old")?;
    assert_eq!(gpt::boot_attempt(&disk)?, Some(PART_A));
    assert_eq!(GptDisk::open(&disk)?.attrs(PART_A)?, attrs(1, 0, true));

    // Update into B, first boot tries B and uses up its one try.
    gpt::mark_for_next_boot(&disk, PART_B)?;
    assert_eq!(gpt::boot_attempt(&disk)?, Some(PART_B));
    assert_eq!(GptDisk::open(&disk)?.attrs(PART_B)?, attrs(2, 0, false));
    // B never reached setgoodroot: the next boot rolls back to A.
    assert_eq!(gpt::boot_attempt(&disk)?, Some(PART_A));
    assert_eq!(gpt::boot_attempt(&disk)?, Some(PART_A));

    // Another update into B that boots well this time.
    gpt::mark_for_next_boot(&disk, PART_B)?;
    assert_eq!(gpt::boot_attempt(&disk)?, Some(PART_B));
    gpt::set_good_root(&disk, PART_B)?;
    assert_eq!(sgdisk_attrs(&disk, PART_B)?, "0102000000000000");
    assert_eq!(gpt::boot_attempt(&disk)?, Some(PART_B));
    assert_eq!(gpt::boot_attempt(&disk)?, Some(PART_B));

    // A cancelled slot (all bits clear) is never picked.
    run(Command::new("sgdisk").args(["-A", "4:=:0"]).arg(&disk))?;
    assert_eq!(gpt::boot_attempt(&disk)?, Some(PART_A));
    // With nothing bootable there is no choice.
    run(Command::new("sgdisk").args(["-A", "3:=:0"]).arg(&disk))?;
    assert_eq!(gpt::boot_attempt(&disk)?, None);
    Ok(())
}
