//! TLS on the client URLs: certificates made with Debian's `openssl`, our server with `--cert-file`,
//! `--key-file`, `--trusted-ca-file` and `--client-cert-auth`, and real clients (`curl`, Debian's etcdctl in
//! v2 and v3 mode) with and without the right certificates.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::free_port;

fn run(program: &str, args: &[&str], dir: &Path) -> std::process::Output {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A CA and a certificate it signed, in `dir` as `<name>.crt`/`<name>.key`.
fn ca(dir: &Path, name: &str) {
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
        dir,
    );
}

fn signed(dir: &Path, ca: &str, name: &str, san: Option<&str>) {
    run(
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
        dir,
    );
    let mut ext = "basicConstraints=CA:FALSE\n".to_string();
    if let Some(san) = san {
        ext.push_str(&format!("subjectAltName={san}\n"));
    }
    std::fs::write(dir.join(format!("{name}.ext")), ext).expect("ext file");
    run(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ],
        dir,
    );
}

struct Server {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(certs: &Path, extra: &[&str]) -> Server {
    let data = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let peer = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new(env!("CARGO_BIN_EXE_etcd"))
        .args(["--name", "t1", "--data-dir"])
        .arg(data.path().join("d"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("t1={peer_url}")])
        .arg("--cert-file")
        .arg(certs.join("server.crt"))
        .arg("--key-file")
        .arg(certs.join("server.key"))
        .args(extra)
        // Relative file names in `extra` are the certificate dir's.
        .current_dir(certs)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etcd");
    let s = Server {
        child,
        port,
        _data: data,
    };
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let out = curl(
            certs,
            s.port,
            &[
                "--cacert",
                "ca.crt",
                "--cert",
                "client.crt",
                "--key",
                "client.key",
            ],
            "/health",
        );
        if out.0 && out.1.contains("true") {
            return s;
        }
        assert!(
            Instant::now() < end,
            "the TLS server did not become healthy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// curl over https; (success, body).
fn curl(certs: &Path, port: u16, tls: &[&str], path: &str) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "-f", "-m", "5"])
        .args(tls)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .current_dir(certs)
        .output()
        .expect("curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn etcdctl(certs: &Path, api: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", api)
        .args(args)
        .current_dir(certs)
        .output()
        .expect("etcdctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn certificates() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("cert dir");
    let p = dir.path().to_path_buf();
    ca(&p, "ca");
    signed(&p, "ca", "server", Some("IP:127.0.0.1,DNS:localhost"));
    signed(&p, "ca", "client", None);
    ca(&p, "rogue");
    signed(&p, "rogue", "intruder", None);
    (dir, p)
}

#[test]
fn clients_with_a_trusted_certificate_are_served_over_https_and_others_are_refused() {
    let (_keep, certs) = certificates();
    let s = start(
        &certs,
        &["--trusted-ca-file", "ca.crt", "--client-cert-auth"],
    );
    let ep = format!("https://127.0.0.1:{}", s.port);
    let good = [
        "--cacert",
        "ca.crt",
        "--cert",
        "client.crt",
        "--key",
        "client.key",
    ];

    // curl, v2 keys API.
    let mut put = vec!["-XPUT", "-d", "value=secret"];
    put.extend(good);
    let (ok, body) = curl(&certs, s.port, &put, "/v2/keys/tls");
    assert!(ok, "{body}");
    assert!(body.contains("\"value\":\"secret\""), "{body}");

    // Debian's etcdctl, v2 and v3 (gRPC over TLS on the same port).
    let (ok, out, err) = etcdctl(
        &certs,
        "2",
        &[
            "--endpoints",
            &ep,
            "--ca-file",
            "ca.crt",
            "--cert-file",
            "client.crt",
            "--key-file",
            "client.key",
            "get",
            "/tls",
        ],
    );
    assert!(ok, "v2 get: {err}");
    assert_eq!(out, "secret\n");
    let v3 = |args: &[&str]| {
        let tls = [
            "--endpoints",
            &ep,
            "--cacert",
            "ca.crt",
            "--cert",
            "client.crt",
            "--key",
            "client.key",
        ];
        etcdctl(&certs, "3", &[&tls[..], args].concat())
    };
    let (ok, _, err) = v3(&["put", "v3key", "v3value"]);
    assert!(ok, "v3 put: {err}");
    let (ok, out, err) = v3(&["get", "v3key"]);
    assert!(ok, "v3 get: {err}");
    assert_eq!(out, "v3key\nv3value\n");

    // Our etcdctl (v2 mode), with etcdctl's flags: the same output as Debian's.
    let ours = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_etcdctl"))
            .args(args)
            .current_dir(&certs)
            .output()
            .expect("our etcdctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let tls_v2 = [
        "--endpoints",
        &ep,
        "--ca-file",
        "ca.crt",
        "--cert-file",
        "client.crt",
        "--key-file",
        "client.key",
    ];
    let (ok, out, err) = ours(&[&tls_v2[..], &["set", "/ours", "over-tls"]].concat());
    assert!(ok, "our etcdctl set: {err}");
    assert_eq!(out, "over-tls\n");
    let (ok, out, err) = ours(&[&tls_v2[..], &["get", "/tls"]].concat());
    assert!(ok, "our etcdctl get: {err}");
    assert_eq!(out, "secret\n");
    let (ok, debian, _) = etcdctl(&certs, "2", &[&tls_v2[..], &["ls", "/"]].concat());
    assert!(ok);
    let (ok, out, _) = ours(&[&tls_v2[..], &["ls", "/"]].concat());
    assert!(ok);
    assert_eq!(out, debian);
    let (ok, _, _) = ours(&[
        "--endpoints",
        &ep,
        "--ca-file",
        "ca.crt",
        "--cert-file",
        "intruder.crt",
        "--key-file",
        "intruder.key",
        "get",
        "/tls",
    ]);
    assert!(!ok, "our etcdctl with an untrusted certificate was served");

    // Refused: no client certificate, one from another CA, a client that does not trust the server, plain
    // HTTP on the TLS port.
    let (ok, _) = curl(&certs, s.port, &["--cacert", "ca.crt"], "/v2/keys/tls");
    assert!(!ok, "no client certificate was accepted");
    let (ok, _) = curl(
        &certs,
        s.port,
        &[
            "--cacert",
            "ca.crt",
            "--cert",
            "intruder.crt",
            "--key",
            "intruder.key",
        ],
        "/v2/keys/tls",
    );
    assert!(!ok, "a certificate from an untrusted CA was accepted");
    let (ok, _) = curl(
        &certs,
        s.port,
        &[
            "--cacert",
            "rogue.crt",
            "--cert",
            "client.crt",
            "--key",
            "client.key",
        ],
        "/v2/keys/tls",
    );
    assert!(!ok, "the client accepted a server its CA did not sign");
    let (ok, _, _) = etcdctl(
        &certs,
        "3",
        &[
            "--endpoints",
            &ep,
            "--dial-timeout",
            "2s",
            "--command-timeout",
            "3s",
            "--cacert",
            "ca.crt",
            "--cert",
            "intruder.crt",
            "--key",
            "intruder.key",
            "get",
            "v3key",
        ],
    );
    assert!(!ok, "etcdctl with an untrusted certificate was served");
    let plain = Command::new("curl")
        .args(["-sS", "-f", "-m", "5"])
        .arg(format!("http://127.0.0.1:{}/v2/keys/tls", s.port))
        .output()
        .expect("curl");
    assert!(
        !plain.status.success(),
        "plain HTTP was served on the TLS port"
    );
}

#[test]
fn without_client_cert_auth_any_client_that_trusts_the_server_is_served() {
    let (_keep, certs) = certificates();
    let s = start(&certs, &[]);
    let (ok, body) = curl(&certs, s.port, &["--cacert", "ca.crt"], "/version");
    assert!(ok, "{body}");
    assert!(body.contains("etcdserver"), "{body}");
}

#[test]
fn tls_flags_that_do_not_fit_are_refused_at_start() {
    let (_keep, certs) = certificates();
    let data = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![format!("--listen-client-urls=https://127.0.0.1:{port}")],
            "https needs --cert-file",
        ),
        (
            vec![
                "--cert-file".into(),
                certs.join("server.crt").display().to_string(),
            ],
            "--cert-file and --key-file go together",
        ),
        (
            vec![
                "--cert-file".into(),
                certs.join("server.crt").display().to_string(),
                "--key-file".into(),
                certs.join("server.key").display().to_string(),
                "--client-cert-auth".into(),
            ],
            "--client-cert-auth needs --trusted-ca-file",
        ),
        (
            vec![
                "--cert-file".into(),
                certs.join("nonexistent.crt").display().to_string(),
                "--key-file".into(),
                certs.join("server.key").display().to_string(),
            ],
            "nonexistent.crt",
        ),
    ];
    for (args, want) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_etcd"))
            .arg("--data-dir")
            .arg(data.path().join("d"))
            .args(&args)
            .output()
            .expect("etcd");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
