//! etcd's discovery protocol (`--discovery <url>`), client side: learn the cluster size, register this member
//! with `prevExist=false`, wait until the registry holds `size` members, and build `--initial-cluster` from the
//! first `size` by creation order (reference §4.1).
//!
//! The registry is any v2 keys API (ours, etcd's, or `etcd-discovery` in front of one). Requests are blocking
//! HTTP/1.1 (`ctl::client`); call [`discover`] from a blocking thread.

use std::time::Duration;

use serde_json::Value;

use crate::ctl::client;

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The URL is unusable.
    #[error("discovery: invalid URL {0:?}")]
    Url(String),
    /// The registry already holds `size` other members.
    #[error("discovery: cluster is full")]
    Full,
    /// The size key is not a number.
    #[error("discovery: size key is bad")]
    BadSize,
    /// Another member registered with this member's id.
    #[error("discovery: found duplicate id")]
    DuplicateId,
    /// Two registered members share a name.
    #[error("discovery: found duplicate name")]
    DuplicateName,
    /// The registry answered with an etcd error (such as a missing token).
    #[error("discovery: {0}")]
    Registry(String),
}

/// Where the registry is: `host:port` and the key prefix (`/v2/keys/_etcd/registry/<token>` or `/<token>`).
struct Registry {
    authority: String,
    prefix: String,
}

/// The longest wait between retries of a failed connection (etcd: 2^n s up to 256 s).
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// How long one watch request on the registry may stay open.
const WATCH_TIMEOUT: Duration = Duration::from_secs(300);

impl Registry {
    fn parse(url: &str) -> Result<Registry, DiscoveryError> {
        let u = url::Url::parse(url).map_err(|_| DiscoveryError::Url(url.into()))?;
        if u.scheme() != "http" || u.host_str().is_none() {
            return Err(DiscoveryError::Url(url.into()));
        }
        let port = u.port_or_known_default().unwrap_or(80);
        let host = u.host_str().unwrap_or_default();
        Ok(Registry {
            authority: format!("{host}:{port}"),
            prefix: u.path().trim_end_matches('/').to_string(),
        })
    }

