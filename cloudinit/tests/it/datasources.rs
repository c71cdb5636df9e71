//! Datasources end to end: a config drive directory, an EC2-style metadata server, a URL and the kernel command
//! line, each fetched by `run::run` and applied into a temp root with fakes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use cloudinit::apply::UnitNames;
use cloudinit::apply::users::FakeAccounts;
use cloudinit::run::{Settings, Source, run};
use cloudinit::systemd::{Call, Recording};

/// Serves a fixed map of paths on a port-0 listener; returns the base URL.
async fn serve(files: HashMap<String, String>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let files = Arc::new(files);
    let app = axum::Router::new().route(
        "/{*path}",
        axum::routing::get(|State(files): State<Arc<HashMap<String, String>>>, Path(path): Path<String>| async move {
            files.get(&path).cloned().ok_or(StatusCode::NOT_FOUND)
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app.with_state(files)).await });
    format!("http://{addr}/")
}

fn root_with_core(dir: &tempfile::TempDir) -> PathBuf {
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "core:x:500:500::/home/core:/bin/bash\n",
    )
    .unwrap();
    root
}

fn settings(root: PathBuf, sources: Vec<Source>) -> Settings {
    Settings {
        sources,
        timeout: Duration::from_secs(20),
        validate: false,
        ignore_failure: false,
        workspace: PathBuf::from("/var/lib/coreos-cloudinit"),
        ssh_key_name: "coreos-cloudinit".into(),
        root,
        units: UnitNames::default(),
    }
}

const USER_DATA: &str = "#cloud-config\nwrite_files:\n  - path: /etc/addr\n    content: \"$private_ipv4 $public_ipv4 \\$private_ipv4\"\n";

#[tokio::test]
async fn ec2_metadata_service() {
    let files: HashMap<String, String> = [
        ("2009-04-04/user-data", USER_DATA),
        ("2009-04-04/meta-data/hostname", "ec2-host"),
        ("2009-04-04/meta-data/local-ipv4", "10.1.2.3"),
        ("2009-04-04/meta-data/public-ipv4", "203.0.113.9"),
        ("2009-04-04/meta-data/public-keys", "0=first\n1=second"),
        (
            "2009-04-04/meta-data/public-keys/0/openssh-key",
            "ssh-ed25519 AAAA0 first",
        ),
        (
            "2009-04-04/meta-data/public-keys/1/openssh-key",
            "ssh-ed25519 AAAA1 second",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let base = serve(files).await;
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_core(&dir);
    let s = settings(root.clone(), vec![Source::Ec2(base)]);
    let systemd = Recording::default();
    let accounts = FakeAccounts::new(&root);
    let outcome = run(&s, &systemd, &accounts).await.unwrap();
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/addr")).unwrap(),
        "10.1.2.3 203.0.113.9 $private_ipv4"
    );
    assert_eq!(systemd.calls(), vec![Call::Hostname("ec2-host".into())]);
    assert_eq!(
        std::fs::read_to_string(root.join("home/core/.ssh/authorized_keys")).unwrap(),
        "ssh-ed25519 AAAA0 first\nssh-ed25519 AAAA1 second\n"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/environment")).unwrap(),
        "COREOS_PRIVATE_IPV4=10.1.2.3\nCOREOS_PUBLIC_IPV4=203.0.113.9\n"
    );
}

#[tokio::test]
async fn config_drive() {
    let dir = tempfile::tempdir().unwrap();
    let drive = dir.path().join("drive/openstack/latest");
    std::fs::create_dir_all(&drive).unwrap();
    std::fs::write(
        drive.join("user_data"),
        "#cloud-config\nhostname: from-user-data\n",
    )
    .unwrap();
    std::fs::write(
        drive.join("meta_data.json"),
        r#"{"hostname":"md-host","public_keys":{"k":"ssh-rsa AAAAK k"}}"#,
    )
    .unwrap();
    let root = root_with_core(&dir);
    let s = settings(
        root.clone(),
        vec![Source::ConfigDrive(dir.path().join("drive"))],
    );
    let systemd = Recording::default();
    let accounts = FakeAccounts::new(&root);
    let outcome = run(&s, &systemd, &accounts).await.unwrap();
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    // user-data hostname overrides metadata hostname; metadata keys are appended
    assert_eq!(
        systemd.calls(),
        vec![Call::Hostname("from-user-data".into())]
    );
    assert_eq!(
        std::fs::read_to_string(root.join("home/core/.ssh/authorized_keys")).unwrap(),
        "ssh-rsa AAAAK k\n"
    );
}

#[tokio::test]
async fn url_and_proc_cmdline_first_available_wins() {
    let base = serve(
        [(
            "cc".to_string(),
            "#cloud-config\nhostname: via-url\n".to_string(),
        )]
        .into(),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_core(&dir);
    let cmdline = dir.path().join("cmdline");
    std::fs::write(
        &cmdline,
        format!("root=/dev/sda cloud-config-url={base}cc quiet\n"),
    )
    .unwrap();
    // A file that never appears is polled alongside; the command line wins.
    let s = settings(
        root.clone(),
        vec![
            Source::File(dir.path().join("never")),
            Source::ProcCmdline(cmdline),
        ],
    );
    let systemd = Recording::default();
    let accounts = FakeAccounts::new(&root);
    let outcome = run(&s, &systemd, &accounts).await.unwrap();
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    assert_eq!(systemd.calls(), vec![Call::Hostname("via-url".into())]);

    let s = settings(root.clone(), vec![Source::Url(format!("{base}cc"))]);
    let systemd = Recording::default();
    let outcome = run(&s, &systemd, &accounts).await.unwrap();
    assert_eq!(outcome.exit_code, 0, "{outcome:?}");
    assert_eq!(systemd.calls(), vec![Call::Hostname("via-url".into())]);
}

#[tokio::test]
async fn unreachable_or_missing_sources_are_not_available() {
    use cloudinit::datasource::{Datasource, Ec2Metadata, LocalFile, ProcCmdline, Url};
    // Bind and drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert!(
        !Ec2Metadata::new(&format!("http://127.0.0.1:{port}/"))
            .available()
            .await
    );
    let base = serve(HashMap::new()).await;
    assert!(!Url::new(format!("{base}missing")).available().await);
    // An EC2 server that 404s the version listing is still there.
    assert!(Ec2Metadata::new(&base).available().await);
    let dir = tempfile::tempdir().unwrap();
    assert!(!LocalFile::new(dir.path().join("absent")).available().await);
    assert!(!LocalFile::new(dir.path()).available().await);
    std::fs::write(dir.path().join("cmdline"), "root=/dev/sda quiet\n").unwrap();
    assert!(
        !ProcCmdline::new(dir.path().join("cmdline"))
            .available()
            .await
    );
}
