//! YAML front end: a line-numbered node tree built from saphyr-parser events, with YAML 1.1 scalar resolution.
//!
//! The Rust YAML crates follow YAML 1.2, but CoreOS cloud-configs were written against a YAML 1.1 parser, so
//! plain scalars are resolved here (`yes`/`off` booleans, `0644` octal, `25:00` sexagesimal). Every node keeps
//! the 1-based line of its first character and, for scalars, the exact source text, so typed string fields can
//! re-read what the user wrote.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Upper bound on nodes after alias expansion, so a small document cannot expand into gigabytes.
const MAX_NODES: usize = 1_000_000;

/// A YAML syntax error with the 1-based line of the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// The parser's description of the problem.
    pub message: String,
}

/// One YAML node with the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// 1-based line of the node's first character.
    pub line: usize,
    /// What the node holds.
    pub kind: NodeKind,
}

/// The three YAML node kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar with its source text.
    Scalar(Scalar),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(Node, Node)>),
}

/// A scalar as written in the document.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The scalar's text after YAML unescaping (without quotes).
    pub text: String,
    /// Whether the scalar was plain (unquoted, not a block scalar); only plain scalars are resolved.
    pub plain: bool,
    /// An explicit tag suffix such as `str` for `!!str`.
    pub tag: Option<String>,
}

/// The YAML 1.1 type a scalar resolves to.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null`, or nothing.
    Null,
    /// `yes`, `no`, `on`, `off`, `true`, `false`, `y`, `n` in any of the usual casings.
    Bool(bool),
    /// Decimal, `0o`/leading-zero octal, hex, binary or sexagesimal.
    Int(i64),
    /// A float, including `.inf` and `.nan`.
    Float(f64),
    /// Anything else.
    Str(String),
}

impl Value {
    /// The type name the original's validator uses.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
        }
    }
}

impl Node {
    /// The scalar, when this node is one.
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            NodeKind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The mapping entries, when this node is a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The sequence items, when this node is a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this node is a null scalar.
    pub fn is_null(&self) -> bool {
        matches!(self.as_scalar().map(Scalar::resolve), Some(Value::Null))
    }

    /// Looks up a mapping key after `-` → `_` normalisation.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.key_name().as_deref() == Some(key))
            .map(|(_, v)| v)
    }

    /// The normalised key name (`-` changed to `_`) of a scalar used as a mapping key.
    pub fn key_name(&self) -> Option<String> {
        self.as_scalar().map(|s| s.text.replace('-', "_"))
    }
}

impl Scalar {
    /// Resolves the scalar with YAML 1.1 implicit typing; quoted and block scalars are strings.
    pub fn resolve(&self) -> Value {
        match self.tag.as_deref() {
            Some("str") => return Value::Str(self.text.clone()),
            Some("bool") => {
                return resolve_bool(&self.text).map_or(Value::Str(self.text.clone()), Value::Bool);
            }
            Some("int") => {
                return resolve_int(&self.text).map_or(Value::Str(self.text.clone()), Value::Int);
            }
            Some("float") => {
                return resolve_float(&self.text)
                    .or_else(|| resolve_int(&self.text).map(|i| i as f64))
                    .map_or(Value::Str(self.text.clone()), Value::Float);
            }
            Some("null") => return Value::Null,
            _ => {}
        }
        if !self.plain {
            return Value::Str(self.text.clone());
        }
        resolve_plain(&self.text)
    }
}

/// YAML 1.1 resolution of a plain scalar's text.
pub fn resolve_plain(text: &str) -> Value {
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Value::Null;
    }
    if let Some(b) = resolve_bool(text) {
        return Value::Bool(b);
    }
    if let Some(i) = resolve_int(text) {
        return Value::Int(i);
    }
    if let Some(f) = resolve_float(text) {
        return Value::Float(f);
    }
    Value::Str(text.to_string())
}

fn resolve_bool(text: &str) -> Option<bool> {
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            Some(false)
        }
        _ => None,
    }
}

