//! GPT handling for the A/B `/usr` slots: the priority/tries/successful
//! attribute bits, `prioritize`, and the boot loader's choice rule.
//!
//! The bit layout is ChromeOS cgpt's (priority 48-51, tries 52-55, successful
//! 56). The choice rule is CoreOS GRUB's `gptprio.next`, kept as a pure
//! function ([`select_boot`]) so tests can simulate boots on disk images.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use uuid::{Uuid, uuid};

/// Partition type GUID of a CoreOS `/usr` slot (sgdisk code 8500).
pub const USR_PARTITION_TYPE: Uuid = uuid!("5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6");
/// Partition type GUID of the CoreOS root filesystem (sgdisk code 8501).
pub const ROOT_PARTITION_TYPE: Uuid = uuid!("3884dd41-8582-4404-b9a8-e9b84f2df50e");

const PRIORITY_SHIFT: u32 = 48;
const TRIES_SHIFT: u32 = 52;
const SUCCESSFUL_BIT: u32 = 56;
const MAX_PRIORITY: u8 = 15;

/// Errors of GPT reads and writes.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the partition table of {path}: {source}")]
    Read {
        path: PathBuf,
        source: gptman::Error,
    },
    #[error("writing the partition table of {path}: {source}")]
    Write {
        path: PathBuf,
        source: gptman::Error,
    },
    #[error("partition {number} of {path} is not a USR partition")]
    NotUsr { path: PathBuf, number: u32 },
    #[error("{field} value {value} does not fit in 4 bits")]
    OutOfRange { field: &'static str, value: u8 },
}

/// The gptprio fields of one partition's attribute bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrioAttrs {
    pub priority: u8,
    pub tries: u8,
    pub successful: bool,
}

impl PrioAttrs {
    /// Decodes the gptprio fields of a GPT attribute word.
    pub fn from_bits(bits: u64) -> Self {
        PrioAttrs {
            priority: ((bits >> PRIORITY_SHIFT) & 0xf) as u8,
            tries: ((bits >> TRIES_SHIFT) & 0xf) as u8,
            successful: (bits >> SUCCESSFUL_BIT) & 1 == 1,
        }
    }

    /// Replaces the gptprio fields of `bits`, keeping every other bit.
    pub fn apply_to(self, bits: u64) -> Result<u64, GptError> {
        if self.priority > MAX_PRIORITY {
            return Err(GptError::OutOfRange {
                field: "priority",
                value: self.priority,
            });
        }
        if self.tries > 15 {
            return Err(GptError::OutOfRange {
                field: "tries",
                value: self.tries,
            });
        }
        let mask = (0xf << PRIORITY_SHIFT) | (0xf << TRIES_SHIFT) | (1 << SUCCESSFUL_BIT);
        Ok((bits & !mask)
            | (u64::from(self.priority) << PRIORITY_SHIFT)
            | (u64::from(self.tries) << TRIES_SHIFT)
            | (u64::from(self.successful) << SUCCESSFUL_BIT))
    }

    /// Whether the boot loader may pick this partition.
    pub fn bootable(self) -> bool {
        self.priority > 0 && (self.tries > 0 || self.successful)
    }
}

/// One USR partition: its number in the table and its gptprio fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub number: u32,
    pub attrs: PrioAttrs,
}

/// What the boot loader decided: the partition to boot and its attributes
/// after the attempt (tries decremented), to be written back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootChoice {
    pub number: u32,
    pub attrs: PrioAttrs,
}

/// The boot loader's rule (`gptprio.next`): among the USR slots, in table
/// order, pick the bootable one with the strictly highest priority (a tie goes
/// to the earlier partition); if its tries are above 0 they are decremented,
/// even when it is marked successful.
pub fn select_boot(slots: &[Slot]) -> Option<BootChoice> {
    let mut best: Option<Slot> = None;
    for slot in slots {
        if !slot.attrs.bootable() {
            continue;
        }
        if best.is_none_or(|b| slot.attrs.priority > b.attrs.priority) {
            best = Some(*slot);
        }
    }
    best.map(|slot| {
        let mut attrs = slot.attrs;
        attrs.tries = attrs.tries.saturating_sub(1);
        BootChoice {
            number: slot.number,
            attrs,
        }
    })
}

