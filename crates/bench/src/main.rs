//! `countersign-bench`: measures a `countersign serve` it starts itself, each figure beside a
//! baseline measured in the same run on the same machine, with the ratio and the target:
//!
//! - durable creates/s over keep-alive HTTP (64 connections) vs. sequential one-commit-per-insert
//!   SQLite (sqlx, WAL, `synchronous=FULL`, same row shape, same disk), and the server's CPU
//!   (user + system) per create over the phase, which a slow disk does not move;
//! - GETs/s of one pending call (64 connections) vs. a bare axum JSON handler in its own process
//!   (this binary's hidden `bare-server` subcommand), driven by the same load generator;
//! - respond → long-poll wake latency p50/p99 (and the respond round trip) vs. a loopback TCP
//!   round trip to the bare server's echo port, paced the same way;
//! - webhook deliveries/s (N decisions, each delivered as a signed webhook to a receiver inside
//!   this process) vs. the same receiver fed N signed POSTs directly over 32 connections, and
//!   decision → webhook latency p50/p99 vs. the respond round trip plus a bare POST to the
//!   receiver (on a server of its own, so that its endpoint sees no other part's decisions);
//! - `countersign mcp gate` on calls its rules do not select (`--ask no_such_tool`): an MCP client
//!   (rmcp, stdio) calls the `echo` tool of this binary's hidden `echo-mcp` server through the gate
//!   vs. the same server spawned directly: latency p50/p99 of sequential calls, and calls/s
//!   sequential and with 16 in flight (SQLite pass only: such calls never reach Countersign);
//! - Slack (a fake Slack Web API inside this process, on a server of its own): Approve click (a
//!   signed interaction) → long-poll wake p50/p99 vs. the API respond → wake of the same kind of
//!   Slack-posted call, interleaved in the same run; and posts/s with 50 channels × 5 requests
//!   created at once vs. the pacing ideal of one post per second per channel, with the shortest
//!   gap between two posts to one channel;
//! - policies (a server of its own, two projects): creates/s and latency p50/p99 with a 50-rule
//!   policy (42 CEL conditions run, all false) vs. no policy, alternated, medians of the rounds;
//! - durable timers (a server of its own): `--timers N` requests created with the same
//!   `spec.expires_at`; lateness p50/p99/max of their expiry (decision stamp − due instant, read
//!   back from the audit log) and timers fired/s vs. the creates/s of the same requests;
//! - scale (`--only scale`, a server of its own, SQLite; see `scale.rs`): `--scale-requests`
//!   (1,000,000) pending requests of ~1 KB created in one project through the API vs. the same
//!   server's empty store, same run: RSS, start-up (spawn → listening, spawn → `/readyz` 200),
//!   GET and create p99 (goal: within 2x); on the empty store first, `--scale-waiters` (10,000)
//!   long-polls each on its own call and then all on one call (RSS per waiter, goal ≤ 4 KiB, vs.
//!   as many idle kept-alive connections on a fresh server of their own, hyper's own cost;
//!   first decision → last answer vs. deciding as many calls nobody waits on, or vs. the one
//!   respond) and `--scale-streams` (2,000) inbox event streams of one signed-in person (RSS
//!   per stream; one create → every stream told vs. the create's round trip);
//! - soak (`--only soak`, or `scripts/soak`; a server of its own; see `soak.rs`): a mixed load
//!   of creates, GETs, long-polls and decisions for `--soak-minutes` (60), sampling the server's
//!   RSS, open files and request p99 every minute; the run fails (non-zero exit) if the RSS of a
//!   sample after `--soak-reference-minute` (min(10, minutes / 3)) exceeds that minute's by 10 %.
//!
//! A run without `--only` runs every part but scale and soak.
//!
//! With `--postgres ADMIN_URL` each selected part runs again on a server using a fresh database
//! on that PostgreSQL cluster (rows marked `[pg]`): creates vs. direct 1-row transactions over 8
//! connections (sqlx), GETs vs. the same bare handler, the wake on one instance, and the
//! cross-instance wake (long-poll held on instance B, respond sent to instance A, same database)
//! vs. a LISTEN/NOTIFY round trip measured directly; the webhooks, slack, policy and timers parts
//! run on databases of their own.
//!
//! Run: `cargo build --release -p countersign -p countersign-bench` then
//! `target/release/countersign-bench [--seconds 5]
//! [--only creates,gets,wake,webhooks,gate,memory,slack,policy,timers,scale,soak] [--json]
//! [--postgres postgres://USER@127.0.0.1:PORT/postgres]`.
//! The server runs in a temporary directory under `target/` (or `--tmp-dir`), deleted afterwards
//! unless `--keep`; its stderr goes to `server.log` there (the gate's to `gate.log`, that of a
//! part's own server to `server-PART.log`, e.g. `server-slack.log`).

