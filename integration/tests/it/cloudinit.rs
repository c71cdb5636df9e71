//! coreos-cloudinit applied for real: the `coreos-cloudinit` binary runs
//! inside a booted machine, drives its systemd over D-Bus and writes its
//! files; afterwards the machine is checked from the outside.

use integration::{Machine, binary};
use std::time::Duration;

const USER_DATA: &str = r#"#cloud-config
hostname: cc-applied
users:
  - name: alice
    gecos: Alice Example
    groups: [sudo]
    ssh-authorized-keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAliceKeyForTests alice@test
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICoreKeyForTests core@test
write_files:
  - path: /etc/cc-test/secret.conf
    permissions: "0600"
    owner: alice:alice
    content: |
      token=s3cret
  - path: /etc/cc-test/b64.txt
    encoding: b64
    content: aGVsbG8gZnJvbSBiYXNlNjQK
coreos:
  etcd2:
    name: node1
    listen-client-urls: http://0.0.0.0:2379
  flannel:
    etcd_prefix: /coreos.com/network2
  update:
    reboot-strategy: "off"
    group: beta
  units:
    - name: cc-hello.service
      command: start
      enable: true
      content: |
        [Unit]
        Description=cloudinit test service
        [Service]
        ExecStart=/bin/sleep infinity
        [Install]
        WantedBy=multi-user.target
      drop-ins:
        - name: 10-env.conf
          content: |
            [Service]
            Environment=GREETING=hi
    - name: cc-masked.service
      mask: true
"#;

fn text(machine: &Machine, path: &str) -> String {
    String::from_utf8(machine.read_file(path).unwrap_or_else(|e| panic!("{e:#}"))).unwrap()
}

fn run(machine: &Machine, program: &str, args: &[&str]) -> String {
    let out = machine.exec(program, args).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_cloud_config_is_applied_to_a_real_systemd_machine() {
    let machine = Machine::boot().unwrap();
    // CoreOS machines have a `core` user; this one is made from Debian.
    let out = machine.exec("useradd", &["--create-home", "core"]).unwrap();
    assert!(out.status.success(), "useradd core: {out:?}");
    machine.write_file("/var/tmp/user-data", USER_DATA).unwrap();
    let cloudinit = binary("coreos-cloudinit").unwrap();

    let out = machine
        .exec(
            cloudinit.to_str().unwrap(),
            &["--from-file", "/var/tmp/user-data"],
        )
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "coreos-cloudinit failed: {log}");

    // hostname
    assert_eq!(run(&machine, "hostname", &[]), "cc-applied", "{log}");

    // users and keys
    let alice = run(&machine, "getent", &["passwd", "alice"]);
    assert!(
        alice.starts_with("alice:") && alice.contains("Alice Example"),
        "{alice}"
    );
    assert!(
        run(&machine, "id", &["-nG", "alice"])
            .split_whitespace()
            .any(|g| g == "sudo")
    );
    let alice_keys = text(&machine, "/home/alice/.ssh/authorized_keys");
    assert!(alice_keys.contains("AliceKeyForTests"), "{alice_keys}");
    let core_keys = text(&machine, "/home/core/.ssh/authorized_keys");
    assert!(core_keys.contains("CoreKeyForTests"), "{core_keys}");

    // write_files: content, encoding, mode, owner
    assert_eq!(text(&machine, "/etc/cc-test/secret.conf"), "token=s3cret\n");
    assert_eq!(
        text(&machine, "/etc/cc-test/b64.txt"),
        "hello from base64\n"
    );
    assert_eq!(
        run(
            &machine,
            "stat",
            &["-c", "%a %U", "/etc/cc-test/secret.conf"]
        ),
        "600 alice"
    );

    // coreos.etcd2 drop-in and flannel options
    let etcd = text(
        &machine,
        "/run/systemd/system/etcd2.service.d/20-cloudinit.conf",
    );
    assert_eq!(
        etcd,
        "[Service]\nEnvironment=\"ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379\"\nEnvironment=\"ETCD_NAME=node1\"\n"
    );
    assert_eq!(
        text(&machine, "/run/flannel/options.env"),
        "FLANNELD_ETCD_PREFIX=/coreos.com/network2\n"
    );

    // coreos.update: update.conf merged, locksmithd masked at runtime
    let update = text(&machine, "/etc/coreos/update.conf");
    assert!(
        update.contains("GROUP=beta") && update.contains("REBOOT_STRATEGY=off"),
        "{update}"
    );
    let mask =
        std::fs::read_link(machine.root().join("run/systemd/system/locksmithd.service")).unwrap();
    assert_eq!(mask, std::path::Path::new("/dev/null"));

    // coreos.units: content, drop-in, enable, start, mask
    assert!(
        text(
            &machine,
            "/etc/systemd/system/cc-hello.service.d/10-env.conf"
        )
        .contains("GREETING=hi")
    );
    assert_eq!(
        run(&machine, "systemctl", &["is-enabled", "cc-hello.service"]),
        "enabled"
    );
    integration::poll_until(
        "cc-hello running",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let state = run(
                &machine,
                "systemctl",
                &["show", "-p", "SubState", "--value", "cc-hello.service"],
            );
            (state == "running").then_some(())
        },
    )
    .unwrap();
    assert_eq!(
        run(
            &machine,
            "systemctl",
            &["show", "-p", "Environment", "--value", "cc-hello.service"]
        ),
        "GREETING=hi"
    );
    assert_eq!(
        run(&machine, "systemctl", &["is-enabled", "cc-masked.service"]),
        "masked"
    );
}

