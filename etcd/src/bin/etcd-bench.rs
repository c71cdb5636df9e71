//! etcd-bench: load generator for the v2 and v3 APIs (`etcd-bench --addr 127.0.0.1:2379 --workload put --conns 64`).

/// The same allocator as the server's, so the load generator takes as little of the shared CPU as it can.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(name = "etcd-bench", about = "v2 and v3 API load generator")]
struct Args {
    /// Server host:port (comma-separated: connections are spread over the members).
    #[arg(long, default_value = "127.0.0.1:2379")]
    addr: String,
    /// put (distinct keys), get (one key) or qget (one key, quorum=true) over v2; v3-put or v3-range over
    /// gRPC; watch-fanout (--requests watchers on one key over --conns streams, 20 writes).
    #[arg(long, default_value = "put", value_parser = ["put", "get", "qget", "v3-put", "v3-range", "watch-fanout"])]
    workload: String,
    /// Concurrent keep-alive connections (watch-fanout: watch streams).
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// Total requests (watch-fanout: watchers).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let rt = tokio::runtime::Runtime::new().context("starting tokio")?;
    let spec = etcd::bench::BenchSpec {
        addr: a.addr,
        workload: a.workload,
        conns: a.conns,
        requests: a.requests,
        value_size: a.value_size,
    };
    let res = rt
        .block_on(etcd::bench::run(spec.clone()))
        .with_context(|| format!("benchmarking {}", spec.addr))?;
    println!(
        "{} conns={} value={}B: {res}",
        spec.workload, spec.conns, spec.value_size
    );
    Ok(())
}