mod baseline;
mod client;
mod gate;
mod memory;
mod pg;
mod policy;
mod process;
mod report;
mod scale;
mod sealing;
mod slack;
mod soak;
mod stats;
mod timers;
mod waiters;
mod wake;
mod webhooks;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use client::LoadResult;
use client::{MakeRequest, Phase, Target};
use process::Server;
use report::{Backend, Report};
use stats::Samples;
use std::ffi::OsString;
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
    /// Internal: a minimal MCP server on stdio with one tool, `echo` (the gate part's downstream).
    #[command(hide = true)]
    EchoMcp,
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
    /// How long the long-poll is left parked before the respond is sent, in ms (also the pause
    /// before each decision of the webhook latency test, and between bare POSTs).
    #[arg(long, default_value_t = 5)]
    wake_delay_ms: u64,
    /// Requests decided at once in the webhook deliveries/s test [default: 1,000 per --seconds].
    #[arg(long, value_name = "N")]
    webhook_decisions: Option<u64>,
    /// MCP calls per measured phase of the gate part (sequential, then 16 in flight; each direct
    /// and through the gate), after a warm-up of a tenth as many (16 to 1,000).
    #[arg(long, default_value_t = 5_000, value_name = "N")]
    gate_calls: usize,
    /// Rounds of the slack part's latency test (each one request decided by a Slack click and
    /// one decided through the API), after 10 discarded ones.
    #[arg(long, default_value_t = 200, value_name = "N")]
    slack_rounds: usize,
    /// Rounds of the policy part, each one load phase without a policy then one with it (the
    /// medians are reported).
    #[arg(long, default_value_t = 2, value_name = "N")]
    policy_rounds: usize,
    /// Timers scheduled at once (requests created with the same deadline) in the timers part.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    timers: u64,
    /// Pending requests of about 1 KB the scale part loads into one store.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    scale_requests: u64,
    /// Concurrent long-polls of the scale part (each on a connection of its own).
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    scale_waiters: u64,
    /// Concurrent inbox event streams of the scale part (each on a connection of its own).
    #[arg(long, default_value_t = 2_000, value_name = "N")]
    scale_streams: u64,
    /// Length of the soak part's mixed load, in minutes.
    #[arg(long, default_value_t = 60, value_name = "M")]
    soak_minutes: u64,
    /// The soak's sample every later one is compared to (RSS growth ≤ 10 %), as minutes from
    /// the start [default: min(10, soak-minutes / 3)].
    #[arg(long, value_name = "MINUTE")]
    soak_reference_minute: Option<f64>,
    /// Request cycles per second of the soak (each a create, a GET, a long-poll and a decision).
    #[arg(long, default_value_t = 200.0, value_name = "N")]
    soak_rate: f64,
    /// Seconds between two soak samples.
    #[arg(long, default_value_t = 60, value_name = "S")]
    soak_sample_secs: u64,
    /// `COUNTERSIGN_LOG` of the policy and timers parts' servers (e.g. `info,sqlx=debug` to see
    /// each statement's time in their logs) [default: the server's own, `info`].
    #[arg(long, value_name = "FILTER")]
    server_log: Option<String>,
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
    /// Keep the temporary directory (data, logs) instead of deleting it, and the PostgreSQL
    /// databases of `--postgres`.
    #[arg(long)]
    keep: bool,
    /// Also run each selected part against a PostgreSQL-backed server (rows marked `[pg]`): a
    /// fresh database is created on this cluster (admin URL, loopback only; the user needs
    /// CREATEDB) and dropped afterwards unless `--keep`.
    #[arg(long, value_name = "ADMIN_URL", env = "COUNTERSIGN_BENCH_POSTGRES", hide_env_values = true)]
    postgres: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Creates,
    Gets,
    Wake,
    Webhooks,
    Gate,
    /// Server memory with 100,000 pending requests of ~1 KB (10 projects of 10,000), live and
    /// after a restart.
    Memory,
    /// The Slack channel against a fake Slack: click → wake latency and posts/s at the
    /// per-channel limit.
    Slack,
    /// Creates/s with a 50-rule policy against none, alternated on one server.
    Policy,
    /// N durable timers due at one instant: lateness of each and fired/s.
    Timers,
    /// One store with a million pending requests beside the empty store, 10,000 long-polls and
    /// 2,000 inbox streams (only with `--only`).
    Scale,
    /// A long mixed load sampled every minute; fails if RSS grows (only with `--only`).
    Soak,
}

