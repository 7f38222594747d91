//! The webhook worker: delivers the outbox rows the database wrote with each change, at least
//! once, signed the Standard Webhooks way. A delivery is claimed (a lease no other worker of any
//! instance takes), attempted with a 10 s timeout, and recorded: a 2xx is delivered, anything else
//! is retried with growing, jittered delays for about a day, then marked failed.
//!
//! Unless `limits.allow_private_webhook_targets` is set, deliveries only reach public addresses:
//! names are resolved by [`GuardedResolver`], which drops loopback, private, link-local and
//! unspecified addresses (so a name that resolves, or rebinds, to one is not reached), and literal
//! addresses (which skip the resolver) are checked before sending. Redirects are not followed and
//! no proxy is used. The delivery log a key can read says only `the endpoint answered <status>` or
//! [`NO_RESPONSE`] (whatever went wrong: refused, reset, timed out, not HTTP, TLS, a forbidden
//! address), so it cannot be used to scan ports; the detailed cause is in the server's log.

use countersign_core::webhook::{self, Format};
use countersign_core::{RequestRecord, Timestamp};
use countersign_store::{AttemptOutcome, Claimed, Store};
use futures::future::BoxFuture;
use serde_json::value::RawValue;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, watch};

/// What the delivery log says of any attempt that got no HTTP answer.
pub const NO_RESPONSE: &str = "could not deliver: no HTTP response";

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
    allow_private: bool,
}

impl Outbox {
    /// A worker over `store`, woken early through `wake` when something was written; with
    /// `allow_private` (the `limits.allow_private_webhook_targets` setting) it delivers to
    /// loopback, private and link-local addresses too.
    pub fn new(store: Arc<dyn Store>, wake: Arc<Notify>, allow_private: bool) -> Self {
        Self { store, http: delivery_client(GuardedResolver::system(allow_private)), wake, allow_private }
    }

