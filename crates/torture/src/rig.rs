//! What every scenario sets up and checks the same way: a project with a key and a webhook
//! endpoint pointing at the in-process receiver, the load, read-backs compared with the ledger,
//! `audit verify`, the wait for webhooks and the audit log's own count of decisions.

use crate::eventlog;
use crate::http::{Api, Stats, Target};
use crate::ledger::Tally;
use crate::load::Load;
use crate::process::Countersign;
use crate::readback::{Readback, read_all};
use crate::receiver::{self, Receiver};
use crate::report::Report;
use anyhow::Result;
use reqwest::Method;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The project every run works in.
pub const PROJECT: &str = "torture";

pub struct Rig {
    pub work: PathBuf,
    pub countersign: Countersign,
    pub receiver: Receiver,
    pub load: Load,
    pub report: Report,
    started: Instant,
}

impl Rig {
    /// Creates the project's key and webhook endpoint on the (stopped or running) store.
    pub async fn new(work: PathBuf, countersign: Countersign, report: Report) -> Result<Self> {
        let receiver = Receiver::start().await?;
        let key = countersign.create_key(PROJECT).await?;
        let secret = countersign.add_webhook(PROJECT, &receiver.url()).await?;
        receiver.set_secret(&secret)?;
        let run_id = format!("t{}", chrono::Utc::now().format("%H%M%S"));
        let load = Load::new(Api::new(&key)?, &run_id);
        Ok(Self { work, countersign, receiver, load, report, started: Instant::now() })
    }

    pub fn stats(&self) -> &Stats {
        &self.load.stats
    }

    /// Reads every request back through `targets` and compares with the ledger (settled first:
    /// call it with the load stopped). Records the tally and its problems.
    pub async fn check(&mut self, targets: &[Target], when: &str) -> (Readback, Tally) {
        self.load.ledger.lock().unwrap().settle();
        let keys = self.load.ledger.lock().unwrap().keys();
        let readback = read_all(&self.load.api, targets, keys).await;
        let mut problems = Vec::new();
        let tally = self.load.ledger.lock().unwrap().check(&readback.found, &mut problems);
        self.report.checks += 1;
        if !tally.is_clean() {
            self.report.checks_failed += 1;
            self.report.fail(format!("{when}: the read-back found losses ({} problems)", problems.len()));
            for p in problems.iter().take(5) {
                eprintln!("  {p}");
            }
        }
        let tagged = problems.into_iter().map(|p| format!("{when}: {p}")).collect();
        self.report.problems(tagged);
        self.report.tally = tally.clone();
        (readback, tally)
    }

    /// `countersign audit verify` on the store; a failure fails the run.
    pub async fn audit_verify(&mut self, when: &str) -> Result<bool> {
        let (ok, text) = self.countersign.audit_verify().await?;
        self.report.audit_verify_runs += 1;
        self.report.audit_verify_last = text.clone();
        if !ok {
            self.report.audit_verify_failures += 1;
            self.report.fail(format!("{when}: audit verify failed: {text}"));
        }
        Ok(ok)
    }

    /// Waits (at most `limit`) for every request the store holds decided to have had its
    /// completion webhook delivered, then tallies arrivals. Call with the load stopped.
    pub async fn wait_for_webhooks(&mut self, targets: &[Target], limit: Duration) {
        let (readback, _) = self.check(targets, "before the webhook wait").await;
        let decided = readback.decided();
        let started = Instant::now();
        loop {
            let arrived: std::collections::HashSet<_> = self.receiver.arrivals().into_iter().map(|a| a.key).collect();
            let missing = decided.keys().filter(|k| !arrived.contains(*k)).count();
            if missing == 0 || started.elapsed() >= limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // Late duplicates are welcome to arrive before the count.
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.report.webhook_wait_seconds = started.elapsed().as_secs_f64();
        let mut problems = Vec::new();
        let tally = receiver::tally(&decided, &self.receiver.arrivals(), &mut problems);
        let (bad, unreadable, first) = self.receiver.rejected();
        self.report.webhook_bad_signatures = bad;
        self.report.webhook_unreadable = unreadable;
        if !tally.is_clean() {
            self.report.fail(format!(
                "webhooks: {} missing, {} contradicting the store, {} unexpected",
                tally.missing, tally.contradicting, tally.unexpected
            ));
        }
        if bad > 0 || unreadable > 0 {
            self.report.fail(format!(
                "webhooks: {bad} with a bad signature, {unreadable} unreadable (first: {})",
                first.unwrap_or_default()
            ));
        }
        self.report.problems(problems.into_iter().map(|p| format!("webhooks: {p}")).collect());
        self.report.webhooks = Some(tally);
    }

    /// `audit export --jsonl`, counting `decided` events per request.
    pub async fn count_audit_log(&mut self) -> Result<()> {
        let out = self.countersign.run(&["audit", "export", "--jsonl"]).await?;
        if !out.success {
            self.report.fail(format!("audit export failed: {}", out.stderr.trim()));
            return Ok(());
        }
        let mut problems = Vec::new();
        let tally = eventlog::tally(&out.stdout, &mut problems);
        if !tally.is_clean() {
            self.report.fail(format!(
                "audit log: {} requests decided twice, {} created twice, {} unreadable lines",
                tally.requests_decided_twice, tally.requests_created_twice, tally.unreadable_lines
            ));
        }
        self.report.problems(problems);
        self.report.event_log = Some(tally);
        Ok(())
    }

    /// Fills in the counts and the verdict.
    pub fn finish(mut self) -> Report {
        self.report.seconds = self.started.elapsed().as_secs_f64();
        self.report.answers = self.load.stats.snapshot();
        self.report.work_dir = self.work.display().to_string();
        self.report.conclude();
        self.report
    }
}

/// A probe hitting `path` every `every` until stopped, its answers counted as `op`.
pub struct Probe {
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Probe {
    pub fn start(
        api: Api,
        stats: Stats,
        target: Target,
        path: &'static str,
        op: &'static str,
        every: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            while !flag.load(Ordering::SeqCst) {
                let started = stats.start();
                let reply = api.send(&target, Method::GET, path, None, Duration::from_secs(10)).await;
                let took = started.elapsed();
                stats.record(op, &reply, &started);
                tokio::time::sleep(every.saturating_sub(took)).await;
            }
        });
        Self { stop, task }
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(15), self.task).await.is_err() {
            abort.abort();
        }
    }
}

/// Waits until `ready` holds (checked every 100 ms), at most `limit`; returns how long it took.
pub async fn time_until(limit: Duration, mut ready: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if ready() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