impl Part {
    /// Whether the part runs on the shared server (the webhooks, memory and slack parts start
    /// their own).
    fn on_shared_server(self) -> bool {
        !matches!(
            self,
            Part::Webhooks | Part::Memory | Part::Slack | Part::Policy | Part::Timers | Part::Scale | Part::Soak
        )
    }

    /// Whether the part runs again in the PostgreSQL pass (the gate part does not: the calls it
    /// measures never reach the database; the scale and soak parts run on SQLite only).
    fn on_postgres(self) -> bool {
        !matches!(self, Part::Gate | Part::Memory | Part::Scale | Part::Soak)
    }

    /// Whether a run without `--only` includes the part (the scale and soak parts take many
    /// minutes and gigabytes).
    fn by_default(self) -> bool {
        !matches!(self, Part::Scale | Part::Soak)
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::BareServer) => baseline::run_bare_server(),
        Some(Cmd::EchoMcp) => gate::run_echo_server(),
        None => {
            let opts = cli.opts;
            anyhow::ensure!(opts.client_threads >= 1, "--client-threads must be at least 1");
            anyhow::ensure!(opts.connections >= 1, "--connections must be at least 1");
            anyhow::ensure!(opts.seconds > 0.0 && opts.warmup >= 0.0, "--seconds must be > 0 and --warmup >= 0");
            anyhow::ensure!(opts.webhook_decisions != Some(0), "--webhook-decisions must be at least 1");
            anyhow::ensure!(opts.gate_calls >= 1, "--gate-calls must be at least 1");
            anyhow::ensure!(opts.slack_rounds >= 1, "--slack-rounds must be at least 1");
            anyhow::ensure!(opts.policy_rounds >= 1, "--policy-rounds must be at least 1");
            anyhow::ensure!(opts.timers >= 1, "--timers must be at least 1");
            anyhow::ensure!(opts.scale_requests >= 1, "--scale-requests must be at least 1");
            anyhow::ensure!(
                opts.scale_waiters >= 1 && opts.scale_streams >= 1,
                "--scale-waiters and --scale-streams must be at least 1"
            );
            anyhow::ensure!(opts.soak_minutes >= 1, "--soak-minutes must be at least 1");
            anyhow::ensure!(opts.soak_sample_secs >= 1, "--soak-sample-secs must be at least 1");
            anyhow::ensure!(opts.soak_rate > 0.0, "--soak-rate must be > 0");
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

/// What the SQLite pass measured that the PostgreSQL pass reuses as its own baselines.
#[derive(Default)]
struct Shared {
    /// The bare axum GETs (the GET baseline is the same for both databases).
    bare_gets: Option<LoadResult>,
    /// The paced loopback TCP round trips.
    rtt: Option<Samples>,
}

/// How to start one `countersign serve` (and its `keys create`) on a given database.
struct Launch<'a> {
    bin: &'a Path,
    /// `--data-dir DIR` or `--database-url URL`.
    store: Vec<OsString>,
    config_home: PathBuf,
}

impl Launch<'_> {
    async fn create_key(&self) -> Result<String> {
        process::create_key(self.bin, "bench", &self.store, &self.config_home).await
    }

    async fn serve(&self, name: &str, log: &Path) -> Result<Server> {
        self.serve_with_env(name, log, &[]).await
    }

    /// [`Launch::serve`] with `COUNTERSIGN_LOG` set to `filter` when one is given.
    async fn serve_logging(&self, name: &str, log: &Path, filter: Option<&str>) -> Result<Server> {
        match filter {
            Some(filter) => self.serve_with_env(name, log, &[("COUNTERSIGN_LOG", filter)]).await,
            None => self.serve(name, log).await,
        }
    }

