//! App output modes (`--stdout`/`--stderr` `log` and `null`, the pass-through default) and the API
//! service's GetLogs over the logs stage1 records.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use proto::tonic::Code;
use proto::v1alpha::public_api_client::PublicApiClient;
use proto::v1alpha::{GetLogsRequest, GetLogsResponse};

use crate::api::start;
use crate::common::{Env, KillOnPanic, show, stdout, wait_for};

/// One record of an app's log: (time in ns, stream, text).
type Rec = (i64, String, String);

/// The pod's directory, whatever state directory it is in.
fn pod_dir(env: &Env, uuid: &str) -> PathBuf {
    for state in std::fs::read_dir(env.dir.join("pods"))
        .expect("pods dir")
        .flatten()
    {
        let p = state.path().join(uuid);
        if p.is_dir() {
            return p;
        }
    }
    panic!("pod {uuid} not found under {}", env.dir.display());
}

fn log_file(env: &Env, uuid: &str, app: &str) -> PathBuf {
    pod_dir(env, uuid).join("apps").join(app).join("log")
}

fn records(path: &Path) -> Vec<Rec> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let mut f = l.splitn(3, ' ');
            let t = f.next().and_then(|t| t.parse().ok());
            let (Some(t), Some(s), Some(x)) = (t, f.next(), f.next()) else {
                panic!("malformed record {l:?} in {}", path.display());
            };
            (t, s.to_string(), x.to_string())
        })
        .collect()
}

fn texts(recs: &[Rec], stream: &str) -> Vec<String> {
    recs.iter()
        .filter(|r| r.1 == stream)
        .map(|r| r.2.clone())
        .collect()
}

fn uuid_file(env: &Env, name: &str) -> PathBuf {
    env.tmp.path().join(format!("uuid-{name}"))
}

/// `rkt run` of the busybox shell with `script`; returns the output and the pod's uuid.
fn run_sh(env: &Env, name: &str, app_flags: &[&str], script: &str) -> (Output, String) {
    let file = uuid_file(env, name);
    let save = format!("--uuid-file-save={}", file.display());
    let mut flags = vec!["--name", name];
    flags.extend_from_slice(app_flags);
    let o = env.sh(&[save.as_str()], &flags, script);
    let uuid = std::fs::read_to_string(&file).expect("uuid file");
    (o, uuid)
}

#[test]
fn logged_streams_go_to_the_app_log_in_order_and_not_to_rkt() {
    let env = Env::new();
    let before = now_ns();
    let (o, uuid) = run_sh(
        &env,
        "talker",
        &["--stdout=log", "--stderr=log"],
        "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done; exit 4",
    );
    let after = now_ns();
    assert_eq!(o.status.code(), Some(4), "{}", show(&o));
    assert!(!stdout(&o).contains("out1"), "{}", show(&o));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("err1"),
        "{}",
        show(&o)
    );
    let recs = records(&log_file(&env, &uuid, "talker"));
    assert_eq!(
        texts(&recs, "stdout"),
        ["out1", "out2", "out3", "out4", "out5"]
    );
    assert_eq!(
        texts(&recs, "stderr"),
        ["err1", "err2", "err3", "err4", "err5"]
    );
    assert_eq!(recs.len(), 10, "{recs:?}");
    for w in recs.windows(2) {
        assert!(w[0].0 <= w[1].0, "times go forward: {recs:?}");
    }
    assert!(
        recs.iter().all(|r| (before..=after).contains(&r.0)),
        "{recs:?}"
    );
}

#[test]
fn one_stream_logged_the_other_passed_through() {
    let env = Env::new();
    let (o, uuid) = run_sh(
        &env,
        "half",
        &["--stdout=log"],
        "echo to-the-log; echo to-the-terminal >&2",
    );
    assert!(o.status.success(), "{}", show(&o));
    assert!(!stdout(&o).contains("to-the-log"), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("to-the-terminal"),
        "{}",
        show(&o)
    );
    let recs = records(&log_file(&env, &uuid, "half"));
    assert_eq!(texts(&recs, "stdout"), ["to-the-log"]);
    assert!(texts(&recs, "stderr").is_empty(), "{recs:?}");
}

#[test]
fn null_discards_and_the_default_passes_through() {
    let env = Env::new();
    let (o, uuid) = run_sh(
        &env,
        "quiet",
        &["--stdout=null", "--stderr=null"],
        "echo gone; echo gone-too >&2",
    );
    assert!(o.status.success(), "{}", show(&o));
    assert!(!stdout(&o).contains("gone"), "{}", show(&o));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("gone-too"),
        "{}",
        show(&o)
    );
    assert!(
        !log_file(&env, &uuid, "quiet").exists(),
        "null keeps no log"
    );

    let (o, uuid) = run_sh(&env, "loud", &[], "echo visible; echo also-visible >&2");
    assert!(o.status.success(), "{}", show(&o));
    assert!(stdout(&o).contains("visible"), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("also-visible"),
        "{}",
        show(&o)
    );
    assert!(!log_file(&env, &uuid, "loud").exists());
}

