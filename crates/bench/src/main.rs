//! `countersign-bench`: measures a `countersign serve` it starts itself, each figure beside a
//! baseline measured in the same run on the same machine, with the ratio and the target:
//!
//! - durable creates/s over keep-alive HTTP (64 connections) vs. sequential one-commit-per-insert
//!   SQLite (sqlx, WAL, `synchronous=FULL`, same row shape, same disk);
//! - GETs/s of one pending call (64 connections) vs. a bare axum JSON handler in its own process
//!   (this binary's hidden `bare-server` subcommand), driven by the same load generator;
//! - respond → long-poll wake latency p50/p99 (and the respond round trip) vs. a loopback TCP
//!   round trip to the bare server's echo port, paced the same way.
//!
//! Run: `cargo build --release -p countersign -p countersign-bench` then
//! `target/release/countersign-bench [--seconds 5] [--only creates,gets,wake] [--json]`.
//! The server runs in a temporary directory under `target/` (or `--tmp-dir`), deleted afterwards
//! unless `--keep`; its stderr goes to `server.log` there.

mod baseline;
mod client;
mod process;
mod report;
mod stats;
mod wake;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use client::{MakeRequest, Phase, Target};
use process::Server;
use report::Report;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;

#[derive(Parser)]
#[command(name = "countersign-bench", version, about = "Benchmarks a countersign server against same-run baselines.")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand)]
enum Cmd {
    /// Internal: the bare axum JSON server and TCP echo server used as baselines.
    #[command(hide = true)]
    BareServer,
}

#[derive(Args, Clone, Debug)]
struct Opts {
    /// The countersign binary [default: target/release/countersign under the workspace root].
    #[arg(long = "bin", value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Length of each measured load window, in seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Warm-up before each measured window, in seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent keep-alive connections for the load phases.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Most requests one load phase may send (warm-up included); ends the phase early if reached.
    #[arg(long, default_value_t = 2_000_000)]
    max_requests: u64,
    /// Load-generator threads (each a single-threaded runtime with its share of the connections).
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Respond → wake samples (plus 10 discarded warm-up iterations).
    #[arg(long, default_value_t = 500)]
    wake_iters: usize,
    /// How long the long-poll is left parked before the respond is sent, in ms.
    #[arg(long, default_value_t = 5)]
    wake_delay_ms: u64,
    /// Run only these parts (repeatable or comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Print the results as JSON instead of a table (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Parent of the temporary directory that holds the server's data dir and the baseline
    /// database (must be on the disk under test) [default: the workspace's target/].
    #[arg(long, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,
    /// Keep the temporary directory (data, logs) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Creates,
    Gets,
    Wake,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::BareServer) => baseline::run_bare_server(),
        None => {
            let opts = cli.opts;
            anyhow::ensure!(opts.client_threads >= 1, "--client-threads must be at least 1");
            anyhow::ensure!(opts.connections >= 1, "--connections must be at least 1");
            anyhow::ensure!(opts.seconds > 0.0 && opts.warmup >= 0.0, "--seconds must be > 0 and --warmup >= 0");
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(opts.client_threads).enable_all().build()?;
            runtime.block_on(bench(opts))
        }
    }
}