    /// [`Launch::serve`] with these variables set too (after the isolation removed the caller's).
    async fn serve_with_env(&self, name: &str, log: &Path, env: &[(&str, &str)]) -> Result<Server> {
        self.serve_within(name, log, env, process::STARTUP_TIMEOUT).await
    }

    /// [`Launch::serve_with_env`] allowing `timeout` for the listening line (a large store warms first).
    async fn serve_within(&self, name: &str, log: &Path, env: &[(&str, &str)], timeout: Duration) -> Result<Server> {
        let mut command = Command::new(self.bin);
        process::isolate(&mut command, &self.config_home);
        command.args(["serve", "--listen", "127.0.0.1:0"]).args(&self.store);
        // The webhooks part's receiver listens on loopback, which webhooks may target only so.
        command.env("COUNTERSIGN_ALLOW_PRIVATE_WEBHOOK_TARGETS", "true");
        command.envs(env.iter().copied());
        Server::start_within(name, command, log, timeout).await
    }
}

async fn bench(opts: Opts) -> Result<()> {
    let parts: Vec<Part> = if opts.only.is_empty() {
        Part::value_variants().iter().copied().filter(|p| p.by_default()).collect()
    } else {
        opts.only.clone()
    };
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

    // Checked first, so that a wrong URL fails before minutes of SQLite measurements.
    let mut cluster = match &opts.postgres {
        Some(url) => {
            let cluster = pg::Cluster::connect(url).await?;
            report.postgres(&cluster.description);
            Some(cluster)
        }
        None => None,
    };

    let bare = if parts.contains(&Part::Gets) || parts.contains(&Part::Wake) {
        eprintln!("starting the bare baseline server ...");
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("bare-server");
        Some(Server::start("bare server", command, &tmp.path().join("bare.log")).await?)
    } else {
        None
    };

    let config_home = tmp.path().join("config");
    let mut shared = Shared::default();
    let sqlite = async {
        std::fs::create_dir_all(&config_home)?;
        let launch = Launch {
            bin: &bin,
            store: vec!["--data-dir".into(), tmp.path().join("data").into()],
            config_home: config_home.clone(),
        };
        run_sqlite(&opts, &parts, &launch, &tag, tmp.path(), bare.as_ref(), &mut shared, &mut report).await
    }
    .await;
    let postgres = match cluster.as_mut() {
        Some(cluster) if sqlite.is_ok() => {
            run_postgres(&opts, &parts, &bin, &config_home, &tag, tmp.path(), cluster, &shared, &mut report).await
        }
        _ => Ok(()),
    };
    let dropped = match cluster.as_mut() {
        Some(cluster) if opts.keep => {
            if !cluster.created().is_empty() {
                eprintln!("kept the PostgreSQL databases {}", cluster.created().join(", "));
            }
            Ok(())
        }
        Some(cluster) => cluster.drop_all().await,
        None => Ok(()),
    };
    let bare_stopped = match bare {
        Some(bare) => bare.stop().await,
        None => Ok(()),
    };
    if opts.keep {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    }
    sqlite?;
    postgres?;
    dropped?;
    bare_stopped?;

    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_table());
    }
    if !report.failures().is_empty() {
        bail!("{}", report.failures().join("; "));
    }
    Ok(())
}

