//! Outbound webhooks: the events, the two body formats, Standard Webhooks signatures, and the
//! retry schedule. Pure functions; delivery lives in the server.

use crate::Invalid;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::value::RawValue;
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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
    /// A vote toward a quorum: never sent to webhook endpoints (they cannot subscribe to it); it
    /// only updates the request's Slack messages.
    FunctionCallVoted,
    HumanContactVoted,
    /// The agent's report on running an approved call: only in the audit log, never delivered.
    FunctionCallExecuted,
    HumanContactExecuted,
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
            Self::FunctionCallVoted => "function_call.voted",
            Self::HumanContactVoted => "human_contact.voted",
            Self::FunctionCallExecuted => "function_call.executed",
            Self::HumanContactExecuted => "human_contact.executed",
        }
    }

    /// Parses a name (of any event, votes included).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain([
                Self::FunctionCallVoted,
                Self::HumanContactVoted,
                Self::FunctionCallExecuted,
                Self::HumanContactExecuted,
            ])
            .find(|e| e.as_str() == s)
    }

    /// Parses the name of an event webhook endpoints may subscribe to.
    pub fn parse_public(s: &str) -> Option<Self> {
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
        let event = EventType::parse_public(name).ok_or_else(|| {
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
    // `abs_diff`: a timestamp near i64::MIN must be stale, not an overflow.
    if now.abs_diff(timestamp) > 300 {
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

/// Why webhooks may not reach `ip` (e.g. `"a loopback address"`), or `None` for an address on
/// the public internet. Refused: loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7),
/// carrier-grade NAT (100.64/10), link-local (169.254/16, fe80::/10), unspecified and "this
/// network" (0/8, `::`), multicast, broadcast and reserved (240/4) ranges, 192.0.0/24 and
/// 198.18/15, and IPv6 forms that embed an IPv4 address (`::ffff:a.b.c.d`, `::a.b.c.d`, NAT64
/// `64:ff9b::/96`, 6to4 `2002::/16`) when the embedded address is refused.
pub fn forbidden_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => forbidden_v4(ip),
        IpAddr::V6(ip) => forbidden_v6(ip),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        () if ip.is_unspecified() => "an unspecified address",
        () if a == 0 => "a \"this network\" address (0.0.0.0/8)",
        () if ip.is_loopback() => "a loopback address",
        () if ip.is_private() => "a private address",
        () if a == 100 && (b & 0xc0) == 64 => "a shared (carrier-grade NAT) address",
        () if ip.is_link_local() => "a link-local address",
        () if ip.is_broadcast() => "a broadcast address",
        () if ip.is_multicast() => "a multicast address",
        () if a >= 240 => "a reserved address",
        () if a == 192 && b == 0 && c == 0 => "an IETF protocol address (192.0.0.0/24)",
        () if a == 198 && (b & 0xfe) == 18 => "a benchmarking address (198.18.0.0/15)",
        () => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let ([a, b], [c, d]) = (hi.to_be_bytes(), lo.to_be_bytes());
        Ipv4Addr::new(a, b, c, d)
    };
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    Some(match s {
        _ if ip.is_unspecified() => "an unspecified address",
        _ if ip.is_loopback() => "a loopback address",
        // IPv4-compatible (deprecated): never a public destination.
        [0, 0, 0, 0, 0, 0, _, _] => forbidden_v4(embedded(s[6], s[7])).unwrap_or("a reserved address"),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return forbidden_v4(embedded(hi, lo)),
        [0x64, 0xff9b, 1, ..] => "a private address",
        [0x2002, hi, lo, ..] => return forbidden_v4(embedded(hi, lo)),
        _ if s[0] & 0xfe00 == 0xfc00 => "a private address",
        _ if s[0] & 0xffc0 == 0xfe80 => "a link-local address",
        _ if s[0] & 0xffc0 == 0xfec0 => "a site-local address",
        _ if s[0] & 0xff00 == 0xff00 => "a multicast address",
        _ => return None,
    })
}

/// Why webhooks may not reach the host named `name`, for names that always mean this machine
/// (`localhost`, `*.localhost`); other names are checked on the addresses they resolve to.
pub fn forbidden_name(name: &str) -> Option<&'static str> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let local = name == "localhost"
        || name.ends_with(".localhost")
        || name == "localhost.localdomain"
        || name == "ip6-localhost"
        || name == "ip6-loopback";
    local.then_some("a loopback address")
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
    fn a_timestamp_far_from_now_fails_verification_without_overflowing() {
        let signature = sign("whsec_x", "msg_1", i64::MIN, b"{}");
        assert!(!verify("whsec_x", "msg_1", i64::MIN, b"{}", &signature, 1_700_000_000));
        assert!(!verify("whsec_x", "msg_1", i64::MAX, b"{}", &signature, -1));
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

    #[test]
    fn private_loopback_and_link_local_addresses_are_forbidden() {
        let forbidden = |ip: &str| forbidden_ip(ip.parse().unwrap());
        for (ip, reason) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.255", "carrier-grade NAT"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this network"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("240.0.0.1", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "private"),
            ("fd12:3456::1", "private"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.1.2.3", "private"),
            ("::127.0.0.1", "loopback"),
            ("::8.8.8.8", "reserved"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
        ] {
            let got = forbidden(ip);
            assert!(got.is_some_and(|r| r.contains(reason)), "{ip}: {got:?}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(forbidden(ip), None, "{ip}");
        }
        assert!(forbidden_name("localhost").is_some());
        assert!(forbidden_name("LocalHost.").is_some());
        assert!(forbidden_name("api.localhost").is_some());
        assert!(forbidden_name("localhost.example.com").is_none());
        assert!(forbidden_name("hooks.example.com").is_none());
    }
}
