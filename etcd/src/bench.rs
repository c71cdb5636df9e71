//! `etcd-bench`: a load generator. v2: keep-alive HTTP/1.1 connections, distinct keys, form values. v3: the
//! proto crate's tonic clients, one HTTP/2 connection per task (`v3-put`, `v3-range`), and the watch fan-out
//! (`watch-fanout`: how long one write takes to reach every one of many watchers).

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// host:port of the server; several, comma-separated, spread the connections over cluster members.
    pub addr: String,
    /// `put`, `get` (plain read of one key) or `qget` (linearizable read: `quorum=true`) over v2; `v3-put`,
    /// `v3-range` (connections spread over the addresses) or `watch-fanout` (the first address) over gRPC.
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

/// Runs the workload; `get`, `qget` and `v3-range` first write the key they read.
pub async fn run(spec: BenchSpec) -> std::io::Result<BenchResult> {
    match spec.workload.as_str() {
        "v3-put" | "v3-range" => return run_v3(spec).await,
        "watch-fanout" => return watch_fanout(spec).await,
        _ => {}
    }
    let value = "x".repeat(spec.value_size);
    let addrs = addresses(&spec.addr)?;
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

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn summarise(mut all: Vec<Duration>, failures: usize, elapsed: Duration) -> BenchResult {
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    BenchResult {
        requests: all.len(),
        failures,
        elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

/// A gRPC channel to the first of the comma-separated addresses.
async fn channel(addrs: &str) -> std::io::Result<tonic::transport::Channel> {
    let addr = addrs.split(',').next().unwrap_or_default().trim();
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(io_err)?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(io_err)
}

/// One gRPC call over a bare HTTP/2 connection: the request message is already protobuf-encoded; true if
/// the server answered `grpc-status: 0`.
async fn grpc_call(
    h2: &mut h2::client::SendRequest<axum::body::Bytes>,
    uri: &str,
    message: &[u8],
) -> std::io::Result<bool> {
    let mut frame = Vec::with_capacity(5 + message.len());
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let req = axum::http::Request::post(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .map_err(io_err)?;
    let mut ready = h2.clone().ready().await.map_err(io_err)?;
    let (resp, mut send) = ready.send_request(req, false).map_err(io_err)?;
    send.send_data(frame.into(), true).map_err(io_err)?;
    let resp = resp.await.map_err(io_err)?;
    let status_ok = |h: &axum::http::HeaderMap| h.get("grpc-status").map(|v| v.as_bytes() == b"0");
    // A trailers-only answer (errors) carries grpc-status in its headers.
    if let Some(ok) = status_ok(resp.headers()) {
        return Ok(ok);
    }
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(io_err)?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.map_err(io_err)?;
    Ok(trailers.as_ref().and_then(status_ok).unwrap_or(false))
}

/// The comma-separated server addresses; at least one.
fn addresses(list: &str) -> std::io::Result<Vec<String>> {
    let addrs: Vec<String> = list
        .split(',')
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    if addrs.is_empty() {
        return Err(std::io::Error::other("no server address"));
    }
    Ok(addrs)
}

/// v3 Put (distinct keys) or Range (one key, linearizable), one HTTP/2 connection per task. The client is
/// the `h2` crate with pre-encoded messages rather than tonic, so that the load generator spends as little
/// of the shared CPU as it can (tonic's client costs about as much per call as our server).
async fn run_v3(spec: BenchSpec) -> std::io::Result<BenchResult> {
    use proto::etcdserverpb::{PutRequest, RangeRequest};
    use proto::prost::Message;
    let value = vec![b'x'; spec.value_size];
    let range = spec.workload == "v3-range";
    let connect = |addr: String| async move {
        let tcp = TcpStream::connect(&addr).await?;
        tcp.set_nodelay(true)?;
        let (h2, conn) = h2::client::handshake(tcp).await.map_err(io_err)?;
        tokio::spawn(conn);
        Ok::<_, std::io::Error>(h2)
    };
    // Connection c goes to address c mod n, as for v2 (a cluster's members share the load).
    let addrs = addresses(&spec.addr)?;
    let uri = |addr: &str, method: &str| format!("http://{addr}/etcdserverpb.KV/{method}");
    if range {
        let mut h2 = connect(addrs[0].clone()).await?;
        let put = PutRequest {
            key: b"/bench/k0".to_vec(),
            value: value.clone(),
            ..Default::default()
        };
        if !grpc_call(&mut h2, &uri(&addrs[0], "Put"), &put.encode_to_vec()).await? {
            return Err(std::io::Error::other("the first put failed"));
        }
    }
    let range_req = RangeRequest {
        key: b"/bench/k0".to_vec(),
        ..Default::default()
    }
    .encode_to_vec();
    let per = spec.requests.div_ceil(spec.conns.max(1));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..spec.conns.max(1) {
        let addr = addrs[c % addrs.len()].clone();
        let value = value.clone();
        let (put_uri, range_uri, range_req) =
            (uri(&addr, "Put"), uri(&addr, "Range"), range_req.clone());
        tasks.push(tokio::spawn(async move {
            let mut h2 = connect(addr).await?;
            let mut lat = Vec::with_capacity(per);
            let mut failures = 0;
            for i in 0..per {
                let (uri, message) = if range {
                    (&range_uri, range_req.clone())
                } else {
                    let put = PutRequest {
                        key: format!("/bench/c{c}-{i}").into_bytes(),
                        value: value.clone(),
                        ..Default::default()
                    };
                    (&put_uri, put.encode_to_vec())
                };
                let t = Instant::now();
                let ok = grpc_call(&mut h2, uri, &message).await?;
                lat.push(t.elapsed());
                if !ok {
                    failures += 1;
                }
            }
            Ok::<_, std::io::Error>((lat, failures))
        }));
    }
    let mut all = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (lat, f) = t.await.map_err(io_err)??;
        all.extend(lat);
        failures += f;
    }
    Ok(summarise(all, failures, start.elapsed()))
}

/// `requests` watchers on one key (`conns` streams share them), then 20 writes one after the other: each
/// latency is from sending the Put until the last watcher got its event.
async fn watch_fanout(spec: BenchSpec) -> std::io::Result<BenchResult> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use proto::etcdserverpb::{
        PutRequest, WatchCreateRequest, WatchRequest, kv_client::KvClient,
        watch_client::WatchClient, watch_request,
    };
    const WRITES: usize = 20;
    let streams = spec.conns.max(1);
    let watchers = spec.requests.max(1);
    let per = watchers.div_ceil(streams);
    let got = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let created = Arc::new(AtomicUsize::new(0));
    let ready = Arc::new(tokio::sync::Notify::new());
    // Sixteen connections carry the streams, as a fleet of clients would spread over a few.
    let mut chans = Vec::new();
    for _ in 0..16.min(streams) {
        chans.push(channel(&spec.addr).await?);
    }
    let mut keep = Vec::new();
    for s in 0..streams {
        let n = per.min(watchers.saturating_sub(s * per));
        if n == 0 {
            break;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(n + 1);
        for _ in 0..n {
            let req = WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        key: b"/fanout".to_vec(),
                        ..Default::default()
                    },
                )),
            };
            tx.try_send(req).map_err(io_err)?;
        }
        keep.push(tx);
        let mut client = WatchClient::new(chans[s % chans.len()].clone());
        let mut inbound = client
            .watch(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|r| (r, rx))
            }))
            .await
            .map_err(io_err)?
            .into_inner();
        let (got, done, created, ready) =
            (got.clone(), done.clone(), created.clone(), ready.clone());
        tokio::spawn(async move {
            while let Ok(Some(r)) = inbound.message().await {
                if r.created && created.fetch_add(1, Ordering::SeqCst) + 1 == watchers {
                    ready.notify_one();
                }
                if !r.events.is_empty()
                    && got.fetch_add(r.events.len(), Ordering::SeqCst) + r.events.len() == watchers
                {
                    done.notify_one();
                }
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        while created.load(Ordering::SeqCst) < watchers {
            ready.notified().await;
        }
    })
    .await
    .map_err(|_| io_err("watchers not created in time"))?;
    let mut kv = KvClient::new(channel(&spec.addr).await?);
    let mut lat = Vec::new();
    let start = Instant::now();
    for i in 0..WRITES {
        got.store(0, Ordering::SeqCst);
        let t = Instant::now();
        kv.put(PutRequest {
            key: b"/fanout".to_vec(),
            value: i.to_string().into_bytes(),
            ..Default::default()
        })
        .await
        .map_err(io_err)?;
        tokio::time::timeout(Duration::from_secs(60), async {
            while got.load(Ordering::SeqCst) < watchers {
                done.notified().await;
            }
        })
        .await
        .map_err(|_| io_err("events did not reach every watcher"))?;
        lat.push(t.elapsed());
    }
    drop(keep);
    Ok(summarise(lat, 0, start.elapsed()))
}