fn split_sign(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

fn resolve_int(text: &str) -> Option<i64> {
    let (neg, body) = split_sign(text);
    if body.is_empty() {
        return None;
    }
    let clean: String = body.chars().filter(|c| *c != '_').collect();
    if clean.is_empty() {
        return None;
    }
    let magnitude: i64 = if let Some(hex) = clean.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(bin) = clean.strip_prefix("0b") {
        i64::from_str_radix(bin, 2).ok()?
    } else if let Some(oct) = clean.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if clean.len() > 1 && clean.starts_with('0') && clean.bytes().all(|b| b.is_ascii_digit())
    {
        i64::from_str_radix(&clean[1..], 8).ok()?
    } else if clean.contains(':') {
        sexagesimal_int(&clean)?
    } else if clean.bytes().all(|b| b.is_ascii_digit()) {
        clean.parse().ok()?
    } else {
        return None;
    };
    Some(if neg {
        magnitude.checked_neg()?
    } else {
        magnitude
    })
}

/// `[1-9][0-9]*(:[0-5]?[0-9])+`, e.g. `25:00` = 1500.
fn sexagesimal_int(text: &str) -> Option<i64> {
    let mut parts = text.split(':');
    let first = parts.next()?;
    if first.is_empty() || first.starts_with('0') || !first.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut total: i64 = first.parse().ok()?;
    for part in parts {
        if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let v: i64 = part.parse().ok()?;
        if v > 59 {
            return None;
        }
        total = total.checked_mul(60)?.checked_add(v)?;
    }
    Some(total)
}

fn resolve_float(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let (neg, body) = split_sign(text);
    let clean: String = body.chars().filter(|c| *c != '_').collect();
    // YAML 1.1 floats need a dot: `[0-9]*\.[0-9]*([eE][-+][0-9]+)?`, or sexagesimal `a:b.c`.
    if clean.contains(':') {
        let (whole, frac) = clean.split_once('.').unwrap_or((&clean, ""));
        let i = sexagesimal_int(whole)? as f64;
        let f: f64 = if frac.is_empty() {
            0.0
        } else {
            format!("0.{frac}").parse().ok()?
        };
        return Some(if neg { -(i + f) } else { i + f });
    }
    if !clean.contains('.') || clean == "." {
        return None;
    }
    let (mantissa, exponent) = match clean.find(['e', 'E']) {
        Some(pos) => (&clean[..pos], Some(&clean[pos + 1..])),
        None => (clean.as_str(), None),
    };
    if !mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || mantissa.matches('.').count() != 1
    {
        return None;
    }
    if let Some(exp) = exponent {
        let (_, digits) = split_sign(exp);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    let v: f64 = clean.parse().ok()?;
    Some(if neg { -v } else { v })
}

/// Parses the first document of `text` into a node tree; `Ok(None)` for an empty document.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder::default();
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| SyntaxError {
            line: e.marker().line().max(1),
            message: e.info().to_string(),
        })?;
        let line = span.start.line().max(1);
        match event {
            Event::StreamEnd => break,
            Event::DocumentEnd => {
                if builder.root.is_some() {
                    break;
                }
            }
            Event::Nothing | Event::StreamStart | Event::DocumentStart(_) => {}
            Event::Alias(id) => {
                let node = builder
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| SyntaxError {
                        line,
                        message: "unknown anchor".to_string(),
                    })?;
                builder.count += count_nodes(&node);
                if builder.count > MAX_NODES {
                    return Err(SyntaxError {
                        line,
                        message: "document too large after alias expansion".into(),
                    });
                }
                builder.push(node, 0, line)?;
            }
            Event::Scalar(value, style, anchor, tag) => {
                let scalar = Scalar {
                    text: value.into_owned(),
                    plain: style == ScalarStyle::Plain,
                    tag: tag.map(|t| {
                        if t.is_yaml_core_schema() {
                            t.suffix.clone()
                        } else {
                            format!("{t}")
                        }
                    }),
                };
                builder.count += 1;
                builder.push(
                    Node {
                        line,
                        kind: NodeKind::Scalar(scalar),
                    },
                    anchor,
                    line,
                )?;
            }
            Event::SequenceStart(anchor, _) => builder.stack.push(Open {
                line,
                anchor,
                kind: OpenKind::Seq(Vec::new()),
            }),
            Event::MappingStart(anchor, _) => builder.stack.push(Open {
                line,
                anchor,
                kind: OpenKind::Map(Vec::new(), None),
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let open = builder.stack.pop().ok_or_else(|| SyntaxError {
                    line,
                    message: "unbalanced collection".into(),
                })?;
                builder.count += 1;
                let kind = match open.kind {
                    OpenKind::Seq(items) => NodeKind::Seq(items),
                    OpenKind::Map(entries, _) => NodeKind::Map(merge_keys(entries)),
                };
                builder.push(
                    Node {
                        line: open.line,
                        kind,
                    },
                    open.anchor,
                    line,
                )?;
            }
        }
    }
    Ok(builder.root)
}

fn count_nodes(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar(_) => 1,
        NodeKind::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        NodeKind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count_nodes(k) + count_nodes(v))
                .sum::<usize>()
        }
    }
}

