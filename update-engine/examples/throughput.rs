//! Benchmark: payload download + verify + write throughput of a full update
//! over loopback, against `dd` of the same image bytes to the same target.
//!
//! `cargo run --release -p update-engine --example throughput -- --size-mib 1024 --rounds 5 --key update-engine/tests/data/test-key.pem --pub update-engine/tests/data/test-key.pub.pem`
//! Needs sgdisk and dd. The image is incompressible (REPLACE operations),
//! so the numbers measure the I/O pipeline, not bzip2.
//!
//! Like with like: the target partition is written once during the set-up
//! (a file's never-written blocks cost an allocation, on this VM about 3x
//! the time of an overwrite), the server's payload hashes come from a
//! `meta.json` written during the set-up (hashing the payload for the Omaha
//! response is server work), `sync` runs before each timed step, and the
//! engine and `dd` alternate, round by round, in both orders.

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
    workdir: Option<PathBuf>,
    rounds: u32,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        size_mib: 1024,
        key: "update-engine/tests/data/test-key.pem".into(),
        public: "update-engine/tests/data/test-key.pub.pem".into(),
        dir: None,
        workdir: None,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--size-mib" => args.size_mib = value.parse()?,
            "--key" => args.key = value.into(),
            "--pub" => args.public = value.into(),
            "--dir" => args.dir = Some(value.into()),
            "--rounds" => args.rounds = value.parse()?,
            "--workdir" => args.workdir = Some(value.into()),
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

/// CPU time (user + system) of this process and of its waited-for
/// children so far, from /proc/self/stat (clock ticks of 10 ms).
fn cpu_times() -> anyhow::Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').context("/proc/self/stat")?.1;
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    ensure!(f.len() == 4, "/proc/self/stat: {rest}");
    let tick = |t: u64| Duration::from_millis(t * 10);
    Ok((tick(f[0] + f[1]), tick(f[2] + f[3])))
}

/// `dd` of the image to the partition, as the reference: same bytes, same
/// target, durable at the end.
fn dd(image: &Path, disk: &Path, offset: u64) -> anyhow::Result<(Duration, Duration)> {
    run(&mut Command::new("sync"))?;
    let cpu = cpu_times()?.1;
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
        .arg(format!("seek={offset}")))?;
    let time = t.elapsed();
    Ok((time, cpu_times()?.1.saturating_sub(cpu)))
}

