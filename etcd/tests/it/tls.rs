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
    peer: u16,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(certs: &Path, extra: &[&str]) -> Server {
    start_with(env!("CARGO_BIN_EXE_etcd"), certs, extra)
}

/// A single member of `etcd` (ours or Debian's: the flags are etcd's) with TLS on its client URL.
fn start_with(etcd: &str, certs: &Path, extra: &[&str]) -> Server {
    let data = tempfile::tempdir().expect("data dir");
    let port = free_port();
    let peer = free_port();
    let url = format!("https://127.0.0.1:{port}");
    // Peer TLS flags make the peer URL https.
    let scheme = if extra.contains(&"--peer-cert-file") {
        "https"
    } else {
        "http"
    };
    let peer_url = format!("{scheme}://127.0.0.1:{peer}");
    let child = Command::new(etcd)
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
        peer,
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
        (
            vec![format!("--listen-peer-urls=https://127.0.0.1:{port}")],
            "cannot listen on TLS for 127.0.0.1",
        ),
        (
            vec![
                "--peer-cert-file".into(),
                certs.join("server.crt").display().to_string(),
                "--peer-key-file".into(),
                certs.join("server.key").display().to_string(),
                "--peer-client-cert-auth".into(),
            ],
            "--peer-client-cert-auth needs --peer-trusted-ca-file",
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
    // The peer flags come from ETCD_* too.
    let out = Command::new(env!("CARGO_BIN_EXE_etcd"))
        .arg("--data-dir")
        .arg(data.path().join("d"))
        .env("ETCD_PEER_CERT_FILE", certs.join("server.crt"))
        .output()
        .expect("etcd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--peer-cert-file and --peer-key-file go together"),
        "{err}"
    );
}

