//! Apply against a temp root with the recording systemd fake and fake accounts.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use cloudinit::apply::users::FakeAccounts;
use cloudinit::apply::{Env, apply};
use cloudinit::metadata::Metadata;
use cloudinit::systemd::{Call, Recording, UnitCommand};
use cloudinit::{CloudConfig, validate};

const SAMPLE: &str = r#"#cloud-config
hostname: node1
manage_etc_hosts: localhost
ssh_authorized_keys:
  - ssh-ed25519 AAAAcore core@example
users:
  - name: alice
    passwd: $6$salt$hash
    groups: [sudo, docker]
    ssh_authorized_keys:
      - ssh-ed25519 AAAAalice alice@example
  - name: core
    passwd: $6$core$hash
write_files:
  - path: /etc/motd
    content: hello
  - path: /opt/bin/secret
    permissions: 0600
    owner: core:core
    encoding: b64
    content: c2VjcmV0
coreos:
  oem:
    id: test
    name: Test OEM
  update:
    reboot-strategy: off
    group: beta
  etcd2:
    name: node1
    advertise-client-urls: http://$private_ipv4:2379
    heartbeat-interval: 100
  fleet:
    metadata: region=here
  flannel:
    interface: eth1
  locksmith:
    window_start: Sun 3:00
  units:
    - name: hello.service
      enable: true
      command: start
      content: |
        [Unit]
        Description=hello
        [Service]
        ExecStart=/bin/true
        [Install]
        WantedBy=multi-user.target
      drop-ins:
        - name: 10-env.conf
          content: |
            [Service]
            Environment=A=1
    - name: masked.service
      mask: true
    - name: transient.service
      runtime: true
      content: "[Service]\nExecStart=/bin/true\n"
      command: restart
    - name: 10-eth.network
      content: "[Match]\nName=eth0\n"
      command: start
"#;

