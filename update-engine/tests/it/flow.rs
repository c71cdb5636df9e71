//! Full update cycles: the engine against a local update-server on
//! 127.0.0.1:0 and a GPT disk image, then every failure path, each leaving
//! the active partition's bytes unchanged.

use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use update_engine::engine::{self, EngineSettings, Outcome};
use update_engine::gpt::{self, GptDisk, PrioAttrs};
use update_engine::status::UpdateStatus::{self, *};

use crate::common::*;

pub const IMG_LEN: usize = 2 << 20;

/// Runs one on-demand attempt on a fresh engine; returns the states it went
/// through (consecutive repeats folded) and the outcome.
pub async fn attempt(settings: EngineSettings) -> anyhow::Result<(Vec<UpdateStatus>, Outcome)> {
    let stop = CancellationToken::new();
    let (handle, task) = engine::spawn(settings, stop.clone())?;
    let mut changes = handle.subscribe();
    let mut outcomes = handle.outcomes();
    handle.attempt_update().await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), outcomes.recv()).await??;
    let mut states = vec![Idle];
    while let Ok(s) = changes.try_recv() {
        if states.last() != Some(&s.current_operation) {
            states.push(s.current_operation);
        }
    }
    assert_eq!(
        handle.status().current_operation,
        *states.last().unwrap_or(&Idle)
    );
    stop.cancel();
    task.await?;
    Ok((states, outcome))
}

fn attrs(disk: &std::path::Path, part: u32) -> anyhow::Result<PrioAttrs> {
    Ok(GptDisk::open(disk)?.attrs(part)?)
}

pub const SUCCESS_STATES: [UpdateStatus; 7] = [
    Idle,
    CheckingForUpdate,
    UpdateAvailable,
    Downloading,
    Verifying,
    Finalizing,
    UpdatedNeedReboot,
];

#[tokio::test]
async fn full_cycle_setgoodroot_next_update_and_rollback() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let old = image(1, IMG_LEN);
    let disk = make_disk(dir.path(), &old)?;
    let releases = dir.path().join("releases");
    let v2 = image(2, IMG_LEN);
    add_release(&releases, "stable", "2.0.0", &v2, "test-key.pem")?;
    let server = Server::start(&releases, None).await?;
    let root = dir.path().join("root");
    let settings = engine_settings(
        &root,
        &disk,
        PART_A,
        &server.update_url(),
        "stable",
        "1.0.0",
    )?;
    let machine = settings.machine_id.clone();

    // 1.0.0 on A → 2.0.0 into B.
    let (states, outcome) = attempt(settings.clone()).await?;
    assert_eq!(states, SUCCESS_STATES);
    assert_eq!(
        outcome,
        Outcome::Updated {
            version: "2.0.0".into(),
            partition: PART_B
        }
    );
    assert_eq!(&read_partition(&disk, PART_B)?[..IMG_LEN], &v2[..]);
    assert_eq!(&read_partition(&disk, PART_A)?[..IMG_LEN], &old[..]);
    assert_eq!(sgdisk_attrs(&disk, PART_B)?, "0012000000000000");
    assert_eq!(sgdisk_attrs(&disk, PART_A)?, "0101000000000000");
    // The server saw download started, finished and update complete.
    let status = server.status().await?;
    let m = &status.machines[&machine];
    let evs: Vec<(u32, u32)> = m
        .events
        .iter()
        .map(|e| (e.event_type, e.event_result))
        .collect();
    assert_eq!(evs, vec![(13, 1), (14, 1), (3, 1)]);
    assert_eq!(m.group, "stable");
    assert_eq!(m.version, "1.0.0");
    let prefs = update_engine::prefs::Prefs::open(&settings.prefs_dir)?;
    assert_eq!(prefs.get("previous-version").as_deref(), Some("1.0.0"));

    // Reboot into B; after the stable-boot delay the engine marks B good.
    assert_eq!(gpt::boot_attempt(&disk)?, Some(PART_B));
    let mut on_b = engine_settings(
        &root,
        &disk,
        PART_B,
        &server.update_url(),
        "stable",
        "2.0.0",
    )?;
    on_b.schedule.setgoodroot_delay = Duration::from_millis(50);
    on_b.boot_id = "boot-2".into();
    let stop = CancellationToken::new();
    let (_handle, task) = engine::spawn(on_b.clone(), stop.clone())?;
    poll("setgoodroot of B", Duration::from_secs(20), async || {
        attrs(&disk, PART_B)
            .ok()
            .filter(|a| a.successful)
            .map(|_| ())
    })
    .await?;
    stop.cancel();
    task.await?;
    assert_eq!(sgdisk_attrs(&disk, PART_B)?, "0102000000000000");
    assert_eq!(gpt::boot_attempt(&disk)?, Some(PART_B));

    // The next update (3.0.0) goes back into A.
    let v3 = image(3, IMG_LEN);
    add_release(&releases, "stable", "3.0.0", &v3, "test-key.pem")?;
    let (states, outcome) = attempt(on_b).await?;
    // Its check told the server which version ran before the last update.
    let report = server.status().await?;
    assert_eq!(
        report.machines[&machine].previous_version.as_deref(),
        Some("1.0.0")
    );
    assert_eq!(report.machines[&machine].version, "2.0.0");
    assert_eq!(states, SUCCESS_STATES);
    assert_eq!(
        outcome,
        Outcome::Updated {
            version: "3.0.0".into(),
            partition: PART_A
        }
    );
    assert_eq!(&read_partition(&disk, PART_A)?[..IMG_LEN], &v3[..]);
    assert_eq!(&read_partition(&disk, PART_B)?[..IMG_LEN], &v2[..]);
    assert_eq!(
        attrs(&disk, PART_A)?,
        PrioAttrs {
            priority: 3,
            tries: 1,
            successful: false
        }
    );

    // A fails to boot: its one try is used, then the loader rolls back to B.
    assert_eq!(gpt::boot_attempt(&disk)?, Some(PART_A));
    assert_eq!(gpt::boot_attempt(&disk)?, Some(PART_B));
    assert_eq!(gpt::boot_attempt(&disk)?, Some(PART_B));
    Ok(())
}

