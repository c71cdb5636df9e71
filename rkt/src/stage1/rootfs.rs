//! Assembles an app's root filesystem in the pod's mount namespace: an overlay of the rendered tree,
//! then /proc, /sys, a minimal /dev, the pod's /etc files and volumes. Every mount target inside the
//! (untrusted) rootfs is resolved with `openat2(RESOLVE_IN_ROOT)` and mounted through its
//! `/proc/self/fd` path, so symlinks in the image cannot redirect a mount onto the host.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::mount::MsFlags;
use nix::sys::stat::{Mode, SFlag, makedev, mkdirat, mknodat};
use nix::unistd::symlinkat;

use super::sys::Sys;
use crate::error::{Error, IoContext, Result};
use crate::pod::manifest::{PodManifest, RuntimeApp};

/// Where an app's rootfs lives in the pod directory.
pub fn app_rootfs(pod_dir: &Path, app: &str) -> PathBuf {
    super::stage1_rootfs(pod_dir)
        .join("opt/stage2")
        .join(app)
        .join("rootfs")
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn in_root() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// Resolves `rel` inside `root` (symlinks stay inside), creating it as a directory or an empty file
/// when missing; returns an `O_PATH` fd to it.
pub fn ensure_target(root: &OwnedFd, rel: &str, dir: bool) -> Result<OwnedFd> {
    let rel = rel.trim_start_matches('/');
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(in_root());
    match openat2(root, rel, how) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(e).ctx("resolving mount target", rel),
    }
    let (parent_rel, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rel),
    };
    if name.is_empty() || name == ".." || name == "." {
        return Err(Error::Stage1(format!("bad mount target {rel:?}")));
    }
    let parent = if parent_rel.is_empty() {
        openat2(
            root,
            ".",
            OpenHow::new()
                .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
                .resolve(in_root()),
        )
        .ctx("opening rootfs", rel)?
    } else {
        ensure_target(root, parent_rel, true)?;
        openat2(
            root,
            parent_rel,
            OpenHow::new()
                .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
                .resolve(in_root()),
        )
        .ctx("resolving", parent_rel)?
    };
    let made = if dir {
        mkdirat(&parent, name, Mode::from_bits_truncate(0o755))
    } else {
        openat(
            &parent,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop)
    };
    match made {
        Ok(()) => {}
        // A dangling symlink: replace it (in the pod's overlay, the image is untouched).
        Err(Errno::EEXIST) => {
            nix::unistd::unlinkat(&parent, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
                .ctx("replacing dangling symlink", rel)?;
            return ensure_target(root, rel, dir);
        }
        Err(e) => return Err(e).ctx("creating mount target", rel),
    }
    openat2(root, rel, how).ctx("resolving mount target", rel)
}