#[test]
fn the_log_is_drained_when_the_app_exits() {
    let env = Env::new();
    // The app exits as soon as its last write is in the pipe: nothing may be lost, not even a
    // last line without a newline.
    let (o, uuid) = run_sh(&env, "burst", &["--stdout=log"], "seq 1 20000; printf tail");
    assert!(o.status.success(), "{}", show(&o));
    let got = texts(&records(&log_file(&env, &uuid, "burst")), "stdout");
    let mut want: Vec<String> = (1..=20000).map(|i| i.to_string()).collect();
    want.push("tail".into());
    assert_eq!(got.len(), want.len());
    assert!(got == want, "lines lost or out of order");
}

#[test]
fn each_app_has_its_own_log() {
    let env = Env::new();
    let image = env.image();
    let file = uuid_file(&env, "multi");
    let save = format!("--uuid-file-save={}", file.display());
    let app = |name: &'static str, out: &'static str| {
        vec![
            image.clone(),
            format!("--name={name}"),
            "--exec=/bin/sh".into(),
            out.into(),
            "--".into(),
            "-c".into(),
            format!("echo from-{name}; echo err-{name} >&2"),
        ]
    };
    let mut args: Vec<String> = vec!["run".into(), "--net=none".into(), save];
    args.extend(app("a", "--stdout=log"));
    args.push("---".into());
    args.extend(app("b", "--stdout=log"));
    args.push("---".into());
    args.extend(app("c", "--stderr=log"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = env.rkt(&args);
    assert!(o.status.success(), "{}", show(&o));
    let uuid = std::fs::read_to_string(&file).expect("uuid file");
    let a = records(&log_file(&env, &uuid, "a"));
    let b = records(&log_file(&env, &uuid, "b"));
    let c = records(&log_file(&env, &uuid, "c"));
    assert_eq!((texts(&a, "stdout"), a.len()), (vec!["from-a".into()], 1));
    assert_eq!((texts(&b, "stdout"), b.len()), (vec!["from-b".into()], 1));
    assert_eq!((texts(&c, "stderr"), c.len()), (vec!["err-c".into()], 1));
    let out = stdout(&o);
    assert!(out.contains("from-c") && !out.contains("from-a") && !out.contains("from-b"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("err-a") && err.contains("err-b") && !err.contains("err-c"));
}

#[test]
fn attach_modes_are_refused_clearly() {
    let env = Env::new();
    for flag in ["--stdout=tty", "--stderr=stream", "--stdin=stream"] {
        let o = env.sh(&[], &[flag], "true");
        assert!(!o.status.success(), "{flag}: {}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("not supported"), "{flag}: {err}");
    }
    let o = env.sh(&[], &["--stdout=file"], "true");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("expected null, tty, stream or log"));
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A line as GetLogs formats a record: the stream and text after the timestamp.
fn tail_of(line: &str) -> &str {
    line.split_once(' ').map_or("", |(_, rest)| rest)
}

/// The next message of a GetLogs stream (`None` at its end), failing after a deadline.
async fn next(s: &mut proto::tonic::Streaming<GetLogsResponse>) -> Option<GetLogsResponse> {
    tokio::time::timeout(Duration::from_secs(20), s.message())
        .await
        .expect("a GetLogs message in time")
        .expect("GetLogs stream")
}

/// Every line of a finished GetLogs stream.
async fn collect(
    client: &mut PublicApiClient<proto::tonic::transport::Channel>,
    req: GetLogsRequest,
) -> Vec<String> {
    let mut stream = client.get_logs(req).await.expect("GetLogs").into_inner();
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.message()).await {
            Ok(Ok(Some(GetLogsResponse { lines }))) => out.extend(lines),
            Ok(Ok(None)) => return out,
            Ok(Err(e)) => panic!("GetLogs stream failed: {e}"),
            Err(_) => panic!("GetLogs of a finished pod did not end"),
        }
    }
}

#[tokio::test]
async fn get_logs_tails_filters_and_explains_errors() {
    let env = Env::new();
    // The app's two-second pause puts `early` and the rest in different seconds, the API's unit.
    let (o, talker) = run_sh(
        &env,
        "talker",
        &["--stdout=log", "--stderr=log"],
        "echo early; sleep 2; for i in 1 2 3; do echo late$i; done; echo oops >&2",
    );
    assert!(o.status.success(), "{}", show(&o));
    let recs = records(&log_file(&env, &talker, "talker"));
    assert_eq!(recs.len(), 5, "{recs:?}");
    let file_order: Vec<String> = recs.iter().map(|r| format!("{} {}", r.1, r.2)).collect();

    let mut args = vec!["run", "--net=none"];
    let file = uuid_file(&env, "pair");
    let save = format!("--uuid-file-save={}", file.display());
    let image = env.image();
    args.extend([
        save.as_str(),
        &image,
        "--name=a",
        "--stdout=log",
        "--exec=/bin/echo",
        "--",
        "from-a",
    ]);
    args.extend(["---", &image, "--name=b", "--exec=/bin/true"]);
    args.extend([
        "---",
        &image,
        "--name=c",
        "--stderr=log",
        "--exec=/bin/sh",
        "--",
        "-c",
        "echo from-c >&2",
    ]);
    let o = env.rkt(&args);
    assert!(o.status.success(), "{}", show(&o));
    let pair = std::fs::read_to_string(&file).expect("uuid file");

    let (_svc, addr) = start(&env);
    let mut client = PublicApiClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let req = |lines: i32, since: i64, until: i64| GetLogsRequest {
        pod_id: talker.clone(),
        app_name: String::new(),
        lines,
        follow: false,
        since_time: since,
        until_time: until,
    };

    let all = collect(&mut client, req(0, 0, 0)).await;
    let tails: Vec<&str> = all.iter().map(|l| tail_of(l)).collect();
    assert_eq!(tails, file_order, "{all:?}");
    // `<RFC 3339 time> <stream> <text>`, the time being the record's.
    let first_time = all[0].split(' ').next().unwrap_or_default();
    assert!(
        first_time.len() == 30 && first_time.ends_with('Z') && first_time.contains('T'),
        "{all:?}"
    );

    let last_two = collect(&mut client, req(2, 0, 0)).await;
    assert_eq!(last_two, all[3..].to_vec());

    let secs = |ns: i64| ns / 1_000_000_000;
    let late1 = recs
        .iter()
        .find(|r| r.2 == "late1")
        .map(|r| r.0)
        .expect("late1");
    let since = collect(&mut client, req(0, secs(late1), 0)).await;
    let since_tails: Vec<&str> = since.iter().map(|l| tail_of(l)).collect();
    assert_eq!(
        since_tails,
        file_order
            .iter()
            .filter(|l| *l != "stdout early")
            .collect::<Vec<_>>()
    );
    let until = collect(&mut client, req(0, 0, secs(recs[0].0) + 1)).await;
    assert_eq!(
        until.iter().map(|l| tail_of(l)).collect::<Vec<_>>(),
        ["stdout early"]
    );
    let both = collect(&mut client, req(1, secs(late1), 0)).await;
    assert_eq!(
        both,
        all[4..].to_vec(),
        "tail applies after the time filter"
    );

    // By app name in a pod of several apps; the errors.
    let of = |pod: &str, app: &str| GetLogsRequest {
        pod_id: pod.to_string(),
        app_name: app.to_string(),
        ..Default::default()
    };
    let a = collect(&mut client, of(&pair, "a")).await;
    assert_eq!(
        a.iter().map(|l| tail_of(l)).collect::<Vec<_>>(),
        ["stdout from-a"]
    );
    // Without app_name, the logs of every app that keeps one, merged by time, each line naming its app.
    let mut merged: Vec<String> = collect(&mut client, of(&pair, ""))
        .await
        .iter()
        .map(|l| tail_of(l).to_string())
        .collect();
    merged.sort();
    assert_eq!(merged, ["a stdout from-a", "c stderr from-c"]);
    let e = client.get_logs(of(&pair, "zzz")).await.expect_err("no app");
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("zzz"), "{}", e.message());
    let e = client.get_logs(of(&pair, "b")).await.expect_err("no logs");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("--stdout=log"), "{}", e.message());
    let e = client.get_logs(of("nope", "")).await.expect_err("no pod");
    assert_eq!(e.code(), Code::NotFound);
    let e = client
        .get_logs(GetLogsRequest {
            since_time: -1,
            ..req(0, 0, 0)
        })
        .await
        .expect_err("negative time");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("since_time"), "{}", e.message());
}

