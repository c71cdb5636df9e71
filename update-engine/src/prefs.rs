//! The engine's persistent prefs: one file per key in a directory
//! (`/var/lib/update_engine/prefs/` on a machine).

use std::path::{Path, PathBuf};

pub const PREVIOUS_VERSION: &str = "previous-version";
pub const ALEPH_VERSION: &str = "aleph-version";
pub const UPDATE_CHECK_RESPONSE_HASH: &str = "update-check-response-hash";
pub const SETGOODROOT_DONE: &str = "setgoodroot-boot-id";

/// A prefs directory.
#[derive(Clone, Debug)]
pub struct Prefs {
    dir: PathBuf,
}

impl Prefs {
    /// Uses `dir`, creating it if needed.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Prefs {
            dir: dir.to_owned(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The value of `key`, `None` if it was never set.
    pub fn get(&self, key: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(key)).ok()
    }

    /// Sets `key` (written to a temporary file, then renamed).
    pub fn set(&self, key: &str, value: &str) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".{key}.tmp"));
        std::fs::write(&tmp, value)?;
        std::fs::rename(tmp, self.dir.join(key))
    }

    /// Removes `key`.
    pub fn delete(&self, key: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_delete() {
        let dir = tempfile::tempdir().unwrap();
        let prefs = Prefs::open(&dir.path().join("prefs")).unwrap();
        assert_eq!(prefs.get(PREVIOUS_VERSION), None);
        prefs.set(PREVIOUS_VERSION, "1.0.0").unwrap();
        assert_eq!(prefs.get(PREVIOUS_VERSION).as_deref(), Some("1.0.0"));
        prefs.set(PREVIOUS_VERSION, "").unwrap();
        assert_eq!(prefs.get(PREVIOUS_VERSION).as_deref(), Some(""));
        prefs.delete(PREVIOUS_VERSION).unwrap();
        prefs.delete(PREVIOUS_VERSION).unwrap();
        assert_eq!(prefs.get(PREVIOUS_VERSION), None);
    }
}
