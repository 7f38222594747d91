//! Webhook delivery, measured at a receiver inside the bench process (axum on `127.0.0.1:0`, every
//! POST answered 200, each signature checked, each arrival recorded by `webhook-id` and by the
//! `call_id` in its body):
//!
//! - deliveries/s: N requests created, an endpoint registered, then all N decided by the load
//!   generator; from the first decision sent to the last delivery received. Baseline: the same
//!   receiver fed N equally-sized signed POSTs over 32 keep-alive connections (the worker's
//!   concurrency) by the bench's own client: the HTTP leg of a delivery without the outbox.
//! - decision → delivery latency, one request at a time: from sending the respond to the
//!   receiver recording that call's webhook. Baselines: the respond round trip itself and a bare
//!   signed POST to the receiver, paced alike.

mod receiver;

use crate::Opts;
use crate::client::{self, Conn, LoadResult, MakeRequest, Phase, Target};
use crate::stats::Samples;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
pub use receiver::Tally;
use receiver::{Receiver, signed_post};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Concurrent connections of the direct-POST baseline: the worker's concurrent attempts.
pub const BASELINE_CONNECTIONS: usize = 32;
/// How long the wait for deliveries may go without a new one before giving up on the rest.
const STALL: Duration = Duration::from_secs(30);
/// Longest a load phase of this part may run (they end when their count is reached).
const PHASE_LIMIT: Duration = Duration::from_secs(600);
/// Discarded latency iterations before the measured ones.
const WARMUP_ITERS: usize = 10;

/// What the webhooks part measured on one server.
#[derive(Debug, Default)]
pub struct WebhookResult {
    /// Requests created and decided in the deliveries/s phase.
    pub decisions: u64,
    pub creates: LoadResult,
    pub decide: LoadResult,
    /// Distinct calls delivered when the wait ended (all of them unless deliveries stalled).
    pub delivered: u64,
    /// First decision sent → last of those deliveries received.
    pub span: Duration,
    /// First decision sent → last decision acknowledged.
    pub deciding: Duration,
    /// The phase's arrivals, counted once the whole part is over (late duplicates included).
    pub tally: Tally,
    /// The baseline's distinct calls received, and its span (first POST sent → last received).
    pub base_delivered: u64,
    pub base_span: Duration,
    pub base: LoadResult,
    /// Size of a delivery's body (the baseline's bodies have the same size).
    pub body_bytes: usize,
    /// Respond sent → the call's webhook received, one request at a time.
    pub latency: Samples,
    /// The respond round trips of the same iterations.
    pub respond: Samples,
    /// Paced bare signed POSTs to the receiver (sent → 200 read).
    pub bare_post: Samples,
    /// The latency phase's arrivals, counted once the part is over.
    pub latency_tally: Tally,
    /// Arrivals with a missing or wrong signature, or no call id, over the whole part.
    pub rejected: u64,
    pub first_problem: Option<String>,
}

impl WebhookResult {
    /// Deliveries per second, first decision to last delivery.
    pub fn rate(&self) -> f64 {
        per_second(self.delivered, self.span)
    }

    /// Direct POSTs per second, first sent to last received.
    pub fn base_rate(&self) -> f64 {
        per_second(self.base_delivered, self.base_span)
    }
}

fn per_second(n: u64, span: Duration) -> f64 {
    if span.is_zero() { 0.0 } else { n as f64 / span.as_secs_f64() }
}