/// One failure-path scenario: returns the outcome after checking that the
/// engine went back to IDLE, the active partition is untouched, the GPT bits
/// are unchanged, and the error (if any) was reported to the server.
async fn failing_attempt(
    setup: impl FnOnce(&std::path::Path) -> anyhow::Result<()>,
    group: &str,
    server_url: Option<String>,
) -> anyhow::Result<(Outcome, Vec<UpdateStatus>, Option<Vec<Option<u32>>>)> {
    let dir = tempfile::tempdir()?;
    let old = image(1, IMG_LEN);
    let disk = make_disk(dir.path(), &old)?;
    let releases = dir.path().join("releases");
    setup(&releases)?;
    let server = Server::start(&releases, None).await?;
    let url = server_url.unwrap_or_else(|| server.update_url());
    let root = dir.path().join("root");
    let settings = engine_settings(&root, &disk, PART_A, &url, group, "1.0.0")?;
    let machine = settings.machine_id.clone();
    let before_a = read_partition(&disk, PART_A)?;
    let before_attrs = (attrs(&disk, PART_A)?, attrs(&disk, PART_B)?);
    let (states, outcome) = attempt(settings).await?;
    assert_eq!(states.last(), Some(&Idle));
    assert!(
        read_partition(&disk, PART_A)? == before_a,
        "active partition changed"
    );
    assert_eq!((attrs(&disk, PART_A)?, attrs(&disk, PART_B)?), before_attrs);
    let codes = server.status().await?.machines.get(&machine).map(|m| {
        m.events
            .iter()
            .filter(|e| e.event_type == 3 && e.event_result == 0)
            .map(|e| e.error_code)
            .collect()
    });
    Ok((outcome, states, codes))
}

