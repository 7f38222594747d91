//! The webhook channel's outbound side: one signed POST (the Standard Webhooks way) of one event
//! to one endpoint, with a 10 s timeout; a 2xx is delivered, anything else is retried with growing,
//! jittered delays for about a day ([`webhook::retry_delay`]), then the delivery is failed. The
//! delivery worker (`workers::delivery`) claims, leases and records; this only sends.
//!
//! Unless `limits.allow_private_webhook_targets` is set, deliveries only reach public addresses:
//! names are resolved by [`GuardedResolver`], which drops loopback, private, link-local and
//! unspecified addresses (so a name that resolves, or rebinds, to one is not reached), and literal
//! addresses (which skip the resolver) are checked before sending. Redirects are not followed and
//! no proxy is used. The delivery log a key can read says only `the endpoint answered <status>` or
//! [`NO_RESPONSE`] (whatever went wrong: refused, reset, timed out, not HTTP, TLS, a forbidden
//! address), so it cannot be used to scan ports; the detailed cause is in the server's log.

use crate::channels::Outbound;
use countersign_core::route::Channel;
use countersign_core::webhook::{self, EventType};
use countersign_core::{RequestRecord, Timestamp};
use countersign_store::{AttemptOutcome, Claimed, Delivery, Store, WebhookEndpoint};
use futures::future::BoxFuture;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the delivery log says of any attempt that got no HTTP answer.
pub const NO_RESPONSE: &str = "could not deliver: no HTTP response";

/// Longest wait for an endpoint's answer.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an endpoint read for a delivery is reused (endpoints never change; a removed one
/// fails its pending deliveries when it is removed, and is refused by attempts within this time).
const ENDPOINT_TTL: Duration = Duration::from_secs(1);

/// Sends webhook deliveries.
pub struct WebhookChannel {
    store: Arc<dyn Store>,
    /// Signs the receipt a `*.completed` event carries.
    signer: Arc<crate::services::receipts::Signer>,
    http: reqwest::Client,
    allow_private: bool,
    endpoints: Mutex<HashMap<String, (Instant, Option<WebhookEndpoint>)>>,
}

impl WebhookChannel {
    /// The channel over `store`; with `allow_private` (the `limits.allow_private_webhook_targets`
    /// setting) it delivers to loopback, private and link-local addresses too.
    pub fn new(store: Arc<dyn Store>, signer: Arc<crate::services::receipts::Signer>, allow_private: bool) -> Self {
        let http = delivery_client(GuardedResolver::system(allow_private));
        Self { store, signer, http, allow_private, endpoints: Mutex::default() }
    }

    /// The active endpoint a delivery goes to, read at most once per [`ENDPOINT_TTL`].
    async fn endpoint(&self, id: &str) -> Result<WebhookEndpoint, Failure> {
        let now = Instant::now();
        let cached = self.endpoints.lock().expect("not poisoned").get(id).cloned();
        let endpoint = match cached {
            Some((read, endpoint)) if now.duration_since(read) < ENDPOINT_TTL => endpoint,
            _ => {
                let endpoint = self
                    .store
                    .webhook(id)
                    .await
                    .map_err(|e| Failure::internal(format!("cannot read the endpoint: {e}")))?;
                let mut cache = self.endpoints.lock().expect("not poisoned");
                cache.retain(|_, (read, _)| now.duration_since(*read) < ENDPOINT_TTL);
                cache.insert(id.to_owned(), (now, endpoint.clone()));
                endpoint
            }
        };
        endpoint.ok_or_else(|| Failure { permanent: true, ..Failure::internal("the endpoint was removed".into()) })
    }
}

impl Outbound for WebhookChannel {
    const CHANNEL: Channel = Channel::Webhook;
    /// The attempt's timeout plus a margin for recording it.
    const LEASE: Duration = Duration::from_secs(20);
    const IN_FLIGHT: usize = 64;

