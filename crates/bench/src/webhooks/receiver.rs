//! The receiver of the webhooks part: an axum server on `127.0.0.1:0` inside the bench process
//! that answers 200 to every `POST /hook`, checks each signature, and records each arrival by the
//! `call_id` in its body and by its `webhook-id`.

use anyhow::{Context, Result};
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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

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
pub struct CallArrivals {
    /// When the first arrived.
    pub first: Instant,
    posts: u32,
    webhook_ids: Vec<String>,
    bad_signatures: u32,
}

/// Everything received so far.
#[derive(Default)]
pub struct Arrivals {
    /// By call id.
    pub calls: HashMap<String, CallArrivals>,
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
pub struct Receiver {
    pub addr: SocketAddr,
    log: Arc<Log>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Receiver {
    pub async fn start() -> Result<Self> {
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
    pub async fn stop(self) -> Result<()> {
        if self.task.is_finished() {
            self.task.await.context("the receiver panicked")?.context("the receiver failed")?;
        } else {
            self.task.abort();
        }
        Ok(())
    }

    /// Waits until `ready` holds of the arrivals, or until no webhook arrived for `stall`; returns
    /// what `ready` returned last.
    pub async fn wait_for<T>(&self, stall: Duration, mut ready: impl FnMut(&Arrivals) -> Option<T>) -> Option<T> {
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

    /// Calls that had a webhook so far.
    pub fn distinct_calls(&self) -> u64 {
        self.log.arrivals.lock().expect("arrivals lock").calls.len() as u64
    }

    /// Checks the signatures from now on with the key of `secret` (a `whsec_` secret).
    pub fn set_secret(&self, secret: &str) -> Result<()> {
        self.log.key.set(signing_key(secret)?).map_err(|_| anyhow::anyhow!("the receiver already has a key"))
    }

    /// The signing key, once set.
    pub fn key(&self) -> Option<Vec<u8>> {
        self.log.key.get().cloned()
    }

    /// The first webhook received: (call id, webhook-id, body).
    pub fn sample(&self) -> Option<(String, String, Bytes)> {
        self.log.arrivals.lock().expect("arrivals lock").sample.clone()
    }

    /// Arrivals rejected so far (a bad signature, or no headers or call id), and the first problem.
    pub fn rejected(&self) -> (u64, Option<String>) {
        let a = self.log.arrivals.lock().expect("arrivals lock");
        let bad: u64 = a.calls.values().map(|c| u64::from(c.bad_signatures)).sum();
        (a.unreadable + bad, a.first_problem.clone())
    }

    /// The arrivals of the calls whose id starts with `prefix`, and the first arrival of the last
    /// of them.
    pub fn tally(&self, prefix: &str) -> (Tally, Option<Instant>) {
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
pub fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
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
pub fn signing_key(secret: &str) -> Result<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_").with_context(|| format!("the secret {secret:?} is not whsec_…"))?;
    B64.decode(encoded).context("the secret is not base64")
}

/// A signed webhook POST to the receiver, as the bench's client sends it.
pub fn signed_post(receiver: SocketAddr, key: &[u8], id: &str, body: &str) -> Bytes {
    let timestamp = unix_now().to_string();
    let signature = sign(key, id, &timestamp, body.as_bytes());
    Bytes::from(format!(
        "POST /hook HTTP/1.1\r\nHost: {receiver}\r\nContent-Type: application/json\r\nwebhook-id: {id}\r\n\
         webhook-timestamp: {timestamp}\r\nwebhook-signature: {signature}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
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
