//! Member and cluster identities, computed as etcd does (sha1 of peer URLs and token).

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

/// One member as `/v2/members` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// Hex member id.
    #[serde(serialize_with = "hex_id", deserialize_with = "parse_hex_id")]
    pub id: u64,
    /// Name ("" until started).
    pub name: String,
    /// Peer URLs.
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// Client URLs.
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
}

fn hex_id<S: serde::Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{id:x}"))
}

fn parse_hex_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    u64::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
}

fn first8(digest: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(b)
}

/// A peer URL as etcd accepts it (scheme http, https, unix or unixs, with a host), without a trailing slash.
pub fn peer_url(u: &str) -> Option<String> {
    let parsed = url::Url::parse(u).ok()?;
    (matches!(parsed.scheme(), "http" | "https" | "unix" | "unixs") && parsed.host_str().is_some())
        .then(|| parsed.as_str().trim_end_matches('/').to_string())
}

/// etcd's member id: sha1 of the sorted peer URLs concatenated, then the cluster token.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    for u in &urls {
        h.update(u.as_bytes());
    }
    h.update(token.as_bytes());
    first8(&h.finalize())
}

/// etcd's cluster id: sha1 of the sorted member ids (big-endian).
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    first8(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_etcd() {
        let m = member_id(&["http://127.0.0.1:22380".to_string()], "t1");
        assert_eq!(format!("{m:x}"), "b66b2921ec552136");
        assert_eq!(format!("{:x}", cluster_id(&[m])), "5d9487856336506b");
    }
}
