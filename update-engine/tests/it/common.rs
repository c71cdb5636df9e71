//! Shared fixtures: GPT disk images made with sgdisk, filesystem images,
//! keys, a local update-server, and engine settings pointing at them.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio_util::sync::CancellationToken;
use update_engine::config::ConfigPaths;
use update_engine::engine::EngineSettings;
use update_engine::gpt::{GptDisk, USR_PARTITION_TYPE};
use update_engine::schedule::Schedule;
use update_engine::server::{Rollout, ServerSettings};

pub const PART_A: u32 = 3;
pub const PART_B: u32 = 4;

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A 64 MiB GPT image laid out like a CoreOS disk (spec recipe): USR-A is
/// partition 3, USR-B partition 4, 16 MiB each. A holds `old` and is the
/// good slot (priority 1, successful); B is empty with all bits clear.
pub fn make_disk(dir: &Path, old: &[u8]) -> anyhow::Result<PathBuf> {
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)?.set_len(64 << 20)?;
    let usr = USR_PARTITION_TYPE.to_string();
    run(Command::new("sgdisk")
        .args([
            "-o",
            "-n",
            "1:2048:+8M",
            "-t",
            "1:EF00",
            "-c",
            "1:EFI-SYSTEM",
        ])
        .args(["-n", "2:0:+1M", "-t", "2:EF02", "-c", "2:BIOS-BOOT"])
        .args(["-n", "3:0:+16M", "-t", &format!("3:{usr}"), "-c", "3:USR-A"])
        .args(["-n", "4:0:+16M", "-t", &format!("4:{usr}"), "-c", "4:USR-B"])
        .args([
            "-n",
            "9:0:0",
            "-t",
            "9:3884dd41-8582-4404-b9a8-e9b84f2df50e",
            "-c",
            "9:ROOT",
        ])
        .arg(&disk))?;
    run(Command::new("sgdisk")
        .args(["-A", "3:=:0101000000000000", "-A", "4:=:0"])
        .arg(&disk))?;
    write_partition(&disk, PART_A, old)?;
    Ok(disk)
}

pub fn write_partition(disk: &Path, part: u32, bytes: &[u8]) -> anyhow::Result<()> {
    let extent = GptDisk::open(disk)?.extent(part)?;
    let mut f = std::fs::OpenOptions::new().write(true).open(disk)?;
    f.seek(SeekFrom::Start(extent.offset))?;
    f.write_all(bytes)?;
    Ok(())
}

/// The whole partition's bytes.
pub fn read_partition(disk: &Path, part: u32) -> anyhow::Result<Vec<u8>> {
    let extent = GptDisk::open(disk)?.extent(part)?;
    let mut f = std::fs::File::open(disk)?;
    f.seek(SeekFrom::Start(extent.offset))?;
    let mut buf = vec![0u8; extent.len as usize];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// sgdisk's view of a partition's attribute word, e.g. `0012000000000000`.
pub fn sgdisk_attrs(disk: &Path, part: u32) -> anyhow::Result<String> {
    let out = run(Command::new("sgdisk")
        .arg("-i")
        .arg(part.to_string())
        .arg(disk))?;
    out.lines()
        .find_map(|l| l.strip_prefix("Attribute flags: "))
        .map(|s| s.trim().to_owned())
        .context("no attribute flags in sgdisk -i output")
}

/// A deterministic filesystem-like image: random-looking, zero and text
/// regions, so both REPLACE and REPLACE_BZ operations appear.
pub fn image(seed: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    while out.len() < len {
        let region = out.len() / (1 << 20);
        match region % 3 {
            0 => {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                out.push(x as u8);
            }
            1 => out.push(0),
            _ => out.extend_from_slice(format!("version {seed} line {}\n", out.len()).as_bytes()),
        }
    }
    out.truncate(len);
    out
}

/// Writes a signed payload of `img` to `<releases>/<group>/<version>/update.gz`.
pub fn add_release(
    releases: &Path,
    group: &str,
    version: &str,
    img: &[u8],
    key: &str,
) -> anyhow::Result<PathBuf> {
    let dir = releases.join(group).join(version);
    std::fs::create_dir_all(&dir)?;
    let image_path = dir.join("image.bin");
    std::fs::write(&image_path, img)?;
    let key = update_engine::payload::sign::load_private_key(&data(key))?;
    let payload = dir.join("update.gz");
    update_engine::payload::create::create_full_payload(&image_path, &key, &payload)?;
    std::fs::remove_file(&image_path)?;
    Ok(payload)
}

/// A running in-process update-server.
pub struct Server {
    pub url: String,
    pub shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    pub async fn start(releases: &Path, rollout: Option<Rollout>) -> anyhow::Result<Server> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let settings = ServerSettings {
            releases: releases.to_owned(),
            base_url: None,
            rollout,
        };
        tokio::spawn(update_engine::server::run(
            settings,
            listener,
            shutdown.clone(),
        ));
        Ok(Server { url, shutdown })
    }

    pub fn update_url(&self) -> String {
        format!("{}/v1/update/", self.url)
    }

    pub async fn status(&self) -> anyhow::Result<update_engine::server::StatusReport> {
        Ok(http()?
            .get(format!("{}/v1/status", self.url))
            .send()
            .await?
            .json()
            .await?)
    }
}

/// A reqwest client with the crypto provider installed.
pub fn http() -> anyhow::Result<reqwest::Client> {
    update_engine::engine::http_client().map_err(anyhow::Error::msg)
}

/// Writes update.conf and release files under `root` and returns settings
/// for an engine that only checks when asked.
pub fn engine_settings(
    root: &Path,
    disk: &Path,
    active: u32,
    server: &str,
    group: &str,
    version: &str,
) -> anyhow::Result<EngineSettings> {
    let config = ConfigPaths::under(root);
    for f in &config.files {
        if let Some(p) = f.parent() {
            std::fs::create_dir_all(p)?;
        }
    }
    std::fs::write(
        &config.files[0],
        format!("GROUP={group}\nSERVER={server}\n"),
    )?;
    std::fs::write(
        &config.files[2],
        format!("COREOS_RELEASE_VERSION={version}\nCOREOS_RELEASE_BOARD=amd64-usr\n"),
    )?;
    Ok(EngineSettings {
        config,
        prefs_dir: root.join("var/lib/update_engine/prefs"),
        disk: disk.to_owned(),
        active_partition: active,
        public_key: data("test-key.pub.pem"),
        machine_id: format!("machine-{}", root.display()).replace('/', "-"),
        boot_id: "boot-1".into(),
        oem: String::new(),
        schedule: Schedule {
            periodic: false,
            setgoodroot_delay: Duration::from_secs(3600),
            ..Schedule::default()
        },
    })
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub async fn poll<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