    /// Runs until `closing` turns true. Attempts run concurrently (up to [`CONCURRENCY`]); free
    /// slots are refilled as soon as attempts end, and their outcomes are recorded in batches by
    /// one task (one transaction for all that ended meanwhile).
    pub async fn run(self, mut closing: watch::Receiver<bool>) {
        let (outcomes, recorded) = tokio::sync::mpsc::unbounded_channel();
        let recorder = tokio::spawn(record(self.store.clone(), recorded));
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        let sender =
            Arc::new(Sender { store: self.store.clone(), http: self.http.clone(), allow_private: self.allow_private });
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

/// The HTTP client of deliveries: `resolver` for names, no redirects, no proxies.
fn delivery_client(resolver: GuardedResolver) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .connect_timeout(DELIVERY_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(resolver)
        .user_agent(concat!("Countersign-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("an HTTP client with rustls")
}

/// Looks a name up: its addresses (ports are set by the URL).
type Lookup = Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> + Send + Sync>;

/// The delivery client's DNS resolver: the addresses of a name, less those webhooks may not reach
/// (see [`webhook::forbidden_ip`]) unless private targets are allowed. Checked on every
/// connection, so a name that later resolves to a private address (DNS rebinding) is not reached.
pub struct GuardedResolver {
    lookup: Lookup,
    allow_private: bool,
}

impl GuardedResolver {
    /// The system's resolver (`getaddrinfo`, through tokio), guarded.
    pub fn system(allow_private: bool) -> Self {
        let lookup: Lookup = Arc::new(|name: String| {
            Box::pin(async move { Ok(tokio::net::lookup_host((name.as_str(), 0)).await?.collect()) })
        });
        Self { lookup, allow_private }
    }

    /// The addresses `name` may be reached at, or why none.
    pub async fn addresses(&self, name: &str) -> Result<Vec<SocketAddr>, String> {
        if !self.allow_private
            && let Some(reason) = webhook::forbidden_name(name)
        {
            return Err(format!("{name} is {reason}"));
        }
        let found = (self.lookup)(name.to_owned()).await.map_err(|e| format!("cannot resolve {name}: {e}"))?;
        permitted(name, found, self.allow_private)
    }
}

/// The addresses of `found` webhooks may reach; an error naming the first refused one when none.
fn permitted(name: &str, found: Vec<SocketAddr>, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    if found.is_empty() {
        return Err(format!("{name} has no addresses"));
    }
    if allow_private {
        return Ok(found);
    }
    let refused = found.iter().find_map(|a| webhook::forbidden_ip(a.ip()).map(|r| format!("{} is {r}", a.ip())));
    let kept: Vec<SocketAddr> = found.into_iter().filter(|a| webhook::forbidden_ip(a.ip()).is_none()).collect();
    match refused {
        Some(refused) if kept.is_empty() => {
            Err(format!("{name} resolves only to addresses webhooks may not reach ({refused})"))
        }
        _ => Ok(kept),
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (lookup, allow_private, name) = (self.lookup.clone(), self.allow_private, name.as_str().to_owned());
        Box::pin(async move {
            let guard = GuardedResolver { lookup, allow_private };
            match guard.addresses(&name).await {
                Ok(addresses) => Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs),
                Err(why) => Err(why.into()),
            }
        })
    }
}

/// Why an attempt failed: what the delivery log shows, and what the server logs.
struct Failure {
    shown: String,
    detail: String,
}

impl Failure {
    /// No HTTP answer: the log shows only [`NO_RESPONSE`].
    fn no_response(detail: String) -> Self {
        Self { shown: NO_RESPONSE.to_owned(), detail }
    }

    /// A failure before any connection (the request is gone, ...), shown as it is.
    fn internal(text: String) -> Self {
        Self { shown: text.clone(), detail: text }
    }
}

/// What one attempt needs.
struct Sender {
    store: Arc<dyn Store>,
    http: reqwest::Client,
    allow_private: bool,
}

impl Sender {
    async fn attempt(&self, claimed: &Claimed) -> AttemptOutcome {
        let started = Instant::now();
        let at = Timestamp::now();
        let (status_code, failure) = match self.send(claimed).await {
            Ok(status) if status.is_success() => (Some(status.as_u16()), None),
            Ok(status) => {
                let text = format!("the endpoint answered {status}");
                (Some(status.as_u16()), Some(Failure { shown: text.clone(), detail: text }))
            }
            Err(failure) => (None, Some(failure)),
        };
        // Without an answer the latency would tell a closed port (at once) from a silent one (the
        // timeout): it is recorded as 0.
        let latency_ms = match status_code {
            Some(_) => u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            None => 0,
        };
        let delivered = failure.is_none();
        let attempts = claimed.delivery.attempts + 1;
        let retry_at = if delivered { None } else { webhook::retry_delay(attempts).map(|d| Timestamp::now().plus(d)) };
        let d = &claimed.delivery;
        match (&failure, retry_at) {
            (None, _) => tracing::debug!(id = %d.id, event = %d.event_type, latency_ms, "webhook delivered"),
            (Some(f), Some(at)) => {
                tracing::info!(id = %d.id, event = %d.event_type, url = %claimed.endpoint.url, attempts, error = %f.detail, retry_at = %at, "webhook delivery failed; will retry")
            }
            (Some(f), None) => {
                tracing::warn!(id = %d.id, event = %d.event_type, url = %claimed.endpoint.url, attempts, error = %f.detail, "webhook delivery failed for good")
            }
        }
        let error = failure.map(|f| f.shown);
        AttemptOutcome { at, status_code, error, latency_ms, delivered, retry_at }
    }

    /// Renders, signs and posts one delivery.
    async fn send(&self, claimed: &Claimed) -> Result<reqwest::StatusCode, Failure> {
        let d = &claimed.delivery;
        let url = reqwest::Url::parse(&claimed.endpoint.url)
            .map_err(|e| Failure::internal(format!("the endpoint's URL is not valid: {e}")))?;
        // Literal addresses are not resolved, so the resolver's check does not see them.
        if !self.allow_private
            && let Some(reason) = crate::webhooks::refusal(&url)
        {
            return Err(Failure::no_response(format!("the endpoint's URL points to {reason}; not sent")));
        }
        let record = self
            .store
            .request(&d.project_id, d.kind, &d.call_id)
            .await
            .map_err(|e| Failure::internal(format!("cannot read the request: {e}")))?
            .ok_or_else(|| Failure::internal(format!("the request {} is gone", d.call_id)))?;
        let event = event_json(&record, &d.event_type, d.event_seq);
        let format = Format::parse(&claimed.endpoint.format).unwrap_or(Format::V1Beta2);
        let body = webhook::body(format, &d.event_type, &event, false);
        let timestamp = Timestamp::now().as_micros() / 1_000_000;
        let signature = webhook::sign(&claimed.endpoint.secret, &d.id, timestamp, body.as_bytes());
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| Failure::no_response(describe(&e)))?;
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

/// The detailed cause of a failed request, with its chain of sources (for the server's log only).
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        format!("no answer within {} s", DELIVERY_TIMEOUT.as_secs())
    } else if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut text = format!("{kind}: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolver whose names all resolve to `addresses`.
    fn resolving_to(addresses: &[&str], allow_private: bool) -> GuardedResolver {
        let addresses: Vec<SocketAddr> = addresses.iter().map(|a| a.parse().unwrap()).collect();
        let lookup: Lookup = Arc::new(move |_name| {
            let addresses = addresses.clone();
            Box::pin(async move { Ok(addresses) })
        });
        GuardedResolver { lookup, allow_private }
    }

    #[tokio::test]
    async fn the_resolver_drops_private_addresses_unless_allowed() {
        let mixed = resolving_to(&["127.0.0.1:0", "93.184.215.14:0", "[::ffff:10.0.0.1]:0", "[2606:4700::1]:0"], false);
        let kept = mixed.addresses("hooks.example.com").await.unwrap();
        assert_eq!(kept, ["93.184.215.14:0".parse().unwrap(), "[2606:4700::1]:0".parse().unwrap()]);

        let rebound = resolving_to(&["127.0.0.1:0", "[::1]:0", "169.254.169.254:0"], false);
        let why = rebound.addresses("rebind.example.com").await.unwrap_err();
        assert!(why.contains("rebind.example.com resolves only to addresses webhooks may not reach"), "{why}");
        assert!(why.contains("127.0.0.1 is a loopback address"), "{why}");
        let why = resolving_to(&["93.184.215.14:0"], false).addresses("app.localhost").await.unwrap_err();
        assert!(why.contains("loopback"), "{why}");

        let allowed = resolving_to(&["127.0.0.1:0", "[::1]:0"], true);
        assert_eq!(allowed.addresses("localhost").await.unwrap().len(), 2);
        assert!(resolving_to(&[], true).addresses("nothing.example").await.is_err());
    }

    /// The delivery client goes through the resolver: a public-looking name that resolves to
    /// loopback never reaches the listener there, and the log text is the coarse one.
    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_not_connected_to() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = tokio::spawn(async move { listener.accept().await.is_ok() });
        let http = delivery_client(resolving_to(&["127.0.0.1:0"], false));
        let err = http.post(format!("http://hooks.example.com:{port}/hook")).send().await.unwrap_err();
        let detail = describe(&err);
        assert!(detail.contains("resolves only to addresses webhooks may not reach"), "{detail}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!accepted.is_finished(), "nothing connected to the loopback listener");
        accepted.abort();

        // With private targets allowed the same name is reached.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = tokio::spawn(async move { listener.accept().await.is_ok() });
        let http = delivery_client(resolving_to(&["127.0.0.1:0"], true));
        let _ = tokio::time::timeout(
            Duration::from_millis(300),
            http.post(format!("http://hooks.example.com:{port}/")).send(),
        )
        .await;
        assert!(accepted.await.unwrap(), "connected with the opt-in");
    }
}
