//! Key path cleaning (Go's `path.Clean(path.Join("/", p))`) and hidden-key rules.

/// Cleans a key the way etcd does: rooted, no empty, `.` or `..` components, no trailing slash.
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut s = String::with_capacity(p.len() + 1);
    for c in &parts {
        s.push('/');
        s.push_str(c);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// The components of a cleaned key (none for the root).
pub fn components(key: &str) -> impl Iterator<Item = &str> {
    key.split('/').filter(|c| !c.is_empty())
}

/// Joins a parent key and a child name.
pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Whether `key` lies below `watch` through a hidden (`_`) component, as seen by a watcher on `watch`.
pub fn hidden_below(watch: &str, key: &str) -> bool {
    if watch.len() > key.len() {
        return false;
    }
    let after = clean(&key[watch.len()..]);
    after.contains("/_")
}

/// Whether `key` is strictly below `dir`.
pub fn is_under(key: &str, dir: &str) -> bool {
    if dir == "/" {
        return key != "/";
    }
    key.len() > dir.len() && key.starts_with(dir) && key.as_bytes()[dir.len()] == b'/'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans() {
        assert_eq!(clean(""), "/");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean("a//b/"), "/a/b");
        assert_eq!(clean("/a/./b/../c"), "/a/c");
        assert_eq!(clean("/../.."), "/");
    }

    #[test]
    fn hidden() {
        assert!(hidden_below("/w", "/w/_x"));
        assert!(hidden_below("/", "/_x/y"));
        assert!(!hidden_below("/w/_x", "/w/_x"));
        assert!(!hidden_below("/w", "/w/x"));
    }

    #[test]
    fn under() {
        assert!(is_under("/a/b", "/a"));
        assert!(!is_under("/ab", "/a"));
        assert!(is_under("/a", "/"));
    }
}
