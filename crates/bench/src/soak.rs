//! A long mixed load on a server of its own (`--only soak`, not in the default set; run it with
//! `scripts/soak`): `--soak-rate` cycles per second spread over [`WORKERS`] workers, each cycle
//! one create, one GET of it, and, once the worker holds [`BACKLOG`] pending calls, a long-poll
//! on its oldest call and the decision that wakes it (approvals and rejections alternated);
//! every [`LIST_EVERY`]th cycle also lists the pending calls. So the pending set stays at
//! `WORKERS × BACKLOG` while calls come and go, as on a server in use.
//!
//! Every `--soak-sample-secs` (60) it samples the server's resident set (VmRSS), its open files
//! (entries of /proc/PID/fd) and the p99 of each kind of request answered since the last
//! sample, and prints the sample as a line. It fails if, after the reference sample (minute
//! `--soak-reference-minute`, by default min(10, minutes / 3)), the RSS of any later sample
//! is more than [`GROWTH_LIMIT`] times the reference's.

use crate::client::{Conn, Target};
use crate::process::{self, Server};
use crate::stats::Samples;
use crate::{Launch, Opts, memory};
use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Concurrent workers, each with a connection for its requests and one for its long-polls.
pub const WORKERS: u64 = 16;
/// Pending calls each worker keeps before it decides its oldest.
pub const BACKLOG: usize = 50;
/// Every this many cycles a worker lists the pending calls.
pub const LIST_EVERY: u64 = 20;
/// A later sample's RSS over the reference sample's that fails the soak.
pub const GROWTH_LIMIT: f64 = 1.10;

/// Latencies (µs) and counts of one sampling interval.
#[derive(Debug, Default)]
struct Window {
    create: Vec<u32>,
    get: Vec<u32>,
    respond: Vec<u32>,
    list: Vec<u32>,
    /// Respond sent → the long-poll's answer.
    wake: Vec<u32>,
    cycles: u64,
    errors: u64,
    first_error: Option<String>,
}

/// A kind of request the workers time.
#[derive(Clone, Copy)]
enum Kind {
    Create,
    Get,
    Respond,
    List,
}

impl Window {
    fn latencies(&mut self, kind: Kind) -> &mut Vec<u32> {
        match kind {
            Kind::Create => &mut self.create,
            Kind::Get => &mut self.get,
            Kind::Respond => &mut self.respond,
            Kind::List => &mut self.list,
        }
    }

    /// Records one answer: its latency if it is a 2xx, else an error.
    fn record(&mut self, kind: Kind, sent: Instant, answer: &Result<(u16, bytes::Bytes)>) {
        match answer {
            Ok((status, _)) if (200..300).contains(status) => self.latencies(kind).push(micros(sent)),
            Ok((status, body)) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("HTTP {status}: {}", String::from_utf8_lossy(body)));
            }
            Err(err) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{err:#}"));
            }
        }
    }
}

/// One sample.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Since the load started.
    pub at: Duration,
    pub rss: u64,
    /// The anonymous part of `rss` (heap, not mapped files).
    pub rss_anon: u64,
    pub open_files: usize,
    pub cycles: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub create: Samples,
    pub get: Samples,
    pub respond: Samples,
    pub list: Samples,
    pub wake: Samples,
}

impl Sample {
    /// p99 of every request answered in the interval (long-polls aside: they wait by design).
    pub fn request_p99(&self) -> f64 {
        let all: Vec<u32> =
            [&self.create, &self.get, &self.respond, &self.list].iter().flat_map(|s| s.micros()).collect();
        Samples::from_micros(all).percentile_ms(99.0)
    }

    pub fn line(&self, index: usize, interval: Duration) -> String {
        let mut line = format!(
            "sample {index:>3} ({:>5.1} min): RSS {:>7.1} MiB (anon {:>7.1}), open files {:>4}, {:>6} cycles ({:.0}/s), \
             p99 ms: all {:.2}, create {:.2}, GET {:.2}, respond {:.2}, list {:.2}, wake {:.2}; errors {}",
            self.at.as_secs_f64() / 60.0,
            self.rss as f64 / (1 << 20) as f64,
            self.rss_anon as f64 / (1 << 20) as f64,
            self.open_files,
            self.cycles,
            self.cycles as f64 / interval.as_secs_f64(),
            self.request_p99(),
            self.create.percentile_ms(99.0),
            self.get.percentile_ms(99.0),
            self.respond.percentile_ms(99.0),
            self.list.percentile_ms(99.0),
            self.wake.percentile_ms(99.0),
            self.errors,
        );
        if let Some(err) = &self.first_error {
            line.push_str(&format!(" (first: {err})"));
        }
        line
    }
}

