//! The v2 event and node JSON shapes (Go struct field order, `omitempty`).

use serde::{Deserialize, Serialize};

/// The action of an event, as etcd names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// A read.
    Get,
    /// Create or replace.
    Set,
    /// Create only.
    Create,
    /// Replace only.
    Update,
    /// Compare and swap.
    CompareAndSwap,
    /// Delete.
    Delete,
    /// Compare and delete.
    CompareAndDelete,
    /// TTL expiry.
    Expire,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// A node as shown to clients (etcd's `NodeExtern`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    /// The key; empty (omitted) for the root.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// The value of a file; absent for dirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// True for dirs.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dir: bool,
    /// RFC3339Nano expiry time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    /// Seconds left.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub ttl: i64,
    /// Children of a dir.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeView>,
    /// Index of the last change.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub modified_index: u64,
    /// Index of creation.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub created_index: u64,
}

/// A store event: the reply to a request and what watchers receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// What happened.
    pub action: Action,
    /// The node after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeView>,
    /// The node before the change, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<NodeView>,
    /// Set on TTL refreshes (watchers are not notified of these).
    #[serde(default, skip_serializing_if = "is_false")]
    pub refresh: bool,
    /// The store index after the operation (the `X-Etcd-Index` header).
    #[serde(skip)]
    pub etcd_index: u64,
}

impl Event {
    /// The index of the event (its node's modifiedIndex).
    pub fn index(&self) -> u64 {
        self.node.as_ref().map(|n| n.modified_index).unwrap_or(0)
    }

    /// The event's key.
    pub fn key(&self) -> &str {
        self.node.as_ref().map(|n| n.key.as_str()).unwrap_or("")
    }

    /// Whether the HTTP reply is `201 Created`.
    pub fn is_created(&self) -> bool {
        self.action == Action::Create || (self.action == Action::Set && self.prev_node.is_none())
    }

    /// Whether this event removed a dir (watchers below it are notified).
    pub fn removes_dir(&self) -> bool {
        matches!(
            self.action,
            Action::Delete | Action::Expire | Action::CompareAndDelete
        ) && self.node.as_ref().is_some_and(|n| n.dir)
    }

    /// The JSON body with its trailing newline, as Go's `json.Encoder` writes it.
    pub fn to_json(&self) -> String {
        // etcd never shows the refresh flag to clients; it only steers watchers.
        let mut s = if self.refresh {
            serde_json::to_string(&Event {
                refresh: false,
                ..self.clone()
            })
        } else {
            serde_json::to_string(self)
        }
        .unwrap_or_default();
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_order_and_omitempty() {
        let ev = Event {
            action: Action::Set,
            node: Some(NodeView {
                key: "/message".into(),
                value: Some("two".into()),
                modified_index: 5,
                created_index: 5,
                ..Default::default()
            }),
            prev_node: Some(NodeView {
                key: "/message".into(),
                value: Some(String::new()),
                modified_index: 4,
                created_index: 4,
                ..Default::default()
            }),
            refresh: false,
            etcd_index: 5,
        };
        assert_eq!(
            ev.to_json(),
            "{\"action\":\"set\",\"node\":{\"key\":\"/message\",\"value\":\"two\",\"modifiedIndex\":5,\"createdIndex\":5},\
             \"prevNode\":{\"key\":\"/message\",\"value\":\"\",\"modifiedIndex\":4,\"createdIndex\":4}}\n"
        );
    }
}
