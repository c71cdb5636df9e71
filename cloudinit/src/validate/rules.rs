//! The validator's rules, run in the original's order over the node tree.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

use super::{Kind, Report};
use crate::config::decode_content;
use crate::schema::{self, Field, Ty};
use crate::yaml::{Node, Value};

static REGEXES: LazyLock<HashMap<&'static str, Regex>> = LazyLock::new(|| {
    schema::ALL_REGEXES
        .iter()
        .filter_map(|p| Regex::new(p).ok().map(|r| (*p, r)))
        .collect()
});

/// Whether `text` matches one of the schema's validity patterns.
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    REGEXES.get(pattern).is_some_and(|r| r.is_match(text))
}

pub(super) fn run(root: &Node, report: &mut Report) {
    check_discovery(root, report);
    check_encodings(root, report);
    check_structure(
        "",
        &Ty::Struct(schema::CLOUD_CONFIG),
        root,
        root.line,
        report,
    );
    check_validity(schema::CLOUD_CONFIG, root, report);
    check_usr_paths(root, report);
    check_write_files_under_coreos(root, report);
}

/// The key node and value node of `key` in a mapping.
fn entry<'a>(node: &'a Node, key: &str) -> Option<(&'a Node, &'a Node)> {
    node.as_map()?
        .iter()
        .find(|(k, _)| k.key_name().as_deref() == Some(key))
        .map(|(k, v)| (k, v))
}

fn scalar_text(node: &Node) -> Option<&str> {
    let s = node.as_scalar()?;
    (s.resolve() != Value::Null).then_some(s.text.as_str())
}

fn write_files(root: &Node) -> impl Iterator<Item = &Node> {
    root.get("write_files")
        .and_then(Node::as_seq)
        .unwrap_or_default()
        .iter()
}

/// Rule 1: `coreos.etcd.discovery` must be a URL.
fn check_discovery(root: &Node, report: &mut Report) {
    let Some(etcd) = root.get("coreos").and_then(|c| c.get("etcd")) else {
        return;
    };
    if let Some((key, value)) = entry(etcd, "discovery")
        && let Some(text) = scalar_text(value)
        && url::Url::parse(text).is_err()
    {
        report.push(Kind::Warning, key.line, "discovery URL is not valid");
    }
}

/// Rule 2: write_files content must decode with its encoding.
fn check_encodings(root: &Node, report: &mut Report) {
    for file in write_files(root) {
        let (Some((_, enc)), Some((key, content))) =
            (entry(file, "encoding"), entry(file, "content"))
        else {
            continue;
        };
        let (Some(enc), Some(content)) = (scalar_text(enc), content.as_scalar()) else {
            continue;
        };
        if !matches(schema::ENCODING_RE, enc) {
            continue;
        }
        if decode_content(&content.text, Some(enc)).is_err() {
            report.push(
                Kind::Error,
                key.line,
                format!("content cannot be decoded as {enc:?}"),
            );
        }
    }
}

/// Rule 3: unknown keys, deprecated keys and wrong types.
fn check_structure(name: &str, ty: &Ty, node: &Node, line: usize, report: &mut Report) {
    let ok = match (ty, node.as_scalar().map(|s| s.resolve())) {
        (_, Some(Value::Null)) => false,
        (Ty::Str, Some(_)) => true,
        (Ty::Bool, Some(Value::Bool(_))) => true,
        (Ty::Int, Some(Value::Int(_))) => true,
        (Ty::Float, Some(Value::Int(_) | Value::Float(_))) => true,
        (Ty::Struct(fields), None) => match node.as_map() {
            Some(entries) => {
                for (key, value) in entries {
                    let Some(key_name) = key.key_name() else {
                        continue;
                    };
                    match schema::field(fields, &key_name) {
                        None => report.push(
                            Kind::Warning,
                            key.line,
                            format!("unrecognized key {key_name:?}"),
                        ),
                        Some(field) => {
                            if let Some(reason) = field.deprecated {
                                report.push(
                                    Kind::Warning,
                                    key.line,
                                    format!("deprecated key {key_name:?} ({reason})"),
                                );
                            }
                            check_structure(&key_name, &field.ty, value, key.line, report);
                        }
                    }
                }
                true
            }
            None => false,
        },
        (Ty::StrList | Ty::StructList(_), None) => match node.as_seq() {
            Some(items) => {
                let item_ty = match ty {
                    Ty::StructList(fields) => Ty::Struct(fields),
                    _ => Ty::Str,
                };
                for (i, item) in items.iter().enumerate() {
                    check_structure(&format!("{name}[{i}]"), &item_ty, item, item.line, report);
                }
                true
            }
            None => false,
        },
        _ => false,
    };
    if !ok {
        report.push(
            Kind::Warning,
            line,
            format!("incorrect type for {name:?} (want {})", ty.name()),
        );
    }
}