fn code(o: &Outcome) -> Option<u32> {
    match o {
        Outcome::Failed { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn bad_sha256_is_error_10() -> anyhow::Result<()> {
    let (o, states, codes) = failing_attempt(
        |rel| {
            let p = add_release(rel, "stable", "2.0.0", &image(2, IMG_LEN), "test-key.pem")?;
            let len = std::fs::metadata(&p)?.len();
            let wrong = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"not it"));
            std::fs::write(
                p.with_file_name("meta.json"),
                format!("{{\"size\": {len}, \"sha256\": \"{wrong}\"}}"),
            )?;
            Ok(())
        },
        "stable",
        None,
    )
    .await?;
    assert_eq!(code(&o), Some(10), "{o:?}");
    assert!(states.contains(&ReportingErrorEvent) && states.contains(&Downloading));
    assert_eq!(codes, Some(vec![Some(10)]));
    Ok(())
}

#[tokio::test]
async fn wrong_signature_is_error_12() -> anyhow::Result<()> {
    let (o, _, codes) = failing_attempt(
        |rel| {
            add_release(rel, "stable", "2.0.0", &image(2, IMG_LEN), "other-key.pem")?;
            Ok(())
        },
        "stable",
        None,
    )
    .await?;
    assert_eq!(code(&o), Some(12), "{o:?}");
    assert_eq!(codes, Some(vec![Some(12)]));
    Ok(())
}

#[tokio::test]
async fn truncated_payload_is_download_incomplete() -> anyhow::Result<()> {
    let (o, _, codes) = failing_attempt(
        |rel| {
            let p = add_release(rel, "stable", "2.0.0", &image(2, IMG_LEN), "test-key.pem")?;
            let bytes = std::fs::read(&p)?;
            let sha = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&bytes));
            std::fs::write(
                p.with_file_name("meta.json"),
                format!("{{\"size\": {}, \"sha256\": \"{sha}\"}}", bytes.len()),
            )?;
            std::fs::write(&p, &bytes[..bytes.len() / 2])?;
            Ok(())
        },
        "stable",
        None,
    )
    .await?;
    assert_eq!(code(&o), Some(100), "{o:?}");
    assert_eq!(codes, Some(vec![Some(100)]));
    Ok(())
}

#[tokio::test]
async fn truncated_but_announced_payload_fails_verification() -> anyhow::Result<()> {
    // The server announces the truncated file itself: the hash matches, the
    // signature blob is missing.
    let (o, _, _) = failing_attempt(
        |rel| {
            let p = add_release(rel, "stable", "2.0.0", &image(2, IMG_LEN), "test-key.pem")?;
            let bytes = std::fs::read(&p)?;
            std::fs::write(&p, &bytes[..bytes.len() - 100])?;
            Ok(())
        },
        "stable",
        None,
    )
    .await?;
    assert_eq!(code(&o), Some(12), "{o:?}");
    Ok(())
}

#[tokio::test]
async fn server_500_is_error_2500() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/v1/update/",
        axum::routing::post(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
    );
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(s.cancelled_owned())
            .await;
    });
    let (o, states, _) = failing_attempt(
        |_| Ok(()),
        "stable",
        Some(format!("http://{addr}/v1/update/")),
    )
    .await?;
    stop.cancel();
    assert_eq!(code(&o), Some(2500), "{o:?}");
    assert_eq!(
        states,
        vec![Idle, CheckingForUpdate, ReportingErrorEvent, Idle]
    );
    Ok(())
}

#[tokio::test]
async fn unknown_group_is_error_34() -> anyhow::Result<()> {
    let (o, states, codes) = failing_attempt(
        |rel| {
            add_release(rel, "stable", "2.0.0", &image(2, 4096), "test-key.pem")?;
            Ok(())
        },
        "nosuchgroup",
        None,
    )
    .await?;
    assert_eq!(code(&o), Some(34), "{o:?}");
    assert_eq!(
        states,
        vec![Idle, CheckingForUpdate, ReportingErrorEvent, Idle]
    );
    assert_eq!(codes, Some(vec![Some(34)]));
    Ok(())
}

#[tokio::test]
async fn no_update_goes_back_to_idle_without_error() -> anyhow::Result<()> {
    let (o, states, codes) = failing_attempt(
        |rel| {
            add_release(rel, "stable", "1.0.0", &image(2, 4096), "test-key.pem")?;
            Ok(())
        },
        "stable",
        None,
    )
    .await?;
    assert_eq!(o, Outcome::NoUpdate);
    assert_eq!(states, vec![Idle, CheckingForUpdate, Idle]);
    assert_eq!(codes, Some(vec![]));
    Ok(())
}