/// cgpt's `prioritize` on USR slots: `target` gets the highest priority (one
/// above the others, at most 15, unless it is already strictly highest), and
/// the others keep their relative order below it; no slot with a priority is
/// lowered to 0.
pub fn prioritize(slots: &mut [Slot], target: u32) {
    let others_max = slots
        .iter()
        .filter(|s| s.number != target)
        .map(|s| s.attrs.priority)
        .max()
        .unwrap_or(0);
    let Some(current) = slots
        .iter()
        .find(|s| s.number == target)
        .map(|s| s.attrs.priority)
    else {
        return;
    };
    let top = if current > others_max && current > 0 {
        current
    } else {
        (others_max + 1).min(MAX_PRIORITY)
    };
    // Distinct priorities of the others, highest first, re-ranked below `top`.
    let mut levels: Vec<u8> = slots
        .iter()
        .filter(|s| s.number != target && s.attrs.priority > 0)
        .map(|s| s.attrs.priority)
        .collect();
    levels.sort_unstable_by(|a, b| b.cmp(a));
    levels.dedup();
    let mut next = top.saturating_sub(1).max(1);
    let mut remap = Vec::with_capacity(levels.len());
    for level in levels {
        let new = level.min(next);
        remap.push((level, new));
        next = new.saturating_sub(1).max(1);
    }
    for slot in slots.iter_mut() {
        if slot.number == target {
            slot.attrs.priority = top;
        } else if let Some((_, new)) = remap.iter().find(|(old, _)| *old == slot.attrs.priority) {
            slot.attrs.priority = *new;
        }
    }
}

/// A disk (block device or image file) with its GPT loaded.
pub struct GptDisk {
    path: PathBuf,
    gpt: gptman::GPT,
}

/// Byte range of a partition on its disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionExtent {
    pub offset: u64,
    pub len: u64,
}

impl GptDisk {
    /// Reads the GPT of `path` (512- or 4096-byte sectors).
    pub fn open(path: &Path) -> Result<Self, GptError> {
        let mut file = File::open(path).map_err(|source| GptError::Open {
            path: path.to_owned(),
            source,
        })?;
        let gpt = gptman::GPT::find_from(&mut file).map_err(|source| GptError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(GptDisk {
            path: path.to_owned(),
            gpt,
        })
    }

    /// The disk's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The USR partitions in table order.
    pub fn usr_slots(&self) -> Vec<Slot> {
        let usr = USR_PARTITION_TYPE.to_bytes_le();
        self.gpt
            .iter()
            .filter(|(_, p)| p.is_used() && p.partition_type_guid == usr)
            .map(|(number, p)| Slot {
                number,
                attrs: PrioAttrs::from_bits(p.attribute_bits),
            })
            .collect()
    }

    /// The gptprio fields of a USR partition.
    pub fn attrs(&self, number: u32) -> Result<PrioAttrs, GptError> {
        self.usr_slots()
            .into_iter()
            .find(|s| s.number == number)
            .map(|s| s.attrs)
            .ok_or_else(|| self.not_usr(number))
    }

    /// The partition's label.
    pub fn label(&self, number: u32) -> Option<String> {
        self.gpt
            .iter()
            .find(|(n, p)| *n == number && p.is_used())
            .map(|(_, p)| p.partition_name.as_str().to_owned())
    }

    /// Byte offset and length of a partition.
    pub fn extent(&self, number: u32) -> Result<PartitionExtent, GptError> {
        let range = self
            .gpt
            .get_partition_byte_range(number)
            .map_err(|source| GptError::Read {
                path: self.path.clone(),
                source,
            })?;
        Ok(PartitionExtent {
            offset: *range.start(),
            len: range.end() - range.start() + 1,
        })
    }

    /// Sets the gptprio fields of a USR partition (in memory).
    pub fn set_attrs(&mut self, number: u32, attrs: PrioAttrs) -> Result<(), GptError> {
        self.attrs(number)?;
        let entry = &mut self.gpt[number];
        entry.attribute_bits = attrs.apply_to(entry.attribute_bits)?;
        Ok(())
    }

    /// Applies [`prioritize`] to the USR slots (in memory).
    pub fn prioritize(&mut self, target: u32) -> Result<(), GptError> {
        self.attrs(target)?;
        let mut slots = self.usr_slots();
        prioritize(&mut slots, target);
        for slot in slots {
            self.set_attrs(slot.number, slot.attrs)?;
        }
        Ok(())
    }

    /// Writes both GPT copies back with fresh CRCs.
    pub fn write(&mut self) -> Result<(), GptError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|source| GptError::Open {
                path: self.path.clone(),
                source,
            })?;
        self.gpt
            .write_into(&mut file)
            .map_err(|source| GptError::Write {
                path: self.path.clone(),
                source,
            })?;
        file.sync_all().map_err(|source| GptError::Write {
            path: self.path.clone(),
            source: gptman::Error::Io(source),
        })?;
        Ok(())
    }

    fn not_usr(&self, number: u32) -> GptError {
        GptError::NotUsr {
            path: self.path.clone(),
            number,
        }
    }
}

