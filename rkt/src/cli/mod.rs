//! The `rkt` command set: clap definitions and one function per verb (image verbs in `image`).

pub mod image;
pub mod run_args;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, IoContext, Result};
use crate::pod::gc::{GcOptions, gc, remove};
use crate::pod::prepare::{prepare, trees_for};
use crate::pod::status::{list_rows, pod_json, status_lines, tabwrite};
use crate::pod::{Pod, PodState, Pods};
use crate::timefmt::parse_duration;

/// Default `--dir`.
pub const DEFAULT_DIR: &str = "/var/lib/rkt";

#[derive(Debug, Parser)]
#[command(
    name = "rkt",
    about = "rkt, the pod-native container engine (OCI images)",
    disable_version_flag = true
)]
pub struct Cli {
    /// rkt data directory
    #[arg(long, global = true, default_value = DEFAULT_DIR, env = "RKT_DIR")]
    pub dir: PathBuf,
    /// print out more debug information to stderr
    #[arg(long, global = true)]
    pub debug: bool,
    /// local configuration directory (network configurations in its net.d)
    #[arg(long, global = true, default_value = "/etc/rkt")]
    pub local_config: PathBuf,
    /// comma-separated list of security features to disable (accepted for compatibility; no image is signed)
    #[arg(long, global = true, default_value = "none")]
    pub insecure_options: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run image(s) in a pod: `rkt run [flags] IMAGE [app flags] [-- args] [--- IMAGE ...]`
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Prepare a pod to be run later with run-prepared; prints its UUID
    Prepare {
        /// suppress the UUID output
        #[arg(long)]
        quiet: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run a prepared pod
    RunPrepared {
        uuid: String,
        /// run the pod interactively (accepted: stdin is passed only if the pod was prepared with it)
        #[arg(long)]
        interactive: bool,
    },
    /// Fetch image(s) into the store; prints their ids
    Fetch(FetchArgs),
    /// Operate on images in the store
    #[command(subcommand)]
    Image(ImageCommand),
    /// List pods
    List {
        #[arg(long)]
        full: bool,
        #[arg(long)]
        no_legend: bool,
        /// json or json-pretty
        #[arg(long)]
        format: Option<String>,
    },
    /// Check the status of a pod
    Status {
        uuid: Option<String>,
        #[arg(long)]
        uuid_file: Option<PathBuf>,
        /// wait for the pod to exit (optionally at most this long, e.g. 30s)
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "")]
        wait: Option<String>,
        #[arg(long)]
        format: Option<String>,
    },
    /// Stop pods
    Stop {
        uuids: Vec<String>,
        /// kill the pod (SIGKILL) instead of asking its apps to terminate
        #[arg(long)]
        force: bool,
        #[arg(long)]
        uuid_file: Option<PathBuf>,
    },
    /// Remove pods now
    Rm {
        uuids: Vec<String>,
        #[arg(long)]
        uuid_file: Option<PathBuf>,
    },
    /// Garbage collect pods
    Gc {
        #[arg(long, default_value = "30m")]
        grace_period: String,
        #[arg(long, default_value = "24h")]
        expire_prepared: String,
        #[arg(long)]
        mark_only: bool,
    },
    /// Print a pod's manifest
    CatManifest {
        uuid: String,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        pretty_print: bool,
    },
    /// Execute a command in a running pod's app (default /bin/sh)
    Enter {
        #[arg(long)]
        app: Option<String>,
        uuid: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Print the version
    Version,
    /// Serve the read-only gRPC API (v1alpha.PublicAPI)
    ApiService {
        /// address to listen on
        #[arg(long, default_value = crate::api::DEFAULT_LISTEN)]
        listen: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// print the full image id
    #[arg(long)]
    pub full: bool,
    /// accepted for compatibility: local transports are always read
    #[arg(long)]
    pub pull_policy: Option<String>,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Fetch image(s) into the store
    Fetch(FetchArgs),
    /// List images in the store
    List {
        /// comma-separated: id,name,importtime,lastused,size,latest
        #[arg(long, default_value = "id,name,size,importtime,lastused")]
        fields: String,
        #[arg(long, default_value = "importtime")]
        sort: String,
        #[arg(long, default_value = "asc")]
        order: String,
        #[arg(long)]
        full: bool,
        #[arg(long)]
        no_legend: bool,
    },
    /// Remove images
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove unused images, blobs and rendered trees
    Gc {
        #[arg(long, default_value = "24h")]
        grace_period: String,
    },
    /// Export an image as an OCI archive
    Export {
        image: String,
        file: PathBuf,
        #[arg(long)]
        overwrite: bool,
    },
    /// Unpack an image's layers into a directory
    Extract {
        #[arg(long)]
        rootfs_only: bool,
        #[arg(long)]
        overwrite: bool,
        image: String,
        #[arg(value_name = "DIR")]
        target: PathBuf,
    },
    /// Render an image's tree (from the tree cache) into a directory
    Render {
        #[arg(long)]
        rootfs_only: bool,
        #[arg(long)]
        overwrite: bool,
        image: String,
        #[arg(value_name = "DIR")]
        target: PathBuf,
    },
    /// Print an image's manifest
    CatManifest {
        #[arg(long)]
        pretty_print: bool,
        image: String,
    },
}

impl Command {
    /// The verb, for error messages (`run: ...`).
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Run { .. } => "run",
            Command::Prepare { .. } => "prepare",
            Command::RunPrepared { .. } => "run-prepared",
            Command::Fetch(_) => "fetch",
            Command::Image(_) => "image",
            Command::List { .. } => "list",
            Command::Status { .. } => "status",
            Command::Stop { .. } => "stop",
            Command::Rm { .. } => "rm",
            Command::Gc { .. } => "gc",
            Command::CatManifest { .. } => "cat-manifest",
            Command::Enter { .. } => "enter",
            Command::Version => "version",
            Command::ApiService { .. } => "api-service",
        }
    }
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    let dir = cli.dir.clone();
    match cli.command {
        Command::Run { args } => cmd_run(&dir, &cli.local_config, &args),
        Command::Prepare { quiet, args } => cmd_prepare(&dir, &cli.local_config, &args, quiet),
        Command::RunPrepared { uuid, .. } => cmd_run_prepared(&dir, &uuid),
        Command::Fetch(a) | Command::Image(ImageCommand::Fetch(a)) => image::fetch(&dir, &a),
        Command::Image(c) => image::run(&dir, c),
        Command::List {
            full,
            no_legend,
            format,
        } => cmd_list(&dir, full, no_legend, format.as_deref()),
        Command::Status {
            uuid,
            uuid_file,
            wait,
            format,
        } => cmd_status(
            &dir,
            uuid.as_deref(),
            uuid_file.as_deref(),
            wait.as_deref(),
            format.as_deref(),
        ),
        Command::Stop {
            uuids,
            force,
            uuid_file,
        } => cmd_stop(&dir, &uuids, force, uuid_file.as_deref()),
        Command::Rm { uuids, uuid_file } => cmd_rm(&dir, &uuids, uuid_file.as_deref()),
        Command::Gc {
            grace_period,
            expire_prepared,
            mark_only,
        } => {
            let opts = GcOptions {
                grace_period: duration("grace-period", &grace_period)?,
                expire_prepared: duration("expire-prepared", &expire_prepared)?,
                mark_only,
            };
            for m in gc(&Pods::open(&dir)?, &opts)? {
                println!("{m}");
            }
            Ok(0)
        }
        Command::CatManifest { uuid, pretty_print } => {
            let pod = Pods::open(&dir)?.find(&uuid)?;
            let bytes = pod.manifest_bytes()?;
            print_json(&bytes, pretty_print)?;
            Ok(0)
        }
        Command::Enter { app, uuid, cmd } => {
            let pod = Pods::open(&dir)?.find(&uuid)?;
            crate::stage1::enter::enter(&pod, app.as_deref(), &cmd)
        }
        Command::ApiService { listen } => api_service(
            crate::api::Settings {
                dir,
                local_config: cli.local_config.clone(),
            },
            &listen,
        ),
        Command::Version => {
            println!("rkt Version: {}", env!("CARGO_PKG_VERSION"));
            println!("OCI image-spec Version: 1.1.0");
            println!("OCI runtime-spec Version: 1.1.0");
            println!("Rust OS/Arch: linux/{}", std::env::consts::ARCH);
            println!("Features: -TPM -SDJOURNAL +STAGE1-BUILTIN");
            Ok(0)
        }
    }
}

