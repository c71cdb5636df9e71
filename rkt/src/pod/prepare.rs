//! Preparing a pod: fetch each app's image, render its tree, merge the image configuration with
//! the command-line overrides into the pod manifest, and create the pod directory.

use std::path::Path;

use super::manifest::{
    self, App, NameValue, PodManifest, Resources, RuntimeApp, Stage1Settings, Volume,
};
use super::{Pod, Pods};
use crate::error::{Error, IoContext, Result};
use crate::image::transport::{ImageRef, fetch};
use crate::image::tree::{Tree, render};
use crate::image::{ImageRecord, Store};
use crate::lock::FileLock;
use crate::stage1::caps;

/// One app of a pod as given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppOptions {
    pub image: String,
    pub name: Option<String>,
    pub exec: Option<String>,
    /// Arguments after `--` (`None` when no `--` was given).
    pub args: Option<Vec<String>>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub supplementary_gids: Vec<u32>,
    pub working_dir: Option<String>,
    pub environment: Vec<(String, String)>,
    pub readonly_rootfs: bool,
    pub caps_retain: Option<Vec<String>>,
    pub caps_remove: Vec<String>,
    pub resources: Resources,
    pub mounts: Vec<manifest::Mount>,
    pub stdout: manifest::Output,
    pub stderr: manifest::Output,
}

/// A pod as given on the command line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodOptions {
    pub apps: Vec<AppOptions>,
    pub volumes: Vec<Volume>,
    pub hostname: Option<String>,
    pub net: String,
    pub set_env: Vec<(String, String)>,
    pub inherit_env: bool,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub hosts_entries: Vec<String>,
    pub interactive: bool,
    /// Where network configurations are read from (`<local config>/net.d`).
    pub net_conf_dir: std::path::PathBuf,
}

/// A prepared pod: still locked by us, its trees held.
pub struct Prepared {
    pub pods: Pods,
    pub pod: Pod,
    pub lock: FileLock,
    pub manifest: PodManifest,
    pub trees: Vec<Tree>,
}

/// The default app name for an image name: its last path element without the tag.
fn app_name_for(image_name: &str) -> String {
    let base = image_name.rsplit('/').next().unwrap_or(image_name);
    let base = base.split(':').next().unwrap_or(base);
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-').to_string();
    if clean.is_empty() {
        "app".into()
    } else {
        clean
    }
}

fn valid_app_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn set(env: &mut Vec<NameValue>, k: &str, v: &str) {
    if let Some(e) = env.iter_mut().find(|e| e.name == k) {
        e.value = v.to_string();
    } else {
        env.push(NameValue {
            name: k.to_string(),
            value: v.to_string(),
        });
    }
}

fn build_app(
    store: &Store,
    opts: &AppOptions,
    pod: &PodOptions,
    rec: &ImageRecord,
    tree: &Tree,
) -> Result<RuntimeApp> {
    let cfg = store.config(rec)?.config.unwrap_or_default();
    let name = match &opts.name {
        Some(n) if valid_app_name(n) => n.clone(),
        Some(n) => {
            return Err(Error::Usage(format!(
                "invalid app name {n:?}: use lowercase letters, digits and '-'"
            )));
        }
        None => app_name_for(&rec.name),
    };
    let exec = match &opts.exec {
        Some(e) => {
            let mut v = vec![e.clone()];
            v.extend(opts.args.clone().unwrap_or_default());
            v
        }
        None => {
            let mut v = cfg.entrypoint.clone().unwrap_or_default();
            match &opts.args {
                Some(a) => v.extend(a.clone()),
                None => v.extend(cfg.cmd.clone().unwrap_or_default()),
            }
            v
        }
    };
    if exec.is_empty() {
        return Err(Error::Usage(format!(
            "image {} has no entrypoint or cmd: use --exec",
            rec.name
        )));
    }
    let mut env = Vec::new();
    if pod.inherit_env {
        for (k, v) in std::env::vars() {
            set(&mut env, &k, &v);
        }
    }
    for kv in cfg.env.clone().unwrap_or_default() {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(&mut env, k, v);
    }
    for (k, v) in opts.environment.iter().chain(&pod.set_env) {
        set(&mut env, k, v);
    }
    if !env.iter().any(|e| e.name == "PATH") {
        set(&mut env, "PATH", DEFAULT_PATH);
    }
    set(&mut env, "AC_APP_NAME", &name);
    let (img_user, img_group) = match cfg.user.as_deref() {
        Some(u) if !u.is_empty() => match u.split_once(':') {
            Some((u, g)) => (u.to_string(), g.to_string()),
            None => (u.to_string(), String::new()),
        },
        _ => ("0".to_string(), String::new()),
    };
    let user = opts.user.clone().unwrap_or(img_user);
    let group = opts.group.clone().unwrap_or(if opts.user.is_some() {
        String::new()
    } else {
        img_group
    });
    let capabilities = match &opts.caps_retain {
        Some(list) => list
            .iter()
            .map(|c| caps::normalize(c))
            .collect::<Result<Vec<_>>>()?,
        None => {
            let remove = opts
                .caps_remove
                .iter()
                .map(|c| caps::normalize(c))
                .collect::<Result<Vec<_>>>()?;
            caps::DEFAULT
                .iter()
                .map(|s| s.to_string())
                .filter(|c| !remove.contains(c))
                .collect()
        }
    };
    for m in &opts.mounts {
        if !pod.volumes.iter().any(|v| v.name == m.volume) {
            return Err(Error::Usage(format!(
                "--mount names unknown volume {:?}",
                m.volume
            )));
        }
    }
    Ok(RuntimeApp {
        name,
        image: manifest::ImageRef {
            name: rec.name.clone(),
            id: rec.rkt_id(),
            tree: tree.key.hex().to_string(),
        },
        app: App {
            exec,
            user,
            group,
            supplementary_gids: opts.supplementary_gids.clone(),
            working_directory: opts
                .working_dir
                .clone()
                .or(cfg.working_dir.clone())
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            environment: env,
            read_only_root_fs: opts.readonly_rootfs,
            capabilities,
            resources: opts.resources.clone(),
            interactive: pod.interactive,
            stdout: opts.stdout,
            stderr: opts.stderr,
        },
        mounts: opts.mounts.clone(),
    })
}

