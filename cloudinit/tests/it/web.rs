//! The web validator over real HTTP on a port-0 listener.

use tokio_util::sync::CancellationToken;

async fn start() -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(cloudinit::web::serve(listener, shutdown.clone()));
    (format!("http://{addr}"), shutdown, handle)
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

#[tokio::test]
async fn put_validate_returns_entries_with_cors() {
    let (base, shutdown, handle) = start().await;
    let response = client()
        .put(format!("{base}/validate"))
        .body("#cloud-config\r\nfoo: 1\r\ncoreos:\r\n  update:\r\n    reboot-strategy: maybe\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"result": [
            {"kind": "warning", "line": 2, "message": "unrecognized key \"foo\""},
            {"kind": "error", "line": 5, "message": "invalid value maybe"},
        ]})
    );

    let clean: serde_json::Value = client()
        .put(format!("{base}/validate"))
        .body("#cloud-config\nhostname: a\n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(clean, serde_json::json!({"result": []}));

    let preflight = client()
        .request(reqwest::Method::OPTIONS, format!("{base}/validate"))
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert!(
        preflight.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PUT")
    );

    let health = client().get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "OK");

    let page = client()
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Cloud-Config Validator") && page.contains("/validate"));

    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

/// Percent-encodes everything but unreserved characters, for a URL fragment.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The page in a real headless Chromium: its script PUTs the config and shows each finding beside its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_findings_beside_lines_in_a_real_browser() {
    let (base, shutdown, handle) = start().await;
    let profile = tempfile::tempdir().unwrap();
    let config = "#cloud-config\nhostname: node1\nbogus: 1\ncoreos:\n  units:\n    - name: a.service\n      command: jump\n";
    let url = format!("{base}/#config={}", encode(config));
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        tokio::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=20000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(&url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium did not finish in time")
    .expect("running chromium (apt-get install chromium)");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains(r#"data-validated="true""#),
        "the page never finished validating:\n{dom}"
    );
    assert!(
        dom.contains(r#"<span id="status" class="invalid">2 finding(s)</span>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<tr id="line-3" class="warning"><td class="num">3</td><td class="src">bogus: 1</td><td class="finding">warning: unrecognized key "bogus"</td></tr>"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<tr id="line-7" class="error"><td class="num">7</td><td class="src">      command: jump</td><td class="finding">error: invalid value jump</td></tr>"#),
        "{dom}"
    );
    assert!(dom.contains(r#"<tr id="line-2"><td class="num">2</td><td class="src">hostname: node1</td><td class="finding"></td></tr>"#));
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}