/// Binds `listen` and serves the API until SIGINT or SIGTERM.
fn api_service(settings: crate::api::Settings, listen: &str) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .ctx("starting the async runtime", "tokio")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .ctx("listening on", listen.to_string())?;
        let addr = listener
            .local_addr()
            .ctx("listening on", listen.to_string())?;
        println!("api-service: listening on {addr}");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .ctx("installing", "SIGTERM handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        crate::api::serve(settings, listener, shutdown).await?;
        Ok(0)
    })
}

pub(crate) fn print_json(bytes: &[u8], pretty: bool) -> Result<()> {
    let v: serde_json::Value = crate::error::from_json(bytes, "manifest")?;
    let s = if pretty {
        serde_json::to_string_pretty(&v)
    } else {
        serde_json::to_string(&v)
    }
    .map_err(|source| Error::Json {
        what: "manifest".into(),
        source,
    })?;
    println!("{s}");
    Ok(())
}

pub(crate) fn duration(flag: &str, s: &str) -> Result<Duration> {
    parse_duration(s).ok_or_else(|| Error::Usage(format!("--{flag}: cannot parse duration {s:?}")))
}

fn parse_run(
    dir: &Path,
    local_config: &Path,
    args: &[String],
) -> Result<(PathBuf, run_args::RunArgs)> {
    let mut parsed = run_args::parse(
        &[
            vec![format!("--local-config={}", local_config.display())],
            args.to_vec(),
        ]
        .concat(),
    )?;
    if parsed.pod.net_conf_dir.as_os_str().is_empty() {
        parsed.pod.net_conf_dir = local_config.join("net.d");
    }
    let dir = parsed.dir.clone().unwrap_or_else(|| dir.to_path_buf());
    Ok((dir, parsed))
}

