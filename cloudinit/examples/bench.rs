//! Validation and parse benchmark: a 2,000-line cloud-config, and 10,000 small ones.
//!
//! Run: `cargo run --release -p cloudinit --example bench` (numbers go to cloudinit/NOTES.md).

use std::time::{Duration, Instant};

fn big_config() -> String {
    let mut text = String::from("#cloud-config\nhostname: bench\ncoreos:\n  units:\n");
    let mut i = 0;
    while text.lines().count() < 1_000 {
        text.push_str(&format!(
            "    - name: unit{i}.service\n      enable: yes\n      command: start\n      content: |\n        [Service]\n        ExecStart=/bin/true\n"
        ));
        i += 1;
    }
    text.push_str("write_files:\n");
    while text.lines().count() < 2_000 {
        text.push_str(&format!(
            "  - path: /etc/bench/{i}\n    permissions: 0644\n    content: hello {i}\n"
        ));
        i += 1;
    }
    text
}

const SMALL: &str = "#cloud-config\nhostname: node1\nssh_authorized_keys:\n  - ssh-ed25519 AAAA core\ncoreos:\n  etcd2:\n    name: node1\n    listen-client-urls: http://0.0.0.0:2379\n  update:\n    reboot-strategy: off\n  units:\n    - name: etcd2.service\n      command: start\n";

fn time(label: &str, iterations: u32, mut f: impl FnMut()) {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    let total = start.elapsed();
    let each = total / iterations;
    println!(
        "{label}: {iterations} runs in {total:?}, {} per run",
        fmt(each)
    );
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

fn main() {
    let big = big_config();
    assert_eq!(big.lines().count(), 2_000);
    let findings = cloudinit::validate::validate(big.as_bytes());
    assert!(findings.is_empty(), "{findings:?}");
    time("validate 2,000-line config", 50, || {
        std::hint::black_box(cloudinit::validate::validate(big.as_bytes()));
    });
    time("parse 2,000-line config", 50, || {
        std::hint::black_box(cloudinit::CloudConfig::parse(&big).ok());
    });
    time("validate small config (x10,000)", 10_000, || {
        std::hint::black_box(cloudinit::validate::validate(SMALL.as_bytes()));
    });
    time("parse small config (x10,000)", 10_000, || {
        std::hint::black_box(cloudinit::CloudConfig::parse(SMALL).ok());
    });
}
