//! Pod lifecycle: prepare/run-prepared, list/status/stop/gc/rm across the states, a pod whose rkt
//! was killed -9, and concurrent runs with gc.

use std::process::Child;

use crate::common::{Env, show, stdout, wait_for};

fn uuids(env: &Env) -> Vec<String> {
    env.ok(&["list", "--full", "--no-legend"])
        .lines()
        .filter_map(|l| l.split('\t').next())
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect()
}

fn status_of(env: &Env, uuid: &str) -> String {
    env.ok(&["status", uuid])
}

/// A background `rkt run`, killed (and with it its pod) if the test fails before stopping it.
struct Running(Child);

impl Running {
    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }

    fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts a long-running pod in the background; returns the child and the pod's uuid once running.
fn start_sleeper(env: &Env) -> (Running, String) {
    let uuid_file = env.tmp.path().join(format!("uuid-{}", rand_suffix()));
    let child = env
        .cmd(&[
            "run",
            "--net=none",
            &format!("--uuid-file-save={}", uuid_file.display()),
            &env.image(),
            "--name=sleeper",
            "--exec=/bin/sleep",
            "--",
            "1000",
        ])
        .spawn()
        .expect("spawn rkt run");
    let uuid = wait_for(20, "the pod to run", || {
        let u = std::fs::read_to_string(&uuid_file).ok()?;
        let s = env.rkt(&["status", &u]);
        let text = stdout(&s);
        (text.contains("state=running") && !text.contains("pid=-1")).then_some(u)
    });
    (Running(child), uuid)
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[test]
fn prepare_then_run_prepared() {
    let env = Env::new();
    let out = env.ok(&[
        "prepare",
        "--net=none",
        &env.image(),
        "--exec=/bin/sh",
        "--",
        "-c",
        "echo prepared-ran; exit 4",
    ]);
    let uuid = out.trim().to_string();
    assert_eq!(uuid.len(), 36, "prepare prints the uuid: {out:?}");
    assert!(status_of(&env, &uuid).starts_with("state=prepared\n"));
    let list = env.ok(&["list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&uuid[..8]) && l.contains("prepared")),
        "{list}"
    );
    let o = env.rkt(&["run-prepared", &uuid]);
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    assert_eq!(stdout(&o), "prepared-ran\n");
    let st = status_of(&env, &uuid);
    assert!(
        st.contains("state=exited") && st.contains("app-busybox=4"),
        "{st}"
    );
    let o = env.rkt(&["run-prepared", &uuid]);
    assert!(!o.status.success(), "an exited pod cannot be run again");
}

#[test]
fn list_columns_and_formats() {
    let env = Env::new();
    let img = env.image();
    env.ok(&[
        "run",
        "--net=none",
        &img,
        "--name=one",
        "--exec=/bin/true",
        "---",
        &img,
        "--name=two",
        "--exec=/bin/true",
    ]);
    let list = env.ok(&["list"]);
    let lines: Vec<&str> = list.lines().collect();
    let header: Vec<&str> = lines[0].split('\t').filter(|c| !c.is_empty()).collect();
    assert_eq!(
        header,
        [
            "UUID",
            "APP",
            "IMAGE NAME",
            "STATE",
            "CREATED",
            "STARTED",
            "NETWORKS"
        ]
    );
    let row: Vec<&str> = lines[1].split('\t').filter(|c| !c.is_empty()).collect();
    assert_eq!(row[0].len(), 8, "short uuid: {row:?}");
    assert_eq!(&row[1..4], ["one", "busybox:latest", "exited"]);
    assert!(
        row[4].ends_with("ago") || row[4] == "now",
        "relative time: {row:?}"
    );
    let second: Vec<&str> = lines[2].split('\t').filter(|c| !c.is_empty()).collect();
    assert_eq!(
        second,
        ["two", "busybox:latest"],
        "extra apps on following lines"
    );

    let full = env.ok(&["list", "--full"]);
    let header: Vec<&str> = full
        .lines()
        .next()
        .expect("header")
        .split('\t')
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "UUID",
            "APP",
            "IMAGE NAME",
            "IMAGE ID",
            "STATE",
            "CREATED",
            "STARTED",
            "NETWORKS"
        ]
    );
    let row: Vec<&str> = full
        .lines()
        .nth(1)
        .expect("row")
        .split('\t')
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(row[0].len(), 36);
    assert!(
        row[3].starts_with("sha256-") && row[3].len() == 71,
        "{row:?}"
    );
    assert!(row[5].ends_with(" +0000 UTC"), "absolute time: {row:?}");

    assert_eq!(env.ok(&["list", "--no-legend"]).lines().count(), 2);
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["list", "--format=json"])).expect("json");
    let pod = &json[0];
    assert_eq!(pod["state"], "exited");
    assert_eq!(pod["app_names"], serde_json::json!(["one", "two"]));
    assert_eq!(pod["apps"][1]["exit_code"], 0);
    assert!(pod["created_at"].as_i64().is_some());
}