fn save_uuid(path: Option<&Path>, uuid: &str) -> Result<()> {
    if let Some(p) = path {
        std::fs::write(p, uuid).ctx("writing uuid file", p)?;
    }
    Ok(())
}

fn cmd_run(dir: &Path, local_config: &Path, args: &[String]) -> Result<i32> {
    let (dir, parsed) = parse_run(dir, local_config, args)?;
    let prepared = prepare(&dir, &parsed.pod)?;
    save_uuid(parsed.uuid_file_save.as_deref(), &prepared.pod.uuid)?;
    let mut pod = prepared.pod;
    prepared.pods.rename(&mut pod, "run", PodState::Running)?;
    crate::stage1::run(&pod, prepared.lock, &prepared.manifest, prepared.trees)
}

fn cmd_prepare(dir: &Path, local_config: &Path, args: &[String], quiet: bool) -> Result<i32> {
    let (dir, parsed) = parse_run(dir, local_config, args)?;
    let prepared = prepare(&dir, &parsed.pod)?;
    save_uuid(parsed.uuid_file_save.as_deref(), &prepared.pod.uuid)?;
    let mut pod = prepared.pod;
    prepared
        .pods
        .rename(&mut pod, "prepared", PodState::Prepared)?;
    drop(prepared.lock);
    if !quiet {
        println!("{}", pod.uuid);
    }
    Ok(0)
}

fn cmd_run_prepared(dir: &Path, uuid: &str) -> Result<i32> {
    let pods = Pods::open(dir)?;
    let mut pod = pods.find(uuid)?;
    if pod.state != PodState::Prepared {
        return Err(Error::PodState {
            uuid: pod.uuid.clone(),
            state: pod.state.as_str().into(),
            why: "only a prepared pod can be run".into(),
        });
    }
    let lock =
        crate::lock::try_lock(&pod.dir, crate::lock::LockMode::Exclusive)?.ok_or_else(|| {
            Error::PodState {
                uuid: pod.uuid.clone(),
                state: pod.state.as_str().into(),
                why: "it is locked by another process".into(),
            }
        })?;
    let manifest = pod.manifest()?;
    let trees = trees_for(dir, &manifest)?;
    pods.rename(&mut pod, "run", PodState::Running)?;
    crate::stage1::run(&pod, lock, &manifest, trees)
}

