//! `countersign-torture`: the fault suite of issue 16. It drives a real `countersign serve` on
//! loopback under mixed load while it is killed, while its PostgreSQL is stopped or paused, and
//! while its disk is full, then checks that nothing acknowledged was lost or decided twice.

mod disk_full;
mod eventlog;
mod http;
mod kill;
mod ledger;
mod load;
mod pg_faults;
mod postgres;
mod process;
mod readback;
mod receiver;
mod report;
mod request;
mod rig;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const AFTER_HELP: &str = "\
Every run prints its figures at the end (acknowledged, found, lost; webhooks expected, arrived,
duplicates, missing; audit verify) and exits 1 when anything acknowledged was lost, decided twice,
or the scenario's expectation failed (2 for a run that could not start). Server logs and data stay
in the work directory it prints.

Examples:
  scripts/torture kill                                   # 100 SIGKILL cycles on SQLite
  scripts/torture kill --backend postgres --database-url postgres://countersign@127.0.0.1:54341/postgres --cycles 30
  scripts/torture pg-faults --database-url postgres://countersign@127.0.0.1:54341/postgres --pg-data-dir /tmp/torture-pg
  scripts/torture disk-full --fs ext4 --size-mb 48       # needs root (mount)";

#[derive(Debug, Parser)]
#[command(name = "countersign-torture", version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct Common {
    /// The countersign binary under test [default: `countersign` next to this binary]
    #[arg(long, global = true, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Where the run's work directory (data, logs) is made
    #[arg(long, global = true, value_name = "DIR", default_value = "/tmp")]
    work_dir: PathBuf,
    /// Print the final figures as JSON (progress still goes to stderr)
    #[arg(long, global = true)]
    json: bool,
    /// Concurrent load workers
    #[arg(long, global = true, default_value_t = 16)]
    workers: usize,
    /// Operations per second over all workers (0: unpaced)
    #[arg(long, global = true, default_value_t = 600.0)]
    rate: f64,
    /// Concurrent long-polls
    #[arg(long, global = true, default_value_t = 8)]
    long_polls: usize,
    /// Longest wait for every decided request's webhook at the end, in seconds
    #[arg(long, global = true, default_value_t = 120)]
    webhook_wait: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// SIGKILL the server at a random moment of mixed load, restart it on the same store, and
    /// check every acknowledged create and decision after every restart.
    Kill(KillArgs),
    /// Stop and start PostgreSQL, then pause it with SIGSTOP, under load: 503s while it is
    /// down, recovery without restarting Countersign, nothing acknowledged lost.
    PgFaults(PgFaultsArgs),
    /// Fill the SQLite data directory's filesystem under load: writes refused with a JSON 503,
    /// reads still served, recovery once space is back, `audit verify` and `PRAGMA
    /// integrity_check` clean.
    DiskFull(DiskFullArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Args)]
struct KillArgs {
    /// Kill/restart cycles
    #[arg(long, default_value_t = 100)]
    cycles: u32,
    /// sqlite: one server on a fresh data directory; postgres: two instances on a fresh database
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// Admin URL of a loopback PostgreSQL whose user may CREATE DATABASE (with --backend postgres)
    #[arg(long, value_name = "ADMIN_URL", required_if_eq("backend", "postgres"))]
    database_url: Option<String>,
    /// Shortest load before a kill, in milliseconds
    #[arg(long, default_value_t = 300)]
    min_load_ms: u64,
    /// Longest load before a kill, in milliseconds
    #[arg(long, default_value_t = 2000)]
    max_load_ms: u64,
    /// Read every request back after every Nth restart (always after the last)
    #[arg(long, default_value_t = 1)]
    check_every: u32,
    /// Keep the PostgreSQL database even when the run passes
    #[arg(long)]
    keep_db: bool,
}

#[derive(Debug, Args)]
struct PgFaultsArgs {
    /// Admin URL of the loopback PostgreSQL cluster (its user may CREATE DATABASE)
    #[arg(long, value_name = "ADMIN_URL")]
    database_url: String,
    /// The cluster's data directory (it is stopped, started and paused; run as `postgres` when root)
    #[arg(long, value_name = "DIR")]
    pg_data_dir: PathBuf,
    /// Directory of pg_ctl [default: the newest /usr/lib/postgresql/*/bin]
    #[arg(long, value_name = "DIR")]
    pg_bin: Option<PathBuf>,
    /// Countersign instances on the database
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=2))]
    instances: u32,
    /// How long PostgreSQL stays stopped, in seconds
    #[arg(long, default_value_t = 8)]
    down_secs: u64,
    /// How long PostgreSQL stays paused (SIGSTOP), in seconds
    #[arg(long, default_value_t = 10)]
    pause_secs: u64,
    /// Keep the database even when the run passes
    #[arg(long)]
    keep_db: bool,
}