/// Applies YAML merge keys (`<<: *anchor`): merged entries come after the explicit ones and never override them.
fn merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        return entries;
    }
    let mut explicit = Vec::new();
    let mut merged = Vec::new();
    for (k, v) in entries {
        if is_merge_key(&k) {
            match v.kind {
                NodeKind::Map(m) => merged.extend(m),
                NodeKind::Seq(items) => {
                    for item in items {
                        if let NodeKind::Map(m) = item.kind {
                            merged.extend(m);
                        }
                    }
                }
                NodeKind::Scalar(_) => explicit.push((k, v)),
            }
        } else {
            explicit.push((k, v));
        }
    }
    for (k, v) in merged {
        let name = k.as_scalar().map(|s| s.text.clone());
        if !explicit
            .iter()
            .any(|(e, _)| e.as_scalar().map(|s| &s.text) == name.as_ref())
        {
            explicit.push((k, v));
        }
    }
    explicit
}

fn is_merge_key(node: &Node) -> bool {
    node.as_scalar().is_some_and(|s| s.plain && s.text == "<<")
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    count: usize,
}

struct Open {
    line: usize,
    anchor: usize,
    kind: OpenKind,
}

enum OpenKind {
    Seq(Vec<Node>),
    /// Entries so far and a key waiting for its value.
    Map(Vec<(Node, Node)>, Option<Node>),
}

impl Builder {
    fn push(&mut self, node: Node, anchor: usize, line: usize) -> Result<(), SyntaxError> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Open {
                kind: OpenKind::Seq(items),
                ..
            }) => items.push(node),
            Some(Open {
                kind: OpenKind::Map(entries, pending),
                ..
            }) => match pending.take() {
                Some(key) => entries.push((key, node)),
                None => {
                    if !matches!(node.kind, NodeKind::Scalar(_)) {
                        return Err(SyntaxError {
                            line,
                            message: "mapping keys must be scalars".into(),
                        });
                    }
                    *pending = Some(node);
                }
            },
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_value(doc: &str, key: &str) -> Value {
        let root = parse(doc).unwrap().unwrap();
        root.get(key).unwrap().as_scalar().unwrap().resolve()
    }

    #[test]
    fn yaml11_booleans() {
        for (text, want) in [
            ("yes", true),
            ("off", false),
            ("On", true),
            ("NO", false),
            ("y", true),
            ("true", true),
        ] {
            assert_eq!(
                scalar_value(&format!("a: {text}\n"), "a"),
                Value::Bool(want),
                "{text}"
            );
        }
        assert_eq!(scalar_value("a: 'yes'\n", "a"), Value::Str("yes".into()));
        assert_eq!(
            scalar_value("a: !!str yes\n", "a"),
            Value::Str("yes".into())
        );
    }

    #[test]
    fn yaml11_numbers() {
        assert_eq!(scalar_value("a: 0644\n", "a"), Value::Int(0o644));
        assert_eq!(scalar_value("a: 25:00\n", "a"), Value::Int(1500));
        assert_eq!(scalar_value("a: 1:20:30\n", "a"), Value::Int(4830));
        assert_eq!(scalar_value("a: 0x1F\n", "a"), Value::Int(31));
        assert_eq!(scalar_value("a: -12_000\n", "a"), Value::Int(-12000));
        assert_eq!(scalar_value("a: 1.5\n", "a"), Value::Float(1.5));
        assert_eq!(scalar_value("a: 1e5\n", "a"), Value::Str("1e5".into()));
        assert_eq!(scalar_value("a: 0.5h\n", "a"), Value::Str("0.5h".into()));
        assert_eq!(scalar_value("a: 0899\n", "a"), Value::Str("0899".into()));
        assert_eq!(scalar_value("a: 23:59\n", "a"), Value::Int(1439));
        assert_eq!(scalar_value("a: 20:60\n", "a"), Value::Str("20:60".into()));
        assert_eq!(scalar_value("a: ~\n", "a"), Value::Null);
    }

    #[test]
    fn keys_are_normalised_and_lines_kept() {
        let root = parse("#cloud-config\nfoo: 1\nreboot-strategy: off\nlist:\n  - a\n  - b\n")
            .unwrap()
            .unwrap();
        let v = root.get("reboot_strategy").unwrap();
        assert_eq!(v.line, 3);
        let items = root.get("list").unwrap().as_seq().unwrap();
        assert_eq!(items[1].line, 6);
        assert_eq!(items[1].as_scalar().unwrap().text, "b");
    }

    #[test]
    fn syntax_error_has_line() {
        let err = parse("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
        let err = parse("a:\n\tb: 1\n").unwrap_err();
        assert_eq!(err.line, 2, "{err:?}");
    }

    #[test]
    fn anchors_and_merge_keys() {
        let root = parse("base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n")
            .unwrap()
            .unwrap();
        let d = root.get("derived").unwrap();
        assert_eq!(d.get("x").unwrap().as_scalar().unwrap().text, "1");
        assert_eq!(d.get("y").unwrap().as_scalar().unwrap().text, "3");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            doc.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
        }
        let err = parse(&doc).unwrap_err();
        assert!(err.message.contains("too large"), "{err:?}");
    }

    #[test]
    fn empty_document() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("#cloud-config\n").unwrap(), None);
    }
}