fn root_with_core() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::write(
        dir.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\ncore:x:500:500::/home/core:/bin/bash\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("etc/group"), "core:x:500:\n").unwrap();
    std::fs::create_dir_all(dir.path().join("usr/share/coreos")).unwrap();
    std::fs::write(
        dir.path().join("usr/share/coreos/update.conf"),
        "GROUP=stable\nSERVER=https://public\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("etc/environment"),
        "PATH=/usr/bin\nCOREOS_PRIVATE_IPV4=old\n",
    )
    .unwrap();
    dir
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn mode(root: &Path, rel: &str) -> u32 {
    std::fs::metadata(root.join(rel))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[tokio::test]
async fn sample_config_applies_in_order() {
    assert!(
        validate::validate(SAMPLE.as_bytes()).is_empty(),
        "{:?}",
        validate::validate(SAMPLE.as_bytes())
    );
    let metadata = Metadata {
        private_ipv4: Some("10.0.0.5".into()),
        ..Default::default()
    };
    let config = CloudConfig::parse(&metadata.substitute(SAMPLE)).unwrap();
    let dir = root_with_core();
    let root = dir.path();
    let systemd = Recording::default();
    let accounts = FakeAccounts::new(root);
    let mut env = Env::new(root, &systemd, &accounts);
    env.metadata = metadata;
    let report = apply(&config, &env).await;
    assert!(report.is_ok(), "{report:?}");

    // users: alice created with the original's options, core's password set
    assert_eq!(
        accounts.calls(),
        vec![
            "useradd --password $6$salt$hash --create-home --groups sudo,docker alice".to_string(),
            "chpasswd core:$6$core$hash".to_string(),
        ]
    );
    assert_eq!(
        read(root, "home/alice/.ssh/authorized_keys"),
        "ssh-ed25519 AAAAalice alice@example\n"
    );
    assert_eq!(
        read(root, "home/core/.ssh/authorized_keys.d/coreos-cloudinit"),
        "ssh-ed25519 AAAAcore core@example\n"
    );
    assert_eq!(
        read(root, "home/core/.ssh/authorized_keys"),
        "ssh-ed25519 AAAAcore core@example\n"
    );
    assert_eq!(mode(root, "home/core/.ssh/authorized_keys"), 0o600);
    assert_eq!(
        std::fs::metadata(root.join("home/core/.ssh/authorized_keys"))
            .unwrap()
            .uid(),
        500
    );

    // write_files
    assert_eq!(read(root, "etc/motd"), "hello");
    assert_eq!(mode(root, "etc/motd"), 0o644);
    assert_eq!(read(root, "opt/bin/secret"), "secret");
    assert_eq!(mode(root, "opt/bin/secret"), 0o600);
    let meta = std::fs::metadata(root.join("opt/bin/secret")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (500, 500));

    // generated files
    assert_eq!(
        read(root, "etc/oem-release"),
        "ID=test\nVERSION_ID=\nNAME=\"Test OEM\"\nHOME_URL=\"\"\nBUG_REPORT_URL=\"\"\n"
    );
    assert_eq!(
        read(root, "etc/coreos/update.conf"),
        "GROUP=beta\nSERVER=https://public\nREBOOT_STRATEGY=off\n"
    );
    assert_eq!(read(root, "etc/hosts"), "127.0.0.1 node1\n");
    assert_eq!(
        read(root, "run/flannel/options.env"),
        "FLANNELD_IFACE=eth1\n"
    );
    assert_eq!(
        read(root, "etc/environment"),
        "PATH=/usr/bin\nCOREOS_PRIVATE_IPV4=10.0.0.5\n"
    );

    // drop-ins
    assert_eq!(
        read(root, "run/systemd/system/etcd2.service.d/20-cloudinit.conf"),
        "[Service]\nEnvironment=\"ETCD_ADVERTISE_CLIENT_URLS=http://10.0.0.5:2379\"\nEnvironment=\"ETCD_HEARTBEAT_INTERVAL=100\"\nEnvironment=\"ETCD_NAME=node1\"\n"
    );
    assert_eq!(
        read(root, "run/systemd/system/fleet.service.d/20-cloudinit.conf"),
        "[Service]\nEnvironment=\"FLEET_METADATA=region=here\"\n"
    );
    assert_eq!(
        read(
            root,
            "run/systemd/system/locksmithd.service.d/20-cloudinit.conf"
        ),
        "[Service]\nEnvironment=\"REBOOT_WINDOW_START=Sun 3:00\"\n"
    );

    // units
    assert!(read(root, "etc/systemd/system/hello.service").contains("Description=hello"));
    assert_eq!(
        read(root, "etc/systemd/system/hello.service.d/10-env.conf"),
        "[Service]\nEnvironment=A=1\n"
    );
    assert_eq!(
        std::fs::read_link(root.join("etc/systemd/system/masked.service")).unwrap(),
        Path::new("/dev/null")
    );
    assert_eq!(
        read(root, "run/systemd/system/transient.service"),
        "[Service]\nExecStart=/bin/true\n"
    );
    assert_eq!(
        read(root, "etc/systemd/network/10-eth.network"),
        "[Match]\nName=eth0\n"
    );
    // reboot_strategy off masks locksmithd at runtime
    assert_eq!(
        std::fs::read_link(root.join("run/systemd/system/locksmithd.service")).unwrap(),
        Path::new("/dev/null")
    );

    assert_eq!(
        systemd.calls(),
        vec![
            Call::Hostname("node1".into()),
            Call::Enable(vec!["hello.service".into()], false),
            Call::Reload,
            Call::Command("hello.service".into(), UnitCommand::Start),
            Call::Command("transient.service".into(), UnitCommand::Restart),
            Call::Command("locksmithd.service".into(), UnitCommand::Stop),
            Call::Command("update-engine.service".into(), UnitCommand::Restart),
            Call::Command("systemd-networkd.service".into(), UnitCommand::Restart),
        ]
    );

    // nothing half-written: no temp files anywhere
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with("cloudinit-temp"),
                "temp file left: {}",
                entry.path().display()
            );
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
}

