//! Micro-benchmark: SHA-256 (the `sha2` crate the engine uses) and SHA-1
//! throughput on this CPU, to tell whether the SHA-NI code path is taken
//! (about 1.5-2 GB/s per core with it, about 0.4 GB/s without).
//!
//! `cargo run --release -p update-engine --example sha256_speed -- [MiB]`

use std::time::Instant;

use sha2::{Digest, Sha256};

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let buf: Vec<u8> = (0..(8usize << 20)).map(|i| (i * 31 % 251) as u8).collect();
    let rounds = (mib << 20) / buf.len();
    #[cfg(target_arch = "x86_64")]
    println!("cpu sha_ni: {}", std::arch::is_x86_feature_detected!("sha"));
    for _ in 0..3 {
        let t = Instant::now();
        let mut h = Sha256::new();
        for _ in 0..rounds {
            h.update(&buf);
        }
        let d = h.finalize();
        let s = t.elapsed().as_secs_f64();
        println!(
            "sha256 {mib} MiB in {s:.3} s: {:.0} MB/s ({:02x}{:02x}..)",
            (rounds * buf.len()) as f64 / s / 1e6,
            d[0],
            d[1]
        );
    }
    let t = Instant::now();
    let mut h = sha1::Sha1::new();
    for _ in 0..rounds {
        h.update(&buf);
    }
    let d = h.finalize();
    let s = t.elapsed().as_secs_f64();
    println!(
        "sha1   {mib} MiB in {s:.3} s: {:.0} MB/s ({:02x}..)",
        (rounds * buf.len()) as f64 / s / 1e6,
        d[0]
    );
}
