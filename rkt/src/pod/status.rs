//! What `rkt list` and `rkt status` print: the original's columns, key=value lines and JSON shape.

use serde::Serialize;

use super::{Pod, PodState};
use crate::error::Result;
use crate::timefmt::{absolute, now_ns, relative};

/// An app of a pod in `--format json` output (rkt's `api/v1` JSON).
#[derive(Clone, Debug, Serialize)]
pub struct AppJson {
    pub name: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub image_id: String,
    pub mounts: Vec<serde_json::Value>,
}

/// A pod in `--format json` output.
#[derive(Clone, Debug, Serialize)]
pub struct PodJson {
    pub name: String,
    pub state: String,
    pub networks: Vec<serde_json::Value>,
    pub app_names: Vec<String>,
    pub apps: Vec<AppJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

fn secs(ns: Option<i64>) -> Option<i64> {
    ns.map(|n| n / 1_000_000_000)
}

/// The JSON view of a pod.
pub fn pod_json(pod: &Pod) -> PodJson {
    let manifest = pod.manifest().ok();
    let apps = manifest
        .as_ref()
        .map(|m| {
            m.apps
                .iter()
                .map(|a| {
                    let exit = pod.app_exit_code(&a.name);
                    let state = match (pod.state, exit) {
                        (_, Some(_)) => "exited",
                        (PodState::Running, None) => "running",
                        _ if pod.is_finished() => "exited",
                        _ => "unknown",
                    };
                    AppJson {
                        name: a.name.clone(),
                        state: state.to_string(),
                        created_at: secs(pod.created()),
                        started_at: secs(pod.app_time(&a.name, super::AppTime::Started)),
                        finished_at: secs(pod.app_time(&a.name, super::AppTime::Finished)),
                        exit_code: exit,
                        image_id: a.image.id.clone(),
                        mounts: a
                            .mounts
                            .iter()
                            .map(
                                |m| serde_json::json!({"name": m.volume, "container_path": m.path}),
                            )
                            .collect(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    PodJson {
        name: pod.uuid.clone(),
        state: pod.state.as_str().to_string(),
        networks: pod
            .networks()
            .iter()
            .map(|a| {
                serde_json::json!({"netName": a.net_name, "ifName": a.if_name, "ip": a.ip.to_string(),
                    "mask": std::net::Ipv4Addr::from(u32::MAX << (32 - a.prefix as u32)).to_string()})
            })
            .collect(),
        app_names: manifest
            .as_ref()
            .map(|m| m.apps.iter().map(|a| a.name.clone()).collect())
            .unwrap_or_default(),
        apps,
        created_at: secs(pod.created()),
        started_at: secs(pod.started()),
        pid: pod.pid().filter(|_| pod.state == PodState::Running),
    }
}

/// Renders rows like Go's tabwriter with `padchar='\t'`, `tabwidth=8`, `padding=1`: each column is
/// as wide as its widest cell plus one, rounded up to a multiple of 8, and padded with tabs.
pub fn tabwrite(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let widths: Vec<usize> = widths.iter().map(|w| (w + 1).div_ceil(8) * 8).collect();
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i + 1 < r.len() {
                let len = c.chars().count();
                let tabs = (widths[i] - len).div_ceil(8).max(1);
                out.push_str(&"\t".repeat(tabs));
            }
        }
        out.push('\n');
    }
    out
}

/// `rkt list` table rows (header first unless `no_legend`).
pub fn list_rows(pods: &[Pod], full: bool, no_legend: bool) -> Result<Vec<Vec<String>>> {
    let now = now_ns();
    let fmt_time = |t: Option<i64>| match t {
        None => "-".to_string(),
        Some(t) if full => absolute(t),
        Some(t) => relative(t, now),
    };
    let mut rows = Vec::new();
    if !no_legend {
        let mut h = vec!["UUID", "APP", "IMAGE NAME"];
        if full {
            h.push("IMAGE ID");
        }
        h.extend(["STATE", "CREATED", "STARTED", "NETWORKS"]);
        rows.push(h.into_iter().map(String::from).collect());
    }
    for pod in pods {
        let uuid = if full {
            pod.uuid.clone()
        } else {
            pod.uuid.chars().take(8).collect()
        };
        let apps = pod.manifest().map(|m| m.apps).unwrap_or_default();
        let started = if matches!(
            pod.state,
            PodState::Running | PodState::Exited | PodState::ExitedGarbage
        ) {
            pod.started()
        } else {
            None
        };
        if apps.is_empty() {
            let mut r = vec![uuid.clone(), "-".into(), "-".into()];
            if full {
                r.push("-".into());
            }
            r.extend([
                pod.state.as_str().to_string(),
                fmt_time(pod.created()),
                fmt_time(started),
                String::new(),
            ]);
            rows.push(r);
            continue;
        }
        for (i, app) in apps.iter().enumerate() {
            let image_id = if full {
                app.image.id.clone()
            } else {
                app.image.id.chars().take(19).collect()
            };
            let mut r = vec![
                if i == 0 { uuid.clone() } else { String::new() },
                app.name.clone(),
                app.image.name.clone(),
            ];
            if full {
                r.push(image_id);
            }
            if i == 0 {
                r.extend([
                    pod.state.as_str().to_string(),
                    fmt_time(pod.created()),
                    fmt_time(started),
                    pod.networks_summary(),
                ]);
            } else {
                r.extend([String::new(), String::new(), String::new(), String::new()]);
            }
            rows.push(r);
        }
    }
    Ok(rows)
}

/// `rkt status` key=value lines.
pub fn status_lines(pod: &Pod) -> Vec<String> {
    let mut out = vec![format!("state={}", pod.state.as_str())];
    if let Some(c) = pod.created() {
        out.push(format!("created={}", absolute(c)));
    }
    if let Some(s) = pod.started() {
        out.push(format!("started={}", absolute(s)));
    }
    if matches!(pod.state, PodState::Running | PodState::Exited) {
        out.push(format!("networks={}", pod.networks_summary()));
    }
    if matches!(
        pod.state,
        PodState::Running
            | PodState::Deleting
            | PodState::ExitedGarbage
            | PodState::Exited
            | PodState::Garbage
    ) {
        out.push(format!("pid={}", pod.pid().unwrap_or(-1)));
        out.push(format!(
            "exited={}",
            matches!(pod.state, PodState::Exited | PodState::ExitedGarbage)
        ));
    }
    if pod.state != PodState::Running
        && let Ok(m) = pod.manifest()
    {
        for app in &m.apps {
            if let Some(code) = pod.app_exit_code(&app.name) {
                out.push(format!("app-{}={code}", app.name));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tabwriter_pads_to_tab_stops() {
        let rows = vec![
            vec!["UUID".to_string(), "APP".into(), "X".into()],
            vec!["5bc080ca".to_string(), "busybox".into(), "y".into()],
        ];
        assert_eq!(tabwrite(&rows), "UUID\t\tAPP\tX\n5bc080ca\tbusybox\ty\n");
    }
}