#[tokio::test]
async fn group_switch_and_rollout_limit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let releases = dir.path().join("releases");
    add_release(
        &releases,
        "stable",
        "2.0.0",
        &image(2, 64 << 10),
        "test-key.pem",
    )?;
    add_release(
        &releases,
        "beta",
        "2.1.0",
        &image(5, 64 << 10),
        "test-key.pem",
    )?;
    let server = Server::start(
        &releases,
        Some(update_engine::server::Rollout {
            max_updates_per_period: 1,
            period: Duration::from_secs(3600),
        }),
    )
    .await?;
    let mut outcomes = Vec::new();
    for (i, group) in ["stable", "stable", "beta"].iter().enumerate() {
        let m = dir.path().join(format!("m{i}"));
        std::fs::create_dir_all(&m)?;
        let disk = make_disk(&m, b"old")?;
        let s = engine_settings(
            &m.join("root"),
            &disk,
            PART_A,
            &server.update_url(),
            group,
            "1.0.0",
        )?;
        outcomes.push(attempt(s).await?.1);
    }
    let metrics = http()?
        .get(format!("{}/metrics", server.url))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains(
            "update_server_update_checks_total{status=\"error-maxUpdatesPerPeriodLimitReached\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("update_server_update_checks_total{status=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("update_server_events_total{type=\"3\",result=\"0\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("update_server_machines 3"), "{metrics}");
    // The first machine is granted; the second is over the period's limit.
    assert!(matches!(&outcomes[0], Outcome::Updated { version, .. } if version == "2.0.0"));
    assert_eq!(code(&outcomes[1]), Some(34));
    // Also over the limit in another group, since the policy is server-wide.
    assert_eq!(code(&outcomes[2]), Some(34));

    // Changing GROUP switches the channel (no limit on this server).
    let server2 = Server::start(&releases, None).await?;
    let m = dir.path().join("switch");
    std::fs::create_dir_all(&m)?;
    let disk = make_disk(&m, b"old")?;
    let root = m.join("root");
    let s = engine_settings(&root, &disk, PART_A, &server2.update_url(), "beta", "1.0.0")?;
    let (_, o) = attempt(s).await?;
    assert!(
        matches!(&o, Outcome::Updated { version, .. } if version == "2.1.0"),
        "{o:?}"
    );
    Ok(())
}

#[tokio::test]
async fn partial_download_is_resumed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let old = image(1, IMG_LEN);
    let disk = make_disk(dir.path(), &old)?;
    let releases = dir.path().join("releases");
    let v2 = image(2, IMG_LEN);
    let payload = add_release(&releases, "stable", "2.0.0", &v2, "test-key.pem")?;
    let bytes = std::fs::read(&payload)?;
    let server = Server::start(&releases, None).await?;
    let root = dir.path().join("root");
    let settings = engine_settings(
        &root,
        &disk,
        PART_A,
        &server.update_url(),
        "stable",
        "1.0.0",
    )?;
    let prefs = update_engine::prefs::Prefs::open(&settings.prefs_dir)?;
    let partial = settings.prefs_dir.join("download/payload");
    std::fs::create_dir_all(partial.parent().unwrap_or(&settings.prefs_dir))?;
    prefs.set(
        "update-check-response-hash",
        &hex::encode(Sha256::digest(&bytes)),
    )?;

    // A wrong prefix proves the engine resumed instead of refetching: the
    // result fails the hash and the bad partial file is dropped...
    let mut bad = bytes[..bytes.len() / 2].to_vec();
    bad[100] ^= 0xff;
    std::fs::write(&partial, &bad)?;
    let (_, o) = attempt(settings.clone()).await?;
    assert_eq!(code(&o), Some(10), "{o:?}");
    assert!(!partial.exists());

    // ...and a correct prefix completes into a good update.
    std::fs::write(&partial, &bytes[..bytes.len() / 3])?;
    let (states, o) = attempt(settings).await?;
    assert_eq!(states, SUCCESS_STATES);
    assert!(matches!(o, Outcome::Updated { .. }), "{o:?}");
    assert_eq!(&read_partition(&disk, PART_B)?[..IMG_LEN], &v2[..]);
    assert_eq!(&read_partition(&disk, PART_A)?[..IMG_LEN], &old[..]);
    Ok(())
}

#[tokio::test]
async fn reset_status_returns_to_idle_and_check_is_ignored_meanwhile() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let disk = make_disk(dir.path(), &image(1, 4096))?;
    let releases = dir.path().join("releases");
    add_release(
        &releases,
        "stable",
        "2.0.0",
        &image(2, 64 << 10),
        "test-key.pem",
    )?;
    let server = Server::start(&releases, None).await?;
    let settings = engine_settings(
        &dir.path().join("root"),
        &disk,
        PART_A,
        &server.update_url(),
        "stable",
        "1.0.0",
    )?;
    let stop = CancellationToken::new();
    let (handle, task) = engine::spawn(settings, stop.clone())?;
    let mut outcomes = handle.outcomes();
    handle.attempt_update().await;
    assert!(matches!(outcomes.recv().await?, Outcome::Updated { .. }));
    assert_eq!(handle.status().current_operation, UpdatedNeedReboot);
    assert_eq!(handle.status().new_version, "2.0.0");
    assert!(handle.status().last_checked_time > 0);
    // Not IDLE: a new check is not started.
    handle.attempt_update().await;
    assert_eq!(handle.status().current_operation, UpdatedNeedReboot);
    handle.reset_status().await;
    poll("IDLE after reset", Duration::from_secs(10), async || {
        (handle.status().current_operation == Idle).then_some(())
    })
    .await?;
    // The GPT flip stays until a boot.
    assert_eq!(sgdisk_attrs(&disk, PART_B)?, "0012000000000000");
    stop.cancel();
    task.await?;
    Ok(())
}