/// An EC2-style metadata service (and plain user-data URLs) served from
/// host `meta`; returns its base URL.
fn metadata_server(meta: &integration::Host, node_addr: std::net::Ipv4Addr) -> String {
    use axum::{Router, routing::get};
    let addr = meta.addr();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // `\$private_ipv4` is the escape for a literal `$private_ipv4`.
    let ec2_user_data = concat!(
        "#cloud-config\n",
        "write_files:\n",
        "  - path: /etc/cc-ds/ec2\n",
        "    content: |\n",
        "      private=$private_ipv4 public=$public_ipv4 literal=\\$private_ipv4\n",
    );
    let url_user_data =
        "#cloud-config\nwrite_files:\n  - path: /etc/cc-ds/url\n    content: from-url\n";
    let cmdline_user_data =
        "#cloud-config\nwrite_files:\n  - path: /etc/cc-ds/cmdline\n    content: from-cmdline\n";
    let local = node_addr.to_string();
    let app = Router::new()
        .route("/2009-04-04/", get(|| async { "meta-data\nuser-data\n" }))
        .route(
            "/2009-04-04/user-data",
            get(move || async move { ec2_user_data }),
        )
        .route(
            "/2009-04-04/meta-data/hostname",
            get(|| async { "ec2-node" }),
        )
        .route(
            "/2009-04-04/meta-data/local-ipv4",
            get(move || async move { local }),
        )
        .route(
            "/2009-04-04/meta-data/public-ipv4",
            get(|| async { "203.0.113.7" }),
        )
        .route(
            "/2009-04-04/meta-data/public-keys",
            get(|| async { "0=test-key" }),
        )
        .route(
            "/2009-04-04/meta-data/public-keys/0/openssh-key",
            get(|| async { "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMetadataKey meta@test" }),
        )
        .route("/url-user-data", get(move || async move { url_user_data }))
        .route(
            "/cmdline-user-data",
            get(move || async move { cmdline_user_data }),
        );
    // The server thread lives until the test process ends.
    let _server = meta
        .spawn_thread(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind((addr, 8080)).await.unwrap();
                ready_tx.send(()).unwrap();
                axum::serve(listener, app).await.unwrap();
            })
        })
        .unwrap();
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    format!("http://{addr}:8080")
}