/// Registers the receiver as an endpoint of the key's project for `function_call.completed`;
/// returns the secret.
async fn register(target: &Target, receiver: SocketAddr) -> Result<String> {
    let mut conn = Conn::connect(target.addr).await?;
    let body = format!(r#"{{"url":"http://{receiver}/hook","events":["function_call.completed"]}}"#);
    let (status, answer) = conn.send(&target.request("POST", "/humanlayer/v1/webhooks", Some(&body))).await?;
    anyhow::ensure!(status == 201, "POST /humanlayer/v1/webhooks: HTTP {status}: {}", String::from_utf8_lossy(&answer));
    let endpoint: serde_json::Value = serde_json::from_slice(&answer).context("the new endpoint is not JSON")?;
    endpoint["secret"].as_str().map(str::to_owned).context("the new endpoint has no secret")
}

/// A load phase that ends when `count` requests have been sent (and answered).
fn counted(connections: usize, count: u64) -> Phase {
    Phase { connections, warmup: Duration::ZERO, measure: PHASE_LIMIT, max_requests: count }
}

fn ensure_all(what: &str, load: &LoadResult, count: u64) -> Result<()> {
    if load.ok_total != count {
        bail!(
            "{what}: {} of {count} succeeded ({} transport errors, statuses {:?}); first error: {}",
            load.ok_total,
            load.transport_errors,
            load.statuses,
            load.first_error.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// Requests numbered from a shared counter, so that `count` of them cover `0..count` exactly;
/// notes when the first one was built (just before it is sent).
fn numbered(first: Arc<OnceLock<Instant>>, build: impl Fn(u64) -> Bytes + Send + Sync + 'static) -> MakeRequest {
    let next = AtomicU64::new(0);
    Arc::new(move |_: &Target, _, _| {
        first.get_or_init(Instant::now);
        build(next.fetch_add(1, Ordering::Relaxed))
    })
}

fn call_id(prefix: &str, k: u64) -> String {
    format!("{prefix}{k:06}")
}

/// Runs the whole part against the server at `target` (a server of its own: the endpoint added
/// here would otherwise receive other parts' decisions).
pub async fn run(opts: &Opts, target: &Target, tag: &str, decisions: u64) -> Result<WebhookResult> {
    let receiver = Receiver::start().await?;
    let outcome = measure(opts, target, tag, decisions, &receiver).await;
    let stopped = receiver.stop().await;
    let result = outcome?;
    stopped?;
    Ok(result)
}

async fn measure(opts: &Opts, target: &Target, tag: &str, n: u64, receiver: &Receiver) -> Result<WebhookResult> {
    let mut r = WebhookResult { decisions: n, ..WebhookResult::default() };
    let deliveries = format!("wh-{tag}-");
    let latencies = format!("wl-{tag}-");
    deliveries_per_second(opts, target, receiver, &deliveries, &mut r).await?;

    let template = Template::of(receiver, format!("wb-{tag}-"))?;
    r.body_bytes = template.body.len();
    direct_posts(opts, receiver, &template, &mut r).await?;
    r.bare_post = bare_posts(opts, receiver, &template, n).await?;
    decision_latency(opts, target, receiver, &latencies, &mut r).await?;

    // Counted last, so that redeliveries arriving after their phase still count.
    r.tally = receiver.tally(&deliveries).0;
    r.latency_tally = receiver.tally(&latencies).0;
    (r.rejected, r.first_problem) = receiver.rejected();
    Ok(r)
}

/// Creates `r.decisions` requests, registers the receiver, decides them all at once and waits
/// for their webhooks.
async fn deliveries_per_second(
    opts: &Opts,
    target: &Target,
    receiver: &Receiver,
    prefix: &str,
    r: &mut WebhookResult,
) -> Result<()> {
    let n = r.decisions;
    eprintln!("countersign: creating {n} requests, {} connections ...", opts.connections);
    let make = numbered(Arc::default(), {
        let (target, prefix) = (target.clone(), prefix.to_owned());
        move |k| {
            target.request("POST", "/humanlayer/v1/function_calls", Some(&crate::create_body(&call_id(&prefix, k))))
        }
    });
    r.creates = client::run_load(target, counted(opts.connections, n), opts.client_threads, make).await?;
    ensure_all("creating the requests to decide", &r.creates, n)?;

    let secret = register(target, receiver.addr).await?;
    receiver.set_secret(&secret)?;

    eprintln!("countersign: deciding {n} requests ({} connections), each delivered as a webhook ...", opts.connections);
    let first_decision = Arc::new(OnceLock::new());
    let make = numbered(Arc::clone(&first_decision), {
        let (target, prefix) = (target.clone(), prefix.to_owned());
        move |k| {
            let path = format!("/humanlayer/v1/agent/function_calls/{}/respond", call_id(&prefix, k));
            target.request("POST", &path, Some(r#"{"approved":true}"#))
        }
    });
    r.decide = client::run_load(target, counted(opts.connections, n), opts.client_threads, make).await?;
    let decided = Instant::now();
    ensure_all("deciding the requests", &r.decide, n)?;
    let first_decision = *first_decision.get().context("no decision was sent")?;
    r.deciding = decided - first_decision;
    // No other calls have webhooks yet, so the count of distinct calls is this phase's.
    r.delivered = receiver.wait_for(STALL, |a| (a.calls.len() as u64 >= n).then_some(n)).await.unwrap_or_else(|| {
        let got = receiver.distinct_calls();
        eprintln!("  deliveries stalled: {got} of {n} after {STALL:?} without a new one");
        got
    });
    let (_, last) = receiver.tally(prefix);
    r.span = last.map_or(Duration::ZERO, |last| last.saturating_duration_since(first_decision));
    eprintln!("  {:.0} deliveries/s ({} in {:.2} s)", r.rate(), r.delivered, r.span.as_secs_f64());
    Ok(())
}

/// The baseline's webhooks: a delivery as received, with the call id (and the `webhook-id`)
/// swapped for the baseline's own of the same length.
#[derive(Clone)]
struct Template {
    key: Vec<u8>,
    body: String,
    call_id: String,
    webhook_id_len: usize,
    prefix: String,
}

impl Template {
    fn of(receiver: &Receiver, prefix: String) -> Result<Self> {
        let key = receiver.key().context("no endpoint was registered")?;
        let (call_id, webhook_id, body) = receiver.sample().context("no webhook arrived")?;
        let body = String::from_utf8(body.to_vec()).context("a webhook body is not UTF-8")?;
        Ok(Self { key, body, call_id, webhook_id_len: webhook_id.len(), prefix })
    }

    /// The `k`-th signed POST.
    fn post(&self, receiver: SocketAddr, k: u64) -> Bytes {
        let id = format!("wb{k:0width$}", width = self.webhook_id_len.saturating_sub(2));
        signed_post(receiver, &self.key, &id, &self.body.replace(&self.call_id, &call_id(&self.prefix, k)))
    }
}

/// The baseline of deliveries/s: as many signed POSTs straight to the receiver, from
/// [`BASELINE_CONNECTIONS`] connections.
async fn direct_posts(opts: &Opts, receiver: &Receiver, template: &Template, r: &mut WebhookResult) -> Result<()> {
    let n = r.decisions;
    eprintln!("baseline: {n} signed POSTs straight to the receiver, {BASELINE_CONNECTIONS} connections ...");
    let first_post = Arc::new(OnceLock::new());
    let make = numbered(Arc::clone(&first_post), {
        let (addr, template) = (receiver.addr, template.clone());
        move |k| template.post(addr, k)
    });
    let direct = Target::new(receiver.addr, None)?;
    r.base = client::run_load(&direct, counted(BASELINE_CONNECTIONS, n), opts.client_threads, make).await?;
    ensure_all("the direct POSTs", &r.base, n)?;
    let first_post = *first_post.get().context("no POST was sent")?;
    let (base, last) = receiver.tally(&template.prefix);
    r.base_delivered = base.calls;
    r.base_span = last.map_or(Duration::ZERO, |last| last.saturating_duration_since(first_post));
    eprintln!("  {:.0} POSTs/s", r.base_rate());
    Ok(())
}

/// One bare signed POST to the receiver at a time, paced like the latency test (numbered after
/// the `skip` POSTs of the throughput baseline).
async fn bare_posts(opts: &Opts, receiver: &Receiver, template: &Template, skip: u64) -> Result<Samples> {
    let (iters, delay) = (opts.wake_iters, Duration::from_millis(opts.wake_delay_ms));
    eprintln!("baseline: bare signed POSTs to the receiver ({iters}, one per {} ms) ...", opts.wake_delay_ms);
    let mut conn = Conn::connect(receiver.addr).await?;
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters + WARMUP_ITERS {
        let post = template.post(receiver.addr, skip + i as u64);
        tokio::time::sleep(delay).await;
        let sent = Instant::now();
        let (status, _) = conn.send(&post).await?;
        let answered = sent.elapsed();
        anyhow::ensure!(status == 200, "the receiver answered {status}");
        if i >= WARMUP_ITERS {
            samples.push(answered);
        }
    }
    Ok(Samples::from_durations(samples))
}

/// One request at a time: create, pause, respond, wait for its webhook.
async fn decision_latency(
    opts: &Opts,
    target: &Target,
    receiver: &Receiver,
    prefix: &str,
    r: &mut WebhookResult,
) -> Result<()> {
    let (iters, delay) = (opts.wake_iters, Duration::from_millis(opts.wake_delay_ms));
    eprintln!("countersign: decision → webhook received ({iters} iterations, {} ms apart) ...", opts.wake_delay_ms);
    let mut conn = Conn::connect(target.addr).await?;
    let (mut latency, mut respond) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    for i in 0..iters + WARMUP_ITERS {
        let call = call_id(prefix, i as u64);
        let create = target.request("POST", "/humanlayer/v1/function_calls", Some(&crate::create_body(&call)));
        let (status, body) = conn.send(&create).await?;
        anyhow::ensure!(status < 300, "create {call}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        // Paced like the other latency figures, so that each decision meets an idle server.
        tokio::time::sleep(delay).await;
        let path = format!("/humanlayer/v1/agent/function_calls/{call}/respond");
        let decision = target.request("POST", &path, Some(r#"{"approved":true}"#));
        let sent = Instant::now();
        let (status, body) = conn.send(&decision).await?;
        let acknowledged = Instant::now();
        anyhow::ensure!(status < 300, "respond {call}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        let arrived = receiver
            .wait_for(STALL, |a| a.calls.get(&call).map(|c| c.first))
            .await
            .with_context(|| format!("no webhook for {call} within {STALL:?} of its decision"))?;
        if i >= WARMUP_ITERS {
            latency.push(arrived.saturating_duration_since(sent));
            respond.push(acknowledged - sent);
        }
    }
    r.latency = Samples::from_durations(latency);
    r.respond = Samples::from_durations(respond);
    eprintln!(
        "  p50 {:.3} ms, p99 {:.3} ms (respond round trip p50 {:.3} ms, bare POST p50 {:.3} ms)",
        r.latency.percentile_ms(50.0),
        r.latency.percentile_ms(99.0),
        r.respond.percentile_ms(50.0),
        r.bare_post.percentile_ms(50.0)
    );
    Ok(())
}
