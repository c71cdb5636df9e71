//! Users: the account seam (`useradd`/`chpasswd` behind a trait) and SSH authorized keys.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Error;
use super::files::{lookup_user, write_atomic};
use crate::config::User;

/// Creating and updating accounts.
pub trait Accounts: Send + Sync {
    /// Whether the user exists.
    fn exists(&self, name: &str) -> Result<bool, Error>;
    /// Creates a user with the original's `useradd` options.
    fn create(&self, user: &User) -> Result<(), Error>;
    /// Sets the password hash of an existing user.
    fn set_password(&self, name: &str, hash: &str) -> Result<(), Error>;
}

/// The `useradd` arguments for a new user, as the original built them.
pub fn useradd_args(user: &User) -> Vec<String> {
    let mut args = vec![
        "--password".to_string(),
        user.passwd.clone().unwrap_or_else(|| "*".to_string()),
    ];
    let mut opt = |flag: &str, value: &Option<String>| {
        if let Some(v) = value.as_ref().filter(|v| !v.is_empty()) {
            args.push(flag.to_string());
            args.push(v.clone());
        }
    };
    opt("--comment", &user.gecos);
    opt("--home-dir", &user.homedir);
    opt("--gid", &user.primary_group);
    opt("--shell", &user.shell);
    args.push(
        if user.no_create_home {
            "--no-create-home"
        } else {
            "--create-home"
        }
        .to_string(),
    );
    if !user.groups.is_empty() {
        args.push("--groups".to_string());
        args.push(user.groups.join(","));
    }
    if user.no_user_group {
        args.push("--no-user-group".to_string());
    }
    if user.system {
        args.push("--system".to_string());
    }
    if user.no_log_init {
        args.push("--no-log-init".to_string());
    }
    args.push(user.name.clone());
    args
}

/// The real accounts: `useradd` and `chpasswd -e`, with `--root` when the root is not `/`.
pub struct ShadowAccounts {
    root: PathBuf,
}

impl ShadowAccounts {
    /// Accounts of the system under `root`.
    pub fn new(root: &Path) -> ShadowAccounts {
        ShadowAccounts {
            root: root.to_path_buf(),
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        if self.root != Path::new("/") {
            cmd.arg("--root").arg(&self.root);
        }
        cmd
    }
}

fn run(mut cmd: Command, input: Option<&str>, what: &str) -> Result<(), Error> {
    use std::io::Write;
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Command(format!("{what}: {e}")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| Error::Command(format!("{what}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Command(format!("{what}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command(format!(
            "{what}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Accounts for ShadowAccounts {
    fn exists(&self, name: &str) -> Result<bool, Error> {
        Ok(lookup_user(&self.root, name).is_some())
    }

    fn create(&self, user: &User) -> Result<(), Error> {
        let mut cmd = self.command("useradd");
        cmd.args(useradd_args(user));
        run(cmd, None, &format!("useradd {}", user.name))
    }

    fn set_password(&self, name: &str, hash: &str) -> Result<(), Error> {
        let mut cmd = self.command("chpasswd");
        cmd.arg("-e");
        run(
            cmd,
            Some(&format!("{name}:{hash}\n")),
            &format!("chpasswd {name}"),
        )
    }
}

/// Writes `keys` as `~name/.ssh/authorized_keys.d/<key_name>` and regenerates `~name/.ssh/authorized_keys` from
/// every file in that directory (what CoreOS's update-ssh-keys does), owned by the user.
pub fn authorize_keys(
    root: &Path,
    name: &str,
    key_name: &str,
    keys: &[String],
) -> Result<(), Error> {
    if key_name.is_empty() || key_name.contains('/') || key_name.starts_with('.') {
        return Err(Error::Invalid(format!("invalid ssh key name {key_name:?}")));
    }
    let user = lookup_user(root, name)
        .ok_or_else(|| Error::Invalid(format!("user {name:?} does not exist")))?;
    let ssh = super::files::under_root(root, &user.home)?.join(".ssh");
    let owner = Some((user.uid, Some(user.gid)));
    let dropins = ssh.join("authorized_keys.d");
    for dir in [&ssh, &dropins] {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid)).map_err(|source| {
            Error::Io {
                path: dir.clone(),
                source,
            }
        })?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| Error::Io {
                path: dir.clone(),
                source,
            },
        )?;
    }
    let mut text: String = keys.iter().map(|k| format!("{}\n", k.trim())).collect();
    if keys.is_empty() {
        text.clear();
    }
    write_atomic(&dropins.join(key_name), text.as_bytes(), 0o600, owner)?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dropins)
        .map_err(|source| Error::Io {
            path: dropins.clone(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    names.sort();
    let mut merged = String::new();
    for path in names {
        let content = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        merged.push_str(&content);
        if !merged.is_empty() && !merged.ends_with('\n') {
            merged.push('\n');
        }
    }
    write_atomic(
        &ssh.join("authorized_keys"),
        merged.as_bytes(),
        0o600,
        owner,
    )
}

/// A fake for tests: records calls and adds created users to `<root>/etc/passwd` like useradd would.
#[derive(Debug)]
pub struct FakeAccounts {
    root: PathBuf,
    calls: std::sync::Mutex<Vec<String>>,
}

impl FakeAccounts {
    /// A fake for the system under `root`.
    pub fn new(root: &Path) -> FakeAccounts {
        FakeAccounts {
            root: root.to_path_buf(),
            calls: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Calls so far, as `useradd <args>` or `chpasswd <name>:<hash>`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn record(&self, call: String) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }
}

impl Accounts for FakeAccounts {
    fn exists(&self, name: &str) -> Result<bool, Error> {
        Ok(lookup_user(&self.root, name).is_some())
    }

    fn create(&self, user: &User) -> Result<(), Error> {
        self.record(format!("useradd {}", useradd_args(user).join(" ")));
        use std::io::Write;
        let path = self.root.join("etc/passwd");
        let uid = 1000
            + std::fs::read_to_string(&path)
                .map(|t| t.lines().count())
                .unwrap_or(0);
        let home = user
            .homedir
            .clone()
            .unwrap_or_else(|| format!("/home/{}", user.name));
        std::fs::create_dir_all(self.root.join("etc")).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        writeln!(f, "{}:x:{uid}:{uid}::{home}:/bin/bash", user.name)
            .map_err(|source| Error::Io { path, source })
    }

    fn set_password(&self, name: &str, hash: &str) -> Result<(), Error> {
        self.record(format!("chpasswd {name}:{hash}"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn useradd_options() {
        let user = User {
            name: "alice".into(),
            gecos: Some("Alice A".into()),
            groups: vec!["sudo".into(), "docker".into()],
            no_create_home: true,
            system: true,
            ..Default::default()
        };
        assert_eq!(
            useradd_args(&user).join(" "),
            "--password * --comment Alice A --no-create-home --groups sudo,docker --system alice"
        );
        let user = User {
            name: "bob".into(),
            passwd: Some("$6$x".into()),
            ..Default::default()
        };
        assert_eq!(
            useradd_args(&user).join(" "),
            "--password $6$x --create-home bob"
        );
    }
}
