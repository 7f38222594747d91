//! Durable timers at scale, on a server of its own, in two scenarios of N timers each:
//!
//! - **Scheduled at once**: N function calls created in one burst, each with the agent's own
//!   deadline `spec.expires_at` [`SPREAD`] after the bench sends it, so the timers fall due at the
//!   pace they were scheduled (and fire while the burst of creates still runs); lateness of each
//!   against its own deadline. This is the issue's figure: 100k scheduled at once, p99 ≤ 1 s.
//! - **Due at one instant** (the stress case): N function calls whose deadlines are all the same
//!   instant, so N expiry timers fall due together; how late each fired and how fast the server
//!   drained them. Bound by how fast the store can write N expiries, not by the timer loop.
//!
//! For the second:
//! - The due instant is [`LEAD`] after the creates start, or later if a pilot of creates (before
//!   them, same server, no deadline) says creating N would not take less than half of it (the
//!   lead is then twice the estimate plus 2 s, as the machine's pace moves); whether the
//!   creates did end before it is checked and reported.
//! - Lateness of each request = its decision's time − the due instant, both stamped by the server
//!   (the `at_us` of its `decided` event in the audit log, which is the request's
//!   `status.responded_at`): read back after the firing, in pages of 1000 from the first event
//!   after the creates. Every decision must come from the policy channel, once per request.
//! - Fire throughput = N / (last decision − due instant).
//! - While the timers fire the bench only polls a few sampled requests every 250 ms (in-memory
//!   GETs while pending), so that it takes little from the server it measures.
//! - The server logs each fired timer with its lateness once the in-memory view has it
//!   (`timer fired ... late_ms=`): those figures are read from its log too, when present.

