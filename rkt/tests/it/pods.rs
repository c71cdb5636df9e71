//! Running busybox pods with the built-in stage1: exit codes, stdout, env, args, user, cwd,
//! hostname, PID namespace, isolation, read-only rootfs, volumes, capabilities and cgroup limits.

use crate::common::{Env, show, stdout};

#[test]
fn image_cmd_runs_and_stdout_passes_through() {
    let env = Env::new();
    let o = env.rkt(&["run", "--net=none", &env.image()]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(stdout(&o), "hello from busybox\n");
}

#[test]
fn exit_codes_of_several_apps() {
    let env = Env::new();
    let img = env.image();
    let uuid_file = env.tmp.path().join("uuid");
    let o = env.rkt(&[
        "run",
        "--net=none",
        &format!("--uuid-file-save={}", uuid_file.display()),
        &img,
        "--name=a",
        "--exec=/bin/sh",
        "--",
        "-c",
        "exit 0",
        "---",
        &img,
        "--name=b",
        "--exec=/bin/sh",
        "--",
        "-c",
        "exit 5",
        "---",
        &img,
        "--name=c",
        "--exec=/bin/sh",
        "--",
        "-c",
        "exit 7",
    ]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "first failing app's code: {}",
        show(&o)
    );
    let status = env.ok(&["status", &format!("--uuid-file={}", uuid_file.display())]);
    for line in [
        "state=exited",
        "exited=true",
        "app-a=0",
        "app-b=5",
        "app-c=7",
    ] {
        assert!(
            status.lines().any(|l| l == line),
            "missing {line:?} in\n{status}"
        );
    }
}

#[test]
fn env_args_and_overrides() {
    let env = Env::new();
    let o = env.sh(
        &["--set-env=POD=1"],
        &["--environment=APPV=2"],
        "echo $FOO $POD $APPV $AC_APP_NAME $0 ; echo \"$@\"",
    );
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(stdout(&o), "from-image 1 2 busybox /bin/sh\n\n");
    let o = env.sh(&["--set-env=FOO=overridden"], &[], "echo $FOO");
    assert_eq!(stdout(&o), "overridden\n", "{}", show(&o));
    // Args after -- replace the image's Cmd.
    let o = env.rkt(&[
        "run",
        "--net=none",
        &env.image(),
        "--",
        "/bin/echo",
        "a b",
        "c",
    ]);
    assert_eq!(stdout(&o), "a b c\n", "{}", show(&o));
}

#[test]
fn user_group_and_working_dir() {
    let env = Env::new();
    let o = env.sh(&[], &[], "id -u; id -g; pwd");
    assert_eq!(
        stdout(&o),
        "0\n0\n/root\n",
        "image WorkingDir: {}",
        show(&o)
    );
    let o = env.sh(
        &[],
        &["--user=nobody", "--working-dir=/tmp"],
        "id -u; id -g; pwd",
    );
    assert_eq!(stdout(&o), "65534\n65534\n/tmp\n", "{}", show(&o));
    let o = env.sh(
        &[],
        &["--user=1234", "--group=4321", "--working-dir=/new/dir"],
        "id -u; id -g; pwd",
    );
    assert_eq!(stdout(&o), "1234\n4321\n/new/dir\n", "{}", show(&o));
    let o = env.sh(&[], &["--user=ghost"], "true");
    assert!(!o.status.success(), "an unknown user must fail the app");
}

#[test]
fn hostname_pid_namespace_and_isolation() {
    let env = Env::new();
    let o = env.sh(
        &["--hostname=podhost"],
        &[],
        "hostname; cat /etc/hostname; echo $$; ls /proc | grep -c '^[0-9]'; grep -c ' /proc ' /proc/mounts; ls /sys/class/net; cut -d' ' -f2 /proc/mounts",
    );
    assert!(o.status.success(), "{}", show(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "podhost");
    assert_eq!(lines[1], "podhost");
    assert_eq!(
        lines[2], "2",
        "the app is the first child of the pod's PID 1"
    );
    let procs: u32 = lines[3].parse().expect("count");
    assert!(procs <= 4, "host processes are visible: {procs}");
    assert_eq!(lines[4], "1", "exactly one /proc mount");
    assert_eq!(lines[5], "lo", "--net=none has only lo");
    let allowed = [
        "/",
        "/proc",
        "/sys",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/etc/hosts",
        "/etc/hostname",
        "/etc/resolv.conf",
    ];
    for m in &lines[6..] {
        assert!(
            allowed.contains(m),
            "host mount {m:?} is visible in the pod"
        );
    }
    assert_eq!(lines.len() - 6, allowed.len());
    // The default hostname is rkt-<uuid>.
    let o = env.sh(&[], &[], "hostname");
    assert!(stdout(&o).starts_with("rkt-"), "{}", show(&o));
}

#[test]
fn dev_is_minimal_and_works() {
    let env = Env::new();
    let o = env.sh(
        &[],
        &[],
        "ls /dev | sort | tr '\\n' ' '; echo; head -c 4 /dev/urandom | wc -c; head -c 3 /dev/zero | wc -c; echo x > /dev/null && echo ok",
    );
    assert!(o.status.success(), "{}", show(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    for d in [
        "null", "zero", "random", "urandom", "tty", "pts", "ptmx", "shm", "full",
    ] {
        assert!(
            lines[0].split(' ').any(|x| x == d),
            "/dev/{d} missing: {}",
            lines[0]
        );
    }
    assert!(
        !lines[0].contains("sda") && !lines[0].contains("mem "),
        "host devices leaked: {}",
        lines[0]
    );
    assert_eq!(&lines[1..], ["4", "3", "ok"]);
}

#[test]
fn readonly_rootfs() {
    let env = Env::new();
    let o = env.sh(
        &[],
        &["--readonly-rootfs"],
        "touch /x 2>&1; echo rc=$?; echo ok > /dev/shm/y && cat /dev/shm/y",
    );
    let out = stdout(&o);
    assert!(out.contains("Read-only file system"), "{}", show(&o));
    assert!(out.contains("rc=1"), "{}", show(&o));
    assert!(out.ends_with("ok\n"), "{}", show(&o));
    // Without the flag the rootfs is writable, and the image's tree is not modified.
    let o = env.sh(&[], &[], "touch /x && echo written");
    assert_eq!(stdout(&o), "written\n", "{}", show(&o));
    let o = env.sh(&[], &[], "ls /x 2>/dev/null || echo fresh");
    assert_eq!(
        stdout(&o),
        "fresh\n",
        "each pod gets its own copy-on-write rootfs"
    );
}

#[test]
fn host_and_empty_volumes() {
    let env = Env::new();
    let host = env.tmp.path().join("hostvol");
    std::fs::create_dir_all(&host).expect("mkdir");
    std::fs::write(host.join("in"), "from host\n").expect("write");
    let vol = format!("--volume=data,kind=host,source={}", host.display());
    let o = env.sh(
        &[&vol, "--volume=scratch,kind=empty"],
        &[
            "--mount=volume=data,target=/data",
            "--mount=volume=scratch,target=/scratch",
        ],
        "cat /data/in; echo from pod > /data/out; echo s > /scratch/f && cat /scratch/f",
    );
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(stdout(&o), "from host\ns\n");
    assert_eq!(
        std::fs::read_to_string(host.join("out")).expect("read"),
        "from pod\n"
    );

    let ro = format!(
        "--volume=data,kind=host,source={},readOnly=true",
        host.display()
    );
    let o = env.sh(
        &[&ro],
        &["--mount=volume=data,target=/data"],
        "cat /data/in; echo x > /data/out2 2>&1; echo rc=$?",
    );
    assert!(stdout(&o).contains("from host"), "{}", show(&o));
    assert!(
        stdout(&o).contains("rc=1"),
        "read-only volume was writable: {}",
        show(&o)
    );
    assert!(!host.join("out2").exists());
}

fn cap_eff(out: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .expect("CapEff line");
    u64::from_str_radix(line.split_whitespace().nth(1).expect("value"), 16).expect("hex")
}

#[test]
fn capabilities_are_dropped() {
    let env = Env::new();
    let o = env.sh(&[], &[], "grep -E '^Cap(Eff|Bnd)' /proc/self/status");
    assert!(o.status.success(), "{}", show(&o));
    let eff = cap_eff(&stdout(&o));
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_NET_ADMIN: u64 = 1 << 12;
    const CAP_CHOWN: u64 = 1;
    assert_eq!(eff & CAP_SYS_ADMIN, 0, "CAP_SYS_ADMIN kept");
    assert_eq!(eff & CAP_NET_ADMIN, 0, "CAP_NET_ADMIN kept");
    assert_ne!(eff & CAP_CHOWN, 0, "default set lost CAP_CHOWN");
    let o = env.sh(
        &[],
        &["--caps-retain=CAP_CHOWN,CAP_KILL"],
        "grep CapEff /proc/self/status; mount -t tmpfs t /tmp 2>&1 || echo denied",
    );
    assert_eq!(cap_eff(&stdout(&o)), CAP_CHOWN | (1 << 5), "{}", show(&o));
    assert!(stdout(&o).contains("denied"), "{}", show(&o));
    let o = env.sh(
        &[],
        &["--caps-remove=CAP_CHOWN"],
        "grep CapEff /proc/self/status",
    );
    assert_eq!(cap_eff(&stdout(&o)) & CAP_CHOWN, 0, "{}", show(&o));
    // Non-root apps get no capabilities.
    let o = env.sh(&[], &["--user=nobody"], "grep CapEff /proc/self/status");
    assert_eq!(cap_eff(&stdout(&o)), 0, "{}", show(&o));
}

#[test]
fn memory_hog_is_oom_killed_inside_its_limit() {
    let env = Env::new();
    let img = env.image();
    // dd allocates a buffer of bs bytes: 64 MiB does not fit in 32 MiB.
    let o = env.rkt(&[
        "run",
        "--net=none",
        &img,
        "--memory=32Mi",
        "--exec=/bin/dd",
        "--",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=64M",
        "count=1",
    ]);
    assert_eq!(
        o.status.code(),
        Some(137),
        "expected SIGKILL by the OOM killer: {}",
        show(&o)
    );
    let o = env.rkt(&[
        "run",
        "--net=none",
        &img,
        "--memory=32Mi",
        "--exec=/bin/dd",
        "--",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=4M",
        "count=1",
    ]);
    assert!(o.status.success(), "a small allocation fits: {}", show(&o));
}

#[test]
fn fork_bomb_hits_the_pids_limit() {
    let env = Env::new();
    let o = env.sh(
        &[],
        &["--pids-limit=8"],
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do sleep 5 & done 2>&1; kill $(jobs -p) 2>/dev/null; echo done",
    );
    let all = format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    assert!(all.contains("can't fork"), "{}", show(&o));
    let o = env.sh(
        &[],
        &[],
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 0 & done; wait; echo fine",
    );
    assert_eq!(
        stdout(&o),
        "fine\n",
        "without a limit the same forks work: {}",
        show(&o)
    );
}

#[test]
fn cpu_spinner_is_throttled() {
    let env = Env::new();
    let img = env.image();
    let mut child = env
        .cmd(&[
            "run",
            "--net=none",
            &img,
            "--cpu=100m",
            "--name=spin",
            "--exec=/bin/sh",
            "--",
            "-c",
            "while :; do :; done",
        ])
        .spawn()
        .expect("spawn");
    let mut guard = crate::common::KillOnPanic::new(&child);
    // The pod's cgroup is recorded in the pod dir; find its cpu hierarchy and read cpu.stat.
    let pods = env.dir.join("pods/run");
    let stat_path = crate::common::wait_for(20, "the pod's cpu cgroup", || {
        let pod = std::fs::read_dir(&pods).ok()?.flatten().next()?.path();
        let cgroups = std::fs::read_to_string(pod.join("cgroups")).ok()?;
        // cgroup v1 has a cpu hierarchy; on v2 the pod has one directory.
        let cpu = cgroups
            .lines()
            .find(|l| l.contains("/cpu/") || l.contains("/cpu,"))
            .or_else(|| cgroups.lines().next().filter(|_| cgroup_v2()))?;
        let p = std::path::Path::new(cpu).join("app-spin/cpu.stat");
        p.exists().then_some(p)
    });
    if cgroup_v2() {
        let max = std::fs::read_to_string(stat_path.with_file_name("cpu.max")).expect("cpu.max");
        assert_eq!(max.trim(), "10000 100000");
    } else {
        let quota =
            std::fs::read_to_string(stat_path.with_file_name("cpu.cfs_quota_us")).expect("quota");
        assert_eq!(quota.trim(), "10000");
    }
    crate::common::wait_for(20, "throttling", || {
        let s = std::fs::read_to_string(&stat_path).ok()?;
        let n: u64 = s
            .lines()
            .find(|l| l.starts_with("nr_throttled"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (n >= 3).then_some(())
    });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = child.wait().expect("wait");
    guard.disarm();
    assert_eq!(status.code(), Some(143), "SIGTERM stops the pod");
}

#[test]
fn interactive_passes_stdin() {
    use std::io::Write;
    let env = Env::new();
    let mut child = env
        .cmd(&[
            "run",
            "--net=none",
            "--interactive",
            &env.image(),
            "--exec=/bin/cat",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"typed into the pod\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), "typed into the pod\n");
    // Without --interactive the app's stdin is /dev/null.
    let mut child = env
        .cmd(&["run", "--net=none", &env.image(), "--exec=/bin/cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let _ = child.stdin.take().expect("stdin").write_all(b"ignored\n");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(stdout(&out), "");
}

/// Whether the host has the unified (v2-only) cgroup layout.
fn cgroup_v2() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

#[test]
fn init_and_app_start_in_their_own_cgroup_leaves() {
    let env = Env::new();
    let uuid_file = env.tmp.path().join("uuid");
    let o = env.sh(
        &[&format!("--uuid-file-save={}", uuid_file.display())],
        &[],
        "for p in 1 self; do while read l; do echo \"$p $l\"; done < /proc/$p/cgroup; done",
    );
    assert!(o.status.success(), "{}", show(&o));
    let uuid = std::fs::read_to_string(&uuid_file).expect("uuid file");
    let uuid = uuid.trim();
    // Every hierarchy the pod uses: the v1 controllers its limits use (cpuacct too where it
    // shares cpu's hierarchy), and cgroup2 where it is mounted.
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        || std::path::Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists();
    let used = |ctrls: &str| {
        if ctrls.is_empty() {
            v2
        } else {
            ctrls
                .split(',')
                .any(|c| ["memory", "cpu", "pids"].contains(&c))
        }
    };
    let out = stdout(&o);
    // Hierarchies the pod does not use (a cpuacct of its own, devices, ...) are left as they are:
    // no pod directory there.
    for l in out.lines() {
        let ctrls = l.split(':').nth(1).unwrap_or("-");
        if !ctrls.is_empty() && !used(ctrls) {
            assert!(!l.contains(&format!("/rkt-{uuid}")), "{l:?} joined\n{out}");
        }
    }
    for (who, leaf) in [("1", "stage1"), ("self", "app-busybox")] {
        let want = format!("/rkt-{uuid}/{leaf}");
        let lines: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix(who)?.strip_prefix(' '))
            .filter(|l| used(l.split(':').nth(1).unwrap_or("-")))
            .collect();
        assert!(!lines.is_empty(), "no cgroup lines for {who} in\n{out}");
        for l in lines {
            assert!(l.ends_with(&want), "{who}: {l:?} is not in {want:?}\n{out}");
        }
    }
}

#[test]
fn pod_rootfs_overlay_is_volatile_and_still_gc_able() {
    let env = Env::new();
    let uuid_file = env.tmp.path().join("uuid");
    let o = env.sh(
        &[&format!("--uuid-file-save={}", uuid_file.display())],
        &[],
        "echo data > /written; while read l; do echo \"$l\"; done < /proc/self/mounts",
    );
    assert!(o.status.success(), "{}", show(&o));
    let out = stdout(&o);
    let root = out
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/"))
        .unwrap_or_else(|| panic!("no root mount in\n{out}"));
    assert!(root.starts_with("overlay / overlay "), "{root}");
    assert!(
        root.split(' ').nth(3).is_some_and(|o| o
            .split(',')
            .any(|x| x == "volatile" || x == "fsync=volatile")),
        "root overlay is not volatile: {root}"
    );
    // (Shown as `fsync=volatile` by newer kernels.) The write landed in the pod's upper dir, and
    // gc still removes the pod completely.
    let uuid = std::fs::read_to_string(&uuid_file).expect("uuid file");
    let uuid = uuid.trim();
    let pod = ["run", "exited-garbage"]
        .iter()
        .map(|s| env.dir.join("pods").join(s).join(uuid))
        .find(|p| p.is_dir())
        .expect("the exited pod's dir");
    let upper = pod.join("overlay/busybox/upper/written");
    assert_eq!(std::fs::read_to_string(&upper).expect("upper"), "data\n");
    env.ok(&["gc", "--grace-period=0s"]);
    env.ok(&["gc", "--grace-period=0s"]);
    for state in ["exited-garbage", "garbage", "run"] {
        assert!(
            !env.dir.join("pods").join(state).join(uuid).exists(),
            "pod left in {state}"
        );
    }
}

#[test]
fn pod_scratch_lives_in_the_pods_mount_namespace_and_records_stay_readable() {
    let env = Env::new();
    let uuid_file = env.tmp.path().join("uuid");
    let o = env.sh(
        &[
            &format!("--uuid-file-save={}", uuid_file.display()),
            "--hostname=scratch",
        ],
        &[],
        "cat /etc/hostname; grep -c scratch /etc/hosts; exit 3",
    );
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let out = stdout(&o);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["scratch", "1"], "{out}");
    let uuid = std::fs::read_to_string(&uuid_file).expect("uuid file");
    let uuid = uuid.trim();
    let pod = env.dir.join("pods/run").join(uuid);
    // The /etc files and the apps' rootfs mount points were on the pod's own tmpfs, mounted on
    // stage1/rootfs: on the host that directory exists and stays empty.
    assert!(!pod.join("etc").exists(), "pod etc on the host filesystem");
    let stage1: Vec<_> = std::fs::read_dir(pod.join("stage1/rootfs"))
        .expect("stage1/rootfs")
        .collect();
    assert!(stage1.is_empty(), "stage1/rootfs on the host: {stage1:?}");
    // Each app keeps two records: pid (+ start time) and exit code (+ finish time).
    let mut records: Vec<String> = std::fs::read_dir(pod.join("apps/busybox"))
        .expect("app records")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    records.sort();
    assert_eq!(records, ["exit", "pid"]);
    // ...which status reads back: the exit code, and start <= finish.
    let st = env.ok(&["status", uuid]);
    assert!(st.contains("app-busybox=3"), "{st}");
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", "--format=json", uuid])).expect("status json");
    let app = &json["apps"][0];
    assert_eq!(app["exit_code"], 3, "{json}");
    let started = app["started_at"].as_i64().expect("started_at");
    let finished = app["finished_at"].as_i64().expect("finished_at");
    assert!(0 < started && started <= finished, "{json}");
}