/// Fetches the images, renders their trees and creates a pod in `prepare/` (locked by the caller).
pub fn prepare(dir: &Path, opts: &PodOptions) -> Result<Prepared> {
    if opts.apps.is_empty() {
        return Err(Error::Usage("no image given".into()));
    }
    if opts.interactive && opts.apps.len() > 1 {
        return Err(Error::Usage(
            "--interactive works with a single app only".into(),
        ));
    }
    for v in &opts.volumes {
        if v.kind == "host" && v.source.as_deref().is_none_or(|s| !s.starts_with('/')) {
            return Err(Error::Usage(format!(
                "volume {:?}: kind=host needs an absolute source",
                v.name
            )));
        }
        if v.kind != "host" && v.kind != "empty" {
            return Err(Error::Usage(format!(
                "volume {:?}: kind must be host or empty",
                v.name
            )));
        }
    }
    let network = match crate::stage1::net::NetMode::parse(&opts.net)? {
        crate::stage1::net::NetMode::Named(n) => {
            Some(crate::stage1::net::load(&opts.net_conf_dir, &n)?)
        }
        _ => None,
    };
    let store = Store::open(dir)?;
    // Image gc waits until the pod manifest names the images (gc keeps images pods use).
    let _store_guard = store.lock(crate::lock::LockMode::Shared)?;
    let mut apps = Vec::new();
    let mut trees = Vec::new();
    for a in &opts.apps {
        let rec = fetch(&store, &ImageRef::parse(&a.image)?)?;
        store.touch(&rec)?;
        let tree = render(&store, &rec)?;
        let app = build_app(&store, a, opts, &rec, &tree)?;
        if apps.iter().any(|x: &RuntimeApp| x.name == app.name) {
            return Err(Error::Usage(format!(
                "two apps are named {:?}: give one a --name",
                app.name
            )));
        }
        apps.push(app);
        trees.push(tree);
    }
    let pods = Pods::open(dir)?;
    let (pod, lock) = pods.create()?;
    let manifest = PodManifest {
        ac_version: "1.30.0".into(),
        ac_kind: "PodManifest".into(),
        apps,
        volumes: opts.volumes.clone(),
        annotations: Vec::new(),
        stage1: Stage1Settings {
            hostname: opts
                .hostname
                .clone()
                .unwrap_or_else(|| format!("rkt-{}", pod.uuid)),
            net: opts.net.clone(),
            dns: opts.dns.clone(),
            dns_search: opts.dns_search.clone(),
            hosts_entries: opts.hosts_entries.clone(),
            network,
        },
    };
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(|source| Error::Json {
        what: "pod manifest".into(),
        source,
    })?;
    std::fs::write(pod.dir.join("pod"), bytes).ctx("writing pod manifest", pod.dir.join("pod"))?;
    Ok(Prepared {
        pods,
        pod,
        lock,
        manifest,
        trees,
    })
}

/// Renders the trees of an already prepared pod (for `run-prepared`).
pub fn trees_for(dir: &Path, manifest: &PodManifest) -> Result<Vec<Tree>> {
    let store = Store::open(dir)?;
    let _store_guard = store.lock(crate::lock::LockMode::Shared)?;
    manifest
        .apps
        .iter()
        .map(|a| {
            let rec = store.resolve(&a.image.id)?;
            render(&store, &rec)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_from_images() {
        assert_eq!(app_name_for("busybox:latest"), "busybox");
        assert_eq!(app_name_for("quay.io/coreos/etcd:v3"), "etcd");
        assert_eq!(app_name_for("My_Image"), "my-image");
        assert!(valid_app_name("a-1"));
        assert!(!valid_app_name("A"));
        assert!(!valid_app_name("../x"));
    }
}
