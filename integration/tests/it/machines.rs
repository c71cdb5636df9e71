//! Machines with real systemd: boot, D-Bus, files, reboot, networks.

use integration::{Machine, MachineOptions, Network};
use std::time::Duration;
use zbus::{OwnedObjectPath, OwnedVariant};

const SYSTEMD: &str = "org.freedesktop.systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

async fn unit_state(bus: &zbus::Connection, unit: &str) -> (String, String) {
    let reply = bus
        .call_method(
            Some(SYSTEMD),
            "/org/freedesktop/systemd1",
            Some(MANAGER),
            "GetUnit",
            &(unit,),
        )
        .await
        .expect("GetUnit");
    let path: OwnedObjectPath = reply.body().deserialize().expect("unit path");
    let mut states = Vec::new();
    for property in ["ActiveState", "SubState"] {
        let reply = bus
            .call_method(
                Some(SYSTEMD),
                path.as_str(),
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &("org.freedesktop.systemd1.Unit", property),
            )
            .await
            .expect("Properties.Get");
        let value: OwnedVariant = reply.body().deserialize().expect("property value");
        states.push(String::try_from(value).expect("a string property"));
    }
    (states.remove(0), states.remove(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_unit_written_into_a_machine_is_started_over_dbus() {
    let machine = Machine::boot().unwrap();
    machine
        .write_file(
            "/etc/systemd/system/hello.service",
            "[Service]\nExecStart=/bin/sleep infinity\n",
        )
        .unwrap();
    let bus = machine.system_bus().await.unwrap();
    bus.call_method(
        Some(SYSTEMD),
        "/org/freedesktop/systemd1",
        Some(MANAGER),
        "Reload",
        &(),
    )
    .await
    .expect("Reload");
    bus.call_method(
        Some(SYSTEMD),
        "/org/freedesktop/systemd1",
        Some(MANAGER),
        "StartUnit",
        &("hello.service", "replace"),
    )
    .await
    .expect("StartUnit");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = unit_state(&bus, "hello.service").await;
        if state == ("active".into(), "running".into()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hello.service stuck in {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The unit runs inside the machine, not on the host.
    let out = machine
        .exec(
            "systemctl",
            &["show", "-p", "MainPID", "--value", "hello.service"],
        )
        .unwrap();
    let pid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_ne!(pid, "0", "no main pid");
}

#[test]
fn a_machine_is_its_own_system() {
    let machine = Machine::boot().unwrap();
    assert!(matches!(
        machine.system_state().unwrap().as_str(),
        "running" | "degraded"
    ));
    let id = String::from_utf8(machine.read_file("/etc/machine-id").unwrap()).unwrap();
    let host_id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    assert_eq!(id.trim().len(), 32);
    assert_ne!(
        id.trim(),
        host_id.trim(),
        "machine shares the host's machine id"
    );
    let out = machine.exec("hostname", &[]).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), machine.name());
    // Masked host services stay off inside.
    let out = machine
        .exec("systemctl", &["is-active", "postgresql.service"])
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), "active");
}

#[test]
fn a_reboot_keeps_the_disk_and_clears_run() {
    let mut machine = Machine::boot().unwrap();
    machine.write_file("/var/lib/kept", "disk").unwrap();
    machine.write_file("/run/lost", "tmpfs").unwrap();
    let first_boot = machine
        .read_file("/proc/sys/kernel/random/boot_id")
        .unwrap();
    let first_leader = machine.leader_pid();
    machine.reboot().unwrap();
    assert_ne!(machine.leader_pid(), first_leader);
    assert_eq!(machine.read_file("/var/lib/kept").unwrap(), b"disk");
    assert!(
        machine.read_file("/run/lost").is_err(),
        "/run survived a reboot"
    );
    // (The kernel is shared, so boot_id does not change; the PID 1 does.)
    let _ = first_boot;
}

#[test]
fn machines_on_hosts_reach_each_other() {
    let net = Network::new().unwrap();
    let a = net.add_host("a").unwrap();
    let b = net.add_host("b").unwrap();
    let machine = Machine::boot_with(MachineOptions::on_host(&a)).unwrap();
    let out = machine
        .exec("ping", &["-c", "1", "-W", "2", &b.addr().to_string()])
        .unwrap();
    assert!(out.status.success(), "machine on a cannot reach b: {out:?}");
    let out = machine
        .exec("ip", &["-4", "-br", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&a.addr().to_string()));
}