/// The SQLite pass: a server on a fresh data directory, every selected part.
#[allow(clippy::too_many_arguments)]
async fn run_sqlite(
    opts: &Opts,
    parts: &[Part],
    launch: &Launch<'_>,
    tag: &str,
    tmp: &Path,
    bare: Option<&Server>,
    shared: &mut Shared,
    report: &mut Report,
) -> Result<()> {
    if parts.iter().any(|p| p.on_shared_server()) {
        eprintln!("creating an API key and starting {} ...", launch.bin.display());
        let key = launch.create_key().await?;
        let mut server = launch.serve("countersign serve", &tmp.join("server.log")).await?;
        eprintln!("countersign listening on {}", server.addr);
        let outcome = run_parts(opts, parts, tag, &key, launch, &mut server, bare, tmp, shared, report).await;
        let stopped = server.stop().await;
        outcome?;
        stopped?;
    }
    if parts.contains(&Part::Webhooks) {
        let launch = Launch {
            bin: launch.bin,
            store: vec!["--data-dir".into(), tmp.join("webhooks-data").into()],
            config_home: launch.config_home.clone(),
        };
        run_webhooks(opts, &launch, Backend::Sqlite, tag, &tmp.join("server-webhooks.log"), report).await?;
    }
    if parts.contains(&Part::Memory) {
        let launch = Launch {
            bin: launch.bin,
            store: vec!["--data-dir".into(), tmp.join("memory-data").into()],
            config_home: launch.config_home.clone(),
        };
        let result = memory::run(&launch, tmp, 10, 10_000).await?;
        report.memory(&result);
    }
    if parts.contains(&Part::Scale) {
        let data = tmp.join("scale-data");
        let launch = Launch {
            bin: launch.bin,
            store: vec!["--data-dir".into(), data.clone().into()],
            config_home: launch.config_home.clone(),
        };
        let result = scale::run(opts, &launch, &data, tmp, tag).await?;
        report.scale(&result);
    }
    if parts.contains(&Part::Soak) {
        let launch = Launch {
            bin: launch.bin,
            store: vec!["--data-dir".into(), tmp.join("soak-data").into()],
            config_home: launch.config_home.clone(),
        };
        let result = soak::run(opts, &launch, tmp, tag).await?;
        report.soak(&result);
    }
    if parts.contains(&Part::Slack) {
        let launch = Launch {
            bin: launch.bin,
            store: vec!["--data-dir".into(), tmp.join("slack-data").into()],
            config_home: launch.config_home.clone(),
        };
        run_slack(opts, &launch, Backend::Sqlite, tag, &tmp.join("server-slack.log"), report).await?;
    }
    for (part, dir) in [(Part::Policy, "policy-data"), (Part::Timers, "timers-data")] {
        if parts.contains(&part) {
            let launch = Launch {
                bin: launch.bin,
                store: vec!["--data-dir".into(), tmp.join(dir).into()],
                config_home: launch.config_home.clone(),
            };
            run_own(opts, part, &launch, Backend::Sqlite, tag, tmp, report).await?;
        }
    }
    Ok(())
}

/// The policy or timers part on a server of its own (a fresh store); its log is
/// `server-[pg-]policy.log` or `server-[pg-]timers.log`.
async fn run_own(
    opts: &Opts,
    part: Part,
    launch: &Launch<'_>,
    backend: Backend,
    tag: &str,
    tmp: &Path,
    report: &mut Report,
) -> Result<()> {
    let (marker, prefix) = if backend == Backend::Postgres { ("[pg] ", "server-pg-") } else { ("", "server-") };
    match part {
        Part::Policy => {
            let result = policy::run(opts, launch, marker, tag, &tmp.join(format!("{prefix}policy.log"))).await?;
            report.policy(backend, &result);
        }
        Part::Timers => {
            let result = timers::run(opts, launch, marker, tag, &tmp.join(format!("{prefix}timers.log"))).await?;
            report.timers_scheduled(backend, &result.scheduled);
            report.timers(backend, &result.burst);
        }
        _ => bail!("{part:?} does not run on a server of its own"),
    }
    Ok(())
}

/// The slack part on a server of its own (a fresh store, connected to a fake Slack started for it).
async fn run_slack(
    opts: &Opts,
    launch: &Launch<'_>,
    backend: Backend,
    tag: &str,
    log: &Path,
    report: &mut Report,
) -> Result<()> {
    let marker = if backend == Backend::Postgres { "[pg] " } else { "" };
    let result = slack::run(opts, launch, marker, tag, log).await?;
    report.slack(backend, &result);
    Ok(())
}

/// Requests decided in the webhook deliveries/s test.
fn webhook_decisions(opts: &Opts) -> u64 {
    let by_time = (opts.seconds * 1_000.0).round().clamp(200.0, 100_000.0) as u64;
    opts.webhook_decisions.unwrap_or(by_time).min(opts.max_requests)
}