#[test]
fn stop_status_wait_and_force() {
    let env = Env::new();
    let (mut child, uuid) = start_sleeper(&env);
    let st = status_of(&env, &uuid);
    assert!(
        st.contains("state=running") && !st.contains("app-sleeper"),
        "{st}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", "--format=json", &uuid])).expect("json");
    assert_eq!(json["state"], "running");
    assert_eq!(json["apps"][0]["state"], "running");
    let out = env.ok(&["stop", &uuid]);
    assert_eq!(
        out.trim(),
        format!("{uuid:?}"),
        "stop prints the quoted uuid"
    );
    let st = env.ok(&["status", "--wait=20s", &uuid]);
    assert!(
        st.contains("state=exited") && st.contains("app-sleeper=143"),
        "{st}"
    );
    assert_eq!(child.wait().expect("wait").code(), Some(143));

    let (mut child, uuid) = start_sleeper(&env);
    env.ok(&["stop", "--force", &uuid]);
    let st = env.ok(&["status", "--wait", &uuid]);
    assert!(st.contains("state=exited"), "{st}");
    assert_eq!(child.wait().expect("wait").code(), Some(137));
    let o = env.rkt(&["stop", &uuid]);
    assert!(!o.status.success(), "stopping an exited pod fails");
}

#[test]
fn killed_rkt_leaves_an_exited_pod_that_gc_removes() {
    let env = Env::new();
    let (mut child, uuid) = start_sleeper(&env);
    let pid = status_of(&env, &uuid)
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse::<i32>().ok())
        .expect("pid");
    child.kill().expect("kill -9 rkt");
    child.wait().expect("wait");
    let st = wait_for(20, "the pod to read as exited", || {
        let s = status_of(&env, &uuid);
        s.contains("state=exited").then_some(s)
    });
    assert!(
        !st.contains("app-sleeper="),
        "no exit code was recorded: {st}"
    );
    wait_for(20, "the pod's processes to die with it", || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    let out = env.ok(&["gc", "--grace-period=0s"]);
    assert!(
        out.contains(&format!("Moving pod {uuid:?} to garbage")),
        "{out}"
    );
    assert!(
        out.contains(&format!("Garbage collecting pod {uuid:?}")),
        "{out}"
    );
    assert!(uuids(&env).is_empty());
    let o = env.rkt(&["status", &uuid]);
    assert!(!o.status.success());
}

#[test]
fn gc_marks_then_sweeps_after_the_grace_period() {
    let env = Env::new();
    env.ok(&["run", "--net=none", &env.image(), "--exec=/bin/true"]);
    let uuid = uuids(&env).remove(0);
    let out = env.ok(&["gc", "--mark-only"]);
    assert!(out.contains("Moving pod"), "{out}");
    assert!(status_of(&env, &uuid).starts_with("state=exited garbage"));
    assert!(env.dir.join("pods/exited-garbage").join(&uuid).is_dir());
    // Within the (default 30m) grace period nothing is swept.
    env.ok(&["gc"]);
    assert!(env.dir.join("pods/exited-garbage").join(&uuid).is_dir());
    env.ok(&["gc", "--grace-period=0s"]);
    assert!(!env.dir.join("pods/exited-garbage").join(&uuid).exists());

    // Prepared pods expire.
    let prepared = env
        .ok(&["prepare", "--net=none", &env.image()])
        .trim()
        .to_string();
    env.ok(&["gc", "--grace-period=0s"]);
    assert!(
        status_of(&env, &prepared).starts_with("state=prepared"),
        "not expired yet"
    );
    env.ok(&["gc", "--grace-period=0s", "--expire-prepared=0s"]);
    assert!(env.rkt(&["status", &prepared]).status.code() != Some(0));
}