fn cloudinit_in(machine: &Machine, args: &[&str]) {
    let cloudinit = binary("coreos-cloudinit").unwrap();
    let mut full = args.to_vec();
    full.extend(["--datasource-timeout", "30"]);
    let out = machine.exec(cloudinit.to_str().unwrap(), &full).unwrap();
    assert!(
        out.status.success(),
        "coreos-cloudinit {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn datasources_over_the_network_and_on_disk_feed_a_real_machine() {
    let net = integration::Network::new().unwrap();
    let meta = net.add_host("meta").unwrap();
    let node = net.add_host("node").unwrap();
    let base = metadata_server(&meta, node.addr());
    let machine = Machine::boot_with(integration::MachineOptions::on_host(&node)).unwrap();
    let out = machine.exec("useradd", &["--create-home", "core"]).unwrap();
    assert!(out.status.success(), "useradd core: {out:?}");

    // EC2-style metadata: user-data with substitutions, hostname, addresses, keys.
    cloudinit_in(&machine, &["--from-ec2-metadata", &format!("{base}/")]);
    assert_eq!(
        text(&machine, "/etc/cc-ds/ec2"),
        format!(
            "private={} public=203.0.113.7 literal=$private_ipv4\n",
            node.addr()
        )
    );
    assert_eq!(run(&machine, "hostname", &[]), "ec2-node");
    let environment = text(&machine, "/etc/environment");
    assert!(
        environment.contains(&format!("COREOS_PRIVATE_IPV4={}", node.addr())),
        "{environment}"
    );
    assert!(
        environment.contains("COREOS_PUBLIC_IPV4=203.0.113.7"),
        "{environment}"
    );
    assert!(text(&machine, "/home/core/.ssh/authorized_keys").contains("MetadataKey"));

    // A URL.
    cloudinit_in(&machine, &["--from-url", &format!("{base}/url-user-data")]);
    assert_eq!(text(&machine, "/etc/cc-ds/url"), "from-url");

    // The kernel command line's cloud-config-url.
    machine
        .write_file(
            "/var/tmp/cmdline",
            format!("quiet cloud-config-url={base}/cmdline-user-data ro\n"),
        )
        .unwrap();
    cloudinit_in(
        &machine,
        &[
            "--from-proc-cmdline",
            "--proc-cmdline-path",
            "/var/tmp/cmdline",
        ],
    );
    assert_eq!(text(&machine, "/etc/cc-ds/cmdline"), "from-cmdline");

    // A config drive.
    machine
        .write_file(
            "/media/configdrive/openstack/latest/user_data",
            "#cloud-config\nwrite_files:\n  - path: /etc/cc-ds/drive\n    content: from-drive\n",
        )
        .unwrap();
    machine
        .write_file(
            "/media/configdrive/openstack/latest/meta_data.json",
            r#"{"hostname": "drive-node"}"#,
        )
        .unwrap();
    cloudinit_in(&machine, &["--from-configdrive", "/media/configdrive"]);
    assert_eq!(text(&machine, "/etc/cc-ds/drive"), "from-drive");
    assert_eq!(run(&machine, "hostname", &[]), "drive-node");
}

#[test]
fn a_script_user_data_runs_as_a_transient_unit() {
    let machine = Machine::boot().unwrap();
    machine
        .write_file(
            "/var/tmp/user-data",
            "#!/bin/bash\necho \"ran as $(id -un)\" > /var/tmp/script-ran\n",
        )
        .unwrap();
    cloudinit_in(&machine, &["--from-file", "/var/tmp/user-data"]);
    let ran = integration::poll_until(
        "the script's output",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || machine.read_file("/var/tmp/script-ran").ok(),
    )
    .unwrap();
    assert_eq!(String::from_utf8(ran).unwrap(), "ran as root\n");
    // It ran under systemd, as a unit of its own.
    let units = run(
        &machine,
        "systemctl",
        &["list-units", "--all", "--no-legend", "coreos-cloudinit-*"],
    );
    assert!(
        units.contains("coreos-cloudinit-"),
        "no transient unit: {units:?}"
    );
}