/// The webhooks part on a server of its own (a fresh store and key): the endpoint it adds would
/// otherwise receive the other parts' decisions, and their data would weigh on its outbox.
async fn run_webhooks(
    opts: &Opts,
    launch: &Launch<'_>,
    backend: Backend,
    tag: &str,
    log: &Path,
    report: &mut Report,
) -> Result<()> {
    let marker = if backend == Backend::Postgres { "[pg] " } else { "" };
    eprintln!("{marker}creating an API key and starting a server for the webhooks part ...");
    let key = launch.create_key().await?;
    let mut server = launch.serve(&format!("countersign serve [{marker}webhooks]"), log).await?;
    eprintln!("{marker}countersign listening on {} (webhooks)", server.addr);
    let outcome = async {
        let target = Target::new(server.addr, Some(&key))?;
        let result = webhooks::run(opts, &target, tag, webhook_decisions(opts)).await?;
        server.check_alive()?;
        Ok::<_, anyhow::Error>(result)
    }
    .await;
    let stopped = server.stop().await;
    let result = outcome?;
    stopped?;
    report.webhooks(backend, &result);
    Ok(())
}

fn phase_of(opts: &Opts) -> Phase {
    Phase {
        connections: opts.connections,
        warmup: secs(opts.warmup),
        measure: secs(opts.seconds),
        max_requests: opts.max_requests,
    }
}

/// Durable creates over keep-alive HTTP, each with a call id of its own.
async fn create_load(opts: &Opts, target: &Target, tag: &str) -> Result<LoadResult> {
    let tag = tag.to_owned();
    let make: MakeRequest = Arc::new(move |t: &Target, conn, seq| {
        t.request("POST", "/humanlayer/v1/function_calls", Some(&create_body(&format!("c-{tag}-{conn}-{seq}"))))
    });
    client::run_load(target, phase_of(opts), opts.client_threads, make).await
}

/// [`create_load`], and the CPU time the server used over the whole phase (warm-up included,
/// as `ok_total` is): a figure that a slow or noisy disk does not move, unlike creates/s.
async fn create_load_cpu(
    opts: &Opts,
    target: &Target,
    tag: &str,
    server: &Server,
) -> Result<(LoadResult, Option<Duration>)> {
    let pid = server.pid().context("the server has no pid")?;
    let before = memory::cpu(pid)?;
    let load = create_load(opts, target, tag).await?;
    // A server that exited meanwhile is reported by the caller's `check_alive`.
    let cpu = memory::cpu(pid).ok().map(|after| after.saturating_sub(before));
    Ok((load, cpu))
}

/// Reads back the sealing lag of the creates just made (a server without an audit log, such as
/// a binary from before it, is noted and skipped).
async fn sealing_lag(
    target: &Target,
    backend: Backend,
    base: &baseline::CommitResult,
    report: &mut Report,
) -> Result<()> {
    eprintln!("countersign: sealing lag of the last {} events ...", sealing::SAMPLE);
    match sealing::lag(target).await {
        Ok(lag) => {
            eprintln!("  p50 {:.3} ms, p99 {:.3} ms", lag.percentile_ms(50.0), lag.percentile_ms(99.0));
            report.sealing(backend, &lag, &base.latency);
        }
        Err(err) => eprintln!("  skipped: {err:#}"),
    }
    Ok(())
}

/// Creates one pending call and returns the GET of it (checked once) and its answer's length.
async fn pending_get(target: &Target, tag: &str) -> Result<(bytes::Bytes, usize)> {
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
    let request = target.request("GET", &path, None);
    let (status, body) = conn.send(&request).await?;
    anyhow::ensure!((200..300).contains(&status), "GET {path}: HTTP {status}: {}", String::from_utf8_lossy(&body));
    Ok((request, body.len()))
}

/// GETs of one pending call over keep-alive HTTP.
async fn get_load(opts: &Opts, target: &Target, request: bytes::Bytes) -> Result<LoadResult> {
    let make: MakeRequest = Arc::new(move |_: &Target, _, _| request.clone());
    client::run_load(target, phase_of(opts), opts.client_threads, make).await
}

