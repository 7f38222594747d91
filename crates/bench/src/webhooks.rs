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

use crate::Opts;
use crate::client::{self, Conn, LoadResult, MakeRequest, Phase, Target};
use crate::stats::Samples;
use anyhow::{Context, Result, anyhow, bail};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

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

/// How the webhooks of one group of calls (one call-id prefix) arrived.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Distinct calls that had a webhook.
    pub calls: u64,
    /// Calls that had exactly one POST.
    pub exactly_once: u64,
    /// POSTs in all.
    pub posts: u64,
    /// POSTs that repeated a `webhook-id` already received (redeliveries of one delivery).
    pub repeated_ids: u64,
    /// Further `webhook-id`s for a call that already had one (a second event for one decision).
    pub extra_ids: u64,
    /// Arrivals whose signature did not verify.
    pub bad_signatures: u64,
}

impl Tally {
    /// POSTs beyond the first of each call.
    pub fn duplicates(&self) -> u64 {
        self.posts - self.calls
    }
}

/// The webhooks of one call as the receiver saw them.
struct CallArrivals {
    first: Instant,
    posts: u32,
    webhook_ids: Vec<String>,
    bad_signatures: u32,
}

#[derive(Default)]
struct Arrivals {
    calls: HashMap<String, CallArrivals>,
    /// Arrivals without the headers or a `call_id` (not attributable to a call).
    unreadable: u64,
    first_problem: Option<String>,
    /// One delivery as received: (call id, webhook-id, body), the template of the baseline's.
    sample: Option<(String, String, Bytes)>,
}

struct Log {
    /// The endpoint's signing key (the secret's decoded bytes), once registered.
    key: OnceLock<Vec<u8>>,
    arrivals: Mutex<Arrivals>,
    arrived: Notify,
}

impl Log {
    fn record(&self, at: Instant, headers: &HeaderMap, body: Bytes) {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (id, timestamp, signature) =
            (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
        let call_id = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.pointer("/event/call_id").and_then(serde_json::Value::as_str).map(str::to_owned));
        let (Some(id), Some(timestamp), Some(signature), Some(call_id)) = (id, timestamp, signature, call_id) else {
            let mut a = self.arrivals.lock().expect("arrivals lock");
            a.unreadable += 1;
            a.first_problem.get_or_insert_with(|| {
                format!(
                    "a POST without the webhook headers or an event.call_id: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                )
            });
            return;
        };
        let signed = self.key.get().is_some_and(|key| verify(key, id, timestamp, &body, signature));
        let mut a = self.arrivals.lock().expect("arrivals lock");
        if !signed {
            a.first_problem.get_or_insert_with(|| format!("webhook {id} for {call_id}: the signature does not verify"));
        }
        if a.sample.is_none() {
            a.sample = Some((call_id.clone(), id.to_owned(), body.clone()));
        }
        let call = a.calls.entry(call_id).or_insert_with(|| CallArrivals {
            first: at,
            posts: 0,
            webhook_ids: Vec::with_capacity(1),
            bad_signatures: 0,
        });
        call.posts += 1;
        call.bad_signatures += u32::from(!signed);
        if !call.webhook_ids.iter().any(|known| known == id) {
            call.webhook_ids.push(id.to_owned());
        }
    }
}

async fn receive(State(log): State<Arc<Log>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Instant::now();
    log.record(at, &headers, body);
    log.arrived.notify_waiters();
    StatusCode::OK
}

/// The receiver: an axum server in this process, stopped by [`Receiver::stop`].
struct Receiver {
    addr: SocketAddr,
    log: Arc<Log>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Receiver {
    async fn start() -> Result<Self> {
        let log = Arc::new(Log { key: OnceLock::new(), arrivals: Mutex::default(), arrived: Notify::new() });
        let app = axum::Router::new().route("/hook", post(receive)).with_state(Arc::clone(&log));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { addr, log, task })
    }

    /// Stops accepting and drops the open connections (a graceful shutdown would wait for the
    /// worker's idle keep-alive connections).
    async fn stop(self) -> Result<()> {
        if self.task.is_finished() {
            self.task.await.context("the receiver panicked")?.context("the receiver failed")?;
        } else {
            self.task.abort();
        }
        Ok(())
    }

