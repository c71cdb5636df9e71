//! The coreos-cloudinit binary: --validate output and exit codes, missing sources, datasource timeout; and
//! `run::run` dispatch on the user-data kind with fakes.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use cloudinit::apply::UnitNames;
use cloudinit::apply::users::FakeAccounts;
use cloudinit::run::{Settings, Source, run};
use cloudinit::systemd::{Call, Recording};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coreos-cloudinit"))
}

fn write_temp(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn validate_prints_findings_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_temp(
        &dir,
        "cc.yml",
        b"#cloud-config\r\nhostname: a\r\nfoo: 1\r\ncoreos:\r\n  units:\r\n    - name: x\r\n      command: go\r\n",
    );
    let out = binary()
        .arg("--validate")
        .arg("--from-file")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line 3: warning: unrecognized key \"foo\"\nline 7: error: invalid value go\n"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Checking availability of \"local-file\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("Fetching user-data from datasource of type \"local-file\""),
        "{stderr}"
    );
}

#[test]
fn validate_clean_config_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_temp(
        &dir,
        "cc.yml",
        b"#cloud-config\nhostname: a\ncoreos:\n  update:\n    reboot-strategy: off\n",
    );
    let out = binary()
        .arg("--validate")
        .arg("--from-file")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let ign = write_temp(&dir, "ign.json", br#"{"ignition":{"version":"3.0.0"}}"#);
    let out = binary()
        .arg("--validate")
        .arg("--from-file")
        .arg(&ign)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn validate_gzip_user_data() {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(b"#cloud-config\nbogus: 1\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = write_temp(&dir, "cc.gz", &enc.finish().unwrap());
    let out = binary()
        .arg("--validate")
        .arg("--from-file")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line 2: warning: unrecognized key \"bogus\"\n"
    );
}

#[test]
fn no_source_exits_2_with_the_usage_line() {
    let out = binary().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("Provide at least one of --from-file"),
        "{stderr}"
    );
    assert!(!stderr.ends_with('\n'));
}

#[test]
fn missing_file_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = binary()
        .args(["--validate", "--datasource-timeout", "1", "--from-file"])
        .arg(dir.path().join("absent"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No datasources available in time"));
}

#[test]
fn unsupported_features_say_so() {
    let out = binary().args(["--oem", "gce"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not implemented"));
    let out = binary()
        .args(["--convert-netconf", "debian", "--from-file", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not implemented"));
}

fn settings(dir: &tempfile::TempDir, file: PathBuf) -> Settings {
    Settings {
        sources: vec![Source::File(file)],
        timeout: Duration::from_secs(5),
        validate: false,
        ignore_failure: false,
        workspace: PathBuf::from("/var/lib/coreos-cloudinit"),
        ssh_key_name: "coreos-cloudinit".into(),
        root: dir.path().join("root"),
        units: UnitNames::default(),
    }
}

#[tokio::test]
async fn script_runs_as_a_transient_unit() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_temp(&dir, "ud", b"#!/bin/bash\necho hi\n");
    let s = settings(&dir, file);
    let systemd = Recording::default();
    let accounts = FakeAccounts::new(&s.root);
    let outcome = run(&s, &systemd, &accounts).await.unwrap();
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    let calls = systemd.calls();
    let [Call::Transient(unit, argv)] = calls.as_slice() else {
        panic!("{calls:?}")
    };
    assert!(
        unit.starts_with("coreos-cloudinit-") && unit.ends_with(".service"),
        "{unit}"
    );
    assert_eq!(argv[0], "/bin/bash");
    let saved = s.root.join(argv[1].trim_start_matches('/'));
    assert_eq!(
        std::fs::read_to_string(saved).unwrap(),
        "#!/bin/bash\necho hi\n"
    );
}

#[tokio::test]
async fn kinds_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let systemd = Recording::default();
    for (content, code, ignore) in [
        (&b""[..], 0, false),
        (&br#"{"ignitionVersion": 1}"#[..], 0, false),
        (&b"hello world\n"[..], 1, false),
        (&b"hello world\n"[..], 0, true),
    ] {
        let file = write_temp(&dir, "ud", content);
        let mut s = settings(&dir, file);
        s.ignore_failure = ignore;
        let accounts = FakeAccounts::new(&s.root);
        let outcome = run(&s, &systemd, &accounts).await.unwrap();
        assert_eq!(
            outcome.exit_code,
            code,
            "{:?}: {outcome:?}",
            String::from_utf8_lossy(content)
        );
    }
    assert!(systemd.calls().is_empty());
}