fn our_etcdctl(certs: &Path, envs: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_etcdctl"))
        .env("ETCDCTL_API", "3")
        .envs(envs.iter().copied())
        .args(args)
        .current_dir(certs)
        .output()
        .expect("our etcdctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn debian_etcdctl(certs: &Path, envs: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", "3")
        .envs(envs.iter().copied())
        .args(args)
        .current_dir(certs)
        .output()
        .expect("Debian's etcdctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn our_v3_etcdctl_over_tls_prints_what_debians_prints_against_our_etcd_and_debians() {
    let (_keep, certs) = certificates();
    let auth = ["--trusted-ca-file", "ca.crt", "--client-cert-auth"];
    let ours = start(&certs, &auth);
    let debian = start_with("/usr/bin/etcd", &certs, &auth);
    for (server, port) in [("ours", ours.port), ("Debian's", debian.port)] {
        let ep = format!("https://127.0.0.1:{port}");
        let bare = format!("127.0.0.1:{port}");
        let tls = [
            "--endpoints",
            ep.as_str(),
            "--cacert",
            "ca.crt",
            "--cert",
            "client.crt",
            "--key",
            "client.key",
        ];
        fn join<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
            [a, b].concat()
        }
        let with = |extra: &[&'static str]| join(&tls, extra);
        // (Debian's command line, ours): the same output expected, whichever client runs first.
        let same: Vec<(Vec<&str>, Vec<&str>)> = vec![
            (with(&["put", "d", "1"]), with(&["put", "o", "1"])),
            (with(&["get", "d"]), with(&["get", "d"])),
            (
                with(&["get", "", "--prefix", "--keys-only"]),
                with(&["get", "", "--prefix", "--keys-only"]),
            ),
            (with(&["member", "list"]), with(&["member", "list"])),
            // Verification off: a CA that did not sign the server is not asked.
            (
                with(&[
                    "--cacert",
                    "rogue.crt",
                    "--insecure-skip-tls-verify",
                    "get",
                    "o",
                ]),
                with(&[
                    "--cacert",
                    "rogue.crt",
                    "--insecure-skip-tls-verify",
                    "get",
                    "o",
                ]),
            ),
            (with(&["del", "d"]), with(&["del", "o"])),
        ];
        for (theirs, mine) in same {
            let d = debian_etcdctl(&certs, &[], &theirs);
            let o = our_etcdctl(&certs, &[], &mine);
            assert!(d.0, "{server}: Debian's etcdctl {theirs:?}: {}", d.2);
            assert!(o.0, "{server}: our etcdctl {mine:?}: {}", o.2);
            assert_eq!(o.1, d.1, "{server}: {mine:?}");
        }

        // From the environment, with a scheme-less endpoint (dialled with TLS because TLS is configured).
        let env = [
            ("ETCDCTL_ENDPOINTS", bare.as_str()),
            ("ETCDCTL_CACERT", "ca.crt"),
            ("ETCDCTL_CERT", "client.crt"),
            ("ETCDCTL_KEY", "client.key"),
        ];
        let d = debian_etcdctl(&certs, &env, &["put", "env", "tls"]);
        let o = our_etcdctl(&certs, &env, &["get", "env"]);
        assert!(d.0 && o.0, "{server}: {} / {}", d.2, o.2);
        assert_eq!(o.1, "env\ntls\n");

        // Refused by both: a server the given CA did not sign, no client certificate, one from another CA.
        let quick = ["--dial-timeout", "2s", "--command-timeout", "3s"];
        let refused: Vec<Vec<&str>> = vec![
            [
                &quick[..],
                &[
                    "--endpoints",
                    &ep,
                    "--cacert",
                    "rogue.crt",
                    "--cert",
                    "client.crt",
                    "--key",
                    "client.key",
                    "get",
                    "o",
                ],
            ]
            .concat(),
            [
                &quick[..],
                &["--endpoints", &ep, "--cacert", "ca.crt", "get", "o"],
            ]
            .concat(),
            [
                &quick[..],
                &[
                    "--endpoints",
                    &ep,
                    "--cacert",
                    "ca.crt",
                    "--cert",
                    "intruder.crt",
                    "--key",
                    "intruder.key",
                    "get",
                    "o",
                ],
            ]
            .concat(),
        ];
        for args in refused {
            let d = debian_etcdctl(&certs, &[], &args);
            let o = our_etcdctl(&certs, &[], &args);
            assert!(!d.0, "{server}: Debian's etcdctl was served: {args:?}");
            assert!(!o.0, "{server}: our etcdctl was served: {args:?}");
            assert_eq!(o.1, d.1, "{server}: {args:?}");
            assert!(
                o.2.ends_with("Error: context deadline exceeded\n"),
                "{server}: {args:?}: {}",
                o.2
            );
        }
    }

    // Our etcdctl in v2 mode: --insecure-skip-tls-verify really skips verification (Debian's v2 mode lacks
    // the flag).
    let ep = format!("https://127.0.0.1:{}", ours.port);
    let v2 = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_etcdctl"))
            .args([
                "--endpoints",
                &ep,
                "--cert-file",
                "client.crt",
                "--key-file",
                "client.key",
            ])
            .args(extra)
            .args(["ls", "/"])
            .current_dir(&certs)
            .output()
            .expect("our etcdctl");
        out.status.success()
    };
    assert!(
        !v2(&["--ca-file", "rogue.crt"]),
        "a server the CA did not sign was trusted"
    );
    assert!(v2(&[
        "--ca-file",
        "rogue.crt",
        "--insecure-skip-tls-verify"
    ]));
    assert!(v2(&["--insecure-skip-tls-verify"]));
}