#[derive(Debug, Default)]
pub struct SoakResult {
    pub minutes: u64,
    pub rate: f64,
    pub interval: Duration,
    /// RSS and open files of the idle server before the load.
    pub idle_rss: u64,
    pub idle_open_files: usize,
    pub samples: Vec<Sample>,
    /// Index in `samples` of the reference sample.
    pub reference: usize,
}

impl SoakResult {
    /// The highest RSS after the reference sample over the reference's (NaN without later samples).
    pub fn growth(&self) -> f64 {
        let Some(reference) = self.samples.get(self.reference) else { return f64::NAN };
        let later = self.samples[self.reference + 1..].iter().map(|s| s.rss).max();
        later.map_or(f64::NAN, |max| max as f64 / reference.rss as f64)
    }

    pub fn failed(&self) -> bool {
        self.growth() > GROWTH_LIMIT
    }
}

/// The minute whose sample the later ones are compared to: `--soak-reference-minute`, or
/// min(10, minutes / 3).
pub fn reference_minute(opts: &Opts) -> f64 {
    opts.soak_reference_minute.unwrap_or_else(|| (opts.soak_minutes as f64 / 3.0).min(10.0))
}

pub async fn run(opts: &Opts, launch: &Launch<'_>, tmp: &Path, tag: &str) -> Result<SoakResult> {
    let interval = Duration::from_secs(opts.soak_sample_secs);
    let count = (opts.soak_minutes * 60 / opts.soak_sample_secs).max(1) as usize;
    let reference =
        ((reference_minute(opts) * 60.0 / opts.soak_sample_secs as f64).round() as usize).clamp(1, count) - 1;
    let key = launch.create_key().await?;
    let mut server = launch.serve("countersign serve [soak]", &tmp.join("server-soak.log")).await?;
    let outcome = soak(opts, &mut server, &key, tag, interval, count, reference).await;
    let stopped = server.stop().await;
    let result = outcome?;
    stopped?;
    Ok(result)
}

async fn soak(
    opts: &Opts,
    server: &mut Server,
    key: &str,
    tag: &str,
    interval: Duration,
    count: usize,
    reference: usize,
) -> Result<SoakResult> {
    let pid = server.pid().context("the server has no pid")?;
    let mut result = SoakResult {
        minutes: opts.soak_minutes,
        rate: opts.soak_rate,
        interval,
        idle_rss: memory::settled_rss(server).await?,
        idle_open_files: process::open_files(pid)?,
        reference,
        ..Default::default()
    };
    eprintln!(
        "soak: {} samples, one per {} s, {} cycles/s over {WORKERS} workers; idle server {:.1} MiB, {} open files; \
         RSS after sample {} may grow by at most {:.0} %",
        count,
        interval.as_secs(),
        opts.soak_rate,
        result.idle_rss as f64 / (1 << 20) as f64,
        result.idle_open_files,
        reference + 1,
        (GROWTH_LIMIT - 1.0) * 100.0
    );
    let target = Target::new(server.addr, Some(key))?;
    let window = Arc::new(Mutex::new(Window::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let pace = Duration::from_secs_f64(WORKERS as f64 / opts.soak_rate);
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (target, window, stop) = (target.clone(), Arc::clone(&window), Arc::clone(&stop));
        let tag = format!("soak-{tag}-{w}");
        workers.push(tokio::spawn(worker(target, tag, pace, window, stop)));
    }
    let start = Instant::now();
    for index in 0..count {
        tokio::time::sleep_until((start + interval * (index as u32 + 1)).into()).await;
        let taken = std::mem::take(&mut *window.lock().expect("window lock"));
        server.check_alive()?;
        let sample = Sample {
            at: start.elapsed(),
            rss: memory::rss(pid)?,
            rss_anon: memory::rss_anon(pid)?,
            open_files: process::open_files(pid)?,
            cycles: taken.cycles,
            errors: taken.errors,
            first_error: taken.first_error,
            create: Samples::from_micros(taken.create),
            get: Samples::from_micros(taken.get),
            respond: Samples::from_micros(taken.respond),
            list: Samples::from_micros(taken.list),
            wake: Samples::from_micros(taken.wake),
        };
        let mut line = sample.line(index + 1, interval);
        if index == reference {
            line.push_str("  <- reference");
        } else if index > reference {
            let growth = sample.rss as f64 / result.samples[reference].rss as f64;
            line.push_str(&format!("  {:+.1} % vs reference", (growth - 1.0) * 100.0));
        }
        eprintln!("{line}");
        result.samples.push(sample);
    }
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.context("soak worker panicked")??;
    }
    Ok(result)
}