#[tokio::test]
async fn scheduled_check_runs_without_being_asked() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let disk = make_disk(dir.path(), &image(1, 4096))?;
    let releases = dir.path().join("releases");
    let v2 = image(2, 64 << 10);
    add_release(&releases, "stable", "2.0.0", &v2, "test-key.pem")?;
    let server = Server::start(&releases, None).await?;
    let mut settings = engine_settings(
        &dir.path().join("root"),
        &disk,
        PART_A,
        &server.update_url(),
        "stable",
        "1.0.0",
    )?;
    settings.schedule.periodic = true;
    settings.schedule.first_check_delay = Duration::from_millis(10);
    settings.schedule.setgoodroot_delay = Duration::from_millis(10);
    let stop = CancellationToken::new();
    let (handle, task) = engine::spawn(settings, stop.clone())?;
    poll("a scheduled update", Duration::from_secs(30), async || {
        (handle.status().current_operation == UpdatedNeedReboot).then_some(())
    })
    .await?;
    stop.cancel();
    task.await?;
    assert_eq!(&read_partition(&disk, PART_B)?[..v2.len()], &v2[..]);
    Ok(())
}

/// A signed full payload whose second REPLACE operation points past the
/// partition: the engine writes the first operation while downloading, then
/// stops streaming; after the hash and signature check, applying the file
/// fails with error 28.
fn payload_with_bad_middle_operation(out: &std::path::Path) -> anyhow::Result<()> {
    signed_three_op_payload(out, |ops| {
        if let Some(e) = ops[1].dst_extents.first_mut() {
            e.start_block = Some(1 << 40);
        }
    })
}

/// A signed full payload of three one-block REPLACE operations (blocks
/// 0, 1, 2 with data hashes) after `tweak` has changed its operations.
fn signed_three_op_payload(
    out: &std::path::Path,
    tweak: impl FnOnce(&mut Vec<proto::chromeos_update_engine::InstallOperation>),
) -> anyhow::Result<()> {
    use proto::chromeos_update_engine::install_operation::Type as OpType;
    use proto::chromeos_update_engine::signatures::Signature;
    use proto::chromeos_update_engine::{
        DeltaArchiveManifest, Extent, InstallOperation, PartitionInfo, Signatures,
    };
    use proto::prost::Message;
    use update_engine::payload::{encode_header, sign};
    let key = sign::load_private_key(&data("test-key.pem"))?;
    let blobs: Vec<u8> = [1u8, 2, 3].iter().flat_map(|b| vec![*b; 4096]).collect();
    let op = |i: u32, block: u64| InstallOperation {
        r#type: OpType::Replace as i32,
        data_offset: Some(i * 4096),
        data_length: Some(4096),
        dst_extents: vec![Extent {
            start_block: Some(block),
            num_blocks: Some(1),
        }],
        data_sha256_hash: Some(
            Sha256::digest(&blobs[i as usize * 4096..(i as usize + 1) * 4096]).to_vec(),
        ),
        ..Default::default()
    };
    let mut ops = vec![op(0, 0), op(1, 1), op(2, 2)];
    tweak(&mut ops);
    let sig_len = |data: Vec<u8>| {
        Signatures {
            signatures: vec![Signature {
                version: Some(sign::SIGNATURE_VERSION),
                data: Some(data),
            }],
        }
        .encode_to_vec()
    };
    let manifest = DeltaArchiveManifest {
        partition_operations: ops,
        block_size: Some(4096),
        signatures_offset: Some(blobs.len() as u64),
        signatures_size: Some(sig_len(sign::sign_digest(&key, &[0u8; 32])?).len() as u64),
        new_partition_info: Some(PartitionInfo {
            size: Some(blobs.len() as u64),
            hash: Some(Sha256::digest(&blobs).to_vec()),
        }),
        ..Default::default()
    };
    let body = manifest.encode_to_vec();
    let mut bytes = encode_header(body.len() as u64).to_vec();
    bytes.extend_from_slice(&body);
    bytes.extend_from_slice(&blobs);
    let signature = sign::sign_digest(&key, &Sha256::digest(&bytes))?;
    bytes.extend_from_slice(&sig_len(signature));
    std::fs::create_dir_all(out.parent().unwrap_or(out))?;
    std::fs::write(out, &bytes)?;
    Ok(())
}

