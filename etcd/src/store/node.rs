//! The v2 node tree: files and directories with indexes and optional expiry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::event::NodeView;
use super::path;
use super::time::{rfc3339_nano, ttl_seconds};

/// What a node holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A file and its value.
    File(String),
    /// A directory and its children by name.
    Dir(BTreeMap<String, Node>),
}

/// One node of the tree. Its key is implied by its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Index of the write that created it.
    pub created: u64,
    /// Index of the last write that changed it.
    pub modified: u64,
    /// Expiry time (unix ns), or permanent.
    pub expire: Option<i64>,
    /// File value or children.
    pub kind: Kind,
}

impl Node {
    /// A new empty directory.
    pub fn dir(index: u64, expire: Option<i64>) -> Self {
        Node {
            created: index,
            modified: index,
            expire,
            kind: Kind::Dir(BTreeMap::new()),
        }
    }

    /// A new file.
    pub fn file(value: String, index: u64, expire: Option<i64>) -> Self {
        Node {
            created: index,
            modified: index,
            expire,
            kind: Kind::File(value),
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }

    /// The file value ("" for dirs).
    pub fn value(&self) -> &str {
        match &self.kind {
            Kind::File(v) => v,
            Kind::Dir(_) => "",
        }
    }

    /// The children of a dir (none for a file).
    pub fn children(&self) -> Option<&BTreeMap<String, Node>> {
        match &self.kind {
            Kind::Dir(c) => Some(c),
            Kind::File(_) => None,
        }
    }

    /// Mutable children of a dir.
    pub fn children_mut(&mut self) -> Option<&mut BTreeMap<String, Node>> {
        match &mut self.kind {
            Kind::Dir(c) => Some(c),
            Kind::File(_) => None,
        }
    }

    fn expiry(&self, view: &mut NodeView, now: i64) {
        if let Some(e) = self.expire {
            view.expiration = Some(rfc3339_nano(e));
            view.ttl = ttl_seconds(e, now);
        }
    }

    /// etcd's `Repr`: a dir lists its children only when `recursive`; hidden children are left out.
    pub fn repr(&self, key: &str, recursive: bool, now: i64) -> NodeView {
        let mut v = NodeView {
            key: display_key(key),
            modified_index: self.modified,
            created_index: self.created,
            ..Default::default()
        };
        match &self.kind {
            Kind::File(val) => v.value = Some(val.clone()),
            Kind::Dir(children) => {
                v.dir = true;
                if recursive {
                    v.nodes = list(key, children, recursive, now);
                }
            }
        }
        self.expiry(&mut v, now);
        v
    }

    /// etcd's `loadInternalNode`: a dir always lists its children (their own children only when `recursive`).
    pub fn load(&self, key: &str, recursive: bool, now: i64) -> NodeView {
        let mut v = NodeView {
            key: display_key(key),
            modified_index: self.modified,
            created_index: self.created,
            ..Default::default()
        };
        match &self.kind {
            Kind::File(val) => v.value = Some(val.clone()),
            Kind::Dir(children) => {
                v.dir = true;
                v.nodes = list(key, children, recursive, now);
            }
        }
        self.expiry(&mut v, now);
        v
    }

    /// Calls `f(key)` for every file at or below this node.
    pub fn each_file(&self, key: &str, f: &mut dyn FnMut(&str)) {
        match &self.kind {
            Kind::File(_) => f(key),
            Kind::Dir(children) => {
                for (name, child) in children {
                    child.each_file(&path::join(key, name), f);
                }
            }
        }
    }

    /// Calls `f(key, expire)` for this node and every node below it that has an expiry.
    pub fn each_expiring(&self, key: &str, f: &mut dyn FnMut(&str, i64)) {
        if let Some(e) = self.expire {
            f(key, e);
        }
        if let Kind::Dir(children) = &self.kind {
            for (name, child) in children {
                child.each_expiring(&path::join(key, name), f);
            }
        }
    }
}

fn display_key(key: &str) -> String {
    if key == "/" {
        String::new()
    } else {
        key.to_string()
    }
}

fn list(key: &str, children: &BTreeMap<String, Node>, recursive: bool, now: i64) -> Vec<NodeView> {
    children
        .iter()
        .filter(|(name, _)| !name.starts_with('_'))
        .map(|(name, child)| child.repr(&path::join(key, name), recursive, now))
        .collect()
}
