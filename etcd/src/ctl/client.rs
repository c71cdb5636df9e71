//! A small blocking HTTP/1.1 client, enough for the v2 API (form bodies, chunked long polls), over plain TCP or
//! TLS (rustls) for `https://` endpoints.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

/// TLS settings for `https://` endpoints: the CA to trust and, optionally, a client certificate.
#[derive(Clone)]
pub struct Tls(Arc<rustls::ClientConfig>);

impl Tls {
    /// From etcdctl's `--ca-file`, `--cert-file` and `--key-file`; without a CA file the system's CA bundle is
    /// trusted (as Go's etcdctl does), and `skip_verify` (`--insecure-skip-tls-verify`) trusts any server.
    pub fn new(
        ca: Option<&Path>,
        cert_key: Option<(&Path, &Path)>,
        skip_verify: bool,
    ) -> Result<Tls, String> {
        use crate::tls::Trust;
        let trust = match ca {
            _ if skip_verify => Trust::Insecure,
            Some(ca) => Trust::Ca(ca, "--ca-file"),
            None => Trust::System,
        };
        let identity = cert_key
            .map(|(cert, key)| {
                crate::tls::client_identity(cert, key, ("--cert-file", "--key-file"))
                    .map_err(|e| e.to_string())
            })
            .transpose()?;
        crate::tls::client_config(&trust, identity, &[b"http/1.1"])
            .map(Tls)
            .map_err(|e| e.to_string())
    }
}

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in arrival order (names lowercased).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Splits `http://host:port/...` into `host:port`.
pub fn authority(endpoint: &str) -> String {
    let rest = endpoint
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(endpoint);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// Sends one request on a fresh connection and reads the whole response.
/// `timeout` bounds connecting and each read (none: wait forever, for watches).
pub fn request(
    addr: &str,
    method: &str,
    target: &str,
    form: Option<&str>,
    timeout: Option<Duration>,
) -> std::io::Result<Response> {
    request_with(
        addr,
        method,
        target,
        form.map(|f| ("application/x-www-form-urlencoded", f)),
        None,
        timeout,
    )
}

/// [`request`] with optional extra headers (`Name: value` lines, e.g. `Authorization`).
pub fn request_with(
    addr: &str,
    method: &str,
    target: &str,
    body: Option<(&str, &str)>,
    extra_headers: Option<&str>,
    timeout: Option<Duration>,
) -> std::io::Result<Response> {
    request_tls(addr, None, method, target, body, extra_headers, timeout)
}

/// [`request_with`], over TLS when `tls` is given.
pub fn request_tls(
    addr: &str,
    tls: Option<&Tls>,
    method: &str,
    target: &str,
    body: Option<(&str, &str)>,
    extra_headers: Option<&str>,
    timeout: Option<Duration>,
) -> std::io::Result<Response> {
    let mut stream = match timeout {
        Some(t) => {
            let mut last = None;
            let mut conn = None;
            for a in std::net::ToSocketAddrs::to_socket_addrs(addr)? {
                match TcpStream::connect_timeout(&a, t) {
                    Ok(s) => {
                        conn = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            conn.ok_or_else(|| {
                last.unwrap_or_else(|| std::io::Error::other(format!("cannot resolve {addr}")))
            })?
        }
        None => TcpStream::connect(addr)?,
    };
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    let req = request_text(addr, method, target, body, extra_headers);
    match tls {
        None => {
            stream.write_all(req.as_bytes())?;
            read_response(BufReader::new(stream), method == "HEAD")
        }
        Some(tls) => {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_string())
                .map_err(|e| bad(&format!("server name {host}: {e}")))?;
            let conn = rustls::ClientConnection::new(tls.0.clone(), name)
                .map_err(std::io::Error::other)?;
            let mut stream = rustls::StreamOwned::new(conn, stream);
            stream.write_all(req.as_bytes())?;
            stream.flush()?;
            read_response(BufReader::new(stream), method == "HEAD")
        }
    }
}

/// The request head and body.
fn request_text(
    addr: &str,
    method: &str,
    target: &str,
    body: Option<(&str, &str)>,
    extra_headers: Option<&str>,
) -> String {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(h) = extra_headers {
        req.push_str(h);
    }
    match body {
        Some((ct, f)) => req.push_str(&format!(
            "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{f}",
            f.len()
        )),
        None => req.push_str("\r\n"),
    }
    req
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

fn read_response<R: BufRead>(mut r: R, head: bool) -> std::io::Result<Response> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head || status == 204 || status == 304 {
        return Ok(resp);
    }
    if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                break;
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk"))?;
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size];
            r.read_exact(&mut chunk)?;
            resp.body.extend_from_slice(&chunk);
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        resp.body = body;
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

/// Percent-encodes a form or query value.
pub fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