/// Which filesystem holds the data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Filesystem {
    /// A loop-mounted ext4 image (a real block filesystem: journal, fsync, block allocation)
    Ext4,
    /// tmpfs (memory: no fsync, pages allocated on write)
    Tmpfs,
}

#[derive(Debug, Args)]
struct DiskFullArgs {
    /// The small filesystem to fill
    #[arg(long, value_enum, default_value_t = Filesystem::Ext4)]
    fs: Filesystem,
    /// Its size in MiB
    #[arg(long, default_value_t = 48)]
    size_mb: u64,
    /// How long the load runs against the full disk, in seconds
    #[arg(long, default_value_t = 10)]
    full_secs: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Built together with countersign, reqwest gets its `rustls-no-provider` feature and wants a
    // process-wide provider (we talk plain HTTP on loopback, but the client is built with TLS).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("countersign-torture: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the subcommand; `Ok(false)` when the run found a problem.
async fn run(cli: Cli) -> Result<bool> {
    let common = &cli.common;
    let bin = match &common.bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?.with_file_name("countersign"),
    };
    if !bin.is_file() {
        bail!(
            "no countersign binary at {} (build it with `cargo build --release -p countersign`, or pass --bin)",
            bin.display()
        );
    }
    let bin = bin.canonicalize()?;
    let load = load::LoadConfig {
        workers: common.workers.max(1),
        rate: common.rate,
        long_polls: common.long_polls,
        long_poll_wait: 2,
        timeout: Duration::from_secs(20),
    };
    let webhook_wait = Duration::from_secs(common.webhook_wait);
    let report = match cli.command {
        Command::Kill(args) => {
            anyhow::ensure!(args.min_load_ms <= args.max_load_ms, "--min-load-ms is above --max-load-ms");
            let plan = kill::KillPlan {
                cycles: args.cycles,
                min_load: Duration::from_millis(args.min_load_ms),
                max_load: Duration::from_millis(args.max_load_ms),
                load,
                webhook_wait,
                check_every: args.check_every,
            };
            let url = match args.backend {
                Backend::Sqlite => None,
                Backend::Postgres => args.database_url.as_deref(),
            };
            let tag = if url.is_some() { "kill-pg" } else { "kill-sqlite" };
            let work = work_dir(&common.work_dir, tag)?;
            kill::run(bin, work, url, &plan, args.keep_db).await?
        }
        Command::PgFaults(args) => {
            let work = work_dir(&common.work_dir, "pg-faults")?;
            let plan = pg_faults::PgFaultsPlan {
                admin_url: args.database_url,
                cluster: postgres::Cluster::new(&args.pg_data_dir, args.pg_bin.as_deref())?,
                instances: args.instances as usize,
                down: Duration::from_secs(args.down_secs),
                pause: Duration::from_secs(args.pause_secs),
                load: pg_faults::slow_tolerant(load),
                webhook_wait,
                keep_db: args.keep_db,
            };
            pg_faults::run(bin, work, &plan).await?
        }
        Command::DiskFull(args) => {
            let work = work_dir(&common.work_dir, "disk-full")?;
            let plan = disk_full::DiskFullPlan {
                fs: args.fs,
                size_mb: args.size_mb,
                full: Duration::from_secs(args.full_secs),
                load: pg_faults::slow_tolerant(load),
                webhook_wait,
            };
            disk_full::run(bin, work, &plan).await?
        }
    };
    if common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(report.passed)
}

/// A new `countersign-torture-TAG-TIME` directory under `parent`, kept after the run.
fn work_dir(parent: &Path, tag: &str) -> Result<PathBuf> {
    let dir = parent.join(format!("countersign-torture-{tag}-{}", chrono::Utc::now().format("%Y%m%d-%H%M%S")));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("work directory: {}", dir.display());
    Ok(dir)
}