/// Rule 4: values of constrained string fields must match their regex, as written.
fn check_validity(fields: &'static [Field], node: &Node, report: &mut Report) {
    let Some(entries) = node.as_map() else { return };
    for (key, value) in entries {
        let Some(field) = key.key_name().and_then(|k| schema::field(fields, &k)) else {
            continue;
        };
        match field.ty {
            Ty::Struct(inner) => check_validity(inner, value, report),
            Ty::StructList(inner) => {
                for item in value.as_seq().unwrap_or_default() {
                    check_validity(inner, item, report);
                }
            }
            _ => {
                if let (Some(pattern), Some(text)) = (field.valid, scalar_text(value))
                    && !matches(pattern, text)
                {
                    report.push(Kind::Error, key.line, format!("invalid value {text}"));
                }
            }
        }
    }
}

/// Rule 5: nothing may be written under the read-only /usr.
fn check_usr_paths(root: &Node, report: &mut Report) {
    for file in write_files(root) {
        if let Some((key, value)) = entry(file, "path")
            && let Some(path) = scalar_text(value)
            && under_usr(path)
        {
            report.push(
                Kind::Error,
                key.line,
                "file cannot be written to a read-only filesystem",
            );
        }
    }
}

/// Whether the directory of `path`, after lexical cleaning, is /usr or below it.
pub(crate) fn under_usr(path: &str) -> bool {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.pop();
    path.starts_with('/') && parts.first() == Some(&"usr")
}

