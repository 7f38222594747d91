//! Outbound webhooks: the events, the two body formats, Standard Webhooks signatures, and the
//! retry schedule. Pure functions; delivery lives in the server.

use crate::Invalid;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::value::RawValue;
use sha2::Sha256;
use std::time::Duration;

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    FunctionCallCreated,
    FunctionCallCompleted,
    FunctionCallEscalated,
    HumanContactCreated,
    HumanContactCompleted,
    HumanContactEscalated,
}

impl EventType {
    /// Every event, in the order they are listed to people.
    pub const ALL: [EventType; 6] = [
        Self::FunctionCallCreated,
        Self::FunctionCallCompleted,
        Self::FunctionCallEscalated,
        Self::HumanContactCreated,
        Self::HumanContactCompleted,
        Self::HumanContactEscalated,
    ];

    /// The HumanLayer-style name, e.g. `function_call.completed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FunctionCallCreated => "function_call.created",
            Self::FunctionCallCompleted => "function_call.completed",
            Self::FunctionCallEscalated => "function_call.escalated",
            Self::HumanContactCreated => "human_contact.created",
            Self::HumanContactCompleted => "human_contact.completed",
            Self::HumanContactEscalated => "human_contact.escalated",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// The event of a request kind and what happened (`created`, `completed`, `escalated`).
    pub fn of(kind: crate::RequestKind, what: &str) -> Option<Self> {
        Self::parse(&format!("{}.{what}", kind.as_str()))
    }
}

/// Parses a comma-separated event list; empty means the two HumanLayer events (`*.completed`),
/// `all` means every event.
pub fn parse_events(list: &str) -> Result<Vec<EventType>, Invalid> {
    let list = list.trim();
    if list.is_empty() {
        return Ok(vec![EventType::FunctionCallCompleted, EventType::HumanContactCompleted]);
    }
    if list == "all" || list == "*" {
        return Ok(EventType::ALL.to_vec());
    }
    let mut events = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let event = EventType::parse(name).ok_or_else(|| {
            let names: Vec<&str> = EventType::ALL.iter().map(|e| e.as_str()).collect();
            Invalid::new("events", format!("{name:?} is not an event; use some of {} (or all)", names.join(", ")))
        })?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    Ok(events)
}

/// How an endpoint wants its bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// HumanLayer's v1beta2 envelope: `{"is_test": false, "type": "...", "event": {...}}`.
    V1Beta2,
    /// The bare FunctionCall or HumanContact object, as the pre-2025 examples parse it.
    Legacy,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1Beta2 => "v1beta2",
            Self::Legacy => "legacy",
        }
    }

    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "v1beta2" => Ok(Self::V1Beta2),
            "legacy" => Ok(Self::Legacy),
            _ => Err(Invalid::new("format", format!("{s:?} is not a format; use v1beta2 or legacy"))),
        }
    }
}

/// The body sent for an event whose object (the request's JSON) is `event`.
pub fn body(format: Format, event_type: &str, event: &RawValue, is_test: bool) -> String {
    match format {
        Format::Legacy => event.get().to_owned(),
        Format::V1Beta2 => {
            let type_json = serde_json::to_string(event_type).expect("strings serialize");
            format!(r#"{{"is_test":{is_test},"type":{type_json},"event":{}}}"#, event.get())
        }
    }
}

/// A signing secret, `whsec_` + base64 of 24 random bytes (the Standard Webhooks form).
pub fn generate_secret() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    format!("whsec_{}", B64.encode(bytes))
}

/// The `webhook-signature` header: `v1,` + base64 HMAC-SHA256 over `id.timestamp.body`, keyed with
/// the secret's decoded bytes.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let key =
        secret.strip_prefix("whsec_").and_then(|b| B64.decode(b).ok()).unwrap_or_else(|| secret.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// Checks a `webhook-signature` header (any of its space-separated `v1,` signatures) in constant
/// time, and that the timestamp is within 5 minutes of `now` (unix seconds).
pub fn verify(secret: &str, msg_id: &str, timestamp: i64, body: &[u8], header: &str, now: i64) -> bool {
    if (now - timestamp).abs() > 300 {
        return false;
    }
    let expected = sign(secret, msg_id, timestamp, body);
    header.split(' ').any(|candidate| crate::session::same_secret(candidate, &expected))
}

/// Delays before each retry: the first attempt is immediate, then these; after the last the
/// delivery is marked failed (about 24 hours after the event).
pub const RETRY_DELAYS: [Duration; 9] = [
    Duration::from_secs(5),
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(3600),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(4 * 3600),
    Duration::from_secs(8 * 3600),
    Duration::from_secs(8 * 3600),
];

/// The wait after `attempts` failed attempts, with ±20 % jitter; `None` when it is time to give up.
pub fn retry_delay(attempts: u32) -> Option<Duration> {
    let base = *RETRY_DELAYS.get(usize::try_from(attempts).ok()?.checked_sub(1)?)?;
    let jitter = rand::rng().random_range(0.8..1.2);
    Some(base.mul_f64(jitter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        // From the Standard Webhooks specification's test vectors.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
            &format!("v1,bogus {sig}"),
            1614265400
        ));
        assert!(!verify(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, &sig, 1614265330 + 301));
        assert!(!verify(secret, "msg_other", 1614265330, body, &sig, 1614265330));
    }

    #[test]
    fn bodies_in_both_formats() {
        let event = RawValue::from_string(r#"{"call_id":"c","n":1e2}"#.into()).unwrap();
        assert_eq!(body(Format::Legacy, "function_call.completed", &event, false), r#"{"call_id":"c","n":1e2}"#);
        assert_eq!(
            body(Format::V1Beta2, "function_call.completed", &event, false),
            r#"{"is_test":false,"type":"function_call.completed","event":{"call_id":"c","n":1e2}}"#
        );
    }

    #[test]
    fn events_parse() {
        assert_eq!(parse_events("").unwrap(), vec![EventType::FunctionCallCompleted, EventType::HumanContactCompleted]);
        assert_eq!(parse_events("all").unwrap().len(), 6);
        assert_eq!(
            parse_events("function_call.created, function_call.created").unwrap(),
            vec![EventType::FunctionCallCreated]
        );
        assert_eq!(parse_events("nope").unwrap_err().field, "events");
    }

    #[test]
    fn retries_back_off_for_about_a_day_then_stop() {
        assert!(retry_delay(0).is_none());
        let first = retry_delay(1).unwrap();
        assert!(first >= Duration::from_secs(4) && first <= Duration::from_secs(6));
        let total: Duration = RETRY_DELAYS.iter().sum();
        assert!(total > Duration::from_secs(20 * 3600) && total < Duration::from_secs(28 * 3600), "{total:?}");
        assert!(retry_delay(9).is_some() && retry_delay(10).is_none());
    }

    #[test]
    fn secrets_look_right() {
        let secret = generate_secret();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(B64.decode(&secret[6..]).unwrap().len(), 24);
    }
}
