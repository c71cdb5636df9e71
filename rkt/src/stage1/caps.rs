//! Linux capabilities: names, rkt's default set, and dropping the rest (bounding set + capset).

use crate::error::{Error, Result};

/// Capability names in kernel numbering order (CAP_CHOWN = 0 ...).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The set rkt's stage1 gives apps by default (systemd-nspawn's historical default).
pub const DEFAULT: [&str; 14] = [
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETFCAP",
    "CAP_SYS_CHROOT",
];

/// Normalizes `chown`, `cap_chown` or `CAP_CHOWN` to `CAP_CHOWN`, checking it exists.
pub fn normalize(name: &str) -> Result<String> {
    let up = name.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    if NAMES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(Error::Usage(format!("unknown capability {name:?}")))
    }
}

fn number(name: &str) -> Option<u32> {
    NAMES.iter().position(|n| *n == name).map(|p| p as u32)
}

/// The capability mask of a list of names.
pub fn mask(names: &[String]) -> u64 {
    names
        .iter()
        .filter_map(|n| number(n))
        .fold(0u64, |m, c| m | (1u64 << c))
}

/// Drops every capability outside `keep` from the bounding set (needs CAP_SETPCAP).
pub fn drop_bounding(keep: u64) -> Result<()> {
    for cap in 0..64u32 {
        if keep & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break; // past the kernel's last capability
            }
            return Err(Error::Stage1(format!(
                "dropping capability {cap} from the bounding set: {e}"
            )));
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets the effective, permitted and inheritable sets of the calling thread to `keep`.
pub fn set_process(keep: u64) -> Result<()> {
    let mut hdr = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let lo = keep as u32;
    let hi = (keep >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: lo,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: hi,
        },
    ];
    // SAFETY: capset reads a valid header and two data structs, as _LINUX_CAPABILITY_VERSION_3 requires.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r != 0 {
        return Err(Error::Stage1(format!(
            "capset: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_and_mask() {
        assert_eq!(normalize("net_admin").unwrap(), "CAP_NET_ADMIN");
        assert!(normalize("CAP_BOGUS").is_err());
        assert_eq!(mask(&["CAP_CHOWN".into(), "CAP_KILL".into()]), 1 | (1 << 5));
        assert_eq!(number("CAP_SYS_ADMIN"), Some(21));
    }
}
