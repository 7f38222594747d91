//! Slack's request signing, as Slack documents it: `X-Slack-Signature: v0=<hex HMAC-SHA256(
//! signing secret, "v0:" + X-Slack-Request-Timestamp + ":" + raw body)>`, and timestamps more than
//! five minutes from now refused (a captured request cannot be replayed later).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a request's timestamp may be from now, in seconds.
pub const MAX_SKEW_SECS: i64 = 300;

/// Why an inbound Slack request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Slack-Request-Timestamp header is missing or not a number")]
    NoTimestamp,
    #[error("the request's timestamp is more than 5 minutes from now (a replay, or a clock off)")]
    Stale,
    #[error("the X-Slack-Signature header is missing or not v0=<hex>")]
    NoSignature,
    #[error("the signature does not match the signing secret")]
    Forged,
}

/// The `v0=...` signature of `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v0={}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

/// Checks the timestamp (`now` in unix seconds) and then the signature, in constant time.
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    body: &[u8],
    signature: Option<&str>,
    now: i64,
) -> Result<(), SignatureError> {
    let timestamp = timestamp.and_then(|t| t.trim().parse::<i64>().ok()).ok_or(SignatureError::NoTimestamp)?;
    // `abs_diff`: a timestamp near i64::MIN must be stale, not an overflow.
    if now.abs_diff(timestamp) > MAX_SKEW_SECS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let tag = signature
        .and_then(|s| s.trim().strip_prefix("v0="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::NoSignature)?;
    mac(secret, timestamp, body).verify_slice(&tag).map_err(|_| SignatureError::Forged)
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_slacks_documented_example() {
        // The example of api.slack.com/authentication/verifying-requests-from-slack.
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert_eq!(sign(secret, 1531420618, body), expected);
        assert_eq!(verify(secret, Some("1531420618"), body, Some(expected), 1531420618 + 60), Ok(()));
    }

    #[test]
    fn a_timestamp_far_from_now_is_stale_without_overflowing() {
        // Crashed the slack_payload fuzz target: `now - timestamp` overflowed (a panic with
        // overflow checks on) for a timestamp near i64::MIN.
        for timestamp in ["-9223372036854775808", "9223372036854775807"] {
            assert_eq!(verify("s", Some(timestamp), b"", Some("v0=00"), 1_700_000_000), Err(SignatureError::Stale));
        }
    }

    #[test]
    fn forged_stale_and_malformed_requests_are_refused() {
        let body = b"payload=%7B%7D";
        let good = sign("s", 1000, body);
        assert_eq!(verify("s", Some("1000"), body, Some(&good), 1000), Ok(()));
        assert_eq!(verify("other", Some("1000"), body, Some(&good), 1000), Err(SignatureError::Forged));
        assert_eq!(verify("s", Some("1000"), b"payload=%7B%7Dx", Some(&good), 1000), Err(SignatureError::Forged));
        assert_eq!(verify("s", Some("1000"), body, Some(&good), 1000 + 301), Err(SignatureError::Stale));
        assert_eq!(verify("s", Some("1000"), body, Some(&good), 1000 - 301), Err(SignatureError::Stale));
        assert_eq!(verify("s", None, body, Some(&good), 1000), Err(SignatureError::NoTimestamp));
        assert_eq!(verify("s", Some("x"), body, Some(&good), 1000), Err(SignatureError::NoTimestamp));
        assert_eq!(verify("s", Some("1000"), body, None, 1000), Err(SignatureError::NoSignature));
        assert_eq!(verify("s", Some("1000"), body, Some("v1=00"), 1000), Err(SignatureError::NoSignature));
        assert_eq!(verify("s", Some("1000"), body, Some("v0=zz"), 1000), Err(SignatureError::NoSignature));
        assert_eq!(verify("s", Some("1000"), body, Some("v0=00"), 1000), Err(SignatureError::Forged));
    }
}
