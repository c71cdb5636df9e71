//! The install layout in `deploy/`: every example cloud-config is accepted
//! by the validator with no findings.

use integration::binary;
use std::path::Path;

#[test]
fn every_example_cloud_config_validates_with_no_findings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cloud-config");
    let cloudinit = binary("coreos-cloudinit").unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yml") {
            continue;
        }
        let out = std::process::Command::new(&cloudinit)
            .arg("--validate")
            .arg("--from-file")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).as_ref()
            ),
            (Some(0), ""),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected the example cloud-configs in {}",
        dir.display()
    );
}

/// Installs `deploy/`'s unit and this workspace's etcd binaries into a
/// machine, as a package would.
fn install_etcd(machine: &integration::Machine) {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/system");
    machine
        .copy_in(
            &units.join("etcd2.service"),
            "/usr/lib/systemd/system/etcd2.service",
        )
        .unwrap();
    for name in ["etcd", "etcdctl"] {
        machine
            .copy_in(&binary(name).unwrap(), &format!("/usr/bin/{name}"))
            .unwrap();
    }
}

#[test]
fn a_cloud_config_starts_etcd2_service_and_etcdctl_works() {
    let machine = integration::Machine::boot().unwrap();
    install_etcd(&machine);
    machine
        .write_file(
            "/var/tmp/user-data",
            "#cloud-config\ncoreos:\n  etcd2:\n    name: node1\n    listen-client-urls: http://127.0.0.1:2379\n    advertise-client-urls: http://127.0.0.1:2379\n  units:\n    - name: etcd2.service\n      command: start\n",
        )
        .unwrap();
    let cloudinit = binary("coreos-cloudinit").unwrap();
    let out = machine
        .exec(
            cloudinit.to_str().unwrap(),
            &["--from-file", "/var/tmp/user-data"],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "coreos-cloudinit: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The unit runs our etcd with the name from the cloud-config's drop-in.
    let stdout = |args: &[&str]| {
        let out = machine.exec(args[0], &args[1..]).unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    integration::poll_until(
        "etcdctl set through etcd2.service",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(100),
        || {
            let (ok, out) = stdout(&["etcdctl", "set", "/message", "hi"]);
            (ok && out == "hi\n").then_some(())
        },
    )
    .unwrap_or_else(|e| {
        let (_, journal) = stdout(&["journalctl", "-u", "etcd2.service", "--no-pager"]);
        panic!("{e:#}\n{journal}")
    });
    assert_eq!(
        stdout(&["etcdctl", "get", "/message"]),
        (true, "hi\n".to_owned())
    );
    assert_eq!(
        stdout(&["systemctl", "is-active", "etcd2.service"])
            .1
            .trim(),
        "active"
    );
    let (_, members) = stdout(&["etcdctl", "member", "list"]);
    assert!(members.contains("name=node1"), "{members}");
    // The data lives where the unit says.
    assert!(machine.root().join("var/lib/etcd2").is_dir());
}
