//! The results: a table for people, JSON for machines.

use crate::Opts;
use crate::baseline::CommitResult;
use crate::client::LoadResult;
use crate::gate::{self, GateResult, Side};
use crate::memory::MemoryResult;
use crate::policy::{self, PolicyResult};
use crate::scale::{ScaleResult, StoreFigures};
use crate::slack::{self, Decided, SlackResult};
use crate::soak::{self, SoakResult};
use crate::stats::Samples;
use crate::timers::{self, TimerResult};
use crate::waiters::PollResult;
use crate::wake::WakeResult;
use crate::webhooks::{self, Tally, WebhookResult};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub enum Unit {
    PerSec,
    Ms,
    Count,
    /// Bytes, shown in MiB.
    Bytes,
}

#[derive(Debug, Clone, Copy)]
pub enum Goal {
    /// The figure itself must reach this.
    AtLeast(f64),
    /// The figure must be at most this.
    AtMost(f64),
    /// figure / baseline must reach this.
    RatioAtLeast(f64),
    /// figure / baseline must be at most this.
    RatioAtMost(f64),
    None,
}

/// The database behind the server a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// `key` as this backend's JSON key (`pg_` prefix on PostgreSQL).
    fn key(self, key: &str) -> String {
        match self {
            Backend::Sqlite => key.to_owned(),
            Backend::Postgres => format!("pg_{key}"),
        }
    }

    /// `figure` as shown in the table (`[pg]` marker on PostgreSQL).
    fn figure(self, figure: &str) -> String {
        match self {
            Backend::Sqlite => figure.to_owned(),
            Backend::Postgres => format!("[pg] {figure}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    key: String,
    figure: String,
    value: f64,
    unit: Unit,
    baseline_name: String,
    baseline: f64,
    goal: Goal,
    percent: bool,
    backend: Backend,
    /// Where the row goes: rows sort by this (stably), so each PostgreSQL row follows its SQLite one.
    order: u32,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.value / self.baseline
    }

    fn met(&self) -> Option<bool> {
        match self.goal {
            Goal::AtLeast(x) => Some(self.value >= x),
            Goal::AtMost(x) => Some(self.value <= x),
            Goal::RatioAtLeast(x) => Some(self.ratio() >= x),
            Goal::RatioAtMost(x) => Some(self.ratio() <= x),
            Goal::None => None,
        }
    }

    fn goal_text(&self) -> String {
        match self.goal {
            Goal::AtLeast(x) => format!(">= {}", fmt_value(x, self.unit)),
            Goal::AtMost(x) => format!("<= {}", fmt_value(x, self.unit)),
            Goal::RatioAtLeast(x) => format!(">= {:.0} % of baseline", x * 100.0),
            Goal::RatioAtMost(x) => format!("<= {x}x baseline"),
            Goal::None => "-".into(),
        }
    }

    fn ratio_text(&self) -> String {
        let r = self.ratio();
        if !r.is_finite() {
            "-".into()
        } else if self.percent {
            format!("{:.1} %", r * 100.0)
        } else {
            format!("{r:.2}x")
        }
    }
}

fn fmt_value(v: f64, unit: Unit) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    match unit {
        Unit::PerSec => format!("{} /s", thousands(v.round() as u64)),
        Unit::Ms => format!("{v:.3} ms"),
        Unit::Count => thousands(v.round() as u64),
        Unit::Bytes => format!("{:.1} MiB", v / (1 << 20) as f64),
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

fn latency_json(s: &Samples) -> Value {
    json!({"samples": s.len(), "p50_ms": s.percentile_ms(50.0), "p99_ms": s.percentile_ms(99.0), "max_ms": s.max_ms()})
}

fn load_json(r: &LoadResult) -> Value {
    let latency = Samples::from_micros(r.latencies_us.clone());
    json!({
        "rate_per_s": r.rate(),
        "ok_in_window": r.ok_in_window,
        "window_s": r.window.as_secs_f64(),
        "ok_total": r.ok_total,
        "non_2xx": r.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "transport_errors": r.transport_errors,
        "first_error": r.first_error,
        "capped_by_max_requests": r.capped,
        "latency": latency_json(&latency),
    })
}

fn load_text(name: &str, r: &LoadResult) -> String {
    let latency = Samples::from_micros(r.latencies_us.clone());
    let mut text = format!(
        "{name}: {} ok in a {:.2} s window ({} in all), latency p50 {:.3} ms, p99 {:.3} ms",
        thousands(r.ok_in_window),
        r.window.as_secs_f64(),
        thousands(r.ok_total),
        latency.percentile_ms(50.0),
        latency.percentile_ms(99.0)
    );
    if r.capped {
        text.push_str(", ended early by --max-requests");
    }
    if r.failures() > 0 {
        let statuses: Vec<String> = r.statuses.iter().map(|(s, n)| format!("{n} x HTTP {s}")).collect();
        let _ = write!(
            text,
            "\n  FAILURES: {} transport errors; {}; first: {}",
            r.transport_errors,
            if statuses.is_empty() { "no non-2xx".into() } else { statuses.join(", ") },
            r.first_error.as_deref().unwrap_or("-")
        );
    }
    text
}

pub struct Report {
    header: Value,
    rows: Vec<Row>,
    details: serde_json::Map<String, Value>,
    notes: Vec<String>,
    /// Checks that fail the run (a non-zero exit once the report is printed).
    failures: Vec<String>,
}

impl Report {
    pub fn new(opts: &Opts, bin: &Path, tmp: &Path, fs: &str) -> Self {
        let nproc = std::thread::available_parallelism().map_or(0, usize::from);
        let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned()))
        });
        let header = json!({
            "date": chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            "nproc": nproc,
            "cpu": cpu,
            "server_bin": bin.display().to_string(),
            "tmp_dir": tmp.display().to_string(),
            "tmp_fs": fs,
            "connections": opts.connections,
            "client_threads": opts.client_threads,
            "warmup_s": opts.warmup,
            "measure_s": opts.seconds,
            "max_requests": opts.max_requests,
            "wake_iters": opts.wake_iters,
            "wake_delay_ms": opts.wake_delay_ms,
            "gate_calls": opts.gate_calls,
            "slack_rounds": opts.slack_rounds,
            "policy_rounds": opts.policy_rounds,
            "timers": opts.timers,
            "scale_requests": opts.scale_requests,
            "scale_waiters": opts.scale_waiters,
            "scale_streams": opts.scale_streams,
        });
        Self { header, rows: Vec::new(), details: serde_json::Map::new(), notes: Vec::new(), failures: Vec::new() }
    }

    /// Notes the PostgreSQL cluster the `[pg]` rows ran on.
    pub fn postgres(&mut self, description: &str) {
        self.header["postgres"] = json!(description);
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        backend: Backend,
        order: u32,
        key: &str,
        figure: &str,
        value: f64,
        unit: Unit,
        baseline_name: &str,
        baseline: f64,
        goal: Goal,
        percent: bool,
    ) {
        self.rows.push(Row {
            key: backend.key(key),
            figure: backend.figure(figure),
            value,
            unit,
            baseline_name: baseline_name.to_owned(),
            baseline,
            goal,
            percent,
            backend,
            order,
        });
    }

    fn note(&mut self, backend: Backend, text: String) {
        self.notes.push(match backend {
            Backend::Sqlite => text,
            Backend::Postgres => format!("[pg] {text}"),
        });
    }

    pub fn creates(&mut self, backend: Backend, load: &LoadResult, base: &CommitResult, cpu: Option<Duration>) {
        let (baseline_name, goal, base_text) = match backend {
            Backend::Sqlite => ("SQLite direct, 1 commit per insert", Goal::AtLeast(20_000.0), "SQLite baseline"),
            Backend::Postgres => (
                "PostgreSQL direct, 1-row txns, 8 conns",
                Goal::None,
                "PostgreSQL baseline (8 connections, 1 row per transaction)",
            ),
        };
        self.push(
            backend,
            100,
            "creates_per_s",
            "durable creates (HTTP, keep-alive)",
            load.rate(),
            Unit::PerSec,
            baseline_name,
            base.rate(),
            goal,
            false,
        );
        let cpu_per_create =
            cpu.filter(|_| load.ok_total > 0).map(|cpu| cpu.as_secs_f64() * 1e3 / load.ok_total as f64);
        if let Some(ms) = cpu_per_create {
            self.push(
                backend,
                101,
                "creates_server_cpu_ms",
                "server CPU per create (user + system)",
                ms,
                Unit::Ms,
                "-",
                f64::NAN,
                Goal::None,
                false,
            );
        }
        self.details.insert(
            backend.key("creates"),
            json!({"server": load_json(load), "server_cpu_ms_per_create": cpu_per_create, "baseline": {
                "rate_per_s": base.rate(), "commits": base.commits, "window_s": base.window.as_secs_f64(),
                "commit_latency": latency_json(&base.latency)}}),
        );
        self.note(backend, load_text("creates", load));
        self.note(
            backend,
            format!(
                "{base_text}: {} commits in {:.2} s, commit latency p50 {:.3} ms, p99 {:.3} ms",
                thousands(base.commits),
                base.window.as_secs_f64(),
                base.latency.percentile_ms(50.0),
                base.latency.percentile_ms(99.0)
            ),
        );
    }

    /// Event → sealed in its chain (the creates part's events), against one direct commit.
    pub fn sealing(&mut self, backend: Backend, lag: &Samples, commit: &Samples) {
        let commit_name = match backend {
            Backend::Sqlite => "SQLite direct commit",
            Backend::Postgres => "PostgreSQL direct 1-row txn",
        };
        for (order, key, p) in [(110, "sealing_lag_p50_ms", 50.0), (111, "sealing_lag_p99_ms", 99.0)] {
            self.push(
                backend,
                order,
                key,
                &format!("sealing lag (event -> sealed) p{p}"),
                lag.percentile_ms(p),
                Unit::Ms,
                &format!("{commit_name} p{p}"),
                commit.percentile_ms(p),
                Goal::None,
                false,
            );
        }
        self.details.insert(backend.key("sealing"), json!({"lag": latency_json(lag)}));
        self.note(backend, format!("sealing: {} events sampled, max {:.3} ms", lag.len(), lag.max_ms()));
    }

    pub fn gets(&mut self, backend: Backend, load: &LoadResult, base: &LoadResult, body_len: usize) {
        self.push(
            backend,
            200,
            "gets_per_s",
            "GET one pending call",
            load.rate(),
            Unit::PerSec,
            "bare axum JSON GET (own process)",
            base.rate(),
            Goal::RatioAtLeast(0.5),
            true,
        );
        self.details.insert(
            backend.key("gets"),
            json!({"server": load_json(load), "baseline": load_json(base), "server_body_bytes": body_len}),
        );
        self.note(backend, load_text(&format!("gets ({body_len}-byte answer)"), load));
        if backend == Backend::Sqlite {
            self.notes.push(load_text("bare GETs", base));
        }
    }

    /// Respond → wake on one instance; `commit` is a paced durable commit on the same database.
    pub fn wake(&mut self, backend: Backend, wake: &WakeResult, rtt: &Samples, commit: &Samples) {
        let wake_goal = match backend {
            Backend::Sqlite => Goal::AtMost(0.5),
            Backend::Postgres => Goal::None,
        };
        let rows = [
            (
                "wake_p50_ms",
                "respond -> long-poll wake p50",
                &wake.wake,
                50.0,
                "loopback TCP round trip p50",
                wake_goal,
            ),
            (
                "wake_p99_ms",
                "respond -> long-poll wake p99",
                &wake.wake,
                99.0,
                "loopback TCP round trip p99",
                Goal::None,
            ),
            (
                "respond_p50_ms",
                "respond round trip p50",
                &wake.respond,
                50.0,
                "loopback TCP round trip p50",
                Goal::None,
            ),
            (
                "respond_p99_ms",
                "respond round trip p99",
                &wake.respond,
                99.0,
                "loopback TCP round trip p99",
                Goal::None,
            ),
        ];
        // The floor under a durable decision over the network: one durable commit plus one round trip.
        let floor = |p: f64| commit.percentile_ms(p) + rtt.percentile_ms(p);
        let commit_name = match backend {
            Backend::Sqlite => "durable commit",
            Backend::Postgres => "PG commit",
        };
        for (order, key, p) in [(300, "wake_p50_vs_floor_ms", 50.0), (301, "wake_p99_vs_floor_ms", 99.0)] {
            self.push(
                backend,
                order,
                key,
                &format!("respond -> long-poll wake p{p}"),
                wake.wake.percentile_ms(p),
                Unit::Ms,
                &format!("{commit_name} + TCP round trip p{p}"),
                floor(p),
                Goal::None,
                false,
            );
        }
        for (order, (key, figure, samples, p, baseline_name, goal)) in (302..).zip(rows) {
            self.push(
                backend,
                order,
                key,
                figure,
                samples.percentile_ms(p),
                Unit::Ms,
                baseline_name,
                rtt.percentile_ms(p),
                goal,
                false,
            );
        }
        self.details.insert(
            backend.key("wake"),
            json!({"wake": latency_json(&wake.wake), "respond": latency_json(&wake.respond), "create": latency_json(&wake.create), "tcp_round_trip": latency_json(rtt), "paced_commit": latency_json(commit),
                   "not_parked": wake.not_parked, "not_decided": wake.not_decided, "first_problem": wake.first_problem}),
        );
        let mut text = format!(
            "wake: {} samples, max {:.3} ms (respond max {:.3} ms); single durable create round trip p50 {:.3} ms, \
             p99 {:.3} ms; paced {commit_name} p50 {:.3} ms, p99 {:.3} ms; TCP round trip: {} samples, max {:.3} ms",
            wake.wake.len(),
            wake.wake.max_ms(),
            wake.respond.max_ms(),
            wake.create.percentile_ms(50.0),
            wake.create.percentile_ms(99.0),
            commit.percentile_ms(50.0),
            commit.percentile_ms(99.0),
            rtt.len(),
            rtt.max_ms()
        );
        problems(&mut text, wake);
        self.note(backend, text);
    }

    /// Respond on instance A → long-poll wake on instance B (same PostgreSQL database), against a
    /// LISTEN/NOTIFY round trip and against the floor of a PG commit + NOTIFY + TCP round trip.
    pub fn cross_wake(&mut self, wake: &WakeResult, notify: &Samples, commit: &Samples, rtt: &Samples) {
        let backend = Backend::Postgres;
        for (order, p) in [(400, 50.0), (401, 99.0)] {
            self.push(
                backend,
                order,
                &format!("cross_wake_p{p}_ms"),
                &format!("cross-instance wake (respond A, poll B) p{p}"),
                wake.wake.percentile_ms(p),
                Unit::Ms,
                &format!("LISTEN/NOTIFY round trip p{p}"),
                notify.percentile_ms(p),
                Goal::None,
                false,
            );
        }
        let floor = |p: f64| commit.percentile_ms(p) + notify.percentile_ms(p) + rtt.percentile_ms(p);
        for (order, p) in [(402, 50.0), (403, 99.0)] {
            self.push(
                backend,
                order,
                &format!("cross_wake_p{p}_vs_floor_ms"),
                &format!("cross-instance wake (respond A, poll B) p{p}"),
                wake.wake.percentile_ms(p),
                Unit::Ms,
                &format!("PG commit + NOTIFY + TCP round trip p{p}"),
                floor(p),
                Goal::None,
                false,
            );
        }
        self.details.insert(
            backend.key("cross_wake"),
            json!({"wake": latency_json(&wake.wake), "respond": latency_json(&wake.respond), "create": latency_json(&wake.create),
                   "notify_round_trip": latency_json(notify), "paced_commit": latency_json(commit), "tcp_round_trip": latency_json(rtt),
                   "not_parked": wake.not_parked, "not_decided": wake.not_decided, "first_problem": wake.first_problem}),
        );
        let mut text = format!(
            "cross-instance wake: {} samples, max {:.3} ms; respond round trip on A p50 {:.3} ms, p99 {:.3} ms; \
             LISTEN/NOTIFY round trip: {} samples, max {:.3} ms",
            wake.wake.len(),
            wake.wake.max_ms(),
            wake.respond.percentile_ms(50.0),
            wake.respond.percentile_ms(99.0),
            notify.len(),
            notify.max_ms()
        );
        problems(&mut text, wake);
        self.note(backend, text);
    }

    /// Webhook deliveries/s against direct POSTs to the same receiver, exactly-once counts, and
    /// decision → delivery latency against the respond round trip plus a bare POST.
    pub fn webhooks(&mut self, backend: Backend, r: &WebhookResult) {
        self.push(
            backend,
            500,
            "webhook_deliveries_per_s",
            &format!("webhook deliveries/s ({} decisions)", thousands(r.decisions)),
            r.rate(),
            Unit::PerSec,
            &format!("signed POSTs straight to the receiver, {} conns", webhooks::BASELINE_CONNECTIONS),
            r.base_rate(),
            Goal::None,
            true,
        );
        self.push(
            backend,
            501,
            "webhooks_exactly_once",
            "webhooks received exactly once",
            r.tally.exactly_once as f64,
            Unit::Count,
            "decisions",
            r.decisions as f64,
            Goal::RatioAtLeast(1.0),
            true,
        );
        self.push(
            backend,
            502,
            "webhook_duplicates",
            "webhooks received more than once (extra POSTs)",
            r.tally.duplicates() as f64,
            Unit::Count,
            "-",
            f64::NAN,
            Goal::AtMost(0.0),
            false,
        );
        let floor = |p: f64| r.respond.percentile_ms(p) + r.bare_post.percentile_ms(p);
        for (order, p) in [(503, 50.0), (504, 99.0)] {
            self.push(
                backend,
                order,
                &format!("webhook_latency_p{p}_ms"),
                &format!("decision -> webhook received p{p}"),
                r.latency.percentile_ms(p),
                Unit::Ms,
                &format!("respond RTT + bare POST RTT p{p} (sum)"),
                floor(p),
                Goal::None,
                false,
            );
        }
        let tally_json = |t: &Tally| {
            json!({"calls": t.calls, "exactly_once": t.exactly_once, "posts": t.posts, "duplicates": t.duplicates(),
                   "repeated_webhook_ids": t.repeated_ids, "extra_webhook_ids": t.extra_ids, "bad_signatures": t.bad_signatures})
        };
        self.details.insert(
            backend.key("webhooks"),
            json!({
                "decisions": r.decisions,
                "deliveries": {"rate_per_s": r.rate(), "delivered": r.delivered, "span_s": r.span.as_secs_f64(),
                               "deciding_s": r.deciding.as_secs_f64(), "arrivals": tally_json(&r.tally)},
                "creates": load_json(&r.creates),
                "decide": load_json(&r.decide),
                "baseline": {"rate_per_s": r.base_rate(), "received": r.base_delivered, "span_s": r.base_span.as_secs_f64(),
                             "connections": webhooks::BASELINE_CONNECTIONS, "client": load_json(&r.base)},
                "body_bytes": r.body_bytes,
                "latency": latency_json(&r.latency),
                "respond": latency_json(&r.respond),
                "bare_post": latency_json(&r.bare_post),
                "latency_arrivals": tally_json(&r.latency_tally),
                "rejected": r.rejected,
                "first_problem": r.first_problem,
            }),
        );
        let mut text = format!(
            "webhooks: {} decisions sent in {:.2} s ({:.0}/s, respond p50 {:.3} ms, p99 {:.3} ms under load), \
             {} delivered {:.2} s after the first; {} arrivals in all ({} repeated webhook-ids, {} extra webhook-ids \
             for one call); {}-byte bodies; direct POSTs: {} in {:.2} s",
            thousands(r.decisions),
            r.deciding.as_secs_f64(),
            per_second(r.decisions, r.deciding.as_secs_f64()),
            Samples::from_micros(r.decide.latencies_us.clone()).percentile_ms(50.0),
            Samples::from_micros(r.decide.latencies_us.clone()).percentile_ms(99.0),
            thousands(r.delivered),
            r.span.as_secs_f64(),
            thousands(r.tally.posts),
            r.tally.repeated_ids,
            r.tally.extra_ids,
            r.body_bytes,
            thousands(r.base_delivered),
            r.base_span.as_secs_f64(),
        );
        let _ = write!(
            text,
            "\nwebhook latency: {} samples, max {:.3} ms; respond round trip p50 {:.3} ms, p99 {:.3} ms; \
             bare POST p50 {:.3} ms, p99 {:.3} ms",
            r.latency.len(),
            r.latency.max_ms(),
            r.respond.percentile_ms(50.0),
            r.respond.percentile_ms(99.0),
            r.bare_post.percentile_ms(50.0),
            r.bare_post.percentile_ms(99.0),
        );
        let late = r.latency_tally.duplicates();
        if r.rejected + late > 0 || r.delivered < r.decisions {
            let _ = write!(
                text,
                "\n  PROBLEMS: {} of {} delivered; {} duplicates in the latency test; {} arrivals rejected (bad \
                 signature or no call_id); first: {}",
                r.delivered,
                r.decisions,
                late,
                r.rejected,
                r.first_problem.as_deref().unwrap_or("-")
            );
        }
        self.note(backend, text);
    }

    /// Resident bytes per pending request (live, and after a restart reloads them) against the
    /// bytes of the spec itself.
    pub fn memory(&mut self, r: &MemoryResult) {
        let backend = Backend::Sqlite;
        let spec = r.spec_bytes as f64;
        let requests = thousands(r.requests);
        self.push(
            backend,
            700,
            "memory_per_pending_bytes",
            &format!("RSS bytes per pending request ({requests} pending)"),
            r.per_request_live(),
            Unit::Count,
            "bytes of its spec",
            spec,
            Goal::None,
            false,
        );
        self.push(
            backend,
            701,
            "memory_per_pending_restarted_bytes",
            &format!("RSS bytes per pending request after a restart ({requests} reloaded)"),
            r.per_request_restarted(),
            Unit::Count,
            "bytes of its spec",
            spec,
            Goal::None,
            false,
        );
        let mb = |b: u64| b as f64 / (1 << 20) as f64;
        self.note(
            backend,
            format!(
                "memory: {:.0} MB empty, {:.0} MB with {requests} pending, {:.0} MB after a restart",
                mb(r.empty_rss),
                mb(r.loaded_rss),
                mb(r.restarted_rss)
            ),
        );
    }

    /// MCP calls through `countersign mcp gate` (rules that select none of them) against the same
    /// echo server called directly: latency of sequential calls, and calls/s sequential and with
    /// [`gate::IN_FLIGHT`] in flight.
    pub fn gate(&mut self, r: &GateResult) {
        let backend = Backend::Sqlite;
        for (order, p) in [(600, 50.0), (601, 99.0)] {
            self.push(
                backend,
                order,
                &format!("gate_call_p{p}_ms"),
                &format!("MCP call through the gate p{p}"),
                r.gated.sequential.percentile_ms(p),
                Unit::Ms,
                &format!("direct MCP call p{p}"),
                r.direct.sequential.percentile_ms(p),
                Goal::None,
                false,
            );
        }
        self.push(
            backend,
            602,
            "gate_calls_per_s",
            "MCP calls/s through the gate, sequential",
            r.gated.sequential_rate(),
            Unit::PerSec,
            "direct MCP calls/s, sequential",
            r.direct.sequential_rate(),
            Goal::None,
            true,
        );
        self.push(
            backend,
            603,
            "gate_calls_in_flight_per_s",
            &format!("MCP calls/s through the gate, {} in flight", gate::IN_FLIGHT),
            r.gated.concurrent_rate(),
            Unit::PerSec,
            &format!("direct MCP calls/s, {} in flight", gate::IN_FLIGHT),
            r.direct.concurrent_rate(),
            Goal::None,
            true,
        );
        let side_json = |s: &Side| {
            json!({
                "startup_ms": s.startup.as_secs_f64() * 1e3,
                "sequential": {"rate_per_s": s.sequential_rate(), "elapsed_s": s.sequential_elapsed.as_secs_f64(),
                               "latency": latency_json(&s.sequential)},
                "in_flight": {"rate_per_s": s.concurrent_rate(), "elapsed_s": s.concurrent_elapsed.as_secs_f64(),
                              "latency": latency_json(&s.concurrent)},
                "errors": s.errors,
                "first_error": s.first_error,
            })
        };
        self.details.insert(
            backend.key("gate"),
            json!({
                "calls_per_phase": r.calls,
                "warmup_calls": r.warmup,
                "in_flight": gate::IN_FLIGHT,
                "rules": format!("--ask {}", gate::UNSELECTED_GLOB),
                "gate": side_json(&r.gated),
                "direct": side_json(&r.direct),
            }),
        );
        let side_text = |name: &str, s: &Side| {
            format!(
                "{name}: started (spawn -> MCP handshake) in {:.1} ms; sequential max {:.3} ms; {} in flight: \
                 latency p50 {:.3} ms, p99 {:.3} ms",
                s.startup.as_secs_f64() * 1e3,
                s.sequential.max_ms(),
                gate::IN_FLIGHT,
                s.concurrent.percentile_ms(50.0),
                s.concurrent.percentile_ms(99.0),
            )
        };
        let mut text = format!(
            "gate: {} echo calls per phase after {} warm-up calls, rules `--ask {}` (selecting none)\n{}\n{}",
            thousands(r.calls as u64),
            thousands(r.warmup as u64),
            gate::UNSELECTED_GLOB,
            side_text("  through the gate", &r.gated),
            side_text("  direct", &r.direct),
        );
        for (name, s) in [("through the gate", &r.gated), ("direct", &r.direct)] {
            if s.errors > 0 {
                let _ = write!(
                    text,
                    "\n  FAILURES {name}: {} calls failed; first: {}",
                    s.errors,
                    s.first_error.as_deref().unwrap_or("-")
                );
            }
        }
        self.note(backend, text);
    }

    /// Slack click → long-poll wake against the API respond → wake of the same Slack-posted calls
    /// (interleaved in one run), and posts/s over many channels against the pacing ideal.
    pub fn slack(&mut self, backend: Backend, r: &SlackResult) {
        for (order, p) in [(800, 50.0), (801, 99.0)] {
            self.push(
                backend,
                order,
                &format!("slack_click_wake_p{p}_ms"),
                &format!("Slack Approve click -> long-poll wake p{p}"),
                r.click.wake.percentile_ms(p),
                Unit::Ms,
                &format!("API respond -> long-poll wake p{p} (interleaved)"),
                r.api.wake.percentile_ms(p),
                Goal::None,
                false,
            );
        }
        let posts = &r.posts;
        self.push(
            backend,
            802,
            "slack_posts_per_s",
            &format!("Slack posts/s, {} channels x {} (first create -> last post)", posts.channels, posts.per_channel),
            posts.rate(),
            Unit::PerSec,
            &format!(
                "ideal: 1 post/s per channel ({} per channel in {} s)",
                posts.per_channel,
                posts.per_channel.saturating_sub(1).max(1)
            ),
            posts.ideal_rate(),
            Goal::None,
            true,
        );
        self.push(
            backend,
            803,
            "slack_post_min_gap_ms",
            "shortest gap between two posts to one Slack channel",
            posts.min_gap.as_secs_f64() * 1e3,
            Unit::Ms,
            "Slack's limit: 1 post/s per channel",
            slack::POST_INTERVAL.as_secs_f64() * 1e3,
            Goal::AtLeast(900.0),
            false,
        );
        let decided_json = |d: &Decided| {
            json!({"wake": latency_json(&d.wake), "ack": latency_json(&d.ack), "update": latency_json(&d.update),
                   "users_info": latency_json(&d.users_info), "post": latency_json(&d.post)})
        };
        self.details.insert(
            backend.key("slack"),
            json!({
                "rounds": r.rounds,
                "click": decided_json(&r.click),
                "api": decided_json(&r.api),
                "click_body_bytes": r.click_bytes,
                "settle_ms": r.settle.as_secs_f64() * 1e3,
                "not_parked": r.not_parked,
                "not_decided": r.not_decided,
                "not_updated": r.not_updated,
                "first_problem": r.first_problem,
                "posts": {
                    "channels": posts.channels,
                    "per_channel": posts.per_channel,
                    "posted": posts.posted,
                    "rate_per_s": posts.rate(),
                    "ideal_rate_per_s": posts.ideal_rate(),
                    "sustained_rate_per_s": posts.sustained_rate(),
                    "sustained_ideal_per_s": posts.channels as f64 / slack::POST_INTERVAL.as_secs_f64(),
                    "span_s": posts.span.as_secs_f64(),
                    "first_post_s": posts.first_post.as_secs_f64(),
                    "creating_s": posts.creating.as_secs_f64(),
                    "min_gap_ms": posts.min_gap.as_secs_f64() * 1e3,
                    "short_gaps": posts.short_gaps,
                    "uneven_channels": posts.uneven_channels,
                    "creates": load_json(&posts.creates),
                },
            }),
        );
        let ms = |s: &Samples, p: f64| s.percentile_ms(p);
        let text = format!(
            "slack: {} rounds (+10 warm-up), one channel per request, decided {} ms after the post reached the fake; \
             click: {}-byte signed interaction, acknowledged p50 {:.3} ms, p99 {:.3} ms, users.info at the fake p50 \
             {:.3} ms, message updated p50 {:.3} ms, p99 {:.3} ms; API respond: answered p50 {:.3} ms, p99 {:.3} ms, \
             message updated p50 {:.3} ms, p99 {:.3} ms; create -> chat.postMessage p50 {:.3} ms, p99 {:.3} ms (API rounds)",
            r.rounds,
            r.settle.as_millis(),
            r.click_bytes,
            ms(&r.click.ack, 50.0),
            ms(&r.click.ack, 99.0),
            ms(&r.click.users_info, 50.0),
            ms(&r.click.update, 50.0),
            ms(&r.click.update, 99.0),
            ms(&r.api.ack, 50.0),
            ms(&r.api.ack, 99.0),
            ms(&r.api.update, 50.0),
            ms(&r.api.update, 99.0),
            ms(&r.api.post, 50.0),
            ms(&r.api.post, 99.0),
        );
        self.note(backend, text);
        let mut text = format!(
            "slack posts: {} of {} posted; created in {:.2} s; first post {:.3} s, last {:.2} s after the first \
             create; sustained {:.1} posts/s after each channel's first (ideal {:.0}/s); {} gaps under 0.9 s",
            posts.posted,
            posts.channels * posts.per_channel,
            posts.creating.as_secs_f64(),
            posts.first_post.as_secs_f64(),
            posts.span.as_secs_f64(),
            posts.sustained_rate(),
            posts.channels as f64 / slack::POST_INTERVAL.as_secs_f64(),
            posts.short_gaps,
        );
        if r.not_parked + r.not_decided + r.not_updated + posts.uneven_channels > 0 {
            let _ = write!(
                text,
                "\n  PROBLEMS: {} long-polls answered before the decision, {} woken without it, {} messages not \
                 updated, {} channels without exactly {} posts; first: {}",
                r.not_parked,
                r.not_decided,
                r.not_updated,
                posts.uneven_channels,
                posts.per_channel,
                r.first_problem.as_deref().unwrap_or("-")
            );
        }
        self.note(backend, text);
    }

    /// Creates/s and create latency with a policy against the same without one (one server, two
    /// projects, rounds alternated, medians of the rounds).
    pub fn policy(&mut self, backend: Backend, r: &PolicyResult) {
        let rules = format!("{}-rule policy", policy::RULES);
        self.push(
            backend,
            900,
            "policy_creates_per_s",
            &format!("durable creates/s, {rules} ({} conditions run)", policy::MATCHING),
            PolicyResult::rate(&r.policy),
            Unit::PerSec,
            "same server, project without a policy",
            PolicyResult::rate(&r.none),
            Goal::None,
            true,
        );
        for (order, p) in [(901, 50.0), (902, 99.0)] {
            self.push(
                backend,
                order,
                &format!("policy_create_p{p}_ms"),
                &format!("create latency p{p}, {rules}"),
                PolicyResult::latency_ms(&r.policy, p),
                Unit::Ms,
                &format!("create latency p{p}, no policy"),
                PolicyResult::latency_ms(&r.none, p),
                Goal::None,
                false,
            );
        }
        let side_json = |rounds: &[LoadResult]| {
            json!({
                "median_rate_per_s": PolicyResult::rate(rounds),
                "median_p50_ms": PolicyResult::latency_ms(rounds, 50.0),
                "median_p99_ms": PolicyResult::latency_ms(rounds, 99.0),
                "rounds": rounds.iter().map(load_json).collect::<Vec<_>>(),
            })
        };
        self.details.insert(
            backend.key("policy"),
            json!({
                "rules": policy::RULES,
                "rules_evaluated": policy::MATCHING,
                "fn": policy::FN,
                "policy_bytes": r.policy_bytes,
                "order": "none, policy, none, policy, ...",
                "none": side_json(&r.none),
                "policy": side_json(&r.policy),
            }),
        );
        let rates =
            |rounds: &[LoadResult]| rounds.iter().map(|l| format!("{:.0}", l.rate())).collect::<Vec<_>>().join(", ");
        let mut text = format!(
            "policy: {} rounds alternated, medians reported; creates/s without a policy {}, with it {}; {}-byte \
             policy, {} of its rules select `{}` (their `when` runs and is false), none decides",
            r.none.len(),
            rates(&r.none),
            rates(&r.policy),
            r.policy_bytes,
            policy::MATCHING,
            policy::FN,
        );
        for (name, rounds) in [("no policy", &r.none), ("policy", &r.policy)] {
            for (i, load) in rounds.iter().enumerate().filter(|(_, l)| l.failures() > 0 || l.capped) {
                let _ = write!(text, "\n  {}", load_text(&format!("{name} round {}", i + 1), load));
            }
        }
        self.note(backend, text);
    }

    /// The p50, p99 (with `goal`) and max lateness rows of a timers scenario, from `order` on,
    /// keyed `{key}_p50_ms` and so on, labelled "timer lateness p50 ({what})".
    fn lateness(&mut self, backend: Backend, order: u32, key: &str, what: &str, r: &TimerResult, goal: Goal) {
        let tick = timers::SERVER_TICK.as_secs_f64() * 1e3;
        for (i, p, goal) in [(0, 50.0, Goal::None), (1, 99.0, goal), (2, 100.0, Goal::None)] {
            let which = if p == 100.0 { "max".to_owned() } else { format!("p{p}") };
            self.push(
                backend,
                order + i,
                &format!("{key}_{which}_ms"),
                &format!("timer lateness {which} ({what})"),
                r.lateness.percentile_ms(p),
                Unit::Ms,
                "the server's timer poll interval",
                tick,
                goal,
                false,
            );
        }
    }

    /// Lateness of N timers scheduled at once (created in one burst, each due a fixed time after
    /// its create): decision stamp − its own deadline.
    pub fn timers_scheduled(&mut self, backend: Backend, r: &TimerResult) {
        let n = thousands(r.timers);
        self.lateness(
            backend,
            945,
            "timer_scheduled_lateness",
            &format!("{n} scheduled at once"),
            r,
            Goal::AtMost(1_000.0),
        );
        self.push(
            backend,
            948,
            "timers_scheduled_fired",
            "timers fired (scheduled at once)",
            r.fired as f64,
            Unit::Count,
            "timers scheduled",
            r.timers as f64,
            Goal::RatioAtLeast(1.0),
            true,
        );
        self.details.insert(
            backend.key("timers_scheduled"),
            json!({
                "timers": r.timers,
                "due_after_create_s": r.lead.as_secs_f64(),
                "creating_s": r.creating.as_secs_f64(),
                "creates": load_json(&r.creates),
                "lateness": latency_json(&r.lateness),
                "fired": r.fired,
                "batches": r.batches,
                "seen_done_s": r.seen_done.map(|d| d.as_secs_f64()),
                "early": r.early,
                "duplicates": r.duplicates,
                "not_policy": r.not_policy,
                "first_problem": r.first_problem,
            }),
        );
        let mut text = format!(
            "timers scheduled at once: {n} requests created in one burst in {:.2} s ({:.0}/s), each due {:.0} s after \
             its create, so they fell due at that pace while the creates still ran; fired in {} batches (distinct \
             stamps); the bench saw its {} sampled requests decided {} after the last fell due",
            r.creating.as_secs_f64(),
            r.creates.rate(),
            r.lead.as_secs_f64(),
            r.batches,
            timers::SAMPLED,
            r.seen_done.map_or("- (not all)".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
        );
        if let Some(problem) = &r.first_problem {
            let _ = write!(text, "\n  PROBLEM: {problem}");
        }
        self.note(backend, text);
    }

    /// Lateness of N timers due at one instant (decision stamp − due), and how fast they fired
    /// against how fast the same requests were created.
    pub fn timers(&mut self, backend: Backend, r: &TimerResult) {
        let n = thousands(r.timers);
        self.lateness(backend, 950, "timer_lateness", &format!("{n} due at one instant"), r, Goal::None);
        self.push(
            backend,
            953,
            "timers_fired_per_s",
            "timers fired/s (due -> last fired)",
            r.rate(),
            Unit::PerSec,
            "creates/s of the same requests",
            r.creates.rate(),
            Goal::None,
            true,
        );
        self.push(
            backend,
            954,
            "timers_fired",
            "timers fired (distinct requests decided)",
            r.fired as f64,
            Unit::Count,
            "timers scheduled",
            r.timers as f64,
            Goal::RatioAtLeast(1.0),
            true,
        );
        self.details.insert(
            backend.key("timers"),
            json!({
                "timers": r.timers,
                "lead_s": r.lead.as_secs_f64(),
                "creating_s": r.creating.as_secs_f64(),
                "created_before_due": r.created_in_time(),
                "margin_s": r.margin_s(),
                "pilot": load_json(&r.pilot),
                "creates": load_json(&r.creates),
                "lateness": latency_json(&r.lateness),
                "fired": r.fired,
                "fired_per_s": r.rate(),
                "batches": r.batches,
                "first_fired_ms": r.first_us as f64 / 1e3,
                "last_fired_ms": r.last_us as f64 / 1e3,
                "batch_interval_ms": r.batch_interval_ms(),
                "seen_done_s": r.seen_done.map(|d| d.as_secs_f64()),
                "server_logged_lateness": r.logged.as_ref().map(latency_json),
                "early": r.early,
                "duplicates": r.duplicates,
                "not_policy": r.not_policy,
                "first_problem": r.first_problem,
            }),
        );
        let mut text = format!(
            "timers: {n} requests created in {:.2} s ({:.0}/s; pilot {:.0}/s), all due {:.1} s after the creates \
             started: {} ({:.2} s margin); fired in {} batches (distinct stamps), first +{:.1} ms, last +{:.1} ms \
             after due, one batch per {:.1} ms; the bench saw its {} sampled requests decided by +{}",
            r.creating.as_secs_f64(),
            r.creates.rate(),
            r.pilot.rate(),
            r.lead.as_secs_f64(),
            if r.created_in_time() { "created before due" } else { "NOT created before due" },
            r.margin_s(),
            r.batches,
            r.first_us as f64 / 1e3,
            r.last_us as f64 / 1e3,
            r.batch_interval_ms(),
            timers::SAMPLED,
            r.seen_done.map_or("- (not all)".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
        );
        if let Some(logged) = &r.logged {
            let _ = write!(
                text,
                "; server-logged late_ms (in-memory view updated, {} lines) p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
                thousands(logged.len() as u64),
                logged.percentile_ms(50.0),
                logged.percentile_ms(99.0),
                logged.max_ms()
            );
        }
        if !r.created_in_time() || r.missing() + r.duplicates + r.not_policy + r.early > 0 {
            let _ = write!(
                text,
                "\n  PROBLEMS: creates {} before due; {} not fired; {} fired twice; {} not by the policy; {} early; \
                 first: {}",
                if r.created_in_time() { "ended" } else { "did NOT end" },
                r.missing(),
                r.duplicates,
                r.not_policy,
                r.early,
                r.first_problem.as_deref().unwrap_or("-")
            );
        }
        self.note(backend, text);
    }

    /// One store at scale beside the empty store of the same run: memory, start-up, GET and
    /// create p99 (goal: within 2x), then the crowds of long-polls and inbox streams.
    pub fn scale(&mut self, r: &ScaleResult) {
        let backend = Backend::Sqlite;
        let n = thousands(r.full.pending);
        let empty = "empty store (same server, before the load)".to_owned();
        let bytes_rows = [
            (1000, "scale_rss_live_bytes", format!("RSS with {n} pending (server that took them)"), r.full.rss_live),
            (1001, "scale_rss_restarted_bytes", format!("RSS with {n} pending, after a restart"), r.full.rss_started),
        ];
        for (order, key, figure, value) in bytes_rows {
            self.push(
                backend,
                order,
                key,
                &figure,
                value as f64,
                Unit::Bytes,
                &empty,
                r.empty.rss_started as f64,
                Goal::None,
                false,
            );
        }
        let loaded = r.full.pending.max(1) as f64;
        self.push(
            backend,
            1002,
            "scale_rss_per_pending_bytes",
            &format!("RSS bytes per pending request, after a restart ({n})"),
            r.full.rss_started.saturating_sub(r.empty.rss_started) as f64 / loaded,
            Unit::Count,
            "bytes of its spec",
            r.spec_bytes as f64,
            Goal::None,
            false,
        );
        let startup_rows = [
            (
                1003,
                "scale_start_listening_ms",
                "start-up: spawn -> \"Listening on\"",
                r.full.startup.listening,
                r.empty.startup.listening,
            ),
            (
                1004,
                "scale_start_ready_ms",
                "start-up: spawn -> /readyz 200",
                r.full.startup.ready,
                r.empty.startup.ready,
            ),
        ];
        for (order, key, what, full, base) in startup_rows {
            self.push(
                backend,
                order,
                key,
                &format!("{what} ({n} pending)"),
                full.as_secs_f64() * 1e3,
                Unit::Ms,
                &empty,
                base.as_secs_f64() * 1e3,
                Goal::None,
                false,
            );
        }
        self.push(
            backend,
            1008,
            "scale_stop_ms",
            &format!("shutdown: SIGTERM -> exit ({n} pending, the server that took them)"),
            r.full.stop.0.as_secs_f64() * 1e3,
            Unit::Ms,
            &empty,
            r.empty.stop.0.as_secs_f64() * 1e3,
            Goal::None,
            false,
        );
        let p99 = |l: &LoadResult| Samples::from_micros(l.latencies_us.clone()).percentile_ms(99.0);
        let conns = self.header["connections"].clone();
        let latency_rows = [
            (1005, "scale_get_p99_ms", "GET one pending call p99", p99(&r.full.get), p99(&r.empty.get)),
            (1006, "scale_create_p99_ms", "durable create p99", p99(&r.full.create), p99(&r.empty.create)),
        ];
        for (order, key, what, full, base) in latency_rows {
            self.push(
                backend,
                order,
                key,
                &format!("{what} ({n} pending, {conns} conns)"),
                full,
                Unit::Ms,
                &empty,
                base,
                Goal::RatioAtMost(2.0),
                false,
            );
        }
        self.push(
            backend,
            1007,
            "scale_load_creates_per_s",
            &format!("bulk load: creates/s of {} ~1 KB requests", thousands(r.requests)),
            r.load_rate(),
            Unit::PerSec,
            "small creates/s on the empty store",
            r.empty.create.rate(),
            Goal::None,
            true,
        );
        let idle = r.idle.per_connection();
        self.polls(1010, "distinct", &r.distinct, "deciding as many calls nobody waits on", idle);
        self.polls(1015, "shared", &r.shared, "the one respond's round trip", idle);
        self.push(
            backend,
            1019,
            "scale_rss_per_idle_connection_bytes",
            &format!("RSS bytes per kept-alive connection, idle ({})", thousands(r.idle.connections)),
            idle,
            Unit::Count,
            "-",
            f64::NAN,
            Goal::None,
            false,
        );
        let s = &r.streams;
        self.push(
            backend,
            1020,
            "scale_rss_per_stream_bytes",
            &format!("RSS bytes per open inbox stream ({})", thousands(s.streams)),
            s.per_stream(),
            Unit::Count,
            "-",
            f64::NAN,
            Goal::None,
            false,
        );
        self.push(
            backend,
            1021,
            "scale_streams_told_ms",
            &format!("one create -> all {} inbox streams told `changed`", thousands(s.streams)),
            s.told.max_ms(),
            Unit::Ms,
            "the create's round trip",
            s.create.as_secs_f64() * 1e3,
            Goal::None,
            false,
        );
        let store_json = |f: &StoreFigures| {
            json!({
                "pending": f.pending,
                "rss_live_bytes": f.rss_live,
                "rss_started_bytes": f.rss_started,
                "stop_ms": f.stop.0.as_secs_f64() * 1e3,
                "stop_killed": f.stop.1,
                "stop_restarted_ms": f.stop_restarted.0.as_secs_f64() * 1e3,
                "stop_restarted_killed": f.stop_restarted.1,
                "listening_ms": f.startup.listening.as_secs_f64() * 1e3,
                "ready_ms": f.startup.ready.as_secs_f64() * 1e3,
                "get": load_json(&f.get),
                "create": load_json(&f.create),
            })
        };
        let poll_json = |p: &PollResult| {
            json!({
                "waiters": p.waiters, "requests": p.requests, "rss_before_bytes": p.rss_before,
                "rss_parked_bytes": p.rss_parked, "per_waiter_bytes": p.per_waiter(),
                "parking_ms": p.parking.as_secs_f64() * 1e3, "wake_all_ms": p.wake_all.as_secs_f64() * 1e3,
                "deciding_ms": p.deciding.as_secs_f64() * 1e3, "baseline_ms": p.baseline.as_secs_f64() * 1e3,
                "answered": latency_json(&p.answered), "early": p.early, "failed": p.failed,
                "first_problem": p.first_problem,
            })
        };
        self.details.insert(
            "scale".into(),
            json!({
                "requests": r.requests,
                "spec_bytes": r.spec_bytes,
                "store_bytes": r.store_bytes,
                "loading_s": r.loading.as_secs_f64(),
                "loaded": r.loaded(),
                "load_failures": r.load_failures(),
                "chunks": r.chunks.iter().map(|c| json!({"ok": c.ok_total, "window_s": c.window.as_secs_f64(),
                    "rate_per_s": c.ok_total as f64 / c.window.as_secs_f64(), "p99_ms": p99(c), "failures": c.failures()})).collect::<Vec<_>>(),
                "max_connections": r.max_connections,
                "empty": store_json(&r.empty),
                "full": store_json(&r.full),
                "long_polls_distinct": poll_json(&r.distinct),
                "long_polls_shared": poll_json(&r.shared),
                "idle_connections": {
                    "connections": r.idle.connections, "rss_before_bytes": r.idle.rss_before,
                    "rss_open_bytes": r.idle.rss_open, "per_connection_bytes": r.idle.per_connection(),
                },
                "streams": {
                    "streams": s.streams, "rss_before_bytes": s.rss_before, "rss_open_bytes": s.rss_open,
                    "per_stream_bytes": s.per_stream(), "opening_ms": s.opening.as_secs_f64() * 1e3,
                    "create_ms": s.create.as_secs_f64() * 1e3, "told": latency_json(&s.told), "missing": s.missing,
                    "first_problem": s.first_problem,
                },
            }),
        );
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let chunk_rates: Vec<String> =
            r.chunks.iter().map(|c| format!("{:.0}", c.ok_total as f64 / c.window.as_secs_f64())).collect();
        let mut text = format!(
            "scale: {} requests of {} bytes loaded in {:.1} s ({:.0}/s; per 100k chunk: {}/s), {} failures; store \
             {:.0} MiB on disk; server max_connections {}; RSS empty {:.1} MiB, full {:.1} MiB live / {:.1} MiB \
             restarted",
            thousands(r.loaded()),
            r.spec_bytes,
            r.loading.as_secs_f64(),
            r.load_rate(),
            chunk_rates.join(", "),
            r.load_failures(),
            mib(r.store_bytes),
            r.max_connections,
            mib(r.empty.rss_started),
            mib(r.full.rss_live),
            mib(r.full.rss_started),
        );
        for (name, stop) in [("after the load", r.full.stop), ("restarted", r.full.stop_restarted)] {
            let killed = if stop.1 { " (KILLED: no exit within the limit)" } else { "" };
            let _ = write!(text, "\n  full store, {name}: SIGTERM -> exit {:.1} s{killed}", stop.0.as_secs_f64());
        }
        for (name, f) in [("empty", &r.empty), ("full", &r.full)] {
            let _ = write!(text, "\n  {}", load_text(&format!("{name}: GETs"), &f.get));
            let _ = write!(text, "\n  {}", load_text(&format!("{name}: creates"), &f.create));
        }
        for (name, p) in [("each on its own call", &r.distinct), ("all on one call", &r.shared)] {
            let _ = write!(
                text,
                "\n  long-polls {name}: {} parked in {:.0} ms, RSS {:.1} -> {:.1} MiB; decisions sent in {:.0} ms; \
                 answers p50 {:.0} ms, last {:.0} ms after the first decision",
                thousands(p.waiters),
                p.parking.as_secs_f64() * 1e3,
                mib(p.rss_before),
                mib(p.rss_parked),
                p.deciding.as_secs_f64() * 1e3,
                p.answered.percentile_ms(50.0),
                p.wake_all.as_secs_f64() * 1e3,
            );
            if p.early + p.failed > 0 {
                let _ = write!(
                    text,
                    "\n  PROBLEMS: {} answered before the decision, {} failed; first: {}",
                    p.early,
                    p.failed,
                    p.first_problem.as_deref().unwrap_or("-")
                );
            }
        }
        let _ = write!(
            text,
            "\n  inbox streams: {} opened in {:.0} ms, RSS {:.1} -> {:.1} MiB; told p50 {:.0} ms, p99 {:.0} ms, last \
             {:.0} ms after the create was sent",
            thousands(s.streams),
            s.opening.as_secs_f64() * 1e3,
            mib(s.rss_before),
            mib(s.rss_open),
            s.told.percentile_ms(50.0),
            s.told.percentile_ms(99.0),
            s.told.max_ms(),
        );
        if s.missing > 0 {
            let _ = write!(
                text,
                "\n  PROBLEMS: {} streams not told; first: {}",
                s.missing,
                s.first_problem.as_deref().unwrap_or("-")
            );
        }
        self.note(backend, text);
    }

    /// The rows of one long-poll crowd: RSS per waiter (goal ≤ 4 KiB) and the wake-all time.
    /// `idle`: the same server's RSS per idle kept-alive connection, the floor under each waiter.
    fn polls(&mut self, order: u32, key: &str, p: &PollResult, baseline: &str, idle: f64) {
        let what = if p.requests == 1 {
            format!("{} long-polls on one call", thousands(p.waiters))
        } else {
            format!("{} long-polls, each on its own call", thousands(p.waiters))
        };
        self.push(
            Backend::Sqlite,
            order,
            &format!("scale_rss_per_waiter_{key}_bytes"),
            &format!("RSS bytes per parked long-poll ({what})"),
            p.per_waiter(),
            Unit::Count,
            "an idle kept-alive connection",
            idle,
            Goal::AtMost(4096.0),
            false,
        );
        self.push(
            Backend::Sqlite,
            order + 1,
            &format!("scale_wake_all_{key}_ms"),
            &format!("wake-all: first decision -> last answer ({what})"),
            p.wake_all.as_secs_f64() * 1e3,
            Unit::Ms,
            baseline,
            p.baseline.as_secs_f64() * 1e3,
            Goal::None,
            false,
        );
    }

    /// The soak's samples, and whether the RSS grew by more than the limit after the reference.
    pub fn soak(&mut self, r: &SoakResult) {
        let backend = Backend::Sqlite;
        let reference = r.samples.get(r.reference);
        let reference_rss = reference.map_or(f64::NAN, |s| s.rss as f64);
        let later_max = r.samples.iter().skip(r.reference + 1).map(|s| s.rss).max().map_or(f64::NAN, |m| m as f64);
        let at = |s: Option<&soak::Sample>| s.map_or(f64::NAN, |s| (s.at.as_secs_f64() / 6.0).round() / 10.0);
        self.push(
            backend,
            1100,
            "soak_rss_max_after_reference_bytes",
            &format!("soak: highest RSS after minute {}", at(reference)),
            later_max,
            Unit::Bytes,
            &format!("RSS at minute {}", at(reference)),
            reference_rss,
            Goal::RatioAtMost(soak::GROWTH_LIMIT),
            false,
        );
        let (first, last) = (r.samples.first(), r.samples.last());
        self.push(
            backend,
            1101,
            "soak_open_files_last",
            &format!("soak: server's open files, minute {}", at(last)),
            last.map_or(f64::NAN, |s| s.open_files as f64),
            Unit::Count,
            &format!("minute {}", at(first)),
            first.map_or(f64::NAN, |s| s.open_files as f64),
            Goal::None,
            false,
        );
        self.push(
            backend,
            1102,
            "soak_request_p99_last_ms",
            &format!("soak: request p99, minute {}", at(last)),
            last.map_or(f64::NAN, soak::Sample::request_p99),
            Unit::Ms,
            &format!("minute {}", at(reference)),
            reference.map_or(f64::NAN, soak::Sample::request_p99),
            Goal::None,
            false,
        );
        let errors: u64 = r.samples.iter().map(|s| s.errors).sum();
        self.push(
            backend,
            1103,
            "soak_errors",
            "soak: failed requests",
            errors as f64,
            Unit::Count,
            "cycles",
            r.samples.iter().map(|s| s.cycles).sum::<u64>() as f64,
            Goal::AtMost(0.0),
            false,
        );
        self.details.insert(
            "soak".into(),
            json!({
                "minutes": r.minutes,
                "rate_cycles_per_s": r.rate,
                "interval_s": r.interval.as_secs_f64(),
                "workers": soak::WORKERS,
                "backlog_per_worker": soak::BACKLOG,
                "idle_rss_bytes": r.idle_rss,
                "idle_open_files": r.idle_open_files,
                "reference_sample": r.reference + 1,
                "growth": r.growth(),
                "samples": r.samples.iter().map(|s| json!({
                    "at_s": s.at.as_secs_f64(), "rss_bytes": s.rss, "rss_anon_bytes": s.rss_anon, "open_files": s.open_files, "cycles": s.cycles,
                    "errors": s.errors, "first_error": s.first_error, "request_p99_ms": s.request_p99(),
                    "create": latency_json(&s.create), "get": latency_json(&s.get), "respond": latency_json(&s.respond),
                    "list": latency_json(&s.list), "wake": latency_json(&s.wake),
                })).collect::<Vec<_>>(),
            }),
        );
        let mut text = format!(
            "soak: {} min at {} cycles/s ({} workers, {} pending each; a cycle is a create, a GET, a long-poll and \
             the decision that wakes it, a pending list every {}th); idle server {:.1} MiB, {} open files",
            r.minutes,
            r.rate,
            soak::WORKERS,
            soak::BACKLOG,
            soak::LIST_EVERY,
            r.idle_rss as f64 / (1 << 20) as f64,
            r.idle_open_files
        );
        for (i, s) in r.samples.iter().enumerate() {
            let _ = write!(text, "\n  {}", s.line(i + 1, r.interval));
        }
        self.note(backend, text);
        if r.failed() {
            self.failures.push(format!(
                "soak: the RSS grew by {:.1} % after sample {} (limit {:.0} %)",
                (r.growth() - 1.0) * 100.0,
                r.reference + 1,
                (soak::GROWTH_LIMIT - 1.0) * 100.0
            ));
        }
    }

    /// Checks that failed (the run exits non-zero after printing the report).
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// The rows in table order: each PostgreSQL row right after the SQLite row it mirrors.
    fn sorted_rows(&self) -> Vec<&Row> {
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by_key(|r| r.order);
        rows
    }
    pub fn to_json(&self) -> Value {
        let figures: Vec<Value> = self
            .sorted_rows()
            .into_iter()
            .map(|r| {
                json!({
                    "key": r.key,
                    "backend": r.backend.name(),
                    "figure": r.figure,
                    "value": r.value,
                    "unit": match r.unit { Unit::PerSec => "1/s", Unit::Ms => "ms", Unit::Count => "count", Unit::Bytes => "bytes" },
                    "baseline": {"name": r.baseline_name, "value": r.baseline},
                    "ratio": r.ratio(),
                    "target": r.goal_text(),
                    "target_met": r.met(),
                })
            })
            .collect();
        json!({"machine": self.header, "figures": figures, "details": self.details})
    }

    pub fn to_table(&self) -> String {
        let h = &self.header;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "countersign-bench  {}  nproc {}  {}",
            h["date"].as_str().unwrap_or("-"),
            h["nproc"],
            h["cpu"].as_str().unwrap_or("")
        );
        let _ = writeln!(
            out,
            "load: {} keep-alive connections, {} client threads, warm-up {} s, measure {} s; wake: {} iterations, {} ms parked",
            h["connections"], h["client_threads"], h["warmup_s"], h["measure_s"], h["wake_iters"], h["wake_delay_ms"]
        );
        let _ = writeln!(
            out,
            "server: {}  data: {} ({})",
            h["server_bin"].as_str().unwrap_or("-"),
            h["tmp_dir"].as_str().unwrap_or("-"),
            h["tmp_fs"].as_str().unwrap_or("-")
        );
        if let Some(pg) = h["postgres"].as_str() {
            let _ = writeln!(out, "[pg] rows: the same server on {pg}");
        }
        out.push('\n');
        let mut table = vec![[
            "figure".to_owned(),
            "value".into(),
            "baseline (same run)".into(),
            "baseline".into(),
            "ratio".into(),
            "target".into(),
            "met".into(),
        ]];
        for r in self.sorted_rows() {
            table.push([
                r.figure.clone(),
                fmt_value(r.value, r.unit),
                r.baseline_name.clone(),
                fmt_value(r.baseline, r.unit),
                r.ratio_text(),
                r.goal_text(),
                match r.met() {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
            ]);
        }
        let mut widths = [0usize; 7];
        for line in &table {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let right = [false, true, false, true, true, false, false];
        for (i, line) in table.iter().enumerate() {
            let mut text = String::new();
            for (j, cell) in line.iter().enumerate() {
                let pad = widths[j] - cell.chars().count();
                if right[j] {
                    text.push_str(&" ".repeat(pad));
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.push_str(&" ".repeat(pad));
                }
                text.push_str("  ");
            }
            let _ = writeln!(out, "{}", text.trim_end());
            if i == 0 {
                let _ = writeln!(out, "{}", "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            }
        }
        out.push('\n');
        for note in &self.notes {
            let _ = writeln!(out, "{note}");
        }
        out
    }
}

/// Appends the wake test's problems (long-polls not parked, or woken without the decision).
fn problems(text: &mut String, wake: &WakeResult) {
    if wake.not_parked + wake.not_decided > 0 {
        let _ = write!(
            text,
            "\n  PROBLEMS: {} long-polls answered before the respond, {} woken without the decision; first: {}",
            wake.not_parked,
            wake.not_decided,
            wake.first_problem.as_deref().unwrap_or("-")
        );
    }
}
