//! `rkt api-service`: the gRPC v1alpha.PublicAPI, queried with the generated tonic client,
//! including the ListenEvents stream.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use proto::v1alpha::public_api_client::PublicApiClient;
use proto::v1alpha::{
    EventFilter, EventType, GetInfoRequest, GetLogsRequest, ImageFilter, InspectImageRequest,
    InspectPodRequest, ListImagesRequest, ListPodsRequest, ListenEventsRequest, PodFilter,
    PodState,
};

use crate::common::Env;

pub(crate) struct ApiService(Child);

impl Drop for ApiService {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the service on an ephemeral port; returns it and its address.
pub(crate) fn start(env: &Env) -> (ApiService, String) {
    let mut child = env
        .cmd(&["api-service", "--listen=127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn api-service");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read address");
    let addr = line
        .trim()
        .strip_prefix("api-service: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (ApiService(child), addr)
}

#[tokio::test]
async fn api_service_answers_and_streams_events() {
    let env = Env::new();
    let id = env
        .ok(&["fetch", "--full", &env.image()])
        .trim()
        .to_string();
    let o = env.rkt(&[
        "run",
        "--net=none",
        &env.image(),
        "--name=first",
        "--exec=/bin/sh",
        "--",
        "-c",
        "exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    let (_svc, addr) = start(&env);
    let mut client = PublicApiClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let info = client
        .get_info(GetInfoRequest {})
        .await
        .expect("GetInfo")
        .into_inner()
        .info
        .expect("info");
    assert_eq!(
        info.global_flags.expect("flags").dir,
        env.dir.display().to_string()
    );

    let images = client
        .list_images(ListImagesRequest {
            filters: vec![],
            detail: false,
        })
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert_eq!(images.len(), 1);
    assert_eq!(
        (
            images[0].id.as_str(),
            images[0].name.as_str(),
            images[0].version.as_str()
        ),
        (id.as_str(), "busybox", "latest")
    );
    let none = client
        .list_images(ListImagesRequest {
            filters: vec![ImageFilter {
                base_names: vec!["nope".into()],
                ..Default::default()
            }],
            detail: false,
        })
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert!(none.is_empty());
    let img = client
        .inspect_image(InspectImageRequest { id: id.clone() })
        .await
        .expect("InspectImage")
        .into_inner();
    assert!(
        !img.image.expect("image").manifest.is_empty(),
        "InspectImage includes the manifest"
    );

    let pods = client
        .list_pods(ListPodsRequest {
            filters: vec![],
            detail: false,
        })
        .await
        .expect("ListPods")
        .into_inner()
        .pods;
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0].state, PodState::Exited as i32);
    assert_eq!(pods[0].apps[0].name, "first");
    assert_eq!(pods[0].apps[0].exit_code, 3);
    let filtered = client
        .list_pods(ListPodsRequest {
            filters: vec![PodFilter {
                states: vec![PodState::Running as i32],
                ..Default::default()
            }],
            detail: false,
        })
        .await
        .expect("ListPods")
        .into_inner()
        .pods;
    assert!(filtered.is_empty());
    let pod = client
        .inspect_pod(InspectPodRequest {
            id: pods[0].id.clone(),
        })
        .await
        .expect("InspectPod")
        .into_inner()
        .pod
        .expect("pod");
    assert!(String::from_utf8_lossy(&pod.manifest).contains("PodManifest"));
    let missing = client
        .inspect_pod(InspectPodRequest {
            id: "00000000-dead".into(),
        })
        .await;
    assert_eq!(
        missing.expect_err("no such pod").code(),
        proto::tonic::Code::NotFound
    );
    // GetLogs itself is tested in `logs`: here, that it wants a pod.
    let logs = client.get_logs(GetLogsRequest::default()).await;
    assert_eq!(
        logs.err().map(|e| e.code()),
        Some(proto::tonic::Code::InvalidArgument)
    );

    // Events: subscribe, then run a pod and collect it.
    let mut stream = client
        .listen_events(ListenEventsRequest {
            filter: Some(EventFilter {
                types: vec![
                    EventType::PodStarted as i32,
                    EventType::AppExited as i32,
                    EventType::PodExited as i32,
                    EventType::PodGarbageCollected as i32,
                ],
                ..Default::default()
            }),
        })
        .await
        .expect("ListenEvents")
        .into_inner();
    let env2 = std::sync::Arc::new(env);
    let e = env2.clone();
    tokio::task::spawn_blocking(move || {
        e.ok(&[
            "run",
            "--net=none",
            &e.image(),
            "--name=second",
            "--exec=/bin/sleep",
            "--",
            "0.5",
        ]);
        e.ok(&["gc", "--grace-period=0s"]);
    })
    .await
    .expect("run and gc");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while seen
        .iter()
        .filter(|t| **t == EventType::PodGarbageCollected as i32)
        .count()
        < 2
    {
        let msg = tokio::time::timeout_at(deadline, stream.message())
            .await
            .unwrap_or_else(|_| panic!("events before the deadline, saw {seen:?}"))
            .expect("stream")
            .expect("open stream");
        seen.extend(msg.events.iter().map(|e| e.r#type));
    }
    for t in [
        EventType::PodStarted,
        EventType::AppExited,
        EventType::PodExited,
    ] {
        assert!(seen.contains(&(t as i32)), "missing {t:?} in {seen:?}");
    }
}