/// One update from AttemptUpdate to NEED_REBOOT with a fresh prefs
/// directory; prints when each status was first published. Returns the
/// time and the CPU time of the process meanwhile (engine and server).
async fn engine_round(
    dir: &Path,
    round: u32,
    url: &str,
    disk: &Path,
    public: &Path,
) -> anyhow::Result<(Duration, Duration)> {
    let root = dir.join(format!("root-{round}"));
    let config = ConfigPaths::under(&root);
    for f in &config.files {
        std::fs::create_dir_all(f.parent().context("config path")?)?;
    }
    std::fs::write(&config.files[0], format!("GROUP=stable\nSERVER={url}\n"))?;
    std::fs::write(&config.files[2], "COREOS_RELEASE_VERSION=1.0.0\n")?;
    let settings = EngineSettings {
        config,
        prefs_dir: root.join("prefs"),
        disk: disk.to_owned(),
        active_partition: 3,
        public_key: public.to_owned(),
        machine_id: "bench".into(),
        boot_id: "bench".into(),
        oem: String::new(),
        schedule: Schedule {
            periodic: false,
            setgoodroot_delay: Duration::from_secs(3600),
            ..Schedule::default()
        },
    };
    let stop = CancellationToken::new();
    // The previous step's dirty pages must not throttle the timed writes.
    run(&mut Command::new("sync"))?;
    let (handle, task) = engine::spawn(settings, stop.clone())?;
    let mut outcomes = handle.outcomes();
    let mut changes = handle.subscribe();
    let cpu = cpu_times()?.0;
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
    let cpu = cpu_times()?.0.saturating_sub(cpu);
    for (name, at) in collector.await? {
        eprintln!("  {at:>10.3?}  {name}");
    }
    ensure!(matches!(outcome, Outcome::Updated { .. }), "{outcome:?}");
    stop.cancel();
    let _ = task.await;
    let _ = std::fs::remove_dir_all(&root);
    Ok((engine_time, cpu))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let args = parse_args()?;
    // --workdir keeps the image, disk and payload for the next run (payload
    // creation takes minutes at 1 GiB); a size change starts over.
    let tmp;
    let dir = match &args.workdir {
        Some(w) => w.as_path(),
        None => {
            tmp = match &args.dir {
                Some(d) => tempfile::tempdir_in(d)?,
                None => tempfile::tempdir()?,
            };
            tmp.path()
        }
    };
    let image = dir.join("usr.img");
    let disk = dir.join("disk.img");
    let release = dir.join("releases/stable/2.0.0");
    let payload = release.join("update.gz");
    let size = args.size_mib << 20;
    let reuse = std::fs::metadata(&image).is_ok_and(|m| m.len() == size)
        && release.join("meta.json").exists()
        && disk.exists();
    if !reuse {
        std::fs::create_dir_all(&release)?;
        make_image(&image, args.size_mib)?;
        make_disk(&disk, args.size_mib + 1)?;
        let key = update_engine::payload::sign::load_private_key(&args.key)?;
        let t = Instant::now();
        update_engine::payload::create::create_full_payload(&image, &key, &payload)?;
        eprintln!("payload created in {:.1?}", t.elapsed());
        write_meta(&payload)?;
    }
    let extent = GptDisk::open(&disk)?.extent(4)?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/update/", listener.local_addr()?);
    let stop = CancellationToken::new();
    let server = ServerSettings {
        releases: dir.join("releases"),
        base_url: None,
        rollout: None,
    };
    tokio::spawn(update_engine::server::run(server, listener, stop.clone()));

    // Untimed: the target's blocks get allocated once, so every timed
    // step overwrites written blocks, as on a real partition.
    dd(&image, &disk, extent.offset)?;

    let mib = args.size_mib as f64;
    let mut ratios = Vec::new();
    for round in 0..args.rounds {
        let ((e, e_cpu), (d, d_cpu)) = if round % 2 == 0 {
            let e = engine_round(dir, round, &url, &disk, &args.public).await?;
            (e, dd(&image, &disk, extent.offset)?)
        } else {
            let d = dd(&image, &disk, extent.offset)?;
            (
                engine_round(dir, round, &url, &disk, &args.public).await?,
                d,
            )
        };
        let ratio = 100.0 * d.as_secs_f64() / e.as_secs_f64();
        ratios.push(ratio);
        println!(
            "round {round}: update_engine: {:.1} MiB/s ({e:.2?}, cpu {e_cpu:.2?}); dd: {:.1} MiB/s ({d:.2?}, cpu {d_cpu:.2?}); ratio {ratio:.0}%",
            mib / e.as_secs_f64(),
            mib / d.as_secs_f64(),
        );
    }
    ratios.sort_by(f64::total_cmp);
    if let Some(median) = ratios.get(ratios.len() / 2) {
        println!(
            "ratio (dd time / engine time) median {median:.0}%, range {:.0}-{:.0}%",
            ratios[0],
            ratios[ratios.len() - 1]
        );
    }
    stop.cancel();
    Ok(())
}

/// The server's Omaha hashes, computed outside the timed window.
fn write_meta(payload: &Path) -> anyhow::Result<()> {
    use base64::Engine as _;
    use sha2::Digest;
    let bytes = std::fs::read(payload)?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let meta = serde_json::json!({
        "size": bytes.len(),
        "sha256": b64.encode(sha2::Sha256::digest(&bytes)),
        "sha1": b64.encode(sha1::Sha1::digest(&bytes)),
    });
    std::fs::write(payload.with_file_name("meta.json"), meta.to_string())?;
    Ok(())
}