#[test]
fn a_proxy_serves_https_and_forwards_to_a_member_with_https_client_and_peer_urls() {
    let (_keep, certs) = certificates();
    // The member wants certificates from its clients and its peers; the proxy presents the server
    // certificate (signed by the same CA, with no usage restriction) both ways, as etcd's proxy presents
    // --cert-file to members.
    let peer_tls = [
        "--peer-cert-file",
        "server.crt",
        "--peer-key-file",
        "server.key",
        "--peer-trusted-ca-file",
        "ca.crt",
    ];
    let member = start(
        &certs,
        &[
            &["--trusted-ca-file", "ca.crt", "--client-cert-auth"][..],
            &peer_tls,
            &["--peer-client-cert-auth"],
        ]
        .concat(),
    );
    let data = tempfile::tempdir().expect("proxy dir");
    let log = std::fs::File::create(data.path().join("proxy.log")).expect("proxy log");
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let mut proxy = Server {
        child: Command::new(env!("CARGO_BIN_EXE_etcd"))
            .args(["--proxy", "on", "--name", "proxy", "--data-dir"])
            .arg(data.path().join("p"))
            .args(["--listen-client-urls", &url])
            .args([
                "--initial-cluster",
                &format!("t1=https://127.0.0.1:{}", member.peer),
            ])
            .args(["--cert-file", "server.crt", "--key-file", "server.key"])
            .args(["--trusted-ca-file", "ca.crt"])
            .args(peer_tls)
            .args(["--proxy-refresh-interval", "500"])
            .current_dir(&certs)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the proxy"),
        port,
        peer: 0,
        _data: data,
    };
    let ca = ["--cacert", "ca.crt"];
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, body) = curl(&certs, port, &ca, "/v2/config/local/proxy");
        if ok && body.contains(&format!("https://127.0.0.1:{}", member.port)) {
            break;
        }
        if Instant::now() >= end {
            let _ = proxy.child.kill();
            let err = std::fs::read_to_string(proxy._data.path().join("proxy.log"));
            panic!("the proxy found no https endpoint ({body}):\n{err:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut put = vec!["-XPUT", "-d", "value=through-the-proxy"];
    put.extend(ca);
    let (ok, body) = curl(&certs, port, &put, "/v2/keys/proxied");
    assert!(ok, "{body}");
    assert!(body.contains("\"value\":\"through-the-proxy\""), "{body}");
    let (ok, body) = curl(
        &certs,
        member.port,
        &[
            "--cacert",
            "ca.crt",
            "--cert",
            "client.crt",
            "--key",
            "client.key",
        ],
        "/v2/keys/proxied",
    );
    assert!(ok && body.contains("through-the-proxy"), "{body}");
    // Debian's etcdctl (v2) through the proxy, trusting the proxy's certificate.
    let (ok, out, err) = etcdctl(
        &certs,
        "2",
        &[
            "--endpoints",
            &url,
            "--no-sync",
            "--ca-file",
            "ca.crt",
            "get",
            "/proxied",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "through-the-proxy\n");
    let plain = Command::new("curl")
        .args(["-sS", "-f", "-m", "5"])
        .arg(format!("http://127.0.0.1:{port}/v2/keys/proxied"))
        .output()
        .expect("curl");
    assert!(
        !plain.status.success(),
        "plain HTTP was served on the proxy's TLS port"
    );
}

#[test]
fn auto_tls_makes_self_signed_certificates_for_clients_and_peers() {
    // Two members: neither can commit without the other, so the write below crossed the TLS peer port.
    let dirs = [
        tempfile::tempdir().expect("data dir"),
        tempfile::tempdir().expect("data dir"),
    ];
    let ports = [(free_port(), free_port()), (free_port(), free_port())];
    let initial = format!(
        "a1=https://127.0.0.1:{},a2=https://127.0.0.1:{}",
        ports[0].1, ports[1].1
    );
    let members: Vec<Server> = (0..2)
        .map(|i| {
            let (client, peer) = ports[i];
            let curl_url = format!("https://127.0.0.1:{client}");
            let peer_url = format!("https://127.0.0.1:{peer}");
            let child = Command::new(env!("CARGO_BIN_EXE_etcd"))
                .args(["--name", &format!("a{}", i + 1), "--data-dir"])
                .arg(dirs[i].path().join("d"))
                .args(["--listen-client-urls", &curl_url])
                .args(["--advertise-client-urls", &curl_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial])
                .args(["--auto-tls", "--peer-auto-tls"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn etcd");
            Server {
                child,
                port: client,
                peer,
                _data: tempfile::tempdir().expect("unused"),
            }
        })
        .collect();
    let insecure = ["-k"];
    let dir = dirs[0].path();
    let end = Instant::now() + Duration::from_secs(30);
    for m in &members {
        loop {
            let (ok, body) = curl(dir, m.port, &insecure, "/health");
            if ok && body.contains("true") {
                break;
            }
            assert!(
                Instant::now() < end,
                "the auto-TLS members did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for (i, d) in dirs.iter().enumerate() {
        for f in [
            "client/cert.pem",
            "client/key.pem",
            "peer/cert.pem",
            "peer/key.pem",
        ] {
            let p = d.path().join("d").join("fixtures").join(f);
            assert!(p.is_file(), "member {i}: no {}", p.display());
        }
    }
    let (ok, body) = curl(
        dir,
        members[1].port,
        &["-k", "-XPUT", "-d", "value=auto"],
        "/v2/keys/auto",
    );
    assert!(ok, "{body}");
    let (ok, body) = curl(dir, members[0].port, &insecure, "/v2/keys/auto?quorum=true");
    assert!(ok && body.contains("\"value\":\"auto\""), "{body}");
    // The certificate names no CA a client knows: verification must be turned off, in both etcdctls the
    // same way (--insecure-transport=false, since no TLS file is given).
    let ep = format!("https://127.0.0.1:{}", members[0].port);
    let args = [
        "--endpoints",
        ep.as_str(),
        "--insecure-transport=false",
        "--insecure-skip-tls-verify",
        "get",
        "/auto",
    ];
    let d = debian_etcdctl(dir, &[], &args);
    let o = our_etcdctl(dir, &[], &args);
    assert!(d.0 && o.0, "{} / {}", d.2, o.2);
    assert_eq!(o.1, d.1);
    assert_eq!(o.1, "/auto\nauto\n");
    // The peer port speaks TLS only.
    let (ok, _) = curl(dir, members[0].peer, &insecure, "/members");
    assert!(ok, "GET /members over https");
    let plain = Command::new("curl")
        .args(["-sS", "-f", "-m", "5"])
        .arg(format!("http://127.0.0.1:{}/members", members[0].peer))
        .output()
        .expect("curl");
    assert!(
        !plain.status.success(),
        "plain HTTP on the auto-TLS peer port"
    );
}

/// Members with `https://` peer URLs, each in its own harness host, with peer certificates naming the host's
/// address: `certs` holds `<member name>.crt`/`.key` signed by `ca.crt` (`rogue.crt` for the intruder).
mod peers {
    use std::path::Path;
    use std::time::Duration;

    use integration::{Spawn, poll_until};

    use super::{ca, signed};
    use crate::cluster::{Cluster, etcd_bin, etcdctl_bin, json};

    fn peer_url(c: &Cluster, i: usize) -> String {
        format!("https://{}:2380", c.members[i].host.addr())
    }

    fn initial(c: &Cluster, which: &[usize]) -> String {
        which
            .iter()
            .map(|&i| format!("{}={}", c.members[i].name, peer_url(c, i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` with its own peer certificate, trusting `ca` for peers, client certificates required.
    fn start(c: &mut Cluster, i: usize, certs: &Path, ca: &str, initial: &str, state: &str) {
        let url = peer_url(c, i);
        let m = &mut c.members[i];
        let client = format!("http://{}", m.client());
        let spawn = Spawn::new(etcd_bin())
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &url])
            .args(["--initial-advertise-peer-urls", &url])
            .args(["--initial-cluster", initial])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "it-peer-tls"])
            .arg("--peer-cert-file")
            .arg(certs.join(format!("{}.crt", m.name)))
            .arg("--peer-key-file")
            .arg(certs.join(format!("{}.key", m.name)))
            .arg("--peer-trusted-ca-file")
            .arg(certs.join(format!("{ca}.crt")))
            .arg("--peer-client-cert-auth")
            // A joining member that cannot reach the cluster gives up after 30 election timeouts.
            .args(["--heartbeat-interval", "50", "--election-timeout", "300"])
            .env("RUST_LOG", "info,openraft=error");
        m.proc = Some(m.host.spawn(spawn).expect("starting our etcd"));
    }

    /// curl from the client host; (success, body).
    fn curl(c: &Cluster, args: &[&str]) -> (bool, String) {
        let (ok, out, _) = c.exec("curl", &[&["-sS", "-f", "-m", "5"], args].concat());
        (ok, out)
    }

    #[test]
    fn members_with_https_peer_urls_form_replicate_join_and_leave_and_one_from_another_ca_is_shut_out()
     {
        // m1..m3 form the cluster, m4 joins later, m5 has a certificate from another CA.
        let mut c = Cluster::hosts(5);
        let dir = tempfile::tempdir().expect("cert dir");
        let certs = dir.path();
        ca(certs, "ca");
        ca(certs, "rogue");
        for i in 0..5 {
            let san = format!("IP:{}", c.members[i].host.addr());
            let issuer = if i == 4 { "rogue" } else { "ca" };
            signed(certs, issuer, &c.members[i].name.clone(), Some(&san));
        }
        let first = initial(&c, &[0, 1, 2]);
        for i in (0..3).rev() {
            start(&mut c, i, certs, "ca", &first, "new");
        }
        for i in 0..3 {
            c.wait_healthy(i);
        }

        // A write through a follower (forwarded to the leader over the peer port) reaches every member;
        // quorum reads on followers ask the leader for its read index over the peer port too.
        let leader = c.agreed_leader(&[0, 1, 2]);
        let follower = (leader + 1) % 3;
        let r = c.req(follower, "PUT", "/v2/keys/tls", Some("value=replicated"));
        assert_eq!(r.status, 201, "{}", r.text());
        for i in 0..3 {
            let r = c.req(i, "GET", "/v2/keys/tls?quorum=true", None);
            assert_eq!(json(&r)["node"]["value"], "replicated", "member {i}");
        }

        // The peer port: etcd's `GET /members` over https with a peer certificate; refused without one, from
        // another CA, and over plain http.
        let members = format!("https://{}:2380/members", c.members[0].host.addr());
        let ca_file = certs.join("ca.crt").display().to_string();
        let good = |name: &str| {
            [
                "--cacert".to_string(),
                ca_file.clone(),
                "--cert".into(),
                certs.join(format!("{name}.crt")).display().to_string(),
                "--key".into(),
                certs.join(format!("{name}.key")).display().to_string(),
            ]
        };
        let with = |tls: &[String], url: &str| {
            let mut a: Vec<&str> = tls.iter().map(String::as_str).collect();
            a.push(url);
            curl(&c, &a)
        };
        let (ok, body) = with(&good("m4"), &members);
        assert!(ok, "GET /members over https failed");
        let list: serde_json::Value = serde_json::from_str(&body).expect("members JSON");
        let mut urls: Vec<String> = list
            .as_array()
            .expect("array")
            .iter()
            .map(|m| m["peerURLs"][0].as_str().unwrap_or("").to_string())
            .collect();
        urls.sort();
        let mut want: Vec<String> = (0..3).map(|i| peer_url(&c, i)).collect();
        want.sort();
        assert_eq!(urls, want);
        let (ok, _) = with(&good("m4")[..2], &members);
        assert!(!ok, "the peer port served a client without a certificate");
        let (ok, _) = with(&good("m5"), &members);
        assert!(!ok, "the peer port served a certificate from another CA");
        let plain = members.replacen("https://", "http://", 1);
        let (ok, _) = curl(&c, &[&plain]);
        assert!(!ok, "plain http was served on the https peer port");

        // The intruder, although added to the membership, cannot reach anyone (nor anyone it): it gives up
        // without joining, and the cluster carries on without it.
        add(&c, 4, leader);
        let all = initial(&c, &[0, 1, 2, 4]);
        start(&mut c, 4, certs, "rogue", &all, "existing");
        let status = c.members[4]
            .proc
            .as_mut()
            .expect("intruder")
            .wait_timeout(Duration::from_secs(30))
            .expect("the intruder did not give up");
        assert!(!status.success(), "the intruder joined:\n{}", c.logs(4));
        assert!(
            c.logs(4)
                .contains("could not reach any member of the existing cluster"),
            "{}",
            c.logs(4)
        );
        let r = c.req(follower, "PUT", "/v2/keys/after-intruder", Some("value=1"));
        assert_eq!(r.status, 201, "{}", r.text());
        let r = c.try_req(4, "GET", "/v2/keys/tls", None);
        assert!(r.is_err(), "the intruder serves clients");
        let id = id_of(&c, 4, leader);
        remove(&c, &id, leader);

        // A member with a good certificate joins through `member add` and `--initial-cluster-state existing`,
        // gets the data, and stops by itself once removed (the peers tell it over the peer port).
        add(&c, 3, leader);
        let all = initial(&c, &[0, 1, 2, 3]);
        start(&mut c, 3, certs, "ca", &all, "existing");
        c.wait_healthy(3);
        let r = c.req(3, "GET", "/v2/keys/tls?quorum=true", None);
        assert_eq!(json(&r)["node"]["value"], "replicated");
        let r = c.req(3, "PUT", "/v2/keys/from-m4", Some("value=1"));
        assert_eq!(r.status, 201, "{}", r.text());
        // As a voter (promoted once caught up): a removed learner would not hear of its removal (the same
        // without TLS; see the proxy test).
        poll_until(
            "m4 promoted to voter",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let m = c.try_req(3, "GET", "/metrics", None).ok()?.text();
                m.contains("\netcd_server_is_learner 0\n").then_some(())
            },
        )
        .expect("promoted");
        let id = id_of(&c, 3, leader);
        remove(&c, &id, leader);
        let status = c.members[3]
            .proc
            .as_mut()
            .expect("m4")
            .wait_timeout(Duration::from_secs(30))
            .expect("the removed member did not stop");
        assert!(status.success(), "{}", c.logs(3));
        assert!(
            c.logs(3)
                .contains("the member has been permanently removed from the cluster"),
            "{}",
            c.logs(3)
        );
        poll_until(
            "a write after the removal",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || {
                let r = c
                    .try_req(follower, "PUT", "/v2/keys/end", Some("value=1"))
                    .ok()?;
                (r.status == 201 || r.status == 200).then_some(())
            },
        )
        .expect("the cluster serves writes");
        c.assert_alive(&[0, 1, 2]);
    }

    fn add(c: &Cluster, i: usize, via: usize) {
        let (ok, out, err) = c.exec(
            etcdctl_bin(),
            &[
                "--endpoints",
                &c.endpoints(&[via]),
                "member",
                "add",
                &c.members[i].name,
                &peer_url(c, i),
            ],
        );
        assert!(ok, "member add: {err}");
        assert!(out.starts_with("Added member named"), "{out}");
    }

    /// Member `i`'s id, found by its peer URL (a member that never started has no name).
    fn id_of(c: &Cluster, i: usize, via: usize) -> String {
        let url = peer_url(c, i);
        c.member_list(via)
            .iter()
            .find(|l| l.contains(&format!("peerURLs={url}")))
            .and_then(|l| l.split([':', '[']).next())
            .map(String::from)
            .unwrap_or_else(|| panic!("{url} not in {:?}", c.member_list(via)))
    }

    fn remove(c: &Cluster, id: &str, via: usize) {
        let (ok, out, err) = c.exec(
            etcdctl_bin(),
            &["--endpoints", &c.endpoints(&[via]), "member", "remove", id],
        );
        assert!(ok, "member remove: {err}");
        assert_eq!(out, format!("Removed member {id} from cluster\n"));
    }
}