#[allow(clippy::too_many_arguments)]
async fn run_parts(
    opts: &Opts,
    parts: &[Part],
    tag: &str,
    key: &str,
    launch: &Launch<'_>,
    server: &mut Server,
    bare: Option<&Server>,
    tmp: &Path,
    shared: &mut Shared,
    report: &mut Report,
) -> Result<()> {
    let target = Target::new(server.addr, Some(key))?;
    let phase = phase_of(opts);

    if parts.contains(&Part::Creates) {
        eprintln!("baseline: SQLite, one commit per insert ({} s + {} s warm-up) ...", opts.seconds, opts.warmup);
        let base =
            baseline::sqlite_commits(&tmp.join("baseline.db"), phase.warmup, phase.measure, opts.max_requests).await?;
        eprintln!("  {:.0} commits/s", base.rate());

        eprintln!("countersign: durable creates, {} connections ...", opts.connections);
        let (load, cpu) = create_load_cpu(opts, &target, tag, server).await?;
        server.check_alive()?;
        eprintln!("  {:.0} creates/s", load.rate());
        report.creates(Backend::Sqlite, &load, &base, cpu);
        sealing_lag(&target, Backend::Sqlite, &base, report).await?;
    }

    if parts.contains(&Part::Gets) {
        let bare = bare.expect("the bare server runs for the gets part");
        let (request, body_len) = pending_get(&target, tag).await?;

        eprintln!("baseline: bare axum JSON GET, {} connections ...", opts.connections);
        let bare_target = Target::new(bare.addr, Some(key))?;
        let base = get_load(opts, &bare_target, bare_target.request("GET", "/", None)).await?;
        eprintln!("  {:.0} req/s", base.rate());

        eprintln!("countersign: GET of one pending call, {} connections ...", opts.connections);
        let load = get_load(opts, &target, request).await?;
        server.check_alive()?;
        eprintln!("  {:.0} req/s", load.rate());
        report.gets(Backend::Sqlite, &load, &base, body_len);
        shared.bare_gets = Some(base);
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
        let wake = wake::run_wake(&target, &target, tag, opts.wake_iters, delay).await?;
        server.check_alive()?;
        report.wake(Backend::Sqlite, &wake, &rtt, &commit);
        shared.rtt = Some(rtt);
    }

    if parts.contains(&Part::Gate) {
        let calls = opts.gate_calls.min(usize::try_from(opts.max_requests).unwrap_or(usize::MAX));
        let result = gate::run(launch.bin, server.addr, key, &launch.config_home, tmp, calls).await?;
        server.check_alive()?;
        eprintln!(
            "  direct {:.0} calls/s, through the gate {:.0} calls/s (sequential)",
            result.direct.sequential_rate(),
            result.gated.sequential_rate()
        );
        report.gate(&result);
    }
    Ok(())
}

