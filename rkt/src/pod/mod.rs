//! Pods on disk: `<dir>/pods/<state>/<uuid>/`, moved between states by atomic renames, with a
//! `flock` on the pod directory held by the pod's stage1 process for the pod's whole life.
//!
//! States (directory → state): `embryo` → Embryo; `prepare` → Preparing (locked) or
//! AbortedPrepare (unlocked); `prepared` → Prepared; `run` → Running (locked) or Exited
//! (unlocked); `exited-garbage` → ExitedGarbage; `garbage` → Garbage (Deleting while locked).

pub mod gc;
pub mod manifest;
pub mod prepare;
pub mod status;

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result, from_json};
use crate::lock::{self, FileLock, LockMode};
use crate::timefmt::now_ns;
pub use manifest::PodManifest;

/// Where a pod is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodState {
    Embryo,
    Preparing,
    AbortedPrepare,
    Prepared,
    Running,
    Exited,
    ExitedGarbage,
    Garbage,
    Deleting,
}

impl PodState {
    /// The name `rkt list` and `rkt status` print.
    pub fn as_str(self) -> &'static str {
        match self {
            PodState::Embryo => "embryo",
            PodState::Preparing => "preparing",
            PodState::AbortedPrepare => "aborted prepare",
            PodState::Prepared => "prepared",
            PodState::Running => "running",
            PodState::Exited => "exited",
            PodState::ExitedGarbage => "exited garbage",
            PodState::Garbage => "garbage",
            PodState::Deleting => "deleting",
        }
    }
}

const STATE_DIRS: [&str; 6] = [
    "embryo",
    "prepare",
    "prepared",
    "run",
    "exited-garbage",
    "garbage",
];

/// Which time of an app's life [`Pod::app_time`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppTime {
    Started,
    Finished,
}

/// The pod store.
#[derive(Clone, Debug)]
pub struct Pods {
    root: PathBuf,
}

/// A pod found on disk.
#[derive(Debug)]
pub struct Pod {
    pub uuid: String,
    pub dir: PathBuf,
    pub state: PodState,
}

impl Pods {
    pub fn open(dir: &Path) -> Result<Self> {
        let root = dir.join("pods");
        for s in STATE_DIRS {
            crate::error::ensure_dir(&root.join(s))?;
        }
        Ok(Self { root })
    }

    fn state_dir(&self, s: &str) -> PathBuf {
        self.root.join(s)
    }