/// The device nodes of the minimal /dev: name, major, minor.
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Mounts the app's rootfs and everything in it; returns the rootfs path.
pub fn setup(
    sys: &dyn Sys,
    tree: &Path,
    pod_dir: &Path,
    manifest: &PodManifest,
    app: &RuntimeApp,
) -> Result<PathBuf> {
    let rootfs = app_rootfs(pod_dir, &app.name);
    let upper = pod_dir.join("overlay").join(&app.name).join("upper");
    let work = pod_dir.join("overlay").join(&app.name).join("work");
    for d in [&rootfs, &upper, &work] {
        fs::create_dir_all(d).ctx("creating", d)?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        tree.display(),
        upper.display(),
        work.display()
    );
    // `volatile` (Linux 5.10+): the pod's writable layer is scratch space that lives and dies
    // with this one run of the pod, so overlayfs need not sync it. Without it, the unmount when
    // init exits runs syncfs on the whole upper filesystem, which writes back every dirty page
    // on it (other tenants' too) before `rkt run` can return: 1-120 ms here. Durable data
    // belongs in volumes, which are bind mounts and keep their fsync. Older kernels refuse the
    // option, and get the plain mount.
    let volatile = format!("{data},volatile");
    if sys
        .mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(&volatile),
        )
        .is_err()
    {
        sys.mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(&data),
        )?;
    }

    let root = nix::fcntl::open(
        &rootfs,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx("opening rootfs", &rootfs)?;
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;

    let proc_fd = ensure_target(&root, "proc", true)?;
    sys.mount(
        Some("proc"),
        &fd_path(&proc_fd),
        Some("proc"),
        nosuid_nodev_noexec,
        None,
    )?;
    let sys_fd = ensure_target(&root, "sys", true)?;
    sys.mount(
        Some("sysfs"),
        &fd_path(&sys_fd),
        Some("sysfs"),
        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
        None,
    )?;

    let dev_fd = ensure_target(&root, "dev", true)?;
    sys.mount(
        Some("tmpfs"),
        &fd_path(&dev_fd),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    populate_dev(sys, &root)?;

    // Written by init into the pod's stage1 rootfs (a tmpfs of its own mount namespace).
    let etc = super::stage1_rootfs(pod_dir).join("etc");
    for f in ["hosts", "hostname", "resolv.conf"] {
        let target = ensure_target(&root, &format!("etc/{f}"), false)?;
        let src = etc.join(f);
        sys.mount(
            src.to_str(),
            &fd_path(&target),
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }

    for m in &app.mounts {
        let vol = manifest
            .volumes
            .iter()
            .find(|v| v.name == m.volume)
            .ok_or_else(|| {
                Error::Stage1(format!(
                    "app {} mounts unknown volume {:?}",
                    app.name, m.volume
                ))
            })?;
        let source = match vol.kind.as_str() {
            "host" => PathBuf::from(vol.source.as_deref().unwrap_or("")),
            _ => {
                let p = pod_dir.join("volumes").join(&vol.name);
                fs::create_dir_all(&p).ctx("creating volume", &p)?;
                p
            }
        };
        let is_dir = fs::metadata(&source)
            .ctx("inspecting volume source", &source)?
            .is_dir();
        let target = ensure_target(&root, &m.path, is_dir)?;
        let src = source
            .to_str()
            .ok_or_else(|| Error::Stage1(format!("volume source {source:?} is not utf-8")))?;
        let mut flags = MsFlags::MS_BIND;
        if vol.recursive {
            flags |= MsFlags::MS_REC;
        }
        let tp = fd_path(&target);
        sys.mount(Some(src), &tp, None, flags, None)?;
        if vol.read_only {
            // The fd still names the covered inode; resolve the path again to reach the new mount.
            let again = ensure_target(&root, &m.path, is_dir)?;
            sys.mount(
                None,
                &fd_path(&again),
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None,
            )?;
        }
    }

    if app.app.read_only_root_fs {
        sys.mount(
            None,
            &rootfs,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(rootfs)
}

fn populate_dev(sys: &dyn Sys, root: &OwnedFd) -> Result<()> {
    let how = OpenHow::new()
        .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(in_root());
    let dev = openat2(root, "dev", how).ctx("opening", "/dev")?;
    for (name, major, minor) in DEVICES {
        mknodat(
            &dev,
            name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .ctx("creating device", format!("/dev/{name}"))?;
        // mknod is subject to the umask.
        nix::sys::stat::fchmodat(
            &dev,
            name,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .ctx("chmod", format!("/dev/{name}"))?;
    }
    for d in ["pts", "shm"] {
        mkdirat(&dev, d, Mode::from_bits_truncate(0o755)).ctx("creating", format!("/dev/{d}"))?;
    }
    let pts = ensure_target(root, "dev/pts", true)?;
    sys.mount(
        Some("devpts"),
        &fd_path(&pts),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm = ensure_target(root, "dev/shm", true)?;
    sys.mount(
        Some("shm"),
        &fd_path(&shm),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlinkat(target, &dev, link).ctx("creating symlink", format!("/dev/{link}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::pod::manifest::{App, ImageRef, Mount, Resources, Stage1Settings, Volume};

    /// A recorded mount: source, real target, filesystem type.
    type Recorded = (Option<String>, PathBuf, Option<String>);

    /// Records mounts instead of making them, resolving `/proc/self/fd/N` targets to real paths.
    #[derive(Default)]
    struct Recorder {
        mounts: RefCell<Vec<Recorded>>,
    }

    impl Sys for Recorder {
        fn mount(
            &self,
            source: Option<&str>,
            target: &Path,
            fstype: Option<&str>,
            _flags: MsFlags,
            _data: Option<&str>,
        ) -> Result<()> {
            let real = fs::read_link(target).unwrap_or_else(|_| target.to_path_buf());
            self.mounts.borrow_mut().push((
                source.map(String::from),
                real,
                fstype.map(String::from),
            ));
            Ok(())
        }
        fn unshare(&self, _: nix::sched::CloneFlags) -> Result<()> {
            Ok(())
        }
        fn pivot_to_cwd(&self) -> Result<()> {
            Ok(())
        }
        fn sethostname(&self, _: &str) -> Result<()> {
            Ok(())
        }
    }

    fn manifest(app: RuntimeApp, volumes: Vec<Volume>) -> PodManifest {
        PodManifest {
            ac_version: "1.30.0".into(),
            ac_kind: "PodManifest".into(),
            apps: vec![app],
            volumes,
            annotations: vec![],
            stage1: Stage1Settings {
                hostname: "h".into(),
                net: "none".into(),
                dns: vec![],
                dns_search: vec![],
                hosts_entries: vec![],
                network: None,
            },
        }
    }

    #[test]
    fn mounts_land_inside_the_rootfs_even_through_hostile_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let pod_dir = tmp.path().join("pod");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        let vol = tmp.path().join("vol");
        fs::create_dir_all(&vol).unwrap();
        let app = RuntimeApp {
            name: "a".into(),
            image: ImageRef {
                name: "i".into(),
                id: "x".into(),
                tree: "t".into(),
            },
            app: App {
                exec: vec!["/bin/true".into()],
                user: "0".into(),
                group: String::new(),
                supplementary_gids: vec![],
                working_directory: "/".into(),
                environment: vec![],
                read_only_root_fs: true,
                capabilities: vec![],
                resources: Resources::default(),
                interactive: false,
                stdout: Default::default(),
                stderr: Default::default(),
            },
            mounts: vec![Mount {
                volume: "v".into(),
                path: "/data/in".into(),
            }],
        };
        let volumes = vec![Volume {
            name: "v".into(),
            kind: "host".into(),
            source: Some(vol.display().to_string()),
            read_only: false,
            recursive: true,
        }];
        // The (unmounted) rootfs: /etc and /data are absolute symlinks pointing at the host.
        let root = app_rootfs(&pod_dir, "a");
        fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/../../..", root.join("data")).unwrap();
        fs::create_dir_all(crate::stage1::stage1_rootfs(&pod_dir).join("etc")).unwrap();

        let rec = Recorder::default();
        let tree = tmp.path().join("tree");
        let got = setup(&rec, &tree, &pod_dir, &manifest(app.clone(), volumes), &app).unwrap();
        assert_eq!(got, root);
        let mounts = rec.mounts.borrow();
        let kinds: Vec<Option<&str>> = mounts.iter().map(|m| m.2.as_deref()).collect();
        assert_eq!(
            kinds,
            [
                Some("overlay"),
                Some("proc"),
                Some("sysfs"),
                Some("tmpfs"),
                Some("devpts"),
                Some("tmpfs"),
                None,
                None,
                None,
                None,
                None
            ]
        );
        for (_, target, _) in mounts.iter() {
            assert!(
                target.starts_with(&root),
                "mount target {target:?} escaped the rootfs"
            );
        }
        assert!(
            fs::read_dir(&outside).unwrap().next().is_none(),
            "nothing created outside"
        );
        // The last mount is the read-only remount of the rootfs itself.
        assert_eq!(mounts.last().unwrap().1, root);
    }
}
