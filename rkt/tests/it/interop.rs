//! Interoperability with Debian's skopeo and umoci: our layouts validate with them, and images
//! they write (including umoci's whiteout layers) import and run.

use std::process::Command;

use crate::common::{Env, show, stdout};

fn tool(cmd: &mut Command) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?} (apt-get install skopeo umoci): {e}"));
    assert!(o.status.success(), "{cmd:?}: {}", show(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn skopeo_and_umoci_accept_our_layouts_and_exports() {
    let env = Env::new();
    let inspect = tool(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:latest", env.layout.display())),
    );
    assert!(inspect.contains("\"Layers\""), "{inspect}");
    env.ok(&["fetch", &env.image()]);
    let archive = env.tmp.path().join("exported.tar");
    env.ok(&[
        "image",
        "export",
        "busybox",
        archive.to_str().expect("utf8"),
    ]);
    let inspect = tool(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}", archive.display())),
    );
    assert!(inspect.contains("sha256:"), "{inspect}");
    let bundle = env.tmp.path().join("bundle");
    tool(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:latest", env.layout.display()))
            .arg(&bundle),
    );
    assert!(bundle.join("rootfs/bin/busybox").is_file());
}

#[test]
fn skopeo_written_archives_import() {
    let env = Env::new();
    let oci_archive = env.tmp.path().join("s-oci.tar");
    tool(
        Command::new("skopeo")
            .arg("copy")
            .arg(env.image())
            .arg(format!("oci-archive:{}:v2", oci_archive.display())),
    );
    let o = env.rkt(&[
        "run",
        "--net=none",
        &format!("oci-archive:{}:v2", oci_archive.display()),
    ]);
    assert_eq!(stdout(&o), "hello from busybox\n", "{}", show(&o));
    let docker_archive = env.tmp.path().join("s-docker.tar");
    tool(
        Command::new("skopeo")
            .arg("copy")
            .arg(env.image())
            .arg(format!(
                "docker-archive:{}:skopeo/busybox:d1",
                docker_archive.display()
            )),
    );
    env.ok(&[
        "fetch",
        &format!("docker-archive:{}", docker_archive.display()),
    ]);
    let o = env.rkt(&[
        "run",
        "--net=none",
        "skopeo/busybox:d1",
        "--exec=/bin/sh",
        "--",
        "-c",
        "echo $FOO",
    ]);
    assert_eq!(stdout(&o), "from-image\n", "{}", show(&o));
}

#[test]
fn umoci_repacked_layers_with_whiteouts_run() {
    let env = Env::new();
    let layout = env.tmp.path().join("umoci-layout");
    tool(Command::new("cp").arg("-a").arg(&env.layout).arg(&layout));
    let bundle = env.tmp.path().join("b");
    tool(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:latest", layout.display()))
            .arg(&bundle),
    );
    std::fs::remove_file(bundle.join("rootfs/bin/ls")).expect("rm ls");
    std::fs::write(bundle.join("rootfs/added"), "added by umoci\n").expect("write");
    tool(
        Command::new("umoci")
            .args(["repack", "--image"])
            .arg(format!("{}:v2", layout.display()))
            .arg(&bundle),
    );
    tool(
        Command::new("umoci")
            .args(["config", "--image"])
            .arg(format!("{}:v2", layout.display()))
            .args([
                "--config.cmd",
                "/bin/sh",
                "--config.cmd",
                "-c",
                "--config.cmd",
                "cat /added; test -e /bin/ls || echo no-ls",
            ]),
    );
    let o = env.rkt(&["run", "--net=none", &format!("oci:{}:v2", layout.display())]);
    assert_eq!(stdout(&o), "added by umoci\nno-ls\n", "{}", show(&o));
}

/// The probe run in both runtimes: one `key=value` line per property.
const PROBE: &str = r#"#!/bin/sh
echo "uid=$(id -u)"
echo "gid=$(id -g)"
echo "groups=$(id -G)"
echo "cwd=$(pwd)"
echo "hostname=$(hostname)"
for n in ipc mnt net pid uts; do echo "ns-$n=$(readlink /proc/self/ns/$n)"; done
echo "mounts=$(cut -d' ' -f2 /proc/mounts | sort | tr '\n' ' ')"
echo "dev=$(ls /dev | sort | tr '\n' ' ')"
echo "env=$(env | grep -v -e '^HOME=' -e '^AC_APP_NAME=' -e '^TERM=' -e '^HOSTNAME=' -e '^PWD=' -e '^SHLVL=' | sort | tr '\n' ' ')"
echo "cgroup-memory=$(grep -E '^[0-9]+:memory:' /proc/self/cgroup | cut -d: -f3)"
echo "cgroup-unified=$(grep -E '^0::' /proc/self/cgroup | cut -d: -f3)"
"#;

fn props(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn stage1_environment_matches_runc() {
    use serde_json::json;
    let env = Env::new();
    let probe_layer = crate::common::TarBuilder::new()
        .file("probe", PROBE.as_bytes(), 0o755)
        .finish();
    let layout = crate::common::write_layout(
        &env.tmp.path().join("probe-image"),
        "latest",
        &[crate::common::busybox_layer(), probe_layer],
        json!({"Env": ["PATH=/bin", "PROBE=1"], "Cmd": ["/bin/sh", "/probe"], "WorkingDir": "/tmp"}),
    );

    let o = env.rkt(&[
        "run",
        "--net=none",
        "--hostname=probe",
        &format!("oci:{}:latest", layout.display()),
    ]);
    assert!(o.status.success(), "{}", show(&o));
    let ours = props(&stdout(&o));

    let bundle = env.tmp.path().join("bundle");
    tool(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:latest", layout.display()))
            .arg(&bundle),
    );
    let cfg_path = bundle.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).expect("config")).expect("json");
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let own_cgroups = std::fs::read_to_string("/proc/self/cgroup").expect("cgroup");
    let own_memory = own_cgroups
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .unwrap_or_else(|| "/".into());
    let own_unified = own_cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(String::from))
        .unwrap_or_else(|| "/".into());
    let cg_name = format!("rkt-probe-{}", std::process::id());
    cfg["process"]["terminal"] = json!(false);
    cfg["process"]["args"] = json!(["/bin/sh", "/probe"]);
    cfg["hostname"] = json!("probe");
    // On v2 a non-delegated cgroup cannot get children with controllers: runc goes to the root.
    let runc_cgroup = if v2 {
        format!("/{cg_name}")
    } else {
        format!("{}/{cg_name}", own_memory.trim_end_matches('/'))
    };
    cfg["linux"]["cgroupsPath"] = json!(runc_cgroup);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).expect("json")).expect("write config");
    let state = env.tmp.path().join("runc-state");
    let o = Command::new("runc")
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&cg_name)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("runc (apt-get install runc)");
    assert!(o.status.success(), "runc: {}", show(&o));
    let theirs = props(&stdout(&o));

    for key in ["uid", "gid", "groups", "cwd", "hostname", "env"] {
        assert_eq!(
            ours.get(key),
            theirs.get(key),
            "{key} differs between rkt and runc"
        );
    }
    let host = |n: &str| {
        std::fs::read_link(format!("/proc/self/ns/{n}"))
            .expect("ns")
            .display()
            .to_string()
    };
    for n in ["ipc", "mnt", "net", "pid", "uts"] {
        let key = format!("ns-{n}");
        assert_ne!(ours[&key], host(n), "rkt shares the host's {n} namespace");
        assert_ne!(
            theirs[&key],
            host(n),
            "runc shares the host's {n} namespace"
        );
    }
    let set = |s: &str| {
        s.split_whitespace()
            .map(String::from)
            .collect::<std::collections::BTreeSet<_>>()
    };
    for m in ["/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm"] {
        assert!(set(&ours["mounts"]).contains(m), "rkt lacks mount {m}");
        assert!(set(&theirs["mounts"]).contains(m), "runc lacks mount {m}");
    }
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm",
    ] {
        assert!(set(&ours["dev"]).contains(d), "rkt lacks /dev/{d}");
        assert!(set(&theirs["dev"]).contains(d), "runc lacks /dev/{d}");
    }
    // Both put the container in its own cgroup: below the caller's (v1 memory hierarchy), or at
    // least not the caller's (v2).
    if v2 {
        for (who, p) in [("rkt", &ours), ("runc", &theirs)] {
            let path = p.get("cgroup-unified").cloned().unwrap_or_default();
            assert!(
                !path.is_empty() && path != own_unified,
                "{who} runs in the caller's cgroup {path:?}"
            );
        }
    } else {
        let own = own_memory.trim_end_matches('/');
        for (who, p) in [("rkt", &ours), ("runc", &theirs)] {
            let path = p.get("cgroup-memory").cloned().unwrap_or_default();
            assert!(
                path.starts_with(own) && path.len() > own.len(),
                "{who}'s memory cgroup {path:?} is not below {own_memory:?}"
            );
        }
    }
}