/// The PostgreSQL pass: a fresh database for the servers and one for the direct baselines, a
/// server (instance A) for every selected part, and a second instance (B) on the same database
/// for the cross-instance wake.
#[allow(clippy::too_many_arguments)]
async fn run_postgres(
    opts: &Opts,
    parts: &[Part],
    bin: &Path,
    config_home: &Path,
    tag: &str,
    tmp: &Path,
    cluster: &mut pg::Cluster,
    shared: &Shared,
    report: &mut Report,
) -> Result<()> {
    let name = format!("countersign_bench_{}", tag.replace('-', "_"));
    if parts.iter().any(|p| p.on_shared_server() && p.on_postgres()) {
        eprintln!("[pg] creating the databases {name} (server) and {name}_base (baselines) ...");
        let url = cluster.create_database(&name).await?;
        let base_url = cluster.create_database(&format!("{name}_base")).await?;
        let launch =
            Launch { bin, store: vec!["--database-url".into(), url.into()], config_home: config_home.to_owned() };
        eprintln!("[pg] creating an API key and starting {} on PostgreSQL ...", bin.display());
        let key = launch.create_key().await?;
        let mut server = launch.serve("countersign serve [pg A]", &tmp.join("server-pg-a.log")).await?;
        eprintln!("[pg] countersign listening on {} (instance A)", server.addr);
        let outcome = run_pg_parts(opts, parts, tag, &key, &launch, &mut server, &base_url, shared, tmp, report).await;
        let stopped = server.stop().await;
        outcome?;
        stopped?;
    }
    if parts.contains(&Part::Webhooks) {
        eprintln!("[pg] creating the database {name}_wh (webhooks part) ...");
        let url = cluster.create_database(&format!("{name}_wh")).await?;
        let launch =
            Launch { bin, store: vec!["--database-url".into(), url.into()], config_home: config_home.to_owned() };
        run_webhooks(opts, &launch, Backend::Postgres, tag, &tmp.join("server-pg-webhooks.log"), report).await?;
    }
    if parts.contains(&Part::Slack) {
        eprintln!("[pg] creating the database {name}_slack (slack part) ...");
        let url = cluster.create_database(&format!("{name}_slack")).await?;
        let launch =
            Launch { bin, store: vec!["--database-url".into(), url.into()], config_home: config_home.to_owned() };
        run_slack(opts, &launch, Backend::Postgres, tag, &tmp.join("server-pg-slack.log"), report).await?;
    }
    for (part, suffix) in [(Part::Policy, "policy"), (Part::Timers, "timers")] {
        if parts.contains(&part) {
            eprintln!("[pg] creating the database {name}_{suffix} ({suffix} part) ...");
            let url = cluster.create_database(&format!("{name}_{suffix}")).await?;
            let launch =
                Launch { bin, store: vec!["--database-url".into(), url.into()], config_home: config_home.to_owned() };
            run_own(opts, part, &launch, Backend::Postgres, tag, tmp, report).await?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_pg_parts(
    opts: &Opts,
    parts: &[Part],
    tag: &str,
    key: &str,
    launch: &Launch<'_>,
    server: &mut Server,
    base_url: &str,
    shared: &Shared,
    tmp: &Path,
    report: &mut Report,
) -> Result<()> {
    let target = Target::new(server.addr, Some(key))?;
    let phase = phase_of(opts);

    if parts.contains(&Part::Creates) {
        eprintln!(
            "[pg] baseline: PostgreSQL, 1-row transactions over {} connections ({} s + {} s warm-up) ...",
            pg::BASELINE_CONNECTIONS,
            opts.seconds,
            opts.warmup
        );
        let base = pg::commits(base_url, phase.warmup, phase.measure, opts.max_requests).await?;
        eprintln!("  {:.0} commits/s", base.rate());
        eprintln!("[pg] countersign: durable creates, {} connections ...", opts.connections);
        let (load, cpu) = create_load_cpu(opts, &target, tag, server).await?;
        server.check_alive()?;
        eprintln!("  {:.0} creates/s", load.rate());
        report.creates(Backend::Postgres, &load, &base, cpu);
        sealing_lag(&target, Backend::Postgres, &base, report).await?;
    }

    if parts.contains(&Part::Gets) {
        let base = shared.bare_gets.as_ref().context("the bare GET baseline was not measured")?;
        let (request, body_len) = pending_get(&target, tag).await?;
        eprintln!("[pg] countersign: GET of one pending call, {} connections ...", opts.connections);
        let load = get_load(opts, &target, request).await?;
        server.check_alive()?;
        eprintln!("  {:.0} req/s", load.rate());
        report.gets(Backend::Postgres, &load, base, body_len);
    }

    if parts.contains(&Part::Wake) {
        let rtt = shared.rtt.as_ref().context("the TCP round trips were not measured")?;
        let delay = Duration::from_millis(opts.wake_delay_ms);
        eprintln!("[pg] baseline: PostgreSQL commits ({}, one per {} ms) ...", opts.wake_iters, opts.wake_delay_ms);
        let commit = pg::paced_commits(base_url, opts.wake_iters, delay).await?;
        eprintln!("[pg] countersign: respond → long-poll wake on one instance ({} iterations) ...", opts.wake_iters);
        let wake = wake::run_wake(&target, &target, tag, opts.wake_iters, delay).await?;
        server.check_alive()?;
        report.wake(Backend::Postgres, &wake, rtt, &commit);

        eprintln!(
            "[pg] baseline: LISTEN/NOTIFY round trips ({}, one per {} ms) ...",
            opts.wake_iters, opts.wake_delay_ms
        );
        let notify = pg::notify_round_trips(base_url, opts.wake_iters, delay).await?;
        // Started only now, so that it takes no part in the single-instance figures.
        let mut second = launch.serve("countersign serve [pg B]", &tmp.join("server-pg-b.log")).await?;
        eprintln!("[pg] countersign listening on {} (instance B)", second.addr);
        let cross = async {
            let waiter = Target::new(second.addr, Some(key))?;
            eprintln!("[pg] countersign: respond on A → long-poll wake on B ({} iterations) ...", opts.wake_iters);
            let cross = wake::run_wake(&target, &waiter, &format!("x-{tag}"), opts.wake_iters, delay).await?;
            server.check_alive()?;
            second.check_alive()?;
            Ok::<_, anyhow::Error>(cross)
        }
        .await;
        let stopped = second.stop().await;
        let cross = cross?;
        stopped?;
        report.cross_wake(&cross, &notify, &commit, rtt);
    }
    Ok(())
}