#[tokio::test]
async fn get_logs_follows_until_the_pod_exits() {
    let env = Env::new();
    let sig = env.tmp.path().join("sig");
    std::fs::create_dir(&sig).expect("mkdir");
    let file = uuid_file(&env, "follow");
    let vol = format!("sig,kind=host,source={}", sig.display());
    let child = env
        .cmd(&[
            "run",
            "--net=none",
            &format!("--uuid-file-save={}", file.display()),
            &format!("--volume={vol}"),
            &env.image(),
            "--name=waiter",
            "--stdout=log",
            "--mount=volume=sig,target=/sig",
            "--exec=/bin/sh",
            "--",
            "-c",
            "echo before; while [ ! -e /sig/go ]; do sleep 0.05; done; echo after",
        ])
        .spawn()
        .expect("spawn rkt run");
    let mut guard = KillOnPanic::new(&child);
    let mut child = child;
    let uuid = wait_for(20, "the uuid file", || std::fs::read_to_string(&file).ok());
    wait_for(20, "the first line in the log", || {
        let text = std::fs::read_to_string(log_file(&env, &uuid, "waiter")).ok()?;
        text.contains("before").then_some(())
    });

    let (_svc, addr) = start(&env);
    let mut client = PublicApiClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut stream = client
        .get_logs(GetLogsRequest {
            pod_id: uuid.clone(),
            follow: true,
            ..Default::default()
        })
        .await
        .expect("GetLogs")
        .into_inner();
    let first = next(&mut stream).await.expect("the log so far");
    assert_eq!(
        first.lines.iter().map(|l| tail_of(l)).collect::<Vec<_>>(),
        ["stdout before"]
    );
    // Written only now, after the call started.
    std::fs::write(sig.join("go"), b"").expect("signal the app");
    let mut later = Vec::new();
    while let Some(msg) = next(&mut stream).await {
        later.extend(msg.lines);
    }
    assert_eq!(
        later.iter().map(|l| tail_of(l)).collect::<Vec<_>>(),
        ["stdout after"],
        "the new line, then the stream ends with the pod"
    );
    let status = child.wait().expect("wait rkt run");
    guard.disarm();
    assert!(status.success());
}

