//! etcdctl's output formats: simple, extended and json (the Go client's struct shape).

use std::io::Write;

use serde_json::{Value, json};

use super::client::Response;
use super::{EXIT_SERVER_ERROR, Failure, fail};

/// Parses a JSON reply.
pub fn json(r: &Response) -> Result<Value, Failure> {
    serde_json::from_slice(&r.body)
        .map_err(|e| fail(EXIT_SERVER_ERROR, format!("bad reply from server: {e}")))
}

/// The `message` of a members-API error.
pub fn message(r: &Response) -> String {
    serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_else(|| r.text().trim().to_string())
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// The Go client's `Node` as JSON, in its struct order (`nodes` null when empty).
fn client_node(n: &Value) -> String {
    if n.is_null() {
        return "null".into();
    }
    let mut o = format!("{{\"key\":{}", json!(s(&n["key"])));
    if n["dir"].as_bool() == Some(true) {
        o.push_str(",\"dir\":true");
    }
    o.push_str(&format!(",\"value\":{}", json!(s(&n["value"]))));
    let nodes: Vec<String> = n["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(client_node)
        .collect();
    if nodes.is_empty() {
        o.push_str(",\"nodes\":null");
    } else {
        o.push_str(&format!(",\"nodes\":[{}]", nodes.join(",")));
    }
    o.push_str(&format!(
        ",\"createdIndex\":{},\"modifiedIndex\":{}",
        n["createdIndex"].as_u64().unwrap_or(0),
        n["modifiedIndex"].as_u64().unwrap_or(0)
    ));
    if let Some(e) = n["expiration"].as_str() {
        o.push_str(&format!(",\"expiration\":{}", json!(e)));
    }
    if let Some(t) = n["ttl"].as_i64().filter(|t| *t != 0) {
        o.push_str(&format!(",\"ttl\":{t}"));
    }
    o.push('}');
    o
}

/// etcdctl's `printResponseKey`.
pub fn print(out: &mut dyn Write, r: &Response, format: &str) -> Result<(), Failure> {
    let v = json(r)?;
    let action = s(&v["action"]);
    let node = &v["node"];
    let w = |out: &mut dyn Write, line: String| {
        let _ = writeln!(out, "{line}");
    };
    match format {
        "simple" => {
            if action != "delete" {
                w(out, s(&node["value"]).to_string());
            } else {
                w(
                    out,
                    format!("PrevNode.Value: {}", s(&v["prevNode"]["value"])),
                );
            }
        }
        "extended" => {
            w(out, format!("Key: {}", s(&node["key"])));
            w(
                out,
                format!(
                    "Created-Index: {}",
                    node["createdIndex"].as_u64().unwrap_or(0)
                ),
            );
            w(
                out,
                format!(
                    "Modified-Index: {}",
                    node["modifiedIndex"].as_u64().unwrap_or(0)
                ),
            );
            if !v["prevNode"].is_null() {
                w(
                    out,
                    format!("PrevNode.Value: {}", s(&v["prevNode"]["value"])),
                );
            }
            w(out, format!("TTL: {}", node["ttl"].as_i64().unwrap_or(0)));
            w(
                out,
                format!("Index: {}", r.header("x-etcd-index").unwrap_or("0")),
            );
            if action != "delete" {
                w(out, String::new());
                w(out, s(&node["value"]).to_string());
            }
        }
        _ => {
            // Preserve the Go struct order: action, node, prevNode.
            let body = format!(
                "{{\"action\":{},\"node\":{},\"prevNode\":{}}}",
                json!(action),
                client_node(node),
                client_node(&v["prevNode"])
            );
            w(out, body);
        }
    }
    Ok(())
}

/// `ls` in simple format.
pub fn ls(out: &mut dyn Write, v: &Value, slash: bool) -> Result<(), Failure> {
    fn rec(out: &mut dyn Write, n: &Value, slash: bool) {
        let key = s(&n["key"]);
        if n["dir"].as_bool() == Some(true) && slash {
            let _ = writeln!(out, "{key}/");
        } else {
            let _ = writeln!(out, "{key}");
        }
        for c in n["nodes"].as_array().into_iter().flatten() {
            rec(out, c, slash);
        }
    }
    let node = &v["node"];
    if node["dir"].as_bool() != Some(true) {
        let _ = writeln!(out, "{}", s(&node["key"]));
    }
    for c in node["nodes"].as_array().into_iter().flatten() {
        rec(out, c, slash);
    }
    Ok(())
}
