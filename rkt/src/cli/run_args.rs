//! The `rkt run`/`rkt prepare` argument language: pod flags anywhere, per-app flags after the image
//! they apply to, `--` before an app's arguments and `---` between apps.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::pod::manifest::{Mount, Output, Volume};
use crate::pod::prepare::{AppOptions, PodOptions};

/// Everything `rkt run` was told.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunArgs {
    pub pod: PodOptions,
    pub uuid_file_save: Option<PathBuf>,
    /// Global flags given after the subcommand.
    pub dir: Option<PathBuf>,
    pub debug: bool,
}

const POD_VALUE_FLAGS: &[&str] = &[
    "net",
    "hostname",
    "volume",
    "set-env",
    "dns",
    "dns-search",
    "hosts-entry",
    "uuid-file-save",
    "dir",
    "insecure-options",
    "pull-policy",
    "local-config",
];
const POD_BOOL_FLAGS: &[&str] = &["inherit-env", "interactive", "debug"];
const APP_VALUE_FLAGS: &[&str] = &[
    "name",
    "exec",
    "user",
    "group",
    "supplementary-gids",
    "working-dir",
    "environment",
    "caps-retain",
    "caps-remove",
    "memory",
    "cpu",
    "pids-limit",
    "mount",
    "stdin",
    "stdout",
    "stderr",
];
const APP_BOOL_FLAGS: &[&str] = &["readonly-rootfs"];
const UNSUPPORTED: &[&str] = &[
    "stage1-path",
    "stage1-url",
    "stage1-name",
    "stage1-hash",
    "stage1-from-dir",
    "pod-manifest",
    "no-overlay",
    "private-users",
    "seccomp",
    "port",
    "mds-register",
    "signature",
    "set-env-file",
];

fn parse_bool(flag: &str, v: Option<&str>) -> Result<bool> {
    match v {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(o) => Err(Error::Usage(format!(
            "--{flag}: expected true or false, got {o:?}"
        ))),
    }
}

fn parse_kv(flag: &str, s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| Error::Usage(format!("--{flag}: expected NAME=VALUE, got {s:?}")))?;
    if k.is_empty() {
        return Err(Error::Usage(format!("--{flag}: empty name in {s:?}")));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Parses Kubernetes-style quantities for `--memory`: `64M`, `64Mi`, `1G`, `512k`, bytes.
pub fn parse_memory(s: &str) -> Result<u64> {
    let units: [(&str, u64); 10] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("", 1),
    ];
    for (suffix, mult) in units {
        if let Some(num) = s.strip_suffix(suffix)
            && let Ok(n) = num.parse::<f64>()
            && n >= 0.0
        {
            return Ok((n * mult as f64) as u64);
        }
    }
    Err(Error::Usage(format!("--memory: cannot parse {s:?}")))
}

/// Parses `--cpu` (`500m`, `1`, `0.5`) into millicores.
pub fn parse_cpu(s: &str) -> Result<u64> {
    let bad = || Error::Usage(format!("--cpu: cannot parse {s:?}"));
    if let Some(m) = s.strip_suffix('m') {
        return m.parse::<u64>().map_err(|_| bad());
    }
    let f: f64 = s.parse().map_err(|_| bad())?;
    if f <= 0.0 {
        return Err(bad());
    }
    Ok((f * 1000.0).round() as u64)
}

/// Parses `NAME,kind=host|empty,source=PATH,readOnly=BOOL,recursive=BOOL`.
pub fn parse_volume(s: &str) -> Result<Volume> {
    let mut parts = s.split(',');
    let name = parts.next().unwrap_or("").to_string();
    if name.is_empty() || name.contains('=') {
        return Err(Error::Usage(format!(
            "--volume: expected NAME,kind=...,source=..., got {s:?}"
        )));
    }
    let mut v = Volume {
        name,
        kind: String::new(),
        source: None,
        read_only: false,
        recursive: true,
    };
    for p in parts {
        let (k, val) = parse_kv("volume", p)?;
        match k.as_str() {
            "kind" => v.kind = val,
            "source" => v.source = Some(val),
            "readOnly" => v.read_only = parse_bool("volume readOnly", Some(&val))?,
            "recursive" => v.recursive = parse_bool("volume recursive", Some(&val))?,
            other => return Err(Error::Usage(format!("--volume: unknown key {other:?}"))),
        }
    }
    if v.kind.is_empty() {
        return Err(Error::Usage(format!(
            "--volume {:?}: kind is required",
            v.name
        )));
    }
    Ok(v)
}

