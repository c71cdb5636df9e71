//! `etcd-bench`'s workloads make real requests against our server (the benchmarks in BENCHMARKS.md rely on
//! them). The shared client library's scenarios run against ours in `proto/tests/it/etcd_client.rs`.

use proto::etcd::Client;

use crate::support::Ours;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn the_v3_load_generator_does_real_requests() {
    let s = Ours::start();
    let rt = rt();
    for (workload, requests, conns) in [
        ("v3-put", 100, 4),
        ("v3-range", 100, 4),
        ("watch-fanout", 50, 5),
    ] {
        let spec = etcd::bench::BenchSpec {
            addr: s.addr.clone(),
            workload: workload.into(),
            conns,
            requests,
            value_size: 16,
        };
        let res = rt.block_on(etcd::bench::run(spec)).expect("bench");
        let want = if workload == "watch-fanout" {
            20
        } else {
            requests
        };
        assert_eq!((res.requests, res.failures), (want, 0), "{workload}");
    }
    rt.block_on(async {
        let client = Client::connect(&[format!("http://{}", s.addr)]).unwrap();
        let (kvs, _) = client.get_prefix("/bench/").await.unwrap();
        assert_eq!(kvs.len(), 101, "100 distinct put keys plus the range key");
        assert_eq!(client.get("/fanout").await.unwrap().unwrap().version, 20);
    });
}
