//! Pod networking: `--net=host`, and two `--net=default` pods reaching each other and the host.
//! Everything that creates interfaces runs inside a network namespace the test creates and removes.

use std::process::{Command, Output};

use crate::common::{Env, show, stdout, wait_for};

/// A named network namespace, deleted on drop.
struct NetNs(String);

impl NetNs {
    fn new() -> Self {
        let name = format!("rkt-it-{}-{:x}", std::process::id(), rand_u32());
        let o = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip netns add");
        assert!(o.status.success(), "ip netns add: {}", show(&o));
        let ns = NetNs(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    fn exec(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("ip netns exec")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn rand_u32() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

#[test]
fn host_network_shares_the_host_interfaces() {
    let env = Env::new();
    let image = env.image();
    let o = env.rkt(&[
        "run",
        "--net=host",
        &image,
        "--exec=/bin/sh",
        "--",
        "-c",
        "ls /sys/class/net | sort",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    let mut host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("host interfaces")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    host.sort();
    assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), host);
}

#[test]
fn default_network_pods_reach_each_other_and_the_host() {
    let env = Env::new();
    let ns = NetNs::new();
    let rkt = env!("CARGO_BIN_EXE_rkt");
    let dir = env.dir.to_str().expect("utf8").to_string();
    let image = env.image();
    let uuid_file = env.tmp.path().join("uuid-a");
    let save = format!("--uuid-file-save={}", uuid_file.display());
    let mut server = ns
        .cmd(&[
            rkt,
            "--dir",
            &dir,
            "run",
            "--net=default",
            // nc would quit at the end of its stdin: keep it open.
            "--interactive",
            &save,
            &image,
            "--name=server",
            "--exec=/bin/nc",
            "--",
            "-l",
            "-p",
            "7777",
        ])
        .stdout(std::process::Stdio::piped())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn server pod");
    let mut guard = crate::common::KillOnPanic::new(&server);
    // Held open until the server has exited (nc would quit at the end of its stdin).
    let _server_stdin = server.stdin.take();
    let ip = wait_for(20, "the server pod's address", || {
        let uuid = std::fs::read_to_string(&uuid_file).ok()?;
        let o = env.rkt(&["status", &uuid]);
        let s = stdout(&o);
        let ip = s
            .lines()
            .find_map(|l| l.strip_prefix("networks=default:ip4="))?
            .to_string();
        s.contains("state=running").then_some(ip)
    });
    assert!(ip.starts_with("172.16.28."), "{ip}");
    let list = env.ok(&["list", "--no-legend"]);
    assert!(list.contains(&format!("default:ip4={ip}")), "{list}");

    // The host reaches the pod.
    // (The pod configures eth0 right after its address is published: poll.)
    wait_for(20, "host -> pod ping", || {
        ns.exec(&["ping", "-c1", "-W1", &ip])
            .status
            .success()
            .then_some(())
    });

    // A second pod reaches the first, and the host's side of the bridge.
    let script = format!(
        "ping -c1 -W2 172.16.28.1 >/dev/null || exit 9; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do echo hello-from-client | nc {ip} 7777 && exit 0; sleep 0.2; done; exit 8"
    );
    let o = ns.exec(&[
        rkt,
        "--dir",
        &dir,
        "run",
        "--net=default",
        &image,
        "--name=client",
        "--exec=/bin/sh",
        "--",
        "-c",
        &script,
    ]);
    assert!(o.status.success(), "client pod: {}", show(&o));
    let out = server.wait_with_output().expect("server pod");
    guard.disarm();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), "hello-from-client\n");

    // Addresses are persisted until gc releases them.
    let pool = env.dir.join("net/default");
    let held = || {
        std::fs::read_dir(&pool)
            .expect("pool")
            .flatten()
            .filter(|e| e.file_name() != "lock")
            .count()
    };
    assert_eq!(held(), 2);
    env.ok(&["gc", "--grace-period=0s"]);
    assert_eq!(held(), 0, "gc releases the pods' addresses");
}

#[test]
fn restricted_and_flannel_networks() {
    let env = Env::new();
    let ns = NetNs::new();
    let rkt = env!("CARGO_BIN_EXE_rkt");
    let dir = env.dir.to_str().expect("utf8").to_string();
    let image = env.image();
    let script = "ip -4 addr show eth0 | grep -o 'inet [0-9./]*'; ip route | grep -c default; ping -c1 -W2 $GW >/dev/null && echo gw-ok";

    let o = ns.exec(&[
        rkt,
        "--dir",
        &dir,
        "run",
        "--net=default-restricted",
        "--set-env=GW=172.17.28.1",
        &image,
        "--exec=/bin/sh",
        "--",
        "-c",
        script,
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        stdout(&o),
        "inet 172.17.28.2/24\n0\ngw-ok\n",
        "no default route, but the host is reachable"
    );

    // A flannel network: the subnet, gateway and MTU come from flannel's subnet.env.
    let conf = env.tmp.path().join("etc-rkt");
    std::fs::create_dir_all(conf.join("net.d")).expect("mkdir");
    let subnet_env = env.tmp.path().join("subnet.env");
    std::fs::write(&subnet_env, "FLANNEL_NETWORK=10.99.0.0/16\nFLANNEL_SUBNET=10.99.7.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n")
        .expect("write");
    std::fs::write(
        conf.join("net.d/10-flannel.conf"),
        format!(
            r#"{{"name": "flannel", "type": "flannel", "subnetFile": "{}"}}"#,
            subnet_env.display()
        ),
    )
    .expect("write");
    let local_config = format!("--local-config={}", conf.display());
    let o = ns.exec(&[
        rkt,
        "--dir",
        &dir,
        &local_config,
        "run",
        "--net=flannel",
        "--set-env=GW=10.99.7.1",
        &image,
        "--exec=/bin/sh",
        "--",
        "-c",
        &format!("{script}; cat /sys/class/net/eth0/mtu"),
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(stdout(&o), "inet 10.99.7.2/24\n1\ngw-ok\n1400\n");
    let list = env.ok(&["list", "--no-legend"]);
    assert!(list.contains("flannel:ip4=10.99.7.2"), "{list}");
    let o = ns.exec(&[
        rkt,
        "--dir",
        &dir,
        &local_config,
        "run",
        "--net=nosuchnet",
        &image,
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("network \"nosuchnet\" not found"),
        "{}",
        show(&o)
    );
}