#[tokio::test]
async fn failure_in_the_middle_of_a_streamed_apply_is_error_28() -> anyhow::Result<()> {
    let (o, states, codes) = failing_attempt(
        |rel| payload_with_bad_middle_operation(&rel.join("stable/2.0.0/update.gz")),
        "stable",
        None,
    )
    .await?;
    assert_eq!(code(&o), Some(28), "{o:?}");
    assert!(
        matches!(&o, Outcome::Failed { message, .. } if message.contains("operation 1")),
        "{o:?}"
    );
    assert!(!states.contains(&Finalizing));
    assert_eq!(codes, Some(vec![Some(28)]));
    Ok(())
}

#[tokio::test]
async fn operation_data_hash_mismatch_is_error_27() -> anyhow::Result<()> {
    // Signed as it is, so only the per-operation hash can catch it.
    let (o, states, codes) = failing_attempt(
        |rel| {
            signed_three_op_payload(&rel.join("stable/2.0.0/update.gz"), |ops| {
                ops[1].data_sha256_hash = ops[2].data_sha256_hash.clone();
            })
        },
        "stable",
        None,
    )
    .await?;
    assert_eq!(code(&o), Some(27), "{o:?}");
    assert!(
        matches!(&o, Outcome::Failed { message, .. } if message.contains("operation 1")),
        "{o:?}"
    );
    assert!(!states.contains(&Finalizing));
    assert_eq!(codes, Some(vec![Some(27)]));
    Ok(())
}

#[tokio::test]
async fn download_cut_mid_apply_then_resumed_completes() -> anyhow::Result<()> {
    // The server first serves half of the payload (announcing all of it):
    // the engine has written the operations whose data arrived, fails with
    // error 100 and keeps the partial file; with the whole file served, the
    // next attempt resumes from there and completes.
    let dir = tempfile::tempdir()?;
    let old = image(1, IMG_LEN);
    let disk = make_disk(dir.path(), &old)?;
    let releases = dir.path().join("releases");
    let v2 = image(2, IMG_LEN);
    let payload = add_release(&releases, "stable", "2.0.0", &v2, "test-key.pem")?;
    let bytes = std::fs::read(&payload)?;
    let sha = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&bytes));
    std::fs::write(
        payload.with_file_name("meta.json"),
        format!("{{\"size\": {}, \"sha256\": \"{sha}\"}}", bytes.len()),
    )?;
    std::fs::write(&payload, &bytes[..bytes.len() * 2 / 3])?;
    let server = Server::start(&releases, None).await?;
    let root = dir.path().join("root");
    let settings = engine_settings(
        &root,
        &disk,
        PART_A,
        &server.update_url(),
        "stable",
        "1.0.0",
    )?;
    let before_attrs = (attrs(&disk, PART_A)?, attrs(&disk, PART_B)?);
    let (states, o) = attempt(settings.clone()).await?;
    assert_eq!(code(&o), Some(100), "{o:?}");
    assert_eq!(states.last(), Some(&Idle));
    assert_eq!(&read_partition(&disk, PART_A)?[..IMG_LEN], &old[..]);
    assert_eq!((attrs(&disk, PART_A)?, attrs(&disk, PART_B)?), before_attrs);
    let partial = settings.prefs_dir.join("download/payload");
    assert_eq!(
        std::fs::metadata(&partial)?.len(),
        (bytes.len() * 2 / 3) as u64
    );

    std::fs::write(&payload, &bytes)?;
    let (states, o) = attempt(settings).await?;
    assert_eq!(states, SUCCESS_STATES);
    assert!(matches!(o, Outcome::Updated { .. }), "{o:?}");
    assert_eq!(&read_partition(&disk, PART_B)?[..IMG_LEN], &v2[..]);
    assert_eq!(&read_partition(&disk, PART_A)?[..IMG_LEN], &old[..]);
    assert!(!partial.exists());
    Ok(())
}