#[tokio::test]
async fn invalid_sections_are_reported_and_skipped() {
    let text = r#"#cloud-config
write_files:
  - path: /etc/bad-perms
    permissions: rwx
    content: x
  - path: /etc/bad-b64
    encoding: b64
    content: "!!"
  - path: /usr/lib/x
    content: x
  - path: /etc/bad-owner
    owner: nobody-here
    content: x
  - path: /etc/good
    content: good
manage_etc_hosts: yes-please
coreos:
  etcd2:
    name: n1
    proxy: sometimes
  locksmith:
    window_start: tues 0:0
  fleet:
    metadata: ok=1
  update:
    reboot_strategy: best-effort
  units:
    - name: bad.service
      content: "[Service]\n"
      command: jump
    - name: good.service
      content: "[Service]\n"
      command: start
"#;
    let config = CloudConfig::parse(text).unwrap();
    let dir = root_with_core();
    let root = dir.path();
    let systemd = Recording::default();
    let accounts = FakeAccounts::new(root);
    let report = apply(&config, &Env::new(root, &systemd, &accounts)).await;
    assert_eq!(report.failures.len(), 9, "{:#?}", report.failures);
    for (needle, i) in [
        ("/etc/bad-perms", 0),
        ("/etc/bad-b64", 1),
        ("/usr/lib/x", 2),
        ("/etc/bad-owner", 3),
        ("coreos.update", 4),
        ("Invalid option to manage_etc_hosts", 5),
        ("coreos.etcd2: invalid value sometimes for proxy", 6),
        (
            "coreos.locksmith: invalid value tues 0:0 for window_start",
            7,
        ),
        ("unit bad.service", 8),
    ] {
        assert!(
            report.failures[i].contains(needle),
            "{i}: {:?}",
            report.failures
        );
    }
    for missing in [
        "etc/bad-perms",
        "etc/bad-b64",
        "usr/lib/x",
        "etc/bad-owner",
        "etc/coreos/update.conf",
        "etc/hosts",
    ] {
        assert!(!root.join(missing).exists(), "{missing} was written");
    }
    assert!(!root.join("etc/systemd/system/bad.service").exists());
    assert!(!root.join("run/systemd/system/etcd2.service.d").exists());
    assert!(
        !root
            .join("run/systemd/system/locksmithd.service.d")
            .exists()
    );
    assert!(
        root.join("run/systemd/system/fleet.service.d/20-cloudinit.conf")
            .exists()
    );
    assert_eq!(read(root, "etc/good"), "good");
    assert_eq!(read(root, "etc/systemd/system/good.service"), "[Service]\n");
    assert_eq!(
        systemd.calls(),
        vec![
            Call::Reload,
            Call::Command("good.service".into(), UnitCommand::Start)
        ]
    );
}

#[tokio::test]
async fn runtime_unit_is_unmasked_only_when_masked() {
    let dir = root_with_core();
    let root = dir.path();
    let runtime = root.join("run/systemd/system");
    std::fs::create_dir_all(&runtime).unwrap();
    std::os::unix::fs::symlink("/dev/null", runtime.join("a.service")).unwrap();
    std::fs::write(
        runtime.join("b.service"),
        "[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    let config = CloudConfig::parse(
        "#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      runtime: true\n    - name: b.service\n      runtime: true\n",
    )
    .unwrap();
    let systemd = Recording::default();
    let accounts = FakeAccounts::new(root);
    let report = apply(&config, &Env::new(root, &systemd, &accounts)).await;
    assert!(report.is_ok(), "{report:?}");
    assert!(
        std::fs::symlink_metadata(runtime.join("a.service")).is_err(),
        "mask not removed"
    );
    assert!(
        runtime.join("b.service").exists(),
        "a real unit was removed"
    );
    assert_eq!(systemd.calls(), vec![Call::Reload]);
}

#[tokio::test]
async fn write_files_to_etc_environment_suppresses_the_merge() {
    let dir = root_with_core();
    let root = dir.path();
    let config = CloudConfig::parse(
        "#cloud-config\nwrite_files:\n  - path: /etc/environment\n    content: \"A=1\\n\"\n",
    )
    .unwrap();
    let systemd = Recording::default();
    let accounts = FakeAccounts::new(root);
    let mut env = Env::new(root, &systemd, &accounts);
    env.metadata = Metadata {
        public_ipv4: Some("1.2.3.4".into()),
        ..Default::default()
    };
    assert!(apply(&config, &env).await.is_ok());
    assert_eq!(read(root, "etc/environment"), "A=1\n");
}

#[tokio::test]
async fn side_effects_on_units_this_machine_lacks_are_skipped() {
    let dir = root_with_core();
    let root = dir.path();
    let config = CloudConfig::parse(
        "#cloud-config\ncoreos:\n  update:\n    reboot-strategy: reboot\n    group: beta\n  units:\n    - name: absent.service\n      command: start\n",
    )
    .unwrap();
    let systemd = Recording::with_missing_units(&[
        "locksmithd.service",
        "update-engine.service",
        "absent.service",
    ]);
    let accounts = FakeAccounts::new(root);
    let report = apply(&config, &Env::new(root, &systemd, &accounts)).await;
    // The user's own unit is a failure; the generated side effects are not.
    assert_eq!(
        report.failures,
        vec!["unit absent.service not found".to_string()]
    );
    assert_eq!(
        systemd.calls(),
        vec![
            Call::Command("absent.service".into(), UnitCommand::Start),
            Call::Command("locksmithd.service".into(), UnitCommand::Restart),
            Call::Command("update-engine.service".into(), UnitCommand::Restart),
        ]
    );
}
