//! Benchmark: payload download + verify + write throughput of a full update
//! over loopback, against `dd` of the same image bytes to the same target.
//!
//! `cargo run --release -p update-engine --example throughput -- --size-mib 1024 --key update-engine/tests/data/test-key.pem --pub update-engine/tests/data/test-key.pub.pem`
//! Needs sgdisk and dd. The image is incompressible (REPLACE operations),
//! so the numbers measure the I/O pipeline, not bzip2.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio_util::sync::CancellationToken;
use update_engine::config::ConfigPaths;
use update_engine::engine::{self, EngineSettings, Outcome};
use update_engine::gpt::{GptDisk, USR_PARTITION_TYPE};
use update_engine::schedule::Schedule;
use update_engine::server::ServerSettings;

struct Args {
    size_mib: u64,
    key: PathBuf,
    public: PathBuf,
    dir: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        size_mib: 1024,
        key: "update-engine/tests/data/test-key.pem".into(),
        public: "update-engine/tests/data/test-key.pub.pem".into(),
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--size-mib" => args.size_mib = value.parse()?,
            "--key" => args.key = value.into(),
            "--pub" => args.public = value.into(),
            "--dir" => args.dir = Some(value.into()),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn make_image(path: &Path, mib: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block)?;
    }
    f.flush()?;
    Ok(())
}

fn make_disk(path: &Path, part_mib: u64) -> anyhow::Result<()> {
    std::fs::File::create(path)?.set_len((2 * part_mib + 16) << 20)?;
    let usr = USR_PARTITION_TYPE.to_string();
    run(Command::new("sgdisk")
        .args([
            "-o",
            "-n",
            &format!("3:2048:+{part_mib}M"),
            "-t",
            &format!("3:{usr}"),
        ])
        .args([
            "-n",
            &format!("4:0:+{part_mib}M"),
            "-t",
            &format!("4:{usr}"),
        ])
        .args(["-A", "3:=:0101000000000000"])
        .arg(path))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let args = parse_args()?;
    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let dir = tmp.path();
    let image = dir.join("usr.img");
    make_image(&image, args.size_mib)?;
    let disk = dir.join("disk.img");
    make_disk(&disk, args.size_mib + 1)?;

    let release = dir.join("releases/stable/2.0.0");
    std::fs::create_dir_all(&release)?;
    let key = update_engine::payload::sign::load_private_key(&args.key)?;
    let t = Instant::now();
    update_engine::payload::create::create_full_payload(&image, &key, &release.join("update.gz"))?;
    eprintln!("payload created in {:.1?}", t.elapsed());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/update/", listener.local_addr()?);
    let stop = CancellationToken::new();
    let server = ServerSettings {
        releases: dir.join("releases"),
        base_url: None,
        rollout: None,
    };
    tokio::spawn(update_engine::server::run(server, listener, stop.clone()));

    let root = dir.join("root");
    let config = ConfigPaths::under(&root);
    for f in &config.files {
        std::fs::create_dir_all(f.parent().context("config path")?)?;
    }
    std::fs::write(&config.files[0], format!("GROUP=stable\nSERVER={url}\n"))?;
    std::fs::write(&config.files[2], "COREOS_RELEASE_VERSION=1.0.0\n")?;
    let settings = EngineSettings {
        config,
        prefs_dir: root.join("prefs"),
        disk: disk.clone(),
        active_partition: 3,
        public_key: args.public.clone(),
        machine_id: "bench".into(),
        boot_id: "bench".into(),
        oem: String::new(),
        schedule: Schedule {
            periodic: false,
            setgoodroot_delay: Duration::from_secs(3600),
            ..Schedule::default()
        },
    };
    // Flush the setup's dirty pages (image, payload) so that their
    // writeback does not throttle the timed writes.
    run(&mut Command::new("sync"))?;
    let (handle, task) = engine::spawn(settings, stop.clone())?;
    let mut outcomes = handle.outcomes();
    let mut changes = handle.subscribe();
    let t = Instant::now();
    // Per-phase breakdown: when each status (and, in DOWNLOADING, each
    // quarter of the progress) is first published.
    let collector = tokio::spawn(async move {
        let mut marks: Vec<(String, Duration)> = Vec::new();
        while let Ok(info) = changes.recv().await {
            let op = info.current_operation.as_str();
            let name = if op == "UPDATE_STATUS_DOWNLOADING" {
                format!("{op} {:.0}%", (info.progress * 4.0).floor() * 25.0)
            } else {
                op.to_owned()
            };
            if marks.last().is_none_or(|(n, _)| *n != name) {
                marks.push((name, t.elapsed()));
            }
            if op == "UPDATE_STATUS_UPDATED_NEED_REBOOT" || op == "UPDATE_STATUS_IDLE" {
                break;
            }
        }
        marks
    });
    handle.attempt_update().await;
    let outcome = outcomes.recv().await?;
    let engine_time = t.elapsed();
    for (name, at) in collector.await? {
        eprintln!("  {at:>10.3?}  {name}");
    }
    ensure!(matches!(outcome, Outcome::Updated { .. }), "{outcome:?}");
    stop.cancel();
    let _ = task.await;

    let extent = GptDisk::open(&disk)?.extent(4)?;
    run(&mut Command::new("sync"))?;
    let t = Instant::now();
    run(Command::new("dd")
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", disk.display()))
        .args([
            "bs=4M",
            "conv=notrunc,fsync",
            "oflag=seek_bytes",
            "status=none",
        ])
        .arg(format!("seek={}", extent.offset)))?;
    let dd_time = t.elapsed();

    let mib = args.size_mib as f64;
    println!(
        "update_engine: {:.1} MiB/s ({engine_time:.1?}); dd: {:.1} MiB/s ({dd_time:.1?}); ratio {:.0}%",
        mib / engine_time.as_secs_f64(),
        mib / dd_time.as_secs_f64(),
        100.0 * dd_time.as_secs_f64() / engine_time.as_secs_f64()
    );
    Ok(())
}