    async fn attempt(&self, claimed: &Claimed) -> AttemptOutcome {
        let started = Instant::now();
        let at = Timestamp::now();
        let d = &claimed.delivery;
        let (url, sent) = match self.endpoint_of(d).await {
            Ok(endpoint) => {
                let sent = self.send(d, &endpoint).await;
                (endpoint.url, sent)
            }
            Err(failure) => (String::new(), Err(failure)),
        };
        let (status_code, failure) = match sent {
            Ok(status) if status.is_success() => (Some(status.as_u16()), None),
            Ok(status) => {
                let text = format!("the endpoint answered {status}");
                (Some(status.as_u16()), Some(Failure { shown: text.clone(), detail: text, permanent: false }))
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
        let attempts = d.attempts + 1;
        let retry_at = match &failure {
            Some(f) if !f.permanent => webhook::retry_delay(attempts).map(|d| Timestamp::now().plus(d)),
            _ => None,
        };
        let event = d.event_type.as_str();
        match (&failure, retry_at) {
            (None, _) => tracing::debug!(id = %d.id, event, latency_ms, "webhook delivered"),
            (Some(f), Some(at)) => {
                tracing::info!(id = %d.id, event, url, attempts, error = %f.detail, retry_at = %at, "webhook delivery failed; will retry")
            }
            (Some(f), None) => {
                tracing::warn!(id = %d.id, event, url, attempts, error = %f.detail, "webhook delivery failed for good")
            }
        }
        let error = failure.map(|f| f.shown);
        AttemptOutcome {
            at,
            status_code,
            error,
            latency_ms,
            delivered,
            retry_at,
            recipients: Vec::new(),
            deferred: false,
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
    /// Trying again cannot help (the endpoint was removed): no retries.
    permanent: bool,
}

impl Failure {
    /// No HTTP answer: the log shows only [`NO_RESPONSE`].
    fn no_response(detail: String) -> Self {
        Self { shown: NO_RESPONSE.to_owned(), detail, permanent: false }
    }

    /// A failure before any connection (the request is gone, ...), shown as it is.
    fn internal(text: String) -> Self {
        Self { shown: text.clone(), detail: text, permanent: false }
    }
}

impl WebhookChannel {
    /// The endpoint a delivery goes to.
    async fn endpoint_of(&self, d: &Delivery) -> Result<WebhookEndpoint, Failure> {
        let id = d.target.as_deref().ok_or_else(|| Failure::internal("the delivery names no endpoint".into()))?;
        self.endpoint(id).await
    }

    /// Renders, signs and posts one delivery to `endpoint`; the status it answered.
    async fn send(&self, d: &Delivery, endpoint: &WebhookEndpoint) -> Result<reqwest::StatusCode, Failure> {
        let url = reqwest::Url::parse(&endpoint.url)
            .map_err(|e| Failure::internal(format!("the endpoint's URL is not valid: {e}")))?;
        // Literal addresses are not resolved, so the resolver's check does not see them.
        if !self.allow_private
            && let Some(reason) = crate::services::webhooks::refusal(&url)
        {
            return Err(Failure::no_response(format!("the endpoint's URL points to {reason}; not sent")));
        }
        let record = self
            .store
            .request(&d.project_id, d.kind, &d.call_id)
            .await
            .map_err(|e| Failure::internal(format!("cannot read the request: {e}")))?
            .ok_or_else(|| Failure::internal(format!("the request {} is gone", d.call_id)))?;
        let receipt = match (d.event_type.as_str().ends_with(".completed"), record.receipt_claims()) {
            (true, Some(claims)) => Some(self.signer.key().await.sign(&claims)),
            _ => None,
        };
        let event = event_json(&record, d.event_type, d.event_seq, receipt.as_deref());
        let body = webhook::body(endpoint.format, d.event_type.as_str(), &event, false);
        let timestamp = Timestamp::now().as_micros() / 1_000_000;
        let signature = webhook::sign(&endpoint.secret, &d.id, timestamp, body.as_bytes());
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
/// `created` and `escalated`, decided for `completed` (a decided request never changes again),
/// with the decision's signed `receipt` in its status.
pub fn event_json(record: &RequestRecord, event_type: EventType, seq: u32, receipt: Option<&str>) -> Box<RawValue> {
    let mut then = record.clone();
    if !event_type.as_str().ends_with(".completed") {
        then.outcome = None;
        then.escalations.truncate(usize::try_from(seq).unwrap_or(usize::MAX));
    }
    let json = String::from_utf8(then.to_json_with_receipt(receipt.filter(|_| then.outcome.is_some())))
        .expect("JSON is UTF-8");
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
