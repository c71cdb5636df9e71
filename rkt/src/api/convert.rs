//! Pods and images as the API's protobuf messages, and the API's filters.

use proto::v1alpha::{
    App, AppState, Image, ImageFilter, ImageFormat, ImageType, Network, Pod, PodFilter,
    PodState as ApiPodState,
};

use crate::image::{ImageRecord, Store};
use crate::pod::{Pod as DiskPod, PodState};

pub fn state(s: PodState) -> ApiPodState {
    match s {
        PodState::Embryo => ApiPodState::Embryo,
        PodState::Preparing => ApiPodState::Preparing,
        PodState::AbortedPrepare => ApiPodState::AbortedPrepare,
        PodState::Prepared => ApiPodState::Prepared,
        PodState::Running => ApiPodState::Running,
        PodState::Exited => ApiPodState::Exited,
        PodState::ExitedGarbage | PodState::Garbage => ApiPodState::Garbage,
        PodState::Deleting => ApiPodState::Deleting,
    }
}

/// A pod (with its manifest when `detail`).
pub fn pod(p: &DiskPod, detail: bool) -> Pod {
    let manifest = p.manifest().ok();
    let apps = manifest
        .as_ref()
        .map(|m| {
            m.apps
                .iter()
                .map(|a| {
                    let exit = p.app_exit_code(&a.name);
                    App {
                        name: a.name.clone(),
                        image: Some(Image {
                            base_format: Some(ImageFormat {
                                r#type: ImageType::Oci as i32,
                                version: "1.1.0".into(),
                            }),
                            id: a.image.id.clone(),
                            name: a.image.name.clone(),
                            ..Default::default()
                        }),
                        state: match (p.state, exit) {
                            (_, Some(_)) => AppState::Exited,
                            (PodState::Running, None) => AppState::Running,
                            _ if p.is_finished() => AppState::Exited,
                            _ => AppState::Undefined,
                        } as i32,
                        exit_code: exit.unwrap_or(-1),
                        annotations: Vec::new(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let cgroup = std::fs::read_to_string(p.dir.join("cgroups"))
        .ok()
        .and_then(|s| s.lines().next().map(String::from))
        .unwrap_or_default();
    Pod {
        id: p.uuid.clone(),
        pid: if p.state == PodState::Running {
            p.pid().unwrap_or(-1)
        } else {
            -1
        },
        state: state(p.state) as i32,
        apps,
        networks: p
            .networks()
            .iter()
            .map(|a| Network {
                name: a.net_name.clone(),
                ipv4: a.ip.to_string(),
                ipv6: String::new(),
            })
            .collect(),
        manifest: if detail {
            p.manifest_bytes().unwrap_or_default()
        } else {
            Vec::new()
        },
        annotations: Vec::new(),
        cgroup,
        created_at: p.created().unwrap_or(0),
        started_at: p.started().unwrap_or(0),
        gc_marked_at: if matches!(p.state, PodState::ExitedGarbage | PodState::Garbage) {
            p.gc_marked().unwrap_or(0)
        } else {
            0
        },
    }
}

/// A pod filter: every non-empty condition must hold.
pub fn pod_matches(p: &Pod, f: &PodFilter) -> bool {
    let apps = |pred: &dyn Fn(&App) -> bool| p.apps.iter().any(pred);
    (f.ids.is_empty() || f.ids.iter().any(|i| p.id.starts_with(i.as_str())))
        && (f.states.is_empty() || f.states.contains(&p.state))
        && (f.app_names.is_empty() || f.app_names.iter().any(|n| apps(&|a| &a.name == n)))
        && (f.image_ids.is_empty()
            || f.image_ids.iter().any(|i| {
                apps(&|a| {
                    a.image
                        .as_ref()
                        .is_some_and(|img| img.id.starts_with(i.as_str()))
                })
            }))
        && (f.network_names.is_empty()
            || f.network_names
                .iter()
                .any(|n| p.networks.iter().any(|x| &x.name == n)))
        && (f.cgroups.is_empty() || f.cgroups.contains(&p.cgroup))
}

/// An image (with its manifest when `detail`).
pub fn image(store: &Store, rec: &ImageRecord, detail: bool) -> Image {
    let (name, version) = rec
        .name
        .rsplit_once(':')
        .unwrap_or((rec.name.as_str(), "latest"));
    Image {
        base_format: Some(ImageFormat {
            r#type: ImageType::Oci as i32,
            version: "1.1.0".into(),
        }),
        id: rec.rkt_id(),
        name: name.to_string(),
        version: version.to_string(),
        import_timestamp: rec.import_time / 1_000_000_000,
        manifest: if detail {
            store.read_blob(&rec.id).unwrap_or_default()
        } else {
            Vec::new()
        },
        size: rec.size as i64,
        annotations: Vec::new(),
        labels: Vec::new(),
    }
}

/// An image filter: every non-empty condition must hold.
pub fn image_matches(i: &Image, f: &ImageFilter) -> bool {
    let full = format!("{}:{}", i.name, i.version);
    let base = i.name.rsplit('/').next().unwrap_or(&i.name);
    (f.ids.is_empty() || f.ids.iter().any(|x| i.id.starts_with(x.as_str())))
        && (f.prefixes.is_empty() || f.prefixes.iter().any(|x| i.name.starts_with(x.as_str())))
        && (f.base_names.is_empty() || f.base_names.iter().any(|x| x == base))
        && (f.keywords.is_empty() || f.keywords.iter().any(|x| i.name.contains(x.as_str())))
        && (f.full_names.is_empty() || f.full_names.iter().any(|x| *x == full || *x == i.name))
        && (f.imported_after == 0 || i.import_timestamp > f.imported_after)
        && (f.imported_before == 0 || i.import_timestamp < f.imported_before)
}