#[test]
fn rm_removes_exited_and_refuses_running() {
    let env = Env::new();
    env.ok(&["run", "--net=none", &env.image(), "--exec=/bin/true"]);
    let uuid = uuids(&env).remove(0);
    let out = env.ok(&["rm", &uuid[..8]]);
    assert_eq!(out.trim(), format!("{uuid:?}"));
    assert!(uuids(&env).is_empty());

    let (mut child, running) = start_sleeper(&env);
    let o = env.rkt(&["rm", &running]);
    assert!(
        !o.status.success(),
        "a running pod cannot be removed: {}",
        show(&o)
    );
    assert!(status_of(&env, &running).contains("state=running"));
    env.ok(&["stop", "--force", &running]);
    child.wait().expect("wait");
}

#[test]
fn cat_manifest_and_version() {
    let env = Env::new();
    env.ok(&[
        "run",
        "--net=none",
        &env.image(),
        "--exec=/bin/true",
        "--user=nobody",
    ]);
    let uuid = uuids(&env).remove(0);
    let m: serde_json::Value =
        serde_json::from_str(&env.ok(&["cat-manifest", &uuid])).expect("json");
    assert_eq!(m["acKind"], "PodManifest");
    assert_eq!(
        m["apps"][0]["app"]["exec"],
        serde_json::json!(["/bin/true"])
    );
    assert_eq!(m["apps"][0]["app"]["user"], "nobody");
    let v = env.ok(&["version"]);
    assert!(v.starts_with("rkt Version: "), "{v}");
}

#[test]
fn concurrent_runs_and_gc_keep_the_store_consistent() {
    let env = Env::new();
    env.ok(&["fetch", &env.image()]);
    let mut children: Vec<Child> = (0..4)
        .map(|i| {
            env.cmd(&[
                "run",
                "--net=none",
                &env.image(),
                "--exec=/bin/sh",
                "--",
                "-c",
                &format!("exit {i}"),
            ])
            .spawn()
            .expect("spawn")
        })
        .collect();
    for _ in 0..3 {
        env.ok(&["gc", "--grace-period=0s"]);
        env.ok(&["image", "gc", "--grace-period=0s"]);
    }
    let codes: Vec<Option<i32>> = children
        .iter_mut()
        .map(|c| c.wait().expect("wait").code())
        .collect();
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [Some(0), Some(1), Some(2), Some(3)],
        "every pod ran to completion"
    );
    env.ok(&["gc", "--grace-period=0s"]);
    assert!(uuids(&env).is_empty());
    // The store still works.
    let o = env.rkt(&["run", "--net=none", &env.image()]);
    assert_eq!(stdout(&o), "hello from busybox\n", "{}", show(&o));
}

#[test]
fn enter_runs_commands_inside_a_running_app() {
    let env = Env::new();
    let (mut child, uuid) = start_sleeper(&env);
    let o = env.rkt(&[
        "enter",
        &uuid,
        "/bin/sh",
        "-c",
        "hostname; echo $FOO; ls /proc | grep -c '^[0-9]'; test -e /bin/busybox && echo rootfs; ps -o comm | grep -c sleep",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("rkt-{uuid}"), "the pod's uts namespace");
    assert_eq!(lines[1], "from-image", "the app's environment");
    let procs: u32 = lines[2].parse().expect("count");
    assert!(procs <= 6, "the pod's pid namespace: {procs} processes");
    assert_eq!(lines[3], "rootfs", "the app's root filesystem");
    assert_eq!(lines[4], "1", "the app's sleep is visible");
    let o = env.rkt(&["enter", &uuid, "/bin/sh", "-c", "exit 7"]);
    assert_eq!(
        o.status.code(),
        Some(7),
        "enter returns the command's exit code"
    );
    env.ok(&["stop", "--force", &uuid]);
    child.wait().expect("wait");
    let o = env.rkt(&["enter", &uuid, "/bin/true"]);
    assert!(!o.status.success(), "an exited pod cannot be entered");
}