    /// One request, retried with backoff while the registry cannot be reached.
    fn request(
        &self,
        method: &str,
        target: &str,
        form: Option<&str>,
        timeout: Duration,
    ) -> client::Response {
        let mut backoff = Duration::from_secs(1);
        loop {
            match client::request(&self.authority, method, target, form, Some(timeout)) {
                Ok(r) => return r,
                Err(e) => {
                    tracing::warn!(registry = %self.authority, "discovery: {e}; retrying in {backoff:?}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

fn etcd_error(r: &client::Response) -> DiscoveryError {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    match (v["errorCode"].as_u64(), v["message"].as_str()) {
        (Some(code), Some(msg)) => DiscoveryError::Registry(format!(
            "{code}: {msg} ({})",
            v["cause"].as_str().unwrap_or("")
        )),
        _ => DiscoveryError::Registry(format!("HTTP {}: {}", r.status, r.text())),
    }
}

/// The registered members (key name, value), by creation order, without `_config`.
fn registered(v: &Value) -> Vec<(String, String)> {
    let mut nodes: Vec<(u64, String, String)> = v["node"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            let key = n["key"].as_str()?;
            let name = key.rsplit('/').next()?.to_string();
            if name == "_config" || n["dir"] == true {
                return None;
            }
            Some((
                n["createdIndex"].as_u64().unwrap_or(0),
                name,
                n["value"].as_str().unwrap_or("").to_string(),
            ))
        })
        .collect();
    nodes.sort_by_key(|n| n.0);
    nodes.into_iter().map(|(_, k, v)| (k, v)).collect()
}

/// `--initial-cluster` from the first `size` registrations; `Full` if `me` is not among them.
fn initial_cluster(
    members: &[(String, String)],
    size: usize,
    me: &str,
) -> Result<String, DiscoveryError> {
    let first = &members[..size.min(members.len())];
    if !first.iter().any(|(k, _)| k == me) {
        return Err(DiscoveryError::Full);
    }
    let mut seen = std::collections::HashSet::new();
    for (_, value) in first {
        // One registration may list several peer URLs under its one name.
        let names: std::collections::HashSet<&str> = value
            .split(',')
            .filter_map(|p| p.split_once('=').map(|(n, _)| n))
            .collect();
        for n in names {
            if !seen.insert(n) {
                return Err(DiscoveryError::DuplicateName);
            }
        }
    }
    Ok(first
        .iter()
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(","))
}

/// The cluster a registry holds (the first `size` registrations as `--initial-cluster`), for a proxy: etcd's
/// The registry's `_config/size`.
fn cluster_size(reg: &Registry, timeout: Duration) -> Result<usize, DiscoveryError> {
    let r = reg.request(
        "GET",
        &format!("{}/_config/size", reg.prefix),
        None,
        timeout,
    );
    if r.status != 200 {
        return Err(etcd_error(&r));
    }
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    v["node"]["value"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or(DiscoveryError::BadSize)
}

/// `GetCluster`, used when `--proxy` is on with `--discovery` or a member falls back to a proxy.
pub fn registered_cluster(url: &str) -> Result<String, DiscoveryError> {
    let reg = Registry::parse(url)?;
    let short = Duration::from_secs(10);
    let size = cluster_size(&reg, short)?;
    let r = reg.request(
        "GET",
        &format!("{}?recursive=true", reg.prefix),
        None,
        short,
    );
    if r.status != 200 {
        return Err(etcd_error(&r));
    }
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let members = registered(&v);
    Ok(members
        .iter()
        .take(size)
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join(","))
}

/// Runs the protocol for member `id` named `name` with `peer_urls`; returns the `--initial-cluster` value.
pub fn discover(
    url: &str,
    id: u64,
    name: &str,
    peer_urls: &[String],
) -> Result<String, DiscoveryError> {
    let reg = Registry::parse(url)?;
    let short = Duration::from_secs(10);
    let size = cluster_size(&reg, short)?;
    let me = format!("{id:x}");
    // Full before registering: do not add an entry nobody will use.
    let r = reg.request("GET", &reg.prefix, None, short);
    if r.status == 200 {
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let members = registered(&v);
        if members.len() >= size && !members.iter().take(size).any(|(k, _)| *k == me) {
            return Err(DiscoveryError::Full);
        }
    }
    let value = peer_urls
        .iter()
        .map(|u| format!("{name}={u}"))
        .collect::<Vec<_>>()
        .join(",");
    let r = reg.request(
        "PUT",
        &format!("{}/{me}?prevExist=false", reg.prefix),
        Some(&format!("value={}", client::encode(&value))),
        short,
    );
    match r.status {
        200 | 201 => {}
        412 => {
            // Our own earlier registration (a restart during bootstrap) is fine; another member's is not.
            let r = reg.request("GET", &format!("{}/{me}", reg.prefix), None, short);
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            if v["node"]["value"].as_str() != Some(value.as_str()) {
                return Err(DiscoveryError::DuplicateId);
            }
        }
        _ => return Err(etcd_error(&r)),
    }
    loop {
        let r = reg.request(
            "GET",
            &format!("{}?recursive=true", reg.prefix),
            None,
            short,
        );
        if r.status != 200 {
            return Err(etcd_error(&r));
        }
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let members = registered(&v);
        if members.len() >= size {
            return initial_cluster(&members, size, &me);
        }
        tracing::info!(
            "discovery: {} of {size} members registered, waiting",
            members.len()
        );
        let index: u64 = r
            .header("x-etcd-index")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let _ = reg.request(
            "GET",
            &format!(
                "{}?wait=true&recursive=true&waitIndex={}",
                reg.prefix,
                index + 1
            ),
            None,
            WATCH_TIMEOUT,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_url_parts() {
        let r = Registry::parse("http://10.0.0.1:8087/0123abcd/").unwrap();
        assert_eq!(r.authority, "10.0.0.1:8087");
        assert_eq!(r.prefix, "/0123abcd");
        let r = Registry::parse("http://d/v2/keys/_etcd/registry/t").unwrap();
        assert_eq!(r.authority, "d:80");
        assert!(Registry::parse("ftp://x/y").is_err());
        assert!(Registry::parse("not a url").is_err());
    }

    #[test]
    fn first_size_members_by_creation_order() {
        let v: Value = serde_json::json!({"node": {"nodes": [
            {"key": "/r/t/_config", "dir": true, "createdIndex": 1},
            {"key": "/r/t/b", "value": "n2=http://b:2380", "createdIndex": 5},
            {"key": "/r/t/a", "value": "n1=http://a:2380", "createdIndex": 4},
            {"key": "/r/t/c", "value": "n3=http://c:2380", "createdIndex": 6},
        ]}});
        let m = registered(&v);
        assert_eq!(m[0].0, "a");
        assert_eq!(
            initial_cluster(&m, 2, "b").unwrap(),
            "n1=http://a:2380,n2=http://b:2380"
        );
        assert!(matches!(
            initial_cluster(&m, 2, "c"),
            Err(DiscoveryError::Full)
        ));
        let dup = vec![
            ("a".to_string(), "n1=http://a:2380".to_string()),
            ("b".to_string(), "n1=http://b:2380".to_string()),
        ];
        assert!(matches!(
            initial_cluster(&dup, 2, "a"),
            Err(DiscoveryError::DuplicateName)
        ));
    }
}