/// The create body every part sends (the TypeScript client's minimal shape).
pub fn create_body(call_id: &str) -> String {
    format!(r#"{{"run_id":"r","call_id":"{call_id}","spec":{{"fn":"f","kwargs":{{"x":1}}}}}}"#)
}

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn default_bin() -> PathBuf {
    let candidates = [workspace_root().join("target/release/countersign"), PathBuf::from("target/release/countersign")];
    candidates.iter().find(|p| p.is_file()).unwrap_or(&candidates[0]).clone()
}

fn default_tmp_parent() -> PathBuf {
    let target = workspace_root().join("target");
    if target.is_dir() { target } else { std::env::temp_dir() }
}

/// The filesystem type holding `path` (longest matching mount point in /proc/mounts).
fn filesystem_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, mount_point, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount_point).then(|| (mount_point.len(), fs_type.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

async fn bench(opts: Opts) -> Result<()> {
    let parts: Vec<Part> =
        if opts.only.is_empty() { vec![Part::Creates, Part::Gets, Part::Wake] } else { opts.only.clone() };
    let bin = opts.bin.clone().unwrap_or_else(default_bin);
    if !bin.is_file() {
        bail!(
            "no countersign binary at {} (build it with `cargo build --release -p countersign`, or pass --bin)",
            bin.display()
        );
    }
    let bin = bin.canonicalize()?;
    let parent = opts.tmp_dir.clone().unwrap_or_else(default_tmp_parent);
    let tmp = tempfile::Builder::new()
        .prefix("countersign-bench-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    let fs = filesystem_of(tmp.path()).unwrap_or_else(|| "unknown".into());
    if matches!(fs.as_str(), "tmpfs" | "ramfs") {
        eprintln!(
            "warning: {} is on {fs}: fsync is free there, so durable figures mean nothing; pass --tmp-dir on a real disk",
            tmp.path().display()
        );
    }
    let tag = format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp_millis());

    let mut report = Report::new(&opts, &bin, tmp.path(), &fs);

    let bare = if parts.contains(&Part::Gets) || parts.contains(&Part::Wake) {
        eprintln!("starting the bare baseline server ...");
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("bare-server");
        Some(Server::start("bare server", command, &tmp.path().join("bare.log")).await?)
    } else {
        None
    };

    eprintln!("creating an API key and starting {} ...", bin.display());
    let data_dir = tmp.path().join("data");
    let config_home = tmp.path().join("config");
    std::fs::create_dir_all(&config_home)?;
    let started = async {
        let key = process::create_key(&bin, "bench", &data_dir, &config_home).await?;
        let mut command = Command::new(&bin);
        process::isolate(&mut command, &config_home);
        command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data_dir);
        let server = Server::start("countersign serve", command, &tmp.path().join("server.log")).await?;
        Ok::<_, anyhow::Error>((key, server))
    };
    let (key, mut server) = match started.await {
        Ok(v) => v,
        Err(err) => {
            if let Some(bare) = bare {
                let _ = bare.stop().await;
            }
            return Err(err);
        }
    };
    eprintln!("countersign listening on {}", server.addr);

    let outcome = run_parts(&opts, &parts, &tag, &key, &mut server, bare.as_ref(), tmp.path(), &mut report).await;

    let stopped = server.stop().await;
    if let Some(bare) = bare {
        bare.stop().await?;
    }
    if opts.keep {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    }
    outcome?;
    stopped?;

    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_parts(
    opts: &Opts,
    parts: &[Part],
    tag: &str,
    key: &str,
    server: &mut Server,
    bare: Option<&Server>,
    tmp: &Path,
    report: &mut Report,
) -> Result<()> {
    let target = Target::new(server.addr, Some(key))?;
    let phase = Phase {
        connections: opts.connections,
        warmup: secs(opts.warmup),
        measure: secs(opts.seconds),
        max_requests: opts.max_requests,
    };

    if parts.contains(&Part::Creates) {
        eprintln!("baseline: SQLite, one commit per insert ({} s + {} s warm-up) ...", opts.seconds, opts.warmup);
        let base =
            baseline::sqlite_commits(&tmp.join("baseline.db"), phase.warmup, phase.measure, opts.max_requests).await?;
        eprintln!("  {:.0} commits/s", base.rate());

        eprintln!("countersign: durable creates, {} connections ...", opts.connections);
        let tag = tag.to_owned();
        let make: MakeRequest = Arc::new(move |t: &Target, conn, seq| {
            t.request("POST", "/humanlayer/v1/function_calls", Some(&create_body(&format!("c-{tag}-{conn}-{seq}"))))
        });
        let load = client::run_load(&target, phase, opts.client_threads, make).await?;
        server.check_alive()?;
        eprintln!("  {:.0} creates/s", load.rate());
        report.creates(&load, &base);
    }

    if parts.contains(&Part::Gets) {
        let bare = bare.expect("the bare server runs for the gets part");
        let call_id = format!("get-{tag}");
        let mut conn = client::Conn::connect(target.addr).await?;
        let (status, body) =
            conn.send(&target.request("POST", "/humanlayer/v1/function_calls", Some(&create_body(&call_id)))).await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "create {call_id}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let path = format!("/humanlayer/v1/function_calls/{call_id}");
        let (status, body) = conn.send(&target.request("GET", &path, None)).await?;
        anyhow::ensure!((200..300).contains(&status), "GET {path}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        let sample_body = String::from_utf8_lossy(&body).into_owned();
        drop(conn);

        eprintln!("baseline: bare axum JSON GET, {} connections ...", opts.connections);
        let bare_target = Target::new(bare.addr, Some(key))?;
        let request = bare_target.request("GET", "/", None);
        let make: MakeRequest = Arc::new(move |_: &Target, _, _| request.clone());
        let base = client::run_load(&bare_target, phase, opts.client_threads, make).await?;
        eprintln!("  {:.0} req/s", base.rate());

        eprintln!("countersign: GET of one pending call, {} connections ...", opts.connections);
        let request = target.request("GET", &path, None);
        let make: MakeRequest = Arc::new(move |_: &Target, _, _| request.clone());
        let load = client::run_load(&target, phase, opts.client_threads, make).await?;
        server.check_alive()?;
        eprintln!("  {:.0} req/s", load.rate());
        report.gets(&load, &base, sample_body.len());
    }

    if parts.contains(&Part::Wake) {
        let bare = bare.expect("the bare server runs for the wake part");
        let echo = bare
            .preamble
            .iter()
            .find_map(|line| line.trim().strip_prefix(process::ECHO_PREFIX))
            .context("the bare server printed no echo address")?
            .parse()?;
        let delay = Duration::from_millis(opts.wake_delay_ms);
        eprintln!("baseline: loopback TCP round trips ({}, one per {} ms) ...", opts.wake_iters, opts.wake_delay_ms);
        let rtt = baseline::tcp_round_trips(echo, opts.wake_iters, delay).await?;
        eprintln!("baseline: durable SQLite commits ({}, one per {} ms) ...", opts.wake_iters, opts.wake_delay_ms);
        let commit = baseline::paced_commits(&tmp.join("paced.db"), opts.wake_iters, delay).await?;
        eprintln!("countersign: respond → long-poll wake ({} iterations) ...", opts.wake_iters);
        let wake = wake::run_wake(&target, tag, opts.wake_iters, delay).await?;
        server.check_alive()?;
        report.wake(&wake, &rtt, &commit);
    }
    Ok(())
}