use crate::client::{self, Conn, LoadResult, MakeRequest, Phase, Target};
use crate::stats::Samples;
use crate::{Launch, Opts, process};
use anyhow::{Context, Result, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Creates start → due instant, unless the pilot says creating takes longer.
pub const LEAD: Duration = Duration::from_secs(10);
/// Scheduled at once: each request's deadline is this long after the bench sends it.
pub const SPREAD: Duration = Duration::from_secs(5);
/// The server's timer worker looks for due timers this often (its `TICK`).
pub const SERVER_TICK: Duration = Duration::from_millis(200);
/// Requests polled while the timers fire (to know when to read the results back).
pub const SAMPLED: u64 = 64;
/// How often the sampled requests are polled.
const POLL: Duration = Duration::from_millis(250);
/// How long the firing may go without a new decision before the rest count as missing.
const STALL: Duration = Duration::from_secs(60);
/// Longest a create phase may run (it ends when its count is reached).
const PHASE_LIMIT: Duration = Duration::from_secs(1800);

/// What the timers part measured on one server: both scenarios.
#[derive(Debug, Default)]
pub struct Timers {
    /// Scheduled at once (each due [`SPREAD`] after its create).
    pub scheduled: TimerResult,
    /// All due at one instant.
    pub burst: TimerResult,
}

/// What one scenario measured.
#[derive(Debug, Default)]
pub struct TimerResult {
    /// Timers scheduled (requests created with the deadline).
    pub timers: u64,
    /// The pilot's creates (no deadline), which set the lead.
    pub pilot: LoadResult,
    /// The creates of the timed requests.
    pub creates: LoadResult,
    /// Creates start → due instant (scheduled at once: create → its deadline).
    pub lead: Duration,
    /// Creates start → last create answered.
    pub creating: Duration,
    /// Fired − due, of every decision read back (early ones count as 0).
    pub lateness: Samples,
    /// Decisions stamped before the due instant.
    pub early: u64,
    /// Distinct requests decided (read back).
    pub fired: u64,
    /// Decided events beyond one per request.
    pub duplicates: u64,
    /// Decisions not made by the policy channel (a timer).
    pub not_policy: u64,
    /// Distinct decision stamps: the batches the worker fired them in.
    pub batches: u64,
    /// Due (scheduled at once: the first deadline) → the first and the last decision stamp, in µs.
    pub first_us: i64,
    pub last_us: i64,
    /// The server's own `late_ms` of each timer it logged (after its in-memory view had it).
    pub logged: Option<Samples>,
    /// Due → the last sampled request seen decided by the bench.
    pub seen_done: Option<Duration>,
    pub first_problem: Option<String>,
}

impl TimerResult {
    /// Timers fired per second, due instant → last decision.
    pub fn rate(&self) -> f64 {
        if self.last_us <= 0 { 0.0 } else { self.fired as f64 / (self.last_us as f64 / 1e6) }
    }

    /// Whether every create was answered before the due instant.
    pub fn created_in_time(&self) -> bool {
        self.creating < self.lead
    }

    /// Due instant − last create answered, in seconds (negative when the creates overran it).
    pub fn margin_s(&self) -> f64 {
        self.lead.as_secs_f64() - self.creating.as_secs_f64()
    }

    /// Timers not fired (or not read back).
    pub fn missing(&self) -> u64 {
        self.timers.saturating_sub(self.fired)
    }

    /// Mean time between two batches' stamps, in ms (one batch's select, write and wake-ups).
    pub fn batch_interval_ms(&self) -> f64 {
        if self.batches < 2 {
            f64::NAN
        } else {
            (self.last_us - self.first_us) as f64 / 1e3 / (self.batches - 1) as f64
        }
    }
}

fn call_id(prefix: &str, k: u64) -> String {
    format!("{prefix}{k:07}")
}

fn create_body(call_id: &str, expires_at: Option<&str>) -> String {
    let deadline = expires_at.map(|at| format!(r#","expires_at":"{at}""#)).unwrap_or_default();
    format!(r#"{{"run_id":"timers","call_id":"{call_id}","spec":{{"fn":"f","kwargs":{{"x":1}}{deadline}}}}}"#)
}

/// The deadlines of created requests.
#[derive(Clone)]
enum Deadline {
    None,
    /// All the same instant (RFC 3339).
    At(String),
    /// This long after each is sent; each one's, in µs, kept by its number.
    After(Duration, Arc<Vec<std::sync::atomic::AtomicI64>>),
}

/// Creates `count` requests numbered from a shared counter (so they cover `0..count` exactly).
async fn create_all(opts: &Opts, target: &Target, prefix: &str, count: u64, deadline: Deadline) -> Result<LoadResult> {
    let next = Arc::new(AtomicU64::new(0));
    let prefix = prefix.to_owned();
    let make: MakeRequest = Arc::new(move |t: &Target, _, _| {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let expires_at = match &deadline {
            Deadline::None => None,
            Deadline::At(at) => Some(at.clone()),
            Deadline::After(after, dues) => {
                let due = Utc::now() + *after;
                if let Some(slot) = dues.get(k as usize) {
                    slot.store(due.timestamp_micros(), Ordering::Relaxed);
                }
                Some(due.to_rfc3339_opts(SecondsFormat::Micros, true))
            }
        };
        t.request(
            "POST",
            "/humanlayer/v1/function_calls",
            Some(&create_body(&call_id(&prefix, k), expires_at.as_deref())),
        )
    });
    let phase =
        Phase { connections: opts.connections, warmup: Duration::ZERO, measure: PHASE_LIMIT, max_requests: count };
    let load = client::run_load(target, phase, opts.client_threads, make).await?;
    if load.ok_total != count {
        bail!(
            "creating: {} of {count} succeeded ({} transport errors, statuses {:?}); first error: {}",
            load.ok_total,
            load.transport_errors,
            load.statuses,
            load.first_error.as_deref().unwrap_or("-")
        );
    }
    Ok(load)
}

async fn get_json(conn: &mut Conn, target: &Target, path: &str) -> Result<Value> {
    let (status, body) = conn.send(&target.request("GET", path, None)).await?;
    if !(200..300).contains(&status) {
        bail!("GET {path}: HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}

/// Runs the part on a server of its own, on the store of `launch`.
pub async fn run(opts: &Opts, launch: &Launch<'_>, marker: &str, tag: &str, log: &Path) -> Result<Timers> {
    eprintln!("{marker}creating an API key and starting a server for the timers part ...");
    let key = process::create_key(launch.bin, "timers", &launch.store, &launch.config_home).await?;
    let mut server =
        launch.serve_logging(&format!("countersign serve [{marker}timers]"), log, opts.server_log.as_deref()).await?;
    eprintln!("{marker}countersign listening on {} (timers)", server.addr);
    let outcome = async {
        let target = Target::new(server.addr, Some(&key))?;
        let scheduled = scheduled(opts, &target, marker, tag).await?;
        server.check_alive()?;
        let mut burst = measure(opts, &target, marker, tag).await?;
        server.check_alive()?;
        burst.logged = logged_lateness(log);
        Ok::<_, anyhow::Error>(Timers { scheduled, burst })
    }
    .await;
    let stopped = server.stop().await;
    let result = outcome?;
    stopped?;
    Ok(result)
}

async fn measure(opts: &Opts, target: &Target, marker: &str, tag: &str) -> Result<TimerResult> {
    let n = opts.timers;
    let mut r = TimerResult { timers: n, ..TimerResult::default() };

    let chain_before = chain_length(target).await?;
    let pilot = (n / 20).clamp(500, 5_000);
    eprintln!("{marker}countersign: pilot of {pilot} creates (no deadline) to size the lead ...");
    r.pilot = create_all(opts, target, &format!("tp-{tag}-"), pilot, Deadline::None).await?;
    let estimate = Duration::from_secs_f64(n as f64 / r.pilot.rate().max(1.0));
    r.lead = LEAD.max(estimate * 2 + Duration::from_secs(2));
    eprintln!("  {:.0} creates/s: creating {n} should take {:.1} s", r.pilot.rate(), estimate.as_secs_f64());

    let start = Instant::now();
    let due: DateTime<Utc> = Utc::now() + r.lead;
    let due_us = due.timestamp_micros();
    let expires_at = due.to_rfc3339_opts(SecondsFormat::Micros, true);
    eprintln!(
        "{marker}countersign: creating {n} requests expiring at {expires_at} ({:.1} s from now), {} connections ...",
        r.lead.as_secs_f64(),
        opts.connections
    );
    let prefix = format!("t-{tag}-");
    r.creates = create_all(opts, target, &prefix, n, Deadline::At(expires_at)).await?;
    r.creating = start.elapsed();
    if r.created_in_time() {
        eprintln!("  created in {:.2} s, {:.2} s before they fall due", r.creating.as_secs_f64(), r.margin_s());
    } else {
        eprintln!(
            "  WARNING: creating took {:.2} s, past the due instant by {:.2} s",
            r.creating.as_secs_f64(),
            -r.margin_s()
        );
    }

    // Wait for the due instant, then poll a few requests until all of them are decided.
    tokio::time::sleep(r.lead.saturating_sub(start.elapsed())).await;
    let mut conn = Conn::connect(target.addr).await?;
    eprintln!("{marker}countersign: timers due; waiting for them to fire ...");
    if wait_decided(&mut conn, target, &prefix, n).await? {
        r.seen_done = Some(start.elapsed().saturating_sub(r.lead));
    }

    // The decisions, from the audit log: after the creates' events when they all came first.
    let after = if r.created_in_time() { chain_before + pilot + n } else { 0 };
    eprintln!("{marker}countersign: reading the decisions back from the audit log ...");
    read_back(&mut conn, target, &prefix, after, &|_| due_us, &mut r).await?;
    eprintln!(
        "  {} fired: lateness p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {:.0} timers/s",
        r.fired,
        r.lateness.percentile_ms(50.0),
        r.lateness.percentile_ms(99.0),
        r.lateness.max_ms(),
        r.rate()
    );
    Ok(r)
}

/// Scheduled at once: `n` requests created in one burst, each due [`SPREAD`] after it is sent.
async fn scheduled(opts: &Opts, target: &Target, marker: &str, tag: &str) -> Result<TimerResult> {
    let n = opts.timers;
    let mut r = TimerResult { timers: n, lead: SPREAD, ..TimerResult::default() };
    let chain_before = chain_length(target).await?;
    let dues: Arc<Vec<std::sync::atomic::AtomicI64>> = Arc::new((0..n).map(|_| Default::default()).collect());
    eprintln!(
        "{marker}countersign: creating {n} requests at once, each expiring {:.0} s after it is sent, {} connections ...",
        SPREAD.as_secs_f64(),
        opts.connections
    );
    let prefix = format!("ts-{tag}-");
    let start = Instant::now();
    r.creates = create_all(opts, target, &prefix, n, Deadline::After(SPREAD, dues.clone())).await?;
    r.creating = start.elapsed();
    eprintln!(
        "  created in {:.2} s; the first fall due {:.0} s after the burst began",
        r.creating.as_secs_f64(),
        SPREAD.as_secs_f64()
    );
    tokio::time::sleep((r.creating + SPREAD).saturating_sub(start.elapsed())).await;
    let mut conn = Conn::connect(target.addr).await?;
    if wait_decided(&mut conn, target, &prefix, n).await? {
        r.seen_done = Some(start.elapsed().saturating_sub(r.creating + SPREAD));
    }
    eprintln!("{marker}countersign: reading the decisions back from the audit log ...");
    let due_of = |k: u64| dues.get(k as usize).map_or(0, |d| d.load(Ordering::Relaxed));
    read_back(&mut conn, target, &prefix, chain_before, &due_of, &mut r).await?;
    eprintln!(
        "  {} fired: lateness p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r.fired,
        r.lateness.percentile_ms(50.0),
        r.lateness.percentile_ms(99.0),
        r.lateness.max_ms(),
    );
    Ok(r)
}

/// How many events the project's audit chain has sealed now (the bench's come after them).
async fn chain_length(target: &Target) -> Result<u64> {
    let mut conn = Conn::connect(target.addr).await?;
    let page = get_json(&mut conn, target, "/humanlayer/v1/audit?limit=1").await?;
    Ok(page["head"]["count"].as_u64().unwrap_or(0))
}

/// Polls [`SAMPLED`] of the `n` requests until all are decided (true) or none is for [`STALL`].
async fn wait_decided(conn: &mut Conn, target: &Target, prefix: &str, n: u64) -> Result<bool> {
    let mut pending: BTreeSet<u64> = (0..SAMPLED.min(n)).map(|i| i * n / SAMPLED.min(n)).collect();
    let mut progress = Instant::now();
    while !pending.is_empty() && progress.elapsed() < STALL {
        tokio::time::sleep(POLL).await;
        let before = pending.len();
        for k in pending.clone() {
            let path = format!("/humanlayer/v1/function_calls/{}", call_id(prefix, k));
            let call = get_json(conn, target, &path).await?;
            if call["status"]["responded_at"].is_string() {
                pending.remove(&k);
            }
        }
        if pending.len() < before {
            progress = Instant::now();
        }
    }
    Ok(pending.is_empty())
}

/// Reads the `decided` events of the timed requests from chain position `after` on, until all
/// `r.timers` are read or none has been sealed for [`STALL`].
async fn read_back(
    conn: &mut Conn,
    target: &Target,
    prefix: &str,
    mut after: u64,
    due_of: &dyn Fn(u64) -> i64,
    r: &mut TimerResult,
) -> Result<()> {
    let mut first_due = i64::MAX;
    let mut seen = HashSet::new();
    let mut stamps = BTreeSet::new();
    let mut late_us = Vec::new();
    let mut progress = Instant::now();
    while (seen.len() as u64) < r.timers && progress.elapsed() < STALL {
        let page = get_json(conn, target, &format!("/humanlayer/v1/audit?after={after}&limit=1000")).await?;
        let events = page["events"].as_array().context("no events in the audit page")?;
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        progress = Instant::now();
        for e in events {
            after = e["seq"].as_u64().context("an event without seq")?;
            let body: Value = serde_json::from_str(e["event"].as_str().context("an event without text")?)?;
            let id = body["call_id"].as_str().unwrap_or_default();
            if body["type"] != "decided" || !id.starts_with(prefix) {
                continue;
            }
            if !seen.insert(id.to_owned()) {
                r.duplicates += 1;
                continue;
            }
            if body["actor"]["channel"] != "policy" {
                r.not_policy += 1;
                r.first_problem.get_or_insert_with(|| format!("{id} decided by {}", body["actor"]));
            }
            let at = body["at_us"].as_i64().context("an event without at_us")?;
            let number: u64 = id[prefix.len()..].parse().context("a call id without its number")?;
            let due_us = due_of(number);
            first_due = first_due.min(due_us);
            stamps.insert(at);
            let late = at - due_us;
            if late < 0 {
                r.early += 1;
                r.first_problem.get_or_insert_with(|| format!("{id} fired {} ms before it was due", -late / 1000));
            }
            late_us.push(u32::try_from(late.max(0)).unwrap_or(u32::MAX));
        }
    }
    r.fired = seen.len() as u64;
    r.batches = stamps.len() as u64;
    r.first_us = stamps.first().map_or(0, |at| at - first_due);
    r.last_us = stamps.last().map_or(0, |at| at - first_due);
    r.lateness = Samples::from_micros(late_us);
    let missing = r.missing();
    if missing > 0 {
        r.first_problem.get_or_insert_with(|| format!("{missing} timers not fired after {STALL:?} without one"));
    }
    Ok(())
}

/// The `late_ms` of each `timer fired` line of the server's log (`None` when it has none).
fn logged_lateness(log: &Path) -> Option<Samples> {
    let text = std::fs::read_to_string(log).ok()?;
    let late: Vec<Duration> = text
        .lines()
        .filter(|line| line.contains("timer fired"))
        .filter_map(|line| line.split("late_ms=").nth(1)?.split_whitespace().next()?.parse::<i64>().ok())
        .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
        .collect();
    (!late.is_empty()).then(|| Samples::from_durations(late))
}
