//! The webhook receiver: an axum server on loopback inside the torture process (so it outlives
//! every server kill), answering 200 to every POST, checking each Standard Webhooks signature and
//! recording which request's completion arrived, with what decision, under which `webhook-id`.

use crate::request::{Decision, Key, parse_webhook};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// One delivery that arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub key: Key,
    pub decision: Option<Decision>,
    pub webhook_id: String,
}

#[derive(Default)]
struct Inner {
    secret: Option<Vec<u8>>,
    arrivals: Vec<Arrival>,
    bad_signatures: u64,
    unreadable: u64,
    first_problem: Option<String>,
}

/// The running receiver.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    /// Listens on `127.0.0.1:0` until the process ends.
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().route("/hook", post(receive)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, inner })
    }

    /// The URL to register.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The endpoint's `whsec_...` secret, once `webhooks add` printed it.
    pub fn set_secret(&self, secret: &str) -> anyhow::Result<()> {
        let raw = secret.strip_prefix("whsec_").unwrap_or(secret);
        let bytes = STANDARD.decode(raw).map_err(|e| anyhow::anyhow!("the webhook secret is not base64: {e}"))?;
        self.inner.lock().unwrap().secret = Some(bytes);
        Ok(())
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.inner.lock().unwrap().arrivals.clone()
    }

    /// Arrivals with a missing or wrong signature; bodies that were not a completion.
    pub fn rejected(&self) -> (u64, u64, Option<String>) {
        let inner = self.inner.lock().unwrap();
        (inner.bad_signatures, inner.unreadable, inner.first_problem.clone())
    }
}

async fn receive(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (id, timestamp, signature) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let mut inner = inner.lock().unwrap();
    let signed = inner.secret.as_deref().is_some_and(|secret| verify(secret, &id, &timestamp, &body, &signature));
    if !signed {
        inner.bad_signatures += 1;
        inner.first_problem.get_or_insert_with(|| format!("bad signature on webhook {id:?}"));
    }
    let parsed = serde_json::from_slice(&body).map_err(|e| e.to_string()).and_then(|v| parse_webhook(&v));
    match parsed {
        Ok((key, stored)) => inner.arrivals.push(Arrival { key, decision: stored.decision, webhook_id: id }),
        Err(why) => {
            inner.unreadable += 1;
            inner.first_problem.get_or_insert_with(|| format!("webhook {id:?}: {why}"));
        }
    }
    StatusCode::OK
}

/// Whether `signature` (`v1,<base64>` entries, space-separated) holds the HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` under `secret`.
pub fn verify(secret: &[u8], id: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    signature.split_whitespace().any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

/// Expected completions against arrivals.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct WebhookTally {
    /// Requests the store holds decided: each must have had its completion delivered.
    pub expected: u64,
    pub arrived: u64,
    /// Arrivals beyond the first for one request (at-least-once allows them).
    pub duplicates: u64,
    /// Of the duplicates, those that repeated a `webhook-id` (a redelivery of one delivery).
    pub duplicates_same_id: u64,
    pub missing: u64,
    /// Arrivals whose decision differs from the stored one.
    pub contradicting: u64,
    /// Arrivals for a request the store does not hold decided.
    pub unexpected: u64,
}

impl WebhookTally {
    pub fn is_clean(&self) -> bool {
        self.missing == 0 && self.contradicting == 0 && self.unexpected == 0
    }
}

/// Compares arrivals with the decided requests the store holds.
pub fn tally(decided: &HashMap<Key, Decision>, arrivals: &[Arrival], problems: &mut Vec<String>) -> WebhookTally {
    let mut by_key: HashMap<&Key, Vec<&Arrival>> = HashMap::new();
    for arrival in arrivals {
        by_key.entry(&arrival.key).or_default().push(arrival);
    }
    let mut tally = WebhookTally { expected: decided.len() as u64, ..Default::default() };
    let mut keys: Vec<&Key> = decided.keys().collect();
    keys.sort();
    for key in keys {
        let decision = &decided[key];
        match by_key.get(key) {
            None => {
                tally.missing += 1;
                problems.push(format!("{key}: decided ({decision}) but its webhook never arrived"));
            }
            Some(list) => {
                tally.arrived += 1;
                tally.duplicates += list.len() as u64 - 1;
                let ids: HashSet<&str> = list.iter().map(|a| a.webhook_id.as_str()).collect();
                tally.duplicates_same_id += (list.len() - ids.len()) as u64;
                for arrival in list {
                    if arrival.decision.as_ref() != Some(decision) {
                        tally.contradicting += 1;
                        problems
                            .push(format!("{key}: webhook said {:?}, the store holds {decision}", arrival.decision));
                    }
                }
            }
        }
    }
    for (key, list) in &by_key {
        if !decided.contains_key(*key) {
            tally.unexpected += list.len() as u64;
            problems.push(format!("{key}: a completion webhook arrived but the store does not hold it decided"));
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Kind;

    fn key(n: u32) -> Key {
        Key { kind: Kind::FunctionCall, call_id: format!("fc-{n}") }
    }

    fn arrival(n: u32, comment: &str, id: &str) -> Arrival {
        Arrival { key: key(n), decision: Some(Decision::Approved { comment: comment.into() }), webhook_id: id.into() }
    }

    #[test]
    fn signatures_are_checked_the_standard_webhooks_way() {
        // The example of the Standard Webhooks specification.
        let secret = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = "1614265330";
        let body = br#"{"test": 2432232314}"#;
        let good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert!(verify(&secret, id, ts, body, good));
        assert!(verify(&secret, id, ts, body, &format!("v1,bogus {good}")));
        assert!(!verify(&secret, id, "1614265331", body, good));
        assert!(!verify(&secret, id, ts, body, ""));
    }

    #[test]
    fn every_decided_request_must_have_arrived_duplicates_counted() {
        let decided: HashMap<Key, Decision> = [
            (key(1), Decision::Approved { comment: "a".into() }),
            (key(2), Decision::Approved { comment: "b".into() }),
            (key(3), Decision::Approved { comment: "c".into() }),
        ]
        .into_iter()
        .collect();
        let arrivals = vec![arrival(1, "a", "m1"), arrival(1, "a", "m1"), arrival(2, "x", "m2"), arrival(4, "d", "m4")];
        let mut problems = Vec::new();
        let t = tally(&decided, &arrivals, &mut problems);
        assert_eq!(
            t,
            WebhookTally {
                expected: 3,
                arrived: 2,
                duplicates: 1,
                duplicates_same_id: 1,
                missing: 1,
                contradicting: 1,
                unexpected: 1
            }
        );
        assert!(!t.is_clean());
        assert_eq!(problems.len(), 3);
    }
}
