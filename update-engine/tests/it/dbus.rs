//! The D-Bus service on a private dbus-daemon: `update_engine_client`
//! commands against the daemon, and the `StatusUpdate` signal's exact body.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use update_engine::dbus::{self, Bus};

use crate::common::*;

/// A private bus; the daemon is killed (by its own pid) on drop.
struct PrivateBus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl PrivateBus {
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut cmd = Command::new("dbus-daemon");
        cmd.args(["--session", "--nofork", "--print-address"])
            .arg(format!(
                "--address=unix:path={}",
                dir.path().join("bus").display()
            ));
        Self::spawn(cmd, dir)
    }

    /// A system-type bus whose policy is a default deny plus our policy
    /// file, as on a machine.
    fn with_policy() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/dbus-1/system.d/com.coreos.update1.conf");
        let conf = dir.path().join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"#,
                sock = dir.path().join("sock").display(),
                policy = policy.display()
            ),
        )?;
        let mut cmd = Command::new("dbus-daemon");
        cmd.arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"]);
        Self::spawn(cmd, dir)
    }

    fn spawn(mut cmd: Command, dir: tempfile::TempDir) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dbus-daemon")?;
        let stdout = child.stdout.take().context("dbus-daemon stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let address = line.trim().to_owned();
        anyhow::ensure!(
            address.starts_with("unix:"),
            "dbus-daemon printed {address:?}"
        );
        Ok(PrivateBus {
            child,
            address,
            _dir: dir,
        })
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed (by its own pid) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real daemon binary, configured by flags, on `bus`.
fn start_daemon(
    dir: &std::path::Path,
    disk: &std::path::Path,
    settings: &update_engine::engine::EngineSettings,
    bus: &PrivateBus,
) -> anyhow::Result<Killed> {
    let machine_id = dir.join("machine-id");
    std::fs::write(&machine_id, "0123456789abcdef0123456789abcdef\n")?;
    let boot_id = dir.join("boot_id");
    std::fs::write(&boot_id, "11111111-2222-3333-4444-555555555555\n")?;
    let files: Vec<String> = settings
        .config
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let daemon = Command::new(env!("CARGO_BIN_EXE_update_engine"))
        .args(["-foreground", "-logtostderr", "--no-periodic-checks"])
        .arg("--config-files")
        .arg(files.join(","))
        .arg("--prefs-dir")
        .arg(&settings.prefs_dir)
        .arg("--disk")
        .arg(disk)
        .args(["--usr-partition", "3", "--setgoodroot-delay-secs", "3600"])
        .arg("--public-key")
        .arg(&settings.public_key)
        .arg("--machine-id-file")
        .arg(&machine_id)
        .arg("--boot-id-file")
        .arg(&boot_id)
        .arg("--dbus-address")
        .arg(&bus.address)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting update_engine")?;
    Ok(Killed(daemon))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_policy_lets_root_own_the_name_and_call() -> anyhow::Result<()> {
    let bus = PrivateBus::with_policy()?;
    let dir = tempfile::tempdir()?;
    let disk = make_disk(dir.path(), b"old")?;
    let settings = engine_settings(
        &dir.path().join("root"),
        &disk,
        PART_A,
        "http://127.0.0.1:9/v1/update/",
        "stable",
        "1.0.0",
    )?;
    let _daemon = start_daemon(dir.path(), &disk, &settings, &bus)?;
    // The bus denies owning any name by default: only our policy file's
    // root rule lets the daemon own com.coreos.update1, and root call it.
    let status = poll(
        "root calling GetStatus",
        Duration::from_secs(20),
        async || {
            let out = client(&bus, "-status").output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    )
    .await?;
    assert!(status.contains("CURRENT_OP=UPDATE_STATUS_IDLE"), "{status}");
    Ok(())
}

fn client(bus: &PrivateBus, flag: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_update_engine_client"));
    c.arg(flag).env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address);
    c
}

// Multi-threaded: the client processes are waited on synchronously while
// the daemon serves them from another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_against_daemon_on_private_bus() -> anyhow::Result<()> {
    let bus = PrivateBus::start()?;
    let dir = tempfile::tempdir()?;
    let disk = make_disk(dir.path(), &image(1, 4096))?;
    let releases = dir.path().join("releases");
    let v2 = image(2, 256 << 10);
    add_release(&releases, "stable", "2.0.0", &v2, "test-key.pem")?;
    let server = Server::start(&releases, None).await?;
    let settings = engine_settings(
        &dir.path().join("root"),
        &disk,
        PART_A,
        &server.update_url(),
        "stable",
        "1.0.0",
    )?;
    let _daemon = start_daemon(dir.path(), &disk, &settings, &bus)?;

    // -status once the name is owned.
    let status = poll(
        "the daemon on the bus",
        Duration::from_secs(20),
        async || {
            let out = client(&bus, "-status").output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    )
    .await?;
    assert_eq!(
        status,
        "LAST_CHECKED_TIME=0\nPROGRESS=0.000000\nCURRENT_OP=UPDATE_STATUS_IDLE\nNEW_VERSION=\nNEW_SIZE=0\n"
    );

    // Raw signal subscription: the body must be exactly (x d s s x).
    let conn = Bus::Address(bus.address.clone()).connect().await?;
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .interface(dbus::INTERFACE)
        .member("StatusUpdate")
        .build()?;
    let mut raw = zbus::MessageStream::for_match_rule(rule, &conn, None).await?;

    // -watch_for_updates in the background.
    let mut watcher = client(&bus, "-watch_for_updates")
        .stdout(Stdio::piped())
        .spawn()?;
    let watch_out = watcher.stdout.take().context("watcher stdout")?;
    let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(watch_out).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The watcher is subscribed once it prints a signal: poke the daemon
    // (ResetStatus from IDLE republishes IDLE) until it does.
    let proxy = dbus::client::ManagerProxy::new(&conn).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        proxy.reset_status().await?;
        if let Ok(l) = line_rx.recv_timeout(Duration::from_millis(200)) {
            assert_eq!(l, "Got status update:");
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "watcher never saw a signal"
        );
    }
    // Drain the raw stream of those pokes.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), raw.next()).await {}
    while line_rx.recv_timeout(Duration::from_millis(100)).is_ok() {}

    // -update waits for NEED_REBOOT and exits 0.
    let out = tokio::task::spawn_blocking({
        let mut c = client(&bus, "-update");
        move || c.output()
    })
    .await??;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("Update succeeded -- reboot needed."),
        "{text}"
    );
    assert_eq!(&read_partition(&disk, PART_B)?[..v2.len()], &v2[..]);

    let mut signatures = Vec::new();
    let mut ops = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), raw.next()).await {
        let msg = msg?;
        let body = msg.body();
        // The header field as sent on the wire (no outer parentheses).
        signatures.push(body.signature().to_string_no_parens());
        let (_t, _p, op, ver, _size): (i64, f64, String, String, i64) = body.deserialize()?;
        let done = op == "UPDATE_STATUS_UPDATED_NEED_REBOOT";
        ops.push(op);
        if done {
            assert_eq!(ver, "2.0.0");
            break;
        }
    }
    assert!(signatures.iter().all(|s| s == "xdssx"), "{signatures:?}");
    for want in [
        "UPDATE_STATUS_CHECKING_FOR_UPDATE",
        "UPDATE_STATUS_UPDATE_AVAILABLE",
        "UPDATE_STATUS_DOWNLOADING",
        "UPDATE_STATUS_VERIFYING",
        "UPDATE_STATUS_FINALIZING",
        "UPDATE_STATUS_UPDATED_NEED_REBOOT",
    ] {
        assert!(
            ops.iter().any(|o| o == want),
            "{want} not signalled: {ops:?}"
        );
    }

    let mut seen = Vec::new();
    while let Ok(line) = line_rx.recv_timeout(Duration::from_secs(10)) {
        let done = line.contains("UPDATE_STATUS_UPDATED_NEED_REBOOT");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(seen.iter().any(|l| l == "Got status update:"), "{seen:?}");
    assert!(
        seen.iter()
            .any(|l| l == "  current_operation: UPDATE_STATUS_DOWNLOADING"),
        "{seen:?}"
    );
    assert!(seen.iter().any(|l| l == "  new_version: 2.0.0"), "{seen:?}");

    // -status shows NEED_REBOOT; -reset_status brings IDLE back.
    let out = client(&bus, "-status").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CURRENT_OP=UPDATE_STATUS_UPDATED_NEED_REBOOT\nNEW_VERSION=2.0.0\n"),
        "{text}"
    );
    assert!(client(&bus, "-reset_status").output()?.status.success());
    poll(
        "IDLE after -reset_status",
        Duration::from_secs(10),
        async || {
            let out = client(&bus, "--status").output().ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains("CURRENT_OP=UPDATE_STATUS_IDLE")
                .then_some(())
        },
    )
    .await?;

    // No newer release now that the machine says... still 1.0.0, but the
    // server has no newer one for a failing group: -update exits 1.
    std::fs::remove_dir_all(releases.join("stable"))?;
    let out = tokio::task::spawn_blocking({
        let mut c = client(&bus, "-update");
        move || c.output()
    })
    .await??;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Update failed."));

    // The server knows the machine by the daemon's machine id.
    let report = server.status().await?;
    let m = report
        .machines
        .get("0123456789abcdef0123456789abcdef")
        .context("machine not recorded")?;
    assert_eq!(m.bootid, "11111111-2222-3333-4444-555555555555");
    Ok(())
}