    /// Waits until `ready` holds of the arrivals, or until no webhook arrived for `stall`; returns
    /// what `ready` returned last.
    async fn wait_for<T>(&self, stall: Duration, mut ready: impl FnMut(&Arrivals) -> Option<T>) -> Option<T> {
        loop {
            let notified = self.log.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = ready(&self.log.arrivals.lock().expect("arrivals lock")) {
                return Some(found);
            }
            if tokio::time::timeout(stall, notified).await.is_err() {
                return None;
            }
        }
    }

    fn distinct_calls(&self) -> u64 {
        self.log.arrivals.lock().expect("arrivals lock").calls.len() as u64
    }

    /// The arrivals of the calls whose id starts with `prefix`, and the first arrival of the last
    /// of them.
    fn tally(&self, prefix: &str) -> (Tally, Option<Instant>) {
        let a = self.log.arrivals.lock().expect("arrivals lock");
        let mut tally = Tally::default();
        let mut last = None::<Instant>;
        for (_, call) in a.calls.iter().filter(|(id, _)| id.starts_with(prefix)) {
            tally.calls += 1;
            tally.exactly_once += u64::from(call.posts == 1);
            tally.posts += u64::from(call.posts);
            tally.repeated_ids += u64::from(call.posts) - call.webhook_ids.len() as u64;
            tally.extra_ids += call.webhook_ids.len() as u64 - 1;
            tally.bad_signatures += u64::from(call.bad_signatures);
            last = last.max(Some(call.first));
        }
        (tally, last)
    }
}

/// The `webhook-signature` of the Standard Webhooks: `v1,` + base64 HMAC-SHA256 of
/// `id.timestamp.body` (written here again rather than borrowed from the server, so that the
/// receiver checks the server's signing independently).
fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    format!("v1,{}", B64.encode(mac(key, id, timestamp, body)))
}

fn mac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in [id.as_bytes(), b".", timestamp.as_bytes(), b".", body] {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Whether any `v1,` signature of `header` matches, with a timestamp within 5 minutes of now.
fn verify(key: &[u8], id: &str, timestamp: &str, body: &[u8], header: &str) -> bool {
    let fresh = timestamp.parse::<u64>().is_ok_and(|t| unix_now().abs_diff(t) <= 300);
    let expected = mac(key, id, timestamp, body);
    fresh
        && header
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|b| B64.decode(b).ok())
            .any(|sig| sig == expected)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The signing key of a `whsec_` secret (its base64 part decoded).
fn signing_key(secret: &str) -> Result<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_").with_context(|| format!("the secret {secret:?} is not whsec_…"))?;
    B64.decode(encoded).context("the secret is not base64")
}

