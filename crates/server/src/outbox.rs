//! The webhook worker: delivers the outbox rows the database wrote with each change, at least
//! once, signed the Standard Webhooks way. A delivery is claimed (a lease no other worker of any
//! instance takes), attempted with a 10 s timeout, and recorded: a 2xx is delivered, anything else
//! is retried with growing, jittered delays for about a day, then marked failed.

use countersign_core::webhook::{self, Format};
use countersign_core::{RequestRecord, Timestamp};
use countersign_store::{AttemptOutcome, Claimed, Store};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, watch};

/// Longest wait for an endpoint's answer.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claim lasts: the attempt's timeout plus a margin for recording it. A delivery whose
/// worker died mid-attempt (a crash) is taken up by any instance once this has passed.
const LEASE: Duration = Duration::from_secs(20);
/// Most deliveries claimed at once, and most attempts in flight.
const BATCH: u32 = 64;
const CONCURRENCY: usize = 64;
/// The longest the worker sleeps without checking the database (deliveries due on other
/// instances' schedules, or written by another instance).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Delivers webhooks until told to stop.
pub struct Outbox {
    store: Arc<dyn Store>,
    http: reqwest::Client,
    wake: Arc<Notify>,
}

impl Outbox {
    /// A worker over `store`, woken early through `wake` when something was written.
    pub fn new(store: Arc<dyn Store>, wake: Arc<Notify>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .connect_timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Countersign-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with rustls");
        Self { store, http, wake }
    }

    /// Runs until `closing` turns true. Attempts run concurrently (up to [`CONCURRENCY`]); free
    /// slots are refilled as soon as attempts end, and their outcomes are recorded in batches by
    /// one task (one transaction for all that ended meanwhile).
    pub async fn run(self, mut closing: watch::Receiver<bool>) {
        let (outcomes, recorded) = tokio::sync::mpsc::unbounded_channel();
        let recorder = tokio::spawn(record(self.store.clone(), recorded));
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        let sender = Arc::new(Sender { store: self.store.clone(), http: self.http.clone() });
        loop {
            if *closing.borrow() {
                break;
            }
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    permit = slots.clone().acquire_owned() => drop(permit),
                    _ = closing.wait_for(|c| *c) => break,
                }
                continue;
            }
            let now = Timestamp::now();
            let limit = u32::try_from(free).unwrap_or(BATCH).min(BATCH);
            let claimed = match self.store.claim_deliveries(now, now.plus(LEASE), limit).await {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(%err, "cannot claim webhook deliveries; retrying");
                    Vec::new()
                }
            };
            if !claimed.is_empty() {
                for c in claimed {
                    let Ok(permit) = slots.clone().acquire_owned().await else { break };
                    let (sender, outcomes) = (sender.clone(), outcomes.clone());
                    tokio::spawn(async move {
                        let outcome = sender.attempt(&c).await;
                        let _ = outcomes.send((c, outcome));
                        drop(permit);
                    });
                }
                continue;
            }
            let sleep = match self.store.next_delivery_due().await {
                Ok(Some(at)) => Duration::from_micros(u64::try_from(at.as_micros() - now.as_micros()).unwrap_or(0)),
                _ => IDLE_CHECK,
            }
            .min(IDLE_CHECK);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => {}
                _ = closing.wait_for(|c| *c) => break,
            }
        }
        // Attempts in flight finish (bounded by the delivery timeout) and are recorded.
        let _ = slots.acquire_many(u32::try_from(CONCURRENCY).unwrap_or(u32::MAX)).await;
        drop(outcomes);
        let _ = recorder.await;
    }
}

/// Records attempt outcomes, batching all that are waiting into one transaction.
async fn record(store: Arc<dyn Store>, mut outcomes: tokio::sync::mpsc::UnboundedReceiver<(Claimed, AttemptOutcome)>) {
    while let Some(first) = outcomes.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = outcomes.try_recv() {
            batch.push(more);
        }
        match store.finish_attempts(&batch).await {
            Ok(recorded) => {
                for ((claimed, _), done) in batch.iter().zip(recorded) {
                    if !done {
                        tracing::warn!(id = %claimed.delivery.id, "a webhook attempt outlived its lease; another worker retries it");
                    }
                }
            }
            // Unrecorded attempts are retried once their lease ends (at least once).
            Err(err) => {
                tracing::warn!(%err, attempts = batch.len(), "cannot record webhook attempts; they will be retried")
            }
        }
    }
}

/// What one attempt needs.
struct Sender {
    store: Arc<dyn Store>,
    http: reqwest::Client,
}

impl Sender {
    async fn attempt(&self, claimed: &Claimed) -> AttemptOutcome {
        let started = Instant::now();
        let at = Timestamp::now();
        let (status_code, error) = match self.send(claimed).await {
            Ok(status) if status.is_success() => (Some(status.as_u16()), None),
            Ok(status) => (Some(status.as_u16()), Some(format!("the endpoint answered {status}"))),
            Err(err) => (None, Some(err)),
        };
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let delivered = error.is_none();
        let attempts = claimed.delivery.attempts + 1;
        let retry_at = if delivered { None } else { webhook::retry_delay(attempts).map(|d| Timestamp::now().plus(d)) };
        let d = &claimed.delivery;
        match (&error, retry_at) {
            (None, _) => tracing::debug!(id = %d.id, event = %d.event_type, latency_ms, "webhook delivered"),
            (Some(error), Some(at)) => {
                tracing::info!(id = %d.id, event = %d.event_type, url = %claimed.endpoint.url, attempts, %error, retry_at = %at, "webhook delivery failed; will retry")
            }
            (Some(error), None) => {
                tracing::warn!(id = %d.id, event = %d.event_type, url = %claimed.endpoint.url, attempts, %error, "webhook delivery failed for good")
            }
        }
        AttemptOutcome { at, status_code, error, latency_ms, delivered, retry_at }
    }

    /// Renders, signs and posts one delivery.
    async fn send(&self, claimed: &Claimed) -> Result<reqwest::StatusCode, String> {
        let d = &claimed.delivery;
        let record = self
            .store
            .request(&d.project_id, d.kind, &d.call_id)
            .await
            .map_err(|e| format!("cannot read the request: {e}"))?
            .ok_or_else(|| format!("the request {} is gone", d.call_id))?;
        let event = event_json(&record, &d.event_type, d.event_seq);
        let format = Format::parse(&claimed.endpoint.format).unwrap_or(Format::V1Beta2);
        let body = webhook::body(format, &d.event_type, &event, false);
        let timestamp = Timestamp::now().as_micros() / 1_000_000;
        let signature = webhook::sign(&claimed.endpoint.secret, &d.id, timestamp, body.as_bytes());
        let response = self
            .http
            .post(&claimed.endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        Ok(response.status())
    }
}

/// The request as it was when the event happened: pending with the escalations it had for
/// `created` and `escalated`, decided for `completed` (a decided request never changes again).
pub fn event_json(record: &RequestRecord, event_type: &str, seq: u32) -> Box<RawValue> {
    let mut then = record.clone();
    if !event_type.ends_with(".completed") {
        then.outcome = None;
        then.escalations.truncate(usize::try_from(seq).unwrap_or(usize::MAX));
    }
    let json = String::from_utf8(then.to_json()).expect("JSON is UTF-8");
    RawValue::from_string(json).expect("the request renders as JSON")
}

fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        format!("no answer within {} s", DELIVERY_TIMEOUT.as_secs())
    } else if err.is_connect() {
        "cannot connect to the endpoint".to_owned()
    } else {
        format!("request failed: {err}")
    }
}
