//! A small client of Twilio's REST API (`POST {base}/2010-04-01/Accounts/{sid}/Messages.json`,
//! HTTP basic auth with the account SID and auth token, form fields `To`, `From`, `Body`), and the
//! signature Twilio puts on the webhooks it sends (`X-Twilio-Signature`).

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use std::time::Duration;

/// The default base of the REST API.
pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";
/// The longest one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Biggest answer read (Twilio's are a few KB).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwilioError {
    /// HTTP 429: try again after this long.
    #[error("Twilio is rate limiting (retry after {}s)", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    /// An error answer: its HTTP status, and Twilio's error code and message when it gave them.
    #[error("Twilio answered HTTP {status}{}", describe(*code, message))]
    Api { status: u16, code: Option<i64>, message: String },
    /// No answer (connection, timeout, unreadable body).
    #[error("cannot reach Twilio: {0}")]
    Transport(String),
}

fn describe(code: Option<i64>, message: &str) -> String {
    match code {
        Some(code) => format!(": error {code}: {message}"),
        None if message.is_empty() => String::new(),
        None => format!(": {message}"),
    }
}

impl TwilioError {
    /// Trying again cannot help: Twilio refused the message (an invalid number, 21211; a number
    /// that replied STOP, 21610; bad credentials). Rate limits, Twilio's own errors (5xx) and
    /// network failures are worth retrying.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Transport(_) => false,
            Self::Api { status, .. } => !(*status >= 500 || *status == 408),
        }
    }

    /// Twilio's error code, when it gave one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Api { code, .. } => *code,
            _ => None,
        }
    }
}

/// Calls the REST API.
#[derive(Clone)]
pub struct TwilioApi {
    http: reqwest::Client,
    base: String,
}

impl std::fmt::Debug for TwilioApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioApi").field("base", &self.base).finish()
    }
}

impl TwilioApi {
    /// A client of the REST API at `base` (e.g. `https://api.twilio.com`; a test's fake).
    pub fn new(base: &str) -> Self {
        let http = crate::channels::http::client(CALL_TIMEOUT);
        Self { http, base: base.trim_end_matches('/').to_owned() }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a message; Twilio's message SID when it accepted it.
    pub async fn send(
        &self,
        account_sid: &str,
        auth_token: &str,
        to: &str,
        from: &str,
        body: &str,
    ) -> Result<String, TwilioError> {
        let answer = self
            .http
            .post(format!("{}/2010-04-01/Accounts/{account_sid}/Messages.json", self.base))
            .basic_auth(account_sid, Some(auth_token))
            .form(&[("To", to), ("From", from), ("Body", body)])
            .send()
            .await
            .map_err(|e| TwilioError::Transport(crate::channels::http::without_url(&e)))?;
        let status = answer.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let retry_after = answer
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1);
            return Err(TwilioError::RateLimited { retry_after: Duration::from_secs(retry_after.clamp(1, 3600)) });
        }
        let body =
            crate::channels::http::read_capped(answer, MAX_ANSWER_BYTES).await.map_err(TwilioError::Transport)?;
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(refusal(status, &json));
        }
        Ok(json.get("sid").and_then(Value::as_str).unwrap_or_default().to_owned())
    }

    /// Checks an account SID and auth token (`GET /2010-04-01/Accounts/{sid}.json`).
    pub async fn check(&self, account_sid: &str, auth_token: &str) -> Result<(), TwilioError> {
        let answer = self
            .http
            .get(format!("{}/2010-04-01/Accounts/{account_sid}.json", self.base))
            .basic_auth(account_sid, Some(auth_token))
            .send()
            .await
            .map_err(|e| TwilioError::Transport(crate::channels::http::without_url(&e)))?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        let body =
            crate::channels::http::read_capped(answer, MAX_ANSWER_BYTES).await.map_err(TwilioError::Transport)?;
        Err(refusal(status, &serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }
}

/// An error answer: its status, and Twilio's `code` and `message` when the body has them.
fn refusal(status: reqwest::StatusCode, json: &Value) -> TwilioError {
    TwilioError::Api {
        status: status.as_u16(),
        code: json.get("code").and_then(Value::as_i64),
        message: json.get("message").and_then(Value::as_str).unwrap_or_default().chars().take(300).collect(),
    }
}

/// Twilio's signature of a webhook: base64 of HMAC-SHA1, keyed with the auth token, over the full
/// URL Twilio called followed by each POST parameter's name and value, sorted by name.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    base64::engine::general_purpose::STANDARD.encode(signing(auth_token, url, params).finalize().into_bytes())
}

/// Whether `given` is Twilio's signature of this webhook, compared in constant time.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], given: &str) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(given.trim()) else { return false };
    signing(auth_token, url, params).verify_slice(&given).is_ok()
}

fn signing(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<sha1::Sha1> {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<(String, String)> {
        [("From", "+15551234567"), ("Body", "YES 4821"), ("To", "+15550001111"), ("MessageSid", "SM1")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_signature_covers_the_url_and_every_parameter_in_name_order() {
        let url = "https://cs.example.com/twilio/inbound";
        let sig = signature("secret", url, &params());
        // Computed independently: HMAC-SHA1("secret", url + "BodyYES 4821From+15551234567MessageSidSM1To+15550001111").
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"secret").unwrap();
        mac.update(format!("{url}BodyYES 4821From+15551234567MessageSidSM1To+15550001111").as_bytes());
        assert_eq!(sig, base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
        assert!(verify("secret", url, &params(), &sig));
        assert!(!verify("other", url, &params(), &sig), "another token");
        assert!(!verify("secret", "https://cs.example.com/other", &params(), &sig), "another URL");
        let mut changed = params();
        changed[1].1 = "NO 4821".into();
        assert!(!verify("secret", url, &changed, &sig), "another body");
        assert!(!verify("secret", url, &params(), "not base64!"));
        assert!(!verify("secret", url, &params(), ""));
    }

    #[test]
    fn refusals_are_permanent_and_twilios_troubles_are_retried() {
        let api = |status, code| TwilioError::Api { status, code, message: "x".into() };
        assert!(api(400, Some(21211)).is_permanent(), "invalid number");
        assert!(api(400, Some(21610)).is_permanent(), "unsubscribed");
        assert!(api(401, Some(20003)).is_permanent(), "bad credentials");
        assert!(!api(500, None).is_permanent() && !api(503, None).is_permanent() && !api(408, None).is_permanent());
        assert!(!TwilioError::RateLimited { retry_after: Duration::from_secs(1) }.is_permanent());
        assert!(!TwilioError::Transport("refused".into()).is_permanent());
        assert_eq!(api(400, Some(21211)).code(), Some(21211));
        assert_eq!(api(400, Some(21211)).to_string(), "Twilio answered HTTP 400: error 21211: x");
    }
}
