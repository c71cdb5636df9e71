//! update.conf / release lookup: for each key, the first file that contains
//! it wins, in the order `/etc/coreos/update.conf`,
//! `/usr/share/coreos/update.conf`, `/usr/share/coreos/release`.

use std::path::{Path, PathBuf};

/// Default track when no file sets `GROUP`.
pub const DEFAULT_GROUP: &str = "stable";
/// Default Omaha endpoint when no file sets `SERVER`.
pub const DEFAULT_SERVER: &str = "https://public.update.core-os.net/v1/update/";
/// Default app id when no file sets `COREOS_RELEASE_APPID`.
pub const DEFAULT_APPID: &str = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}";
/// Default board when no file sets `COREOS_RELEASE_BOARD`.
pub const DEFAULT_BOARD: &str = "amd64-usr";

/// The files searched for keys, in priority order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigPaths {
    pub files: Vec<PathBuf>,
}

impl Default for ConfigPaths {
    fn default() -> Self {
        ConfigPaths {
            files: vec![
                "/etc/coreos/update.conf".into(),
                "/usr/share/coreos/update.conf".into(),
                "/usr/share/coreos/release".into(),
            ],
        }
    }
}

impl ConfigPaths {
    /// The three files under a root directory (for tests and chroots).
    pub fn under(root: &Path) -> Self {
        ConfigPaths {
            files: ConfigPaths::default()
                .files
                .iter()
                .map(|f| root.join(f.strip_prefix("/").unwrap_or(f)))
                .collect(),
        }
    }

    /// The value of `key` from the first file containing it. Files that
    /// cannot be read count as empty, like the original.
    pub fn lookup(&self, key: &str) -> Option<String> {
        self.files.iter().find_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            parse_value(&text, key)
        })
    }

    /// Reads the identity the engine sends to Omaha, with defaults.
    pub fn load(&self) -> ReleaseConfig {
        ReleaseConfig {
            group: self.lookup("GROUP").unwrap_or_else(|| DEFAULT_GROUP.into()),
            server: self
                .lookup("SERVER")
                .unwrap_or_else(|| DEFAULT_SERVER.into()),
            version: self
                .lookup("COREOS_RELEASE_VERSION")
                .unwrap_or_else(|| "0.0.0".into()),
            board: self
                .lookup("COREOS_RELEASE_BOARD")
                .unwrap_or_else(|| DEFAULT_BOARD.into()),
            appid: self
                .lookup("COREOS_RELEASE_APPID")
                .unwrap_or_else(|| DEFAULT_APPID.into()),
        }
    }
}

/// The values of one lookup round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseConfig {
    pub group: String,
    pub server: String,
    pub version: String,
    pub board: String,
    pub appid: String,
}

/// The original's parsing: split on `\n` and the first `=`, no trimming, no
/// quote handling; lines without `=` are ignored; the first match wins.
pub fn parse_value(text: &str, key: &str) -> Option<String> {
    text.split('\n').find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k == key).then(|| v.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_is_literal() {
        let text = "#GROUP=alpha\nGROUP=beta\nGROUP=stable\n SERVER=x\nNOEQ\nA=b=c";
        assert_eq!(parse_value(text, "GROUP").as_deref(), Some("beta"));
        assert_eq!(parse_value(text, "#GROUP").as_deref(), Some("alpha"));
        assert_eq!(parse_value(text, "SERVER"), None);
        assert_eq!(parse_value(text, " SERVER").as_deref(), Some("x"));
        assert_eq!(parse_value(text, "A").as_deref(), Some("b=c"));
        assert_eq!(parse_value(text, "NOEQ"), None);
    }

    #[test]
    fn first_file_containing_the_key_wins() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ConfigPaths::under(dir.path());
        for f in &paths.files {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        }
        std::fs::write(&paths.files[0], "GROUP=alpha\n").unwrap();
        std::fs::write(&paths.files[1], "GROUP=beta\nSERVER=http://x/\n").unwrap();
        std::fs::write(
            &paths.files[2],
            "COREOS_RELEASE_VERSION=1.2.3\nGROUP=ignored\n",
        )
        .unwrap();
        let cfg = paths.load();
        assert_eq!(cfg.group, "alpha");
        assert_eq!(cfg.server, "http://x/");
        assert_eq!(cfg.version, "1.2.3");
        assert_eq!(cfg.appid, DEFAULT_APPID);
        std::fs::remove_file(&paths.files[0]).unwrap();
        assert_eq!(paths.load().group, "beta");
    }
}