fn micros(since: Instant) -> u32 {
    u32::try_from(since.elapsed().as_micros()).unwrap_or(u32::MAX)
}

/// One worker's loop until `stop`: see the module doc.
async fn worker(
    target: Target,
    tag: String,
    pace: Duration,
    window: Arc<Mutex<Window>>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut conn = Conn::connect(target.addr).await?;
    let mut poller = Some(Conn::connect(target.addr).await?);
    let mut backlog = VecDeque::with_capacity(BACKLOG + 1);
    let mut ticks = tokio::time::interval(pace);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let list = target.request("GET", "/humanlayer/v1/agent/function_calls/pending?limit=20", None);
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        ticks.tick().await;
        let record = |kind, sent, answer: &Result<(u16, bytes::Bytes)>| {
            window.lock().expect("window lock").record(kind, sent, answer);
        };
        let call_id = format!("{tag}-{seq}");
        let sent = Instant::now();
        let created = conn
            .send(&target.request("POST", "/humanlayer/v1/function_calls", Some(&crate::create_body(&call_id))))
            .await;
        record(Kind::Create, sent, &created);
        if matches!(created, Ok((200..=299, _))) {
            backlog.push_back(call_id.clone());
            let sent = Instant::now();
            let got =
                conn.send(&target.request("GET", &format!("/humanlayer/v1/function_calls/{call_id}"), None)).await;
            record(Kind::Get, sent, &got);
        }
        if backlog.len() > BACKLOG {
            let oldest = backlog.pop_front().expect("the backlog is not empty");
            let mut polling = poller.take().expect("the poller is returned each cycle");
            let poll = target.request("GET", &format!("/humanlayer/v1/function_calls/{oldest}?wait=30"), None);
            let parked = tokio::spawn(async move {
                let answer = polling.send(&poll).await;
                (polling, answer, Instant::now())
            });
            // Give the long-poll time to park before the decision that wakes it.
            tokio::time::sleep(Duration::from_millis(1)).await;
            let body = if seq.is_multiple_of(2) {
                r#"{"approved":true,"comment":"soak"}"#
            } else {
                r#"{"approved":false,"comment":"soak: not now"}"#
            };
            let path = format!("/humanlayer/v1/agent/function_calls/{oldest}/respond");
            let sent = Instant::now();
            let decided = conn.send(&target.request("POST", &path, Some(body))).await;
            record(Kind::Respond, sent, &decided);
            let (polling, answer, woken) = parked.await.context("long-poll task panicked")?;
            poller = Some(polling);
            let decided_seen = answer.as_ref().is_ok_and(|(_, body)| {
                serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.pointer("/status/approved").map(serde_json::Value::is_boolean))
                    == Some(true)
            });
            let mut w = window.lock().expect("window lock");
            if decided_seen {
                w.wake.push(u32::try_from(woken.saturating_duration_since(sent).as_micros()).unwrap_or(u32::MAX));
            } else {
                w.errors += 1;
                w.first_error.get_or_insert_with(|| match &answer {
                    Ok((status, body)) => {
                        format!("long-poll on {oldest} not decided: HTTP {status}: {}", String::from_utf8_lossy(body))
                    }
                    Err(err) => format!("long-poll on {oldest}: {err:#}"),
                });
            }
        }
        if seq.is_multiple_of(LIST_EVERY) {
            let sent = Instant::now();
            let listed = conn.send(&list).await;
            record(Kind::List, sent, &listed);
        }
        window.lock().expect("window lock").cycles += 1;
        seq += 1;
    }
    Ok(())
}
