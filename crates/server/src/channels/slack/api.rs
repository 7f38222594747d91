//! A small client of the Slack Web API: `POST {base}/{method}` with the bot token as a bearer
//! token and a JSON body, and Slack's answers turned into typed errors (`{"ok": false, "error"}`
//! with HTTP 200, and HTTP 429 with `Retry-After`).

use serde_json::Value;
use std::time::Duration;

/// The default base of the Web API.
pub const DEFAULT_API_BASE: &str = "https://slack.com/api";
/// The longest one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Biggest answer read (Slack's are a few KB).
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Why a Web API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlackError {
    /// HTTP 429: try again after this long.
    #[error("Slack is rate limiting (retry after {}s)", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    /// `{"ok": false, "error": "..."}`.
    #[error("Slack answered {0}")]
    Api(String),
    /// Another HTTP status.
    #[error("Slack answered HTTP {0}")]
    Status(u16),
    /// No answer (connection, timeout, unreadable body).
    #[error("cannot reach Slack: {0}")]
    Transport(String),
}

impl SlackError {
    /// Trying again cannot help: a bad token, an unknown or unreachable channel, a message Slack
    /// refuses. Rate limits, Slack's own errors and network failures are worth retrying.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::RateLimited { .. } | Self::Transport(_) => false,
            Self::Status(status) => !(*status >= 500 || *status == 408),
            Self::Api(error) => !matches!(
                error.as_str(),
                "ratelimited" | "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout"
            ),
        }
    }

    /// Slack's error code (`channel_not_found`, ...), when it gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api(error) => Some(error),
            _ => None,
        }
    }
}

/// Calls the Web API.
#[derive(Clone)]
pub struct SlackApi {
    http: reqwest::Client,
    base: String,
}

impl std::fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackApi").field("base", &self.base).finish()
    }
}

impl SlackApi {
    /// A client of the Web API at `base` (e.g. `https://slack.com/api`; a test's fake).
    pub fn new(base: &str) -> Self {
        let http = crate::channels::http::client(CALL_TIMEOUT);
        Self { http, base: base.trim_end_matches('/').to_owned() }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Calls `method` with `args` as the JSON body; the answer when it says `ok: true`.
    pub async fn call(&self, method: &str, token: &str, args: &Value) -> Result<Value, SlackError> {
        let request = self
            .http
            .post(format!("{}/{method}", self.base))
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json; charset=utf-8")
            .body(args.to_string());
        send(request).await
    }

    /// `users.info` takes form fields, not JSON.
    pub async fn user_info(&self, token: &str, user: &str) -> Result<Value, SlackError> {
        let request = self.http.post(format!("{}/users.info", self.base)).bearer_auth(token).form(&[("user", user)]);
        send(request).await
    }
}

/// Sends a Web API call and reads Slack's answer: a 429 with its `Retry-After`, another non-2xx
/// status, or the JSON answer, which is the result when it says `ok: true`.
async fn send(request: reqwest::RequestBuilder) -> Result<Value, SlackError> {
    let answer = request.send().await.map_err(|e| SlackError::Transport(crate::channels::http::without_url(&e)))?;
    let status = answer.status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let retry_after = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(1);
        return Err(SlackError::RateLimited { retry_after: Duration::from_secs(retry_after.clamp(1, 3600)) });
    }
    if !status.is_success() {
        return Err(SlackError::Status(status.as_u16()));
    }
    let body = crate::channels::http::read_capped(answer, MAX_ANSWER_BYTES).await.map_err(SlackError::Transport)?;
    let answer: Value =
        serde_json::from_slice(&body).map_err(|e| SlackError::Transport(format!("Slack's answer is not JSON: {e}")))?;
    if answer.get("ok").and_then(Value::as_bool) == Some(true) {
        Ok(answer)
    } else {
        let error = answer.get("error").and_then(Value::as_str).unwrap_or("an error without a code");
        Err(SlackError::Api(error.chars().take(200).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slacks_own_troubles_are_retried_and_refusals_are_not() {
        for permanent in ["channel_not_found", "invalid_auth", "not_in_channel", "is_archived", "invalid_blocks"] {
            assert!(SlackError::Api(permanent.into()).is_permanent(), "{permanent}");
        }
        for transient in ["ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"] {
            assert!(!SlackError::Api(transient.into()).is_permanent(), "{transient}");
        }
        assert!(!SlackError::RateLimited { retry_after: Duration::from_secs(3) }.is_permanent());
        assert!(!SlackError::Transport("refused".into()).is_permanent());
        assert!(!SlackError::Status(503).is_permanent() && !SlackError::Status(408).is_permanent());
        assert!(SlackError::Status(404).is_permanent());
        assert_eq!(SlackError::Api("channel_not_found".into()).code(), Some("channel_not_found"));
        assert_eq!(SlackError::Api("x".into()).to_string(), "Slack answered x");
    }
}