fn cmd_list(dir: &Path, full: bool, no_legend: bool, format: Option<&str>) -> Result<i32> {
    let mut pods = Pods::open(dir)?.all()?;
    pods.sort_by_key(|p| (p.created().unwrap_or(0), p.uuid.clone()));
    match format {
        None | Some("") => {
            print!("{}", tabwrite(&list_rows(&pods, full, no_legend)?));
        }
        Some(f @ ("json" | "json-pretty")) => {
            let v: Vec<_> = pods.iter().map(pod_json).collect();
            let s = if f == "json" {
                serde_json::to_string(&v)
            } else {
                serde_json::to_string_pretty(&v)
            }
            .map_err(|source| Error::Json {
                what: "pod list".into(),
                source,
            })?;
            println!("{s}");
        }
        Some(other) => return Err(Error::Usage(format!("--format: unknown format {other:?}"))),
    }
    Ok(0)
}

fn find_pod(pods: &Pods, uuid: Option<&str>, uuid_file: Option<&Path>) -> Result<Pod> {
    match (uuid, uuid_file) {
        (Some(u), None) => pods.find(u),
        (None, Some(f)) => pods.find_from_file(f),
        _ => Err(Error::Usage(
            "give exactly one of UUID or --uuid-file".into(),
        )),
    }
}

fn cmd_status(
    dir: &Path,
    uuid: Option<&str>,
    uuid_file: Option<&Path>,
    wait: Option<&str>,
    format: Option<&str>,
) -> Result<i32> {
    let pods = Pods::open(dir)?;
    let mut pod = find_pod(&pods, uuid, uuid_file)?;
    if let Some(w) = wait {
        let deadline = if w.is_empty() {
            None
        } else {
            Some(Instant::now() + duration("wait", w)?)
        };
        while !pod.is_finished() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::PodState {
                    uuid: pod.uuid.clone(),
                    state: pod.state.as_str().into(),
                    why: "it did not exit within --wait".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
            pod = pods.find(&pod.uuid)?;
        }
    }
    match format {
        None | Some("") => {
            let mut out = std::io::stdout().lock();
            for l in status_lines(&pod) {
                writeln!(out, "{l}").ctx("writing", "stdout")?;
            }
        }
        Some(f @ ("json" | "json-pretty")) => {
            let v = pod_json(&pod);
            let s = if f == "json" {
                serde_json::to_string(&v)
            } else {
                serde_json::to_string_pretty(&v)
            }
            .map_err(|source| Error::Json {
                what: "pod status".into(),
                source,
            })?;
            println!("{s}");
        }
        Some(other) => return Err(Error::Usage(format!("--format: unknown format {other:?}"))),
    }
    Ok(0)
}

fn collect(pods: &Pods, uuids: &[String], uuid_file: Option<&Path>) -> Result<Vec<Pod>> {
    let mut out = Vec::new();
    if let Some(f) = uuid_file {
        out.push(pods.find_from_file(f)?);
    }
    for u in uuids {
        out.push(pods.find(u)?);
    }
    if out.is_empty() {
        return Err(Error::Usage("no pod given".into()));
    }
    Ok(out)
}

fn cmd_stop(dir: &Path, uuids: &[String], force: bool, uuid_file: Option<&Path>) -> Result<i32> {
    let pods = Pods::open(dir)?;
    let mut failed = false;
    for pod in collect(&pods, uuids, uuid_file)? {
        if pod.state != PodState::Running {
            eprintln!("stop: pod {:?} is not running", pod.uuid);
            failed = true;
            continue;
        }
        let Some(pid) = pod.pid() else {
            eprintln!("stop: pod {:?} has no pid yet", pod.uuid);
            failed = true;
            continue;
        };
        let sig = if force {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        match kill(Pid::from_raw(pid), sig) {
            Ok(()) => println!("{:?}", pod.uuid),
            Err(e) => {
                eprintln!("stop: signalling pod {:?}: {e}", pod.uuid);
                failed = true;
            }
        }
    }
    Ok(if failed { 254 } else { 0 })
}

fn cmd_rm(dir: &Path, uuids: &[String], uuid_file: Option<&Path>) -> Result<i32> {
    let pods = Pods::open(dir)?;
    let mut failed = false;
    for pod in collect(&pods, uuids, uuid_file)? {
        let uuid = pod.uuid.clone();
        match remove(&pods, pod) {
            Ok(()) => println!("{uuid:?}"),
            Err(e) => {
                eprintln!("rm: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 254 } else { 0 })
}