    /// Creates a new pod: an embryo directory, locked, then renamed into `prepare`.
    pub fn create(&self) -> Result<(Pod, FileLock)> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let embryo = self.state_dir("embryo").join(&uuid);
        fs::create_dir(&embryo).ctx("creating pod", &embryo)?;
        fs::write(embryo.join("created"), now_ns().to_string())
            .ctx("writing", embryo.join("created"))?;
        let lock = lock::lock(&embryo, LockMode::Exclusive)?;
        let dir = self.state_dir("prepare").join(&uuid);
        fs::rename(&embryo, &dir).ctx("renaming pod", &dir)?;
        Ok((
            Pod {
                uuid,
                dir,
                state: PodState::Preparing,
            },
            lock,
        ))
    }

    /// Moves a pod to another state directory.
    pub fn rename(&self, pod: &mut Pod, to_dir: &str, state: PodState) -> Result<()> {
        let dst = self.state_dir(to_dir).join(&pod.uuid);
        fs::rename(&pod.dir, &dst).ctx("renaming pod", &dst)?;
        pod.dir = dst;
        pod.state = state;
        Ok(())
    }

    /// Every pod, in no particular order.
    pub fn all(&self) -> Result<Vec<Pod>> {
        let mut out = Vec::new();
        for s in STATE_DIRS {
            let d = self.state_dir(s);
            let entries = match fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx("listing", d),
            };
            for e in entries {
                let e = e.ctx("listing", &d)?;
                let uuid = e.file_name().to_string_lossy().into_owned();
                if uuid::Uuid::parse_str(&uuid).is_err() {
                    continue;
                }
                // A pod may move between listing and inspection; skip it then.
                if let Some(state) = probe_state(s, &e.path())? {
                    out.push(Pod {
                        uuid,
                        dir: e.path(),
                        state,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Finds a pod by full uuid or unique prefix.
    pub fn find(&self, prefix: &str) -> Result<Pod> {
        let prefix = prefix.trim();
        if prefix.is_empty() {
            return Err(Error::PodNotFound(prefix.to_string()));
        }
        let mut hits: Vec<Pod> = self
            .all()?
            .into_iter()
            .filter(|p| p.uuid.starts_with(prefix))
            .collect();
        match hits.len() {
            0 => Err(Error::PodNotFound(prefix.to_string())),
            1 => Ok(hits.remove(0)),
            _ => Err(Error::AmbiguousPod(prefix.to_string())),
        }
    }

    /// Reads a uuid from a file written by `--uuid-file-save`.
    pub fn find_from_file(&self, path: &Path) -> Result<Pod> {
        let s = fs::read_to_string(path).ctx("reading uuid file", path)?;
        self.find(s.trim())
    }
}

fn probe_state(dir_name: &str, path: &Path) -> Result<Option<PodState>> {
    let locked = || -> Result<Option<bool>> {
        match lock::try_lock(path, LockMode::Shared) {
            Ok(Some(_)) => Ok(Some(false)),
            Ok(None) => Ok(Some(true)),
            Err(Error::Sys {
                source: nix::Error::ENOENT,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    };
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(match dir_name {
        "embryo" => PodState::Embryo,
        "prepare" => match locked()? {
            None => return Ok(None),
            Some(true) => PodState::Preparing,
            Some(false) => PodState::AbortedPrepare,
        },
        "prepared" => PodState::Prepared,
        "run" => match locked()? {
            None => return Ok(None),
            Some(true) => PodState::Running,
            Some(false) => PodState::Exited,
        },
        "exited-garbage" => match locked()? {
            None => return Ok(None),
            Some(true) => PodState::Deleting,
            Some(false) => PodState::ExitedGarbage,
        },
        _ => match locked()? {
            None => return Ok(None),
            Some(true) => PodState::Deleting,
            Some(false) => PodState::Garbage,
        },
    }))
}

impl Pod {
    /// The rkt `--dir` this pod lives in (`<dir>/pods/<state>/<uuid>`).
    pub fn rkt_dir(&self) -> PathBuf {
        self.dir
            .ancestors()
            .nth(3)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The networks the pod is attached to (`<pod>/net/info.json`).
    pub fn networks(&self) -> Vec<crate::stage1::net::Attachment> {
        fs::read(self.dir.join("net/info.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// `default:ip4=172.16.28.7`, as `rkt list` prints networks.
    pub fn networks_summary(&self) -> String {
        self.networks()
            .iter()
            .map(|a| format!("{}:ip4={}", a.net_name, a.ip))
            .collect::<Vec<_>>()
            .join(",")
    }
    pub fn manifest(&self) -> Result<PodManifest> {
        let p = self.dir.join("pod");
        from_json(
            &fs::read(&p).ctx("reading pod manifest", &p)?,
            "pod manifest",
        )
    }

    pub fn manifest_bytes(&self) -> Result<Vec<u8>> {
        let p = self.dir.join("pod");
        fs::read(&p).ctx("reading pod manifest", &p)
    }

    fn read_i64(&self, rel: &str) -> Option<i64> {
        fs::read_to_string(self.dir.join(rel))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn created(&self) -> Option<i64> {
        self.read_i64("created")
    }

    pub fn started(&self) -> Option<i64> {
        self.read_i64("started")
    }

    /// The host pid of the pod's init (PID 1 inside).
    pub fn pid(&self) -> Option<i32> {
        self.read_i64("pid").map(|p| p as i32)
    }

    /// The pid of the stage1 process holding the pod lock.
    pub fn ppid(&self) -> Option<i32> {
        self.read_i64("ppid").map(|p| p as i32)
    }

    /// Line `n` of `rel` as a number: the per-app records hold two, written at once.
    fn read_line_i64(&self, rel: &str, n: usize) -> Option<i64> {
        let text = fs::read_to_string(self.dir.join(rel)).ok()?;
        // A record being written reads as empty or partial; only whole lines count.
        let line = text.split_inclusive('\n').nth(n)?;
        line.strip_suffix('\n')?.trim().parse().ok()
    }

    /// The app's exit code (`apps/<app>/exit`: the code, then the time it exited).
    pub fn app_exit_code(&self, app: &str) -> Option<i32> {
        self.read_line_i64(&format!("apps/{app}/exit"), 0)
            .map(|c| c as i32)
    }

    /// The host pid of the app's process (`apps/<app>/pid`: the pid, then the time it started).
    pub fn app_pid(&self, app: &str) -> Option<i32> {
        self.read_line_i64(&format!("apps/{app}/pid"), 0)
            .map(|p| p as i32)
    }

    /// When the app started or finished, in ns since the epoch.
    pub fn app_time(&self, app: &str, what: AppTime) -> Option<i64> {
        match what {
            AppTime::Started => self.read_line_i64(&format!("apps/{app}/pid"), 1),
            AppTime::Finished => self.read_line_i64(&format!("apps/{app}/exit"), 1),
        }
    }

    /// When the pod was marked as garbage (the directory's ctime after the rename).
    pub fn gc_marked(&self) -> Option<i64> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(&self.dir).ok()?;
        Some(m.ctime() * 1_000_000_000 + m.ctime_nsec())
    }

    /// Whether the pod is over (apps exited or failed to prepare).
    pub fn is_finished(&self) -> bool {
        matches!(
            self.state,
            PodState::Exited
                | PodState::ExitedGarbage
                | PodState::Garbage
                | PodState::AbortedPrepare
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_records_count_only_whole_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = Pod {
            uuid: "u".into(),
            dir: tmp.path().to_path_buf(),
            state: PodState::Running,
        };
        let apps = tmp.path().join("apps/a");
        fs::create_dir_all(&apps).unwrap();
        // Not there yet, just created (empty), or half written: nothing.
        assert_eq!(pod.app_pid("a"), None);
        for partial in ["", "12", "12\n34"] {
            fs::write(apps.join("pid"), partial).unwrap();
            fs::write(apps.join("exit"), partial).unwrap();
            assert_eq!(pod.app_time("a", AppTime::Started), None, "{partial:?}");
            assert_eq!(pod.app_time("a", AppTime::Finished), None, "{partial:?}");
        }
        assert_eq!(pod.app_pid("a"), Some(12));
        assert_eq!(pod.app_exit_code("a"), Some(12));
        fs::write(apps.join("pid"), "4242\n1700000000123456789\n").unwrap();
        fs::write(apps.join("exit"), "137\n1700000001000000000\n").unwrap();
        assert_eq!(pod.app_pid("a"), Some(4242));
        assert_eq!(
            pod.app_time("a", AppTime::Started),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(pod.app_exit_code("a"), Some(137));
        assert_eq!(
            pod.app_time("a", AppTime::Finished),
            Some(1_700_000_001_000_000_000)
        );
        fs::write(apps.join("exit"), "garbage\n").unwrap();
        assert_eq!(pod.app_exit_code("a"), None);
    }
}