/// Parses `volume=NAME,target=PATH`.
pub fn parse_mount(s: &str) -> Result<Mount> {
    let mut volume = None;
    let mut target = None;
    for p in s.split(',') {
        let (k, v) = parse_kv("mount", p)?;
        match k.as_str() {
            "volume" => volume = Some(v),
            "target" => target = Some(v),
            other => return Err(Error::Usage(format!("--mount: unknown key {other:?}"))),
        }
    }
    match (volume, target) {
        (Some(volume), Some(path)) if path.starts_with('/') => Ok(Mount { volume, path }),
        _ => Err(Error::Usage(format!(
            "--mount: expected volume=NAME,target=/ABSOLUTE/PATH, got {s:?}"
        ))),
    }
}

/// Parses the arguments after `rkt run` / `rkt prepare`.
pub fn parse(args: &[String]) -> Result<RunArgs> {
    let mut out = RunArgs {
        pod: PodOptions {
            net: "default".into(),
            net_conf_dir: PathBuf::from(crate::stage1::net::NET_CONF_DIR),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut cur: Option<AppOptions> = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "---" {
            if let Some(app) = cur.take() {
                out.pod.apps.push(app);
            }
            continue;
        }
        if a == "--" {
            let app = cur
                .as_mut()
                .ok_or_else(|| Error::Usage("'--' must follow an image".into()))?;
            let mut rest = Vec::new();
            while i < args.len() && args[i] != "---" {
                rest.push(args[i].clone());
                i += 1;
            }
            app.args = Some(rest);
            continue;
        }
        let Some(flag) = a.strip_prefix("--") else {
            if let Some(app) = cur.take() {
                out.pod.apps.push(app);
            }
            cur = Some(AppOptions {
                image: a.clone(),
                ..Default::default()
            });
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let is_bool = POD_BOOL_FLAGS.contains(&name) || APP_BOOL_FLAGS.contains(&name);
        let is_value = POD_VALUE_FLAGS.contains(&name) || APP_VALUE_FLAGS.contains(&name);
        if UNSUPPORTED.contains(&name) {
            return Err(Error::NotImplemented(format!("rkt run --{name}")));
        }
        if !is_bool && !is_value {
            return Err(Error::Usage(format!("unknown flag --{name}")));
        }
        let value = if is_value {
            match inline.clone() {
                Some(v) => v,
                None => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| Error::Usage(format!("--{name} needs a value")))?
                        .clone();
                    i += 1;
                    v
                }
            }
        } else {
            String::new()
        };
        let bool_value = if is_bool {
            parse_bool(name, inline.as_deref())?
        } else {
            false
        };
        if APP_VALUE_FLAGS.contains(&name) || APP_BOOL_FLAGS.contains(&name) {
            let app = cur.as_mut().ok_or_else(|| {
                Error::Usage(format!("--{name} must follow the image it applies to"))
            })?;
            match name {
                "name" => app.name = Some(value),
                "exec" => app.exec = Some(value),
                "user" => app.user = Some(value),
                "group" => app.group = Some(value),
                "supplementary-gids" => {
                    for g in value.split(',').filter(|g| !g.is_empty()) {
                        app.supplementary_gids.push(g.parse().map_err(|_| {
                            Error::Usage(format!("--supplementary-gids: bad gid {g:?}"))
                        })?);
                    }
                }
                "working-dir" => app.working_dir = Some(value),
                "environment" => app.environment.push(parse_kv(name, &value)?),
                "caps-retain" => {
                    app.caps_retain = Some(
                        value
                            .split(',')
                            .filter(|c| !c.is_empty())
                            .map(String::from)
                            .collect(),
                    )
                }
                "caps-remove" => app
                    .caps_remove
                    .extend(value.split(',').filter(|c| !c.is_empty()).map(String::from)),
                "memory" => app.resources.memory_bytes = Some(parse_memory(&value)?),
                "cpu" => app.resources.cpu_millis = Some(parse_cpu(&value)?),
                "pids-limit" => {
                    app.resources.pids =
                        Some(value.parse().map_err(|_| {
                            Error::Usage(format!("--pids-limit: bad number {value:?}"))
                        })?)
                }
                "mount" => app.mounts.push(parse_mount(&value)?),
                "stdin" => match value.as_str() {
                    "null" => {}
                    "tty" | "stream" | "log" => {
                        return Err(Error::NotImplemented(format!(
                            "--stdin={value} is not supported: only null (--interactive passes rkt's stdin to a single app)"
                        )));
                    }
                    o => {
                        return Err(Error::Usage(format!(
                            "--stdin: expected null, tty, stream or log, got {o:?}"
                        )));
                    }
                },
                "stdout" => app.stdout = Output::parse(name, &value)?,
                "stderr" => app.stderr = Output::parse(name, &value)?,
                "readonly-rootfs" => app.readonly_rootfs = bool_value,
                _ => return Err(Error::Usage(format!("unknown flag --{name}"))),
            }
            continue;
        }
        match name {
            "net" => out.pod.net = value,
            "hostname" => out.pod.hostname = Some(value),
            "volume" => out.pod.volumes.push(parse_volume(&value)?),
            "set-env" => out.pod.set_env.push(parse_kv(name, &value)?),
            "dns" => out.pod.dns.extend(value.split(',').map(String::from)),
            "dns-search" => out
                .pod
                .dns_search
                .extend(value.split(',').map(String::from)),
            "hosts-entry" => out.pod.hosts_entries.push(value.replace('=', " ")),
            "uuid-file-save" => out.uuid_file_save = Some(PathBuf::from(value)),
            "dir" => out.dir = Some(PathBuf::from(value)),
            "local-config" => out.pod.net_conf_dir = PathBuf::from(value).join("net.d"),
            "insecure-options" | "pull-policy" => {}
            "inherit-env" => out.pod.inherit_env = bool_value,
            "interactive" => out.pod.interactive = bool_value,
            "debug" => out.debug = bool_value,
            _ => return Err(Error::Usage(format!("unknown flag --{name}"))),
        }
    }
    if let Some(app) = cur.take() {
        out.pod.apps.push(app);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_apps_args_and_separators() {
        let r = parse(&v(&[
            "--net=none",
            "img1",
            "--exec",
            "/bin/sh",
            "--memory=64Mi",
            "--",
            "-c",
            "exit 3",
            "---",
            "img2",
            "--name=two",
            "--readonly-rootfs",
            "--hostname",
            "h",
        ]))
        .unwrap();
        assert_eq!(r.pod.net, "none");
        assert_eq!(r.pod.hostname.as_deref(), Some("h"));
        assert_eq!(r.pod.apps.len(), 2);
        assert_eq!(r.pod.apps[0].exec.as_deref(), Some("/bin/sh"));
        assert_eq!(r.pod.apps[0].args, Some(v(&["-c", "exit 3"])));
        assert_eq!(r.pod.apps[0].resources.memory_bytes, Some(64 << 20));
        assert_eq!(r.pod.apps[1].name.as_deref(), Some("two"));
        assert!(r.pod.apps[1].readonly_rootfs);
    }

    #[test]
    fn app_flag_before_image_is_an_error() {
        assert!(parse(&v(&["--exec=/bin/true", "img"])).is_err());
        assert!(parse(&v(&["img", "--bogus"])).is_err());
        assert!(matches!(
            parse(&v(&["img", "--stage1-path=x"])),
            Err(Error::NotImplemented(_))
        ));
    }

    #[test]
    fn quantities_volumes_and_mounts() {
        assert_eq!(parse_memory("64M").unwrap(), 64_000_000);
        assert_eq!(parse_memory("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_memory("4096").unwrap(), 4096);
        assert!(parse_memory("lots").is_err());
        assert_eq!(parse_cpu("250m").unwrap(), 250);
        assert_eq!(parse_cpu("1.5").unwrap(), 1500);
        let vol = parse_volume("data,kind=host,source=/srv,readOnly=true").unwrap();
        assert_eq!(
            (vol.kind.as_str(), vol.source.as_deref(), vol.read_only),
            ("host", Some("/srv"), true)
        );
        assert!(parse_volume("data,source=/srv").is_err());
        let m = parse_mount("volume=data,target=/data").unwrap();
        assert_eq!((m.volume.as_str(), m.path.as_str()), ("data", "/data"));
        assert!(parse_mount("volume=data,target=rel").is_err());
    }

    #[test]
    fn output_modes_are_per_app() {
        let r = parse(&v(&[
            "img1",
            "--stdout=log",
            "--stderr",
            "null",
            "---",
            "img2",
            "--stdin=null",
            "--stderr=log",
        ]))
        .unwrap();
        assert_eq!(
            (r.pod.apps[0].stdout, r.pod.apps[0].stderr),
            (Output::Log, Output::Null)
        );
        assert_eq!(
            (r.pod.apps[1].stdout, r.pod.apps[1].stderr),
            (Output::Inherit, Output::Log)
        );
        for bad in ["--stdout=tty", "--stderr=stream", "--stdin=tty"] {
            assert!(
                matches!(parse(&v(&["img", bad])), Err(Error::NotImplemented(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(&v(&["img", "--stdout=file"])),
            Err(Error::Usage(_))
        ));
        assert!(parse(&v(&["--stdout=log", "img"])).is_err());
    }
}