/// A signed webhook POST to the receiver, as the bench's client sends it.
fn signed_post(receiver: SocketAddr, key: &[u8], id: &str, body: &str) -> Bytes {
    let timestamp = unix_now().to_string();
    let signature = sign(key, id, &timestamp, body.as_bytes());
    Bytes::from(format!(
        "POST /hook HTTP/1.1\r\nHost: {receiver}\r\nContent-Type: application/json\r\nwebhook-id: {id}\r\n\
         webhook-timestamp: {timestamp}\r\nwebhook-signature: {signature}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
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
    let (deliver_prefix, base_prefix, latency_prefix) =
        (format!("wh-{tag}-"), format!("wb-{tag}-"), format!("wl-{tag}-"));

    eprintln!("countersign: creating {n} requests, {} connections ...", opts.connections);
    let prefix = deliver_prefix.clone();
    let make = numbered(Arc::default(), {
        let target = target.clone();
        move |k| {
            target.request("POST", "/humanlayer/v1/function_calls", Some(&crate::create_body(&call_id(&prefix, k))))
        }
    });
    r.creates = client::run_load(target, counted(opts.connections, n), opts.client_threads, make).await?;
    ensure_all("creating the requests to decide", &r.creates, n)?;

    let secret = register(target, receiver.addr).await?;
    let key = signing_key(&secret)?;
    receiver.log.key.set(key.clone()).map_err(|_| anyhow!("the receiver already has a key"))?;

    eprintln!("countersign: deciding {n} requests ({} connections), each delivered as a webhook ...", opts.connections);
    let first_decision = Arc::new(OnceLock::new());
    let prefix = deliver_prefix.clone();
    let make = numbered(Arc::clone(&first_decision), {
        let target = target.clone();
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
    r.delivered = receiver.wait_for(STALL, |a| (a.calls.len() as u64 >= n).then_some(n)).await.unwrap_or_else(|| {
        let got = receiver.distinct_calls();
        eprintln!("  deliveries stalled: {got} of {n} after {STALL:?} without a new one");
        got
    });
    let (_, last) = receiver.tally(&deliver_prefix);
    r.span = last.map_or(Duration::ZERO, |last| last.saturating_duration_since(first_decision));
    eprintln!("  {:.0} deliveries/s ({} in {:.2} s)", r.rate(), r.delivered, r.span.as_secs_f64());

    let (sample_call, sample_id, sample_body) = {
        let a = receiver.log.arrivals.lock().expect("arrivals lock");
        a.sample.clone().context("no webhook arrived")?
    };
    let sample_body = String::from_utf8(sample_body.to_vec()).context("a webhook body is not UTF-8")?;
    r.body_bytes = sample_body.len();
    // Same length as the deliveries' ids and bodies: only the call id's prefix differs.
    let body_of = move |call: &str| sample_body.replace(&sample_call, call);
    let id_of = move |k: u64| format!("wb{k:0width$}", width = sample_id.len().saturating_sub(2));

    eprintln!("baseline: {n} signed POSTs straight to the receiver, {BASELINE_CONNECTIONS} connections ...");
    let direct = Target::new(receiver.addr, None)?;
    let first_post = Arc::new(OnceLock::new());
    let make = numbered(Arc::clone(&first_post), {
        let (addr, key, prefix, body_of, id_of) =
            (receiver.addr, key.clone(), base_prefix.clone(), body_of.clone(), id_of.clone());
        move |k| signed_post(addr, &key, &id_of(k), &body_of(&call_id(&prefix, k)))
    });
    r.base = client::run_load(&direct, counted(BASELINE_CONNECTIONS, n), opts.client_threads, make).await?;
    ensure_all("the direct POSTs", &r.base, n)?;
    let first_post = *first_post.get().context("no POST was sent")?;
    let (base, last) = receiver.tally(&base_prefix);
    r.base_delivered = base.calls;
    r.base_span = last.map_or(Duration::ZERO, |last| last.saturating_duration_since(first_post));
    eprintln!("  {:.0} POSTs/s", r.base_rate());

    let delay = Duration::from_millis(opts.wake_delay_ms);
    let iters = opts.wake_iters;
    eprintln!("baseline: bare signed POSTs to the receiver ({iters}, one per {} ms) ...", opts.wake_delay_ms);
    let mut conn = Conn::connect(receiver.addr).await?;
    let mut bare = Vec::with_capacity(iters);
    for i in 0..iters + WARMUP_ITERS {
        let post =
            signed_post(receiver.addr, &key, &id_of(n + i as u64), &body_of(&call_id(&base_prefix, n + i as u64)));
        tokio::time::sleep(delay).await;
        let sent = Instant::now();
        let (status, _) = conn.send(&post).await?;
        let answered = sent.elapsed();
        anyhow::ensure!(status == 200, "the receiver answered {status}");
        if i >= WARMUP_ITERS {
            bare.push(answered);
        }
    }
    r.bare_post = Samples::from_durations(bare);

    eprintln!("countersign: decision → webhook received ({iters} iterations, {} ms apart) ...", opts.wake_delay_ms);
    let mut conn = Conn::connect(target.addr).await?;
    let (mut latency, mut respond) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    for i in 0..iters + WARMUP_ITERS {
        let call = call_id(&latency_prefix, i as u64);
        let create = target.request("POST", "/humanlayer/v1/function_calls", Some(&crate::create_body(&call)));
        let (status, body) = conn.send(&create).await?;
        anyhow::ensure!(status < 300, "create {call}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        // Paced like the other latency figures, so each decision meets an idle server.
        tokio::time::sleep(delay).await;
        let decision = target.request(
            "POST",
            &format!("/humanlayer/v1/agent/function_calls/{call}/respond"),
            Some(r#"{"approved":true}"#),
        );
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

    // Counted last, so that redeliveries arriving after their phase still count.
    r.tally = receiver.tally(&deliver_prefix).0;
    r.latency_tally = receiver.tally(&latency_prefix).0;
    let a = receiver.log.arrivals.lock().expect("arrivals lock");
    let bad: u64 = a.calls.values().map(|c| u64::from(c.bad_signatures)).sum();
    r.rejected = a.unreadable + bad;
    r.first_problem = a.first_problem.clone();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