#[test]
fn prepared_pods_keep_their_output_modes() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let image = env.image();
    let uuid = env
        .ok(&[
            "prepare",
            "--net=none",
            &image,
            "--name=later",
            "--stdout=log",
            "--exec=/bin/sh",
            "--",
            "-c",
            "echo prepared-line",
        ])
        .trim()
        .to_string();
    let o = env.rkt(&["run-prepared", &uuid]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!stdout(&o).contains("prepared-line"), "{}", show(&o));
    let path = log_file(&env, &uuid, "later");
    assert_eq!(texts(&records(&path), "stdout"), ["prepared-line"]);
    let mode = std::fs::metadata(&path)
        .expect("stat log")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640, "logs are not world-readable");
}

#[test]
fn a_chatty_app_keeps_a_bounded_contiguous_tail() {
    let env = Env::new();
    // About 34 MB of records: the log rotates several times at 8 MiB.
    let (o, uuid) = run_sh(&env, "chatty", &["--stdout=log"], "seq 1 1000000");
    assert!(o.status.success(), "{}", show(&o));
    let current = log_file(&env, &uuid, "chatty");
    let rotated = current.with_file_name("log.1");
    let cap = 8 << 20;
    for f in [&current, &rotated] {
        let len = std::fs::metadata(f).expect("stat log").len();
        assert!(len <= cap, "{} is {len} bytes", f.display());
    }
    let mut kept = records(&rotated);
    kept.extend(records(&current));
    let numbers: Vec<u64> = kept
        .iter()
        .map(|r| r.2.parse().expect("a number"))
        .collect();
    assert_eq!(numbers.last(), Some(&1_000_000), "the end is kept");
    // A file is rotated when the next batch would not fit: the records of one read of at most
    // 64 KiB, here about 64 KiB / 7 bytes a line * 34 bytes a record, some 320 KiB.
    let rotated_len = std::fs::metadata(&rotated).expect("stat log.1").len();
    assert!(
        rotated_len > cap * 3 / 4,
        "log.1 is nearly full: {rotated_len}"
    );
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap in what is kept"
    );
}

#[test]
fn setup_and_exec_errors_still_reach_rkts_stderr() {
    let env = Env::new();
    for exec in ["/etc/passwd", "/no/such/program"] {
        let o = env.rkt(&[
            "run",
            "--net=none",
            &env.image(),
            "--name=broken",
            "--stdout=log",
            "--stderr=null",
            &format!("--exec={exec}"),
        ]);
        assert_eq!(o.status.code(), Some(127), "{exec}: {}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(exec), "{exec}: {}", show(&o));
    }
}