/// Rule 6: `write_files` is a top-level key.
fn check_write_files_under_coreos(root: &Node, report: &mut Report) {
    if let Some(coreos) = root.get("coreos")
        && let Some((key, _)) = entry(coreos, "write_files")
    {
        report.push(
            Kind::Info,
            key.line,
            "write_files doesn't belong under coreos",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Entry, validate};

    fn lines(input: &str) -> Vec<String> {
        validate(input.as_bytes())
            .entries
            .iter()
            .map(Entry::to_string)
            .collect()
    }

    fn assert_report(input: &str, want: &[&str]) {
        assert_eq!(lines(input), want, "input:\n{input}");
    }

    #[test]
    fn dispatch() {
        assert_report("", &[]);
        assert_report("#!/bin/bash\necho hi\n", &[]);
        assert_report(r#"{"ignitionVersion": 1}"#, &[]);
        assert_report(r#"{"ignition": {"version": "2.0.0"}}"#, &[]);
        assert_report(
            "{}",
            &[r##"line 1: error: must be "#cloud-config" or begin with "#!""##],
        );
        assert_report(
            "hostname: a\n",
            &[r##"line 1: error: must be "#cloud-config" or begin with "#!""##],
        );
        assert_report(
            "#cloud-conf\nhostname: a\n",
            &[r##"line 1: error: must be "#cloud-config" or begin with "#!""##],
        );
        assert_report("#cloud-config  \nhostname: a\n", &[]);
        assert_report("#cloud-config\n", &[]);
    }

    #[test]
    fn yaml_syntax_error_keeps_line() {
        let got = lines("#cloud-config\nhostname: a\nusers:\n\t- name: b\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("line 4: error: "), "{got:?}");
        let got = lines("#cloud-config\na: [1, 2\n");
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains(": error: "), "{got:?}");
    }

    #[test]
    fn crlf_input_is_accepted_with_the_same_lines() {
        assert_report(
            "#cloud-config\r\nhostname: a\r\nfoo: 1\r\n",
            &[r#"line 3: warning: unrecognized key "foo""#],
        );
    }

    #[test]
    fn discovery_url() {
        assert_report(
            "#cloud-config\ncoreos:\n  etcd:\n    discovery: good\n",
            &[
                "line 3: warning: deprecated key \"etcd\" (etcd is no longer shipped in Container Linux)",
                "line 4: warning: discovery URL is not valid",
            ]
            .iter()
            .rev()
            .copied()
            .collect::<Vec<_>>(),
        );
        assert_report(
            "#cloud-config\ncoreos:\n  etcd:\n    discovery: https://discovery.etcd.io/abc\n",
            &[
                "line 3: warning: deprecated key \"etcd\" (etcd is no longer shipped in Container Linux)",
            ],
        );
        // Only the etcd 0.4 section is checked.
        assert_report(
            "#cloud-config\ncoreos:\n  etcd2:\n    discovery: good\n",
            &[],
        );
    }

    #[test]
    fn encodings_decode() {
        let ok = "#cloud-config\nwrite_files:\n  - path: /a\n    encoding: base64\n    content: aGVsbG8=\n";
        assert_report(ok, &[]);
        let gz = "#cloud-config\nwrite_files:\n  - path: /a\n    encoding: gzip+base64\n    content: H4sIAAAAAAAAA8tIzcnJBwCGphA2BQAAAA==\n";
        assert_report(gz, &[]);
        assert_report(
            "#cloud-config\nwrite_files:\n  - path: /a\n    encoding: base64\n    content: '!!!'\n",
            &[r#"line 5: error: content cannot be decoded as "base64""#],
        );
        assert_report(
            "#cloud-config\nwrite_files:\n  - path: /a\n    encoding: gzip\n    content: hello\n",
            &[r#"line 5: error: content cannot be decoded as "gzip""#],
        );
        assert_report(
            "#cloud-config\nwrite_files:\n  - path: /a\n    encoding: rot13\n    content: hello\n",
            &["line 4: error: invalid value rot13"],
        );
    }

    #[test]
    fn unknown_and_deprecated_keys() {
        assert_report(
            "#cloud-config\nfoo: bar\ncoreos:\n  bar: 1\n  etcd:\n    initial-cluster: x\n",
            &[
                r#"line 2: warning: unrecognized key "foo""#,
                r#"line 4: warning: unrecognized key "bar""#,
                r#"line 5: warning: deprecated key "etcd" (etcd is no longer shipped in Container Linux)"#,
                r#"line 6: warning: deprecated key "initial_cluster" (etcd2 options no longer work for etcd)"#,
            ],
        );
        assert_report(
            "#cloud-config\nusers:\n  - name: a\n    coreos-ssh-import-github: true\n",
            &[
                r#"line 4: warning: deprecated key "coreos_ssh_import_github" (trying to fetch from a remote endpoint introduces too many intermittent errors)"#,
            ],
        );
        // etcd2 and fleet are current sections in this project.
        assert_report(
            "#cloud-config\ncoreos:\n  etcd2:\n    name: a\n  fleet:\n    metadata: a=b\n",
            &[],
        );
    }

    #[test]
    fn incorrect_types() {
        assert_report(
            "#cloud-config\nhostname: [a]\nusers: a\nssh_authorized_keys: a\ncoreos: 1\n",
            &[
                r#"line 2: warning: incorrect type for "hostname" (want string)"#,
                r#"line 3: warning: incorrect type for "users" (want []struct)"#,
                r#"line 4: warning: incorrect type for "ssh_authorized_keys" (want []string)"#,
                r#"line 5: warning: incorrect type for "coreos" (want struct)"#,
            ],
        );
        assert_report(
            "#cloud-config\ncoreos:\n  etcd2:\n    debug: 1\n    election_timeout: yes\n  fleet:\n    engine_reconcile_interval: 5\n    etcd_request_timeout: a\n",
            &[
                r#"line 4: warning: incorrect type for "debug" (want bool)"#,
                r#"line 5: warning: incorrect type for "election_timeout" (want int)"#,
                r#"line 8: warning: incorrect type for "etcd_request_timeout" (want float64)"#,
            ],
        );
        // Strings accept ints, floats and bools; null is never right.
        assert_report("#cloud-config\nhostname: 1\nmanage_etc_hosts: yes\n", &[]);
        assert_report(
            "#cloud-config\nhostname:\n",
            &[r#"line 2: warning: incorrect type for "hostname" (want string)"#],
        );
    }

    #[test]
    fn yaml11_scalars_in_typed_fields() {
        // Unquoted YAML 1.1 booleans are bools; quoted they are strings.
        assert_report(
            "#cloud-config\ncoreos:\n  units:\n    - name: a\n      enable: yes\n      runtime: off\n",
            &[],
        );
        assert_report(
            "#cloud-config\ncoreos:\n  units:\n    - name: a\n      enable: \"yes\"\n",
            &[r#"line 5: warning: incorrect type for "enable" (want bool)"#],
        );
        // Sexagesimal and octal are ints; string fields keep and check the text as written.
        assert_report(
            "#cloud-config\ncoreos:\n  etcd2:\n    election-timeout: 25:00\n    heartbeat-interval: 0100\n",
            &[],
        );
        assert_report(
            "#cloud-config\nhostname: 25:00\ncoreos:\n  update:\n    reboot-strategy: off\n",
            &[],
        );
        assert_report(
            "#cloud-config\ncoreos:\n  update:\n    reboot-strategy: on\n",
            &["line 4: error: invalid value on"],
        );
        assert_report(
            "#cloud-config\ncoreos:\n  fleet:\n    verbosity: 1.5\n    etcd_request_timeout: 1\n",
            &[r#"line 4: warning: incorrect type for "verbosity" (want int)"#],
        );
    }

    #[test]
    fn top_level_must_be_a_mapping() {
        assert_report(
            "#cloud-config\n- a\n",
            &[r#"line 2: warning: incorrect type for "" (want struct)"#],
        );
    }

    #[test]
    fn list_items_are_named_with_their_index() {
        assert_report(
            "#cloud-config\ncoreos:\n  units:\n    - name: a.service\n    - b\n    - name: c\n      enable: sure\n",
            &[
                r#"line 5: warning: incorrect type for "units[1]" (want struct)"#,
                r#"line 7: warning: incorrect type for "enable" (want bool)"#,
            ],
        );
        assert_report(
            "#cloud-config\nssh_authorized_keys:\n  - a\n  - [b]\n",
            &[r#"line 4: warning: incorrect type for "ssh_authorized_keys[1]" (want string)"#],
        );
        assert_report(
            "#cloud-config\ncoreos:\n  units:\n    - name: a\n      drop-ins:\n        - name: x\n          bad: 1\n",
            &[r#"line 7: warning: unrecognized key "bad""#],
        );
    }

    #[test]
    fn validity_command_and_reboot_strategy() {
        assert_report(
            "#cloud-config\ncoreos:\n  units:\n    - name: a\n      command: go\n  update:\n    reboot-strategy: best-effort\n",
            &[
                "line 5: error: invalid value go",
                "line 7: error: invalid value best-effort",
            ],
        );
        for ok in [
            "start",
            "stop",
            "restart",
            "reload",
            "try-restart",
            "reload-or-restart",
            "reload-or-try-restart",
        ] {
            assert_report(
                &format!("#cloud-config\ncoreos:\n  units:\n    - name: a\n      command: {ok}\n"),
                &[],
            );
        }
        for ok in ["etcd-lock", "reboot", "off"] {
            assert_report(
                &format!("#cloud-config\ncoreos:\n  update:\n    reboot_strategy: {ok}\n"),
                &[],
            );
        }
    }

    #[test]
    fn validity_proxy() {
        for ok in ["on", "off", "readonly"] {
            assert_report(
                &format!("#cloud-config\ncoreos:\n  etcd2:\n    proxy: {ok}\n"),
                &[],
            );
        }
        assert_report(
            "#cloud-config\ncoreos:\n  etcd2:\n    proxy: maybe\n",
            &["line 4: error: invalid value maybe"],
        );
    }

    #[test]
    fn validity_permissions() {
        for ok in ["744", "0744", "1744", "01744", "'0644'", "0644"] {
            assert_report(
                &format!("#cloud-config\nwrite_files:\n  - path: /a\n    permissions: {ok}\n"),
                &[],
            );
        }
        for bad in ["11744", "rwxr--r--", "800"] {
            assert_report(
                &format!("#cloud-config\nwrite_files:\n  - path: /a\n    permissions: {bad}\n"),
                &[format!("line 4: error: invalid value {bad}").as_str()],
            );
        }
    }

    #[test]
    fn validity_window_start_and_length() {
        for bad in ["tues 0:0", "thur 0:0", "sat00:00", "20:60", "24:00"] {
            assert_report(
                &format!("#cloud-config\ncoreos:\n  locksmith:\n    window_start: {bad}\n"),
                &[format!("line 4: error: invalid value {bad}").as_str()],
            );
        }
        for ok in ["sUn 23:59", "0:0", "mon 01:30", "23:59"] {
            assert_report(
                &format!("#cloud-config\ncoreos:\n  locksmith:\n    window_start: {ok}\n"),
                &[],
            );
        }
        for ok in ["1h", "1d", "0.5h", "1h30m"] {
            assert_report(
                &format!("#cloud-config\ncoreos:\n  locksmith:\n    window_length: {ok}\n"),
                &[],
            );
        }
        assert_report(
            "#cloud-config\ncoreos:\n  locksmith:\n    window_length: 0.5.0h\n",
            &["line 4: error: invalid value 0.5.0h"],
        );
    }

    #[test]
    fn usr_paths() {
        for bad in ["/usr/bin/x", "/usr/x", "/etc/../usr/share/x"] {
            assert_report(
                &format!("#cloud-config\nwrite_files:\n  - path: {bad}\n"),
                &["line 3: error: file cannot be written to a read-only filesystem"],
            );
        }
        for ok in ["/usr", "/etc/usr/x", "/usrx/a", "/opt/../etc/a"] {
            assert_report(
                &format!("#cloud-config\nwrite_files:\n  - path: {ok}\n"),
                &[],
            );
        }
    }

    #[test]
    fn write_files_under_coreos() {
        assert_report(
            "#cloud-config\ncoreos:\n  write_files:\n    - path: /a\n",
            &[
                r#"line 3: warning: unrecognized key "write_files""#,
                "line 3: info: write_files doesn't belong under coreos",
            ],
        );
    }

    #[test]
    fn rule_order_then_document_order() {
        let got = lines(
            "#cloud-config\nzzz: 1\nwrite_files:\n  - path: /usr/a\n    permissions: 999\n    encoding: b64\n    content: '#'\naaa: 2\n",
        );
        assert_eq!(
            got,
            vec![
                r#"line 7: error: content cannot be decoded as "b64""#,
                r#"line 2: warning: unrecognized key "zzz""#,
                r#"line 8: warning: unrecognized key "aaa""#,
                "line 5: error: invalid value 999",
                "line 4: error: file cannot be written to a read-only filesystem",
            ]
        );
    }

    #[test]
    fn json_form() {
        let report = validate(b"#cloud-config\nfoo: 1\n");
        let json = serde_json::to_string(&report.entries[0]).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"warning","line":2,"message":"unrecognized key \"foo\""}"#
        );
    }
}
