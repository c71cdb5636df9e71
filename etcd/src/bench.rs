//! `etcd-bench`: a v2 load generator (keep-alive HTTP/1.1 connections, distinct keys, form values).

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// host:port of the server; several, comma-separated, spread the connections over cluster members.
    pub addr: String,
    /// `put`, `get` (plain read of one key) or `qget` (linearizable read: `quorum=true`).
    pub workload: String,
    /// Concurrent connections.
    pub conns: usize,
    /// Total requests.
    pub requests: usize,
    /// Value size in bytes.
    pub value_size: usize,
}

/// Throughput and latency figures.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Requests completed.
    pub requests: usize,
    /// Failed requests (non-2xx).
    pub failures: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

impl std::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9);
        write!(
            f,
            "{} requests ({} failed) in {:.2}s: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
            self.requests,
            self.failures,
            self.elapsed.as_secs_f64(),
            rate,
            self.p50.as_secs_f64() * 1e3,
            self.p99.as_secs_f64() * 1e3
        )
    }
}

async fn one(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    req: &[u8],
) -> std::io::Result<u16> {
    w.write_all(req).await?;
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':')
            && n.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    Ok(status)
}

/// Runs the workload; `get` and `qget` first write the key they read.
pub async fn run(spec: BenchSpec) -> std::io::Result<BenchResult> {
    let value = "x".repeat(spec.value_size);
    let addrs: Vec<String> = spec
        .addr
        .split(',')
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    if addrs.is_empty() {
        return Err(std::io::Error::other("no server address"));
    }
    let reads = spec.workload == "get" || spec.workload == "qget";
    if reads {
        let s = TcpStream::connect(&addrs[0]).await?;
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let body = format!("value={value}");
        let req = format!(
            "PUT /v2/keys/bench/k0 HTTP/1.1\r\nHost: b\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        one(&mut r, &mut w, req.as_bytes()).await?;
    }
    let per = spec.requests.div_ceil(spec.conns.max(1));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..spec.conns.max(1) {
        let spec = spec.clone();
        let value = value.clone();
        let addr = addrs[c % addrs.len()].clone();
        tasks.push(tokio::spawn(async move {
            let s = TcpStream::connect(&addr).await?;
            s.set_nodelay(true)?;
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            let mut lat = Vec::with_capacity(per);
            let mut failures = 0;
            for i in 0..per {
                let req = if spec.workload == "get" {
                    "GET /v2/keys/bench/k0 HTTP/1.1\r\nHost: b\r\n\r\n".to_string()
                } else if spec.workload == "qget" {
                    "GET /v2/keys/bench/k0?quorum=true HTTP/1.1\r\nHost: b\r\n\r\n".to_string()
                } else {
                    let body = format!("value={value}");
                    format!(
                        "PUT /v2/keys/bench/c{c}-{i} HTTP/1.1\r\nHost: b\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                let t = Instant::now();
                let status = one(&mut r, &mut w, req.as_bytes()).await?;
                lat.push(t.elapsed());
                if !(200..300).contains(&status) {
                    failures += 1;
                }
            }
            Ok::<_, std::io::Error>((lat, failures))
        }));
    }
    let mut all = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (lat, f) = t.await.map_err(std::io::Error::other)??;
        all.extend(lat);
        failures += f;
    }
    let elapsed = start.elapsed();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(BenchResult {
        requests: all.len(),
        failures,
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    })
}
