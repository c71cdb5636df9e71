//! The README's main job: `coreos-up` brings up the local cluster with its
//! embedded default configuration, and `etcdctl set`/`get` work against it.
//!
//! It runs inside a harness host, so its fixed default ports (2379/2380)
//! collide with nothing else on the machine.

use integration::{Network, Spawn, binary};
use std::time::Duration;

fn etcdctl(host: &integration::Host, args: &[&str]) -> (bool, String, String) {
    let etcdctl = binary("etcdctl").unwrap();
    let out = host.exec(etcdctl.to_str().unwrap(), args).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn coreos_up_brings_up_etcd_and_etcdctl_sets_and_gets() {
    let net = Network::new().unwrap();
    let host = net.add_host("up").unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut up = host
        .spawn(
            Spawn::new(binary("coreos-up").unwrap())
                .arg("--no-build")
                .arg("--state-dir")
                .arg(state.path()),
        )
        .unwrap();
    up.wait_for_output("local cluster up", Duration::from_secs(30))
        .unwrap();
    assert!(
        up.stdout()
            .contains("not started: fleetd is not written yet"),
        "{}",
        up.stdout()
    );

    let (ok, out, err) = etcdctl(&host, &["set", "/message", "hi"]);
    assert!(ok, "etcdctl set failed: {err}");
    assert_eq!(out, "hi\n");
    let (ok, out, err) = etcdctl(&host, &["get", "/message"]);
    assert!(ok, "etcdctl get failed: {err}");
    assert_eq!(out, "hi\n");

    // Ctrl-C stops everything it started.
    up.signal(nix::sys::signal::Signal::SIGINT).unwrap();
    let status = up.wait_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        status.success(),
        "coreos-up exited with {status}: {}",
        up.stderr()
    );
    assert!(
        up.stdout().contains("etcd       stopped"),
        "{}",
        up.stdout()
    );
}
