//! Writing files under the root prefix: atomic (temp file, chmod, chown, rename), parents created.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use super::Error;

/// Maps an absolute target path to the same path under `root`, cleaned lexically so it cannot escape `root`.
pub fn under_root(root: &Path, path: &str) -> Result<PathBuf, Error> {
    if !path.starts_with('/') {
        return Err(Error::Invalid(format!("path {path:?} is not absolute")));
    }
    let mut clean = PathBuf::new();
    for part in Path::new(path).components() {
        match part {
            Component::Normal(p) => clean.push(p),
            Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    Ok(root.join(clean))
}

/// Writes `data` to `target` atomically with `mode` and an optional owner.
pub fn write_atomic(
    target: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<(u32, Option<u32>)>,
) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| Error::Io {
        path: target.to_path_buf(),
        source,
    };
    let dir = target
        .parent()
        .ok_or_else(|| Error::Invalid(format!("{} has no parent", target.display())))?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut tmp = tempfile::Builder::new()
        .prefix("cloudinit-temp")
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(data).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).map_err(io)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(tmp.path(), Some(uid), gid).map_err(io)?;
    }
    tmp.persist(target).map_err(|e| io(e.error))?;
    Ok(())
}

/// One line of a passwd file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

/// Looks a user up in `<root>/etc/passwd`.
pub fn lookup_user(root: &Path, name: &str) -> Option<PasswdEntry> {
    let text = std::fs::read_to_string(root.join("etc/passwd")).ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 6 || f[0] != name {
            return None;
        }
        // An unparsable id must not become u32::MAX, which chown reads as "leave unchanged".
        Some(PasswdEntry {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5].to_string(),
        })
    })
}

fn lookup_group(root: &Path, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(root.join("etc/group")).ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 3 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

/// Resolves `user`, `user:group` or `user:` (login group) against the root's passwd and group files.
pub fn resolve_owner(root: &Path, owner: &str) -> Result<(u32, Option<u32>), Error> {
    let (user, group) = match owner.split_once([':', '.']) {
        Some((u, g)) => (u, Some(g)),
        None => (owner, None),
    };
    let unknown = || Error::Invalid(format!("unknown owner {owner:?}"));
    let (uid, login_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => {
            let entry = lookup_user(root, user).ok_or_else(unknown)?;
            (entry.uid, Some(entry.gid))
        }
    };
    let gid = match group {
        None => None,
        Some("") => Some(login_gid.ok_or_else(unknown)?),
        Some(g) => Some(
            g.parse::<u32>()
                .ok()
                .or_else(|| lookup_group(root, g))
                .ok_or_else(unknown)?,
        ),
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn paths_stay_under_root() {
        let root = Path::new("/tmp/r");
        assert_eq!(
            under_root(root, "/etc/a").unwrap(),
            Path::new("/tmp/r/etc/a")
        );
        assert_eq!(
            under_root(root, "/../../etc/a").unwrap(),
            Path::new("/tmp/r/etc/a")
        );
        assert!(under_root(root, "etc/a").is_err());
    }

    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b/c.txt");
        write_atomic(&target, b"hi", 0o640, Some((0, Some(0)))).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"hi");
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(meta.uid(), 0);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["c.txt"]);
    }

    #[test]
    fn owners() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "core:x:500:500:Core:/home/core:/bin/bash\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "docker:x:233:core\n").unwrap();
        assert_eq!(
            resolve_owner(dir.path(), "core:docker").unwrap(),
            (500, Some(233))
        );
        assert_eq!(resolve_owner(dir.path(), "core").unwrap(), (500, None));
        assert_eq!(
            resolve_owner(dir.path(), "core:").unwrap(),
            (500, Some(500))
        );
        assert_eq!(resolve_owner(dir.path(), "1:2").unwrap(), (1, Some(2)));
        assert!(resolve_owner(dir.path(), "nobody-here").is_err());
    }
}