/// postinst's flip after an update: the new slot gets tries 1, not
/// successful, and the top priority, so the boot loader tries it next.
pub fn mark_for_next_boot(disk: &Path, number: u32) -> Result<(), GptError> {
    let mut gpt = GptDisk::open(disk)?;
    let mut attrs = gpt.attrs(number)?;
    attrs.successful = false;
    attrs.tries = 1;
    gpt.set_attrs(number, attrs)?;
    gpt.prioritize(number)?;
    gpt.write()
}

/// setgoodroot after a stable boot: the booted slot becomes successful with
/// tries 0 and the top priority.
pub fn set_good_root(disk: &Path, number: u32) -> Result<(), GptError> {
    let mut gpt = GptDisk::open(disk)?;
    let mut attrs = gpt.attrs(number)?;
    attrs.successful = true;
    attrs.tries = 0;
    gpt.set_attrs(number, attrs)?;
    gpt.prioritize(number)?;
    gpt.write()
}

/// One boot attempt by the boot loader on `disk`: picks a slot with
/// [`select_boot`] and writes back its decremented tries. `None` when no USR
/// slot is bootable.
pub fn boot_attempt(disk: &Path) -> Result<Option<u32>, GptError> {
    let mut gpt = GptDisk::open(disk)?;
    let Some(choice) = select_boot(&gpt.usr_slots()) else {
        return Ok(None);
    };
    gpt.set_attrs(choice.number, choice.attrs)?;
    gpt.write()?;
    Ok(Some(choice.number))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(priority: u8, tries: u8, successful: bool) -> PrioAttrs {
        PrioAttrs {
            priority,
            tries,
            successful,
        }
    }

    #[test]
    fn bits_round_trip_like_sgdisk() {
        // sgdisk shows A as 0101000000000000 (prio 1, successful).
        let a = PrioAttrs::from_bits(0x0101_0000_0000_0000);
        assert_eq!(a, attrs(1, 0, true));
        // B after the postinst flip: 0012000000000000.
        let b = PrioAttrs::from_bits(0x0012_0000_0000_0000);
        assert_eq!(b, attrs(2, 1, false));
        assert_eq!(b.apply_to(0).unwrap(), 0x0012_0000_0000_0000);
        // Other bits survive.
        assert_eq!(a.apply_to(0x1 | (1 << 63)).unwrap(), 0x8101_0000_0000_0001);
        assert!(attrs(16, 0, false).apply_to(0).is_err());
    }

    #[test]
    fn bootable_rule() {
        assert!(!attrs(0, 5, true).bootable());
        assert!(!attrs(3, 0, false).bootable());
        assert!(attrs(3, 0, true).bootable());
        assert!(attrs(3, 1, false).bootable());
    }

    #[test]
    fn select_prefers_strictly_higher_priority() {
        let slots = [
            Slot {
                number: 3,
                attrs: attrs(1, 0, true),
            },
            Slot {
                number: 4,
                attrs: attrs(2, 1, false),
            },
        ];
        let choice = select_boot(&slots).unwrap();
        assert_eq!(choice.number, 4);
        assert_eq!(choice.attrs, attrs(2, 0, false));

        // A tie goes to the earlier partition.
        let tie = [
            Slot {
                number: 3,
                attrs: attrs(2, 0, true),
            },
            Slot {
                number: 4,
                attrs: attrs(2, 1, false),
            },
        ];
        assert_eq!(select_boot(&tie).unwrap().number, 3);

        // Tries are decremented even on a successful slot.
        let good = [Slot {
            number: 3,
            attrs: attrs(1, 2, true),
        }];
        assert_eq!(select_boot(&good).unwrap().attrs, attrs(1, 1, true));

        let none = [Slot {
            number: 3,
            attrs: attrs(1, 0, false),
        }];
        assert_eq!(select_boot(&none), None);
    }

    #[test]
    fn prioritize_reranks_below_target() {
        let mut slots = vec![
            Slot {
                number: 3,
                attrs: attrs(1, 0, true),
            },
            Slot {
                number: 4,
                attrs: attrs(0, 1, false),
            },
        ];
        prioritize(&mut slots, 4);
        assert_eq!(slots[1].attrs.priority, 2);
        assert_eq!(slots[0].attrs.priority, 1);

        // Back to A: A on top, B below it but not 0.
        prioritize(&mut slots, 3);
        assert_eq!(slots[0].attrs.priority, 3);
        assert_eq!(slots[1].attrs.priority, 2);

        // At the ceiling the others are pushed down, never to 0.
        let mut full = vec![
            Slot {
                number: 3,
                attrs: attrs(15, 0, true),
            },
            Slot {
                number: 4,
                attrs: attrs(1, 0, true),
            },
        ];
        prioritize(&mut full, 4);
        assert_eq!(full[1].attrs.priority, 15);
        assert_eq!(full[0].attrs.priority, 14);
        let mut low = vec![
            Slot {
                number: 3,
                attrs: attrs(1, 0, true),
            },
            Slot {
                number: 4,
                attrs: attrs(1, 0, true),
            },
            Slot {
                number: 5,
                attrs: attrs(1, 0, true),
            },
        ];
        prioritize(&mut low, 5);
        assert_eq!(low[2].attrs.priority, 2);
        assert_eq!(low[0].attrs.priority, 1);
        assert_eq!(low[1].attrs.priority, 1);
    }

    proptest::proptest! {
        #[test]
        fn prioritized_slot_is_chosen_when_bootable(
            prios in proptest::collection::vec(0u8..16, 1..5),
            pick in 0usize..5,
        ) {
            let mut slots: Vec<Slot> = prios
                .iter()
                .enumerate()
                .map(|(i, p)| Slot { number: i as u32 + 3, attrs: attrs(*p, 0, true) })
                .collect();
            let target = (pick % slots.len()) as u32 + 3;
            let before: Vec<u8> = slots.iter().map(|s| s.attrs.priority).collect();
            prioritize(&mut slots, target);
            proptest::prop_assert_eq!(select_boot(&slots).map(|c| c.number), Some(target));
            for (slot, old) in slots.iter().zip(before) {
                if old > 0 {
                    proptest::prop_assert!(slot.attrs.priority > 0);
                }
            }
        }
    }
}
