//! One operation against the API, retried through restarts and network errors until it succeeds,
//! fails for good, or reaches the caller's deadline; and the long-poll loop built on it.

use crate::Error;
use rand::Rng;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::time::Instant;

/// First pause after a failure; doubled on each further failure.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause between attempts.
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// How long a plain (not long-poll) request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How much longer than its `wait` a long-poll may take before the connection is presumed dead.
const POLL_GRACE: Duration = Duration::from_secs(15);
/// A request in flight at the deadline gets this much longer to answer, so that a long-poll that
/// ends exactly at the deadline is still read.
const DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// Exponential back-off with jitter: 100 ms doubling up to 5 s, each pause drawn from its upper half.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self { next: FIRST_PAUSE }
    }

    /// The pause before the next attempt.
    pub(crate) fn pause(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(MAX_PAUSE);
        let half = base / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }

    fn reset(&mut self) {
        self.next = FIRST_PAUSE;
    }
}

/// The time budget of one SDK call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    at: Instant,
    after: Duration,
}

impl Deadline {
    pub(crate) fn after(after: Duration) -> Self {
        Self { at: Instant::now() + after, after }
    }
}

/// The API, as the SDK talks to it.
pub(crate) struct Transport {
    pub(crate) http: reqwest::Client,
    pub(crate) base: Url,
    pub(crate) api_key: String,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("Transport").field("base", &self.base.as_str()).field("api_key", &"<redacted>").finish()
    }
}

/// One request: where, what, and how long it may take.
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) segments: Vec<String>,
    pub(crate) query: Option<String>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) timeout: Duration,
}

impl Request {
    pub(crate) fn get(segments: &[&str]) -> Self {
        Self {
            method: Method::GET,
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: None,
            body: None,
            timeout: REQUEST_TIMEOUT,
        }
    }

    pub(crate) fn post(segments: &[&str], body: Vec<u8>) -> Self {
        Self { method: Method::POST, body: Some(body), ..Self::get(segments) }
    }

    /// A long-poll of `wait`.
    fn waiting(mut self, wait: Duration) -> Self {
        let secs = format!("{:.3}", wait.as_secs_f64());
        let secs = secs.trim_end_matches('0').trim_end_matches('.');
        self.query = Some(format!("wait={secs}"));
        self.timeout = wait + POLL_GRACE;
        self
    }

    fn method_name(&self) -> &'static str {
        if self.method == Method::POST { "POST" } else { "GET" }
    }

    fn path(&self) -> String {
        let mut path = String::new();
        for s in &self.segments {
            path.push('/');
            path.push_str(s);
        }
        path
    }
}

/// What one attempt came to.
enum Attempt<T> {
    Done(T),
    Fatal(Error),
    Retry(String),
}

/// One SDK call in progress: its deadline and its back-off state.
pub(crate) struct Operation<'a> {
    transport: &'a Transport,
    call_id: &'a str,
    deadline: Option<Deadline>,
    backoff: Backoff,
    /// Whether the last attempt failed (to log an outage once, and its end).
    failing: bool,
}

impl<'a> Operation<'a> {
    pub(crate) fn new(transport: &'a Transport, call_id: &'a str, deadline: Option<Deadline>) -> Self {
        Self { transport, call_id, deadline, backoff: Backoff::new(), failing: false }
    }

    fn deadline_error(&self) -> Error {
        let after = self.deadline.map(|d| d.after).unwrap_or_default();
        Error::Deadline { call_id: self.call_id.to_owned(), after }
    }

    /// Time left before the deadline; `None` without one.
    fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.at.saturating_duration_since(Instant::now()))
    }

    /// Sends `request` until it succeeds, fails for good, or the deadline passes. Returns the
    /// object and how long the successful attempt took.
    pub(crate) async fn send<T: DeserializeOwned>(&mut self, request: &Request) -> Result<(T, Duration), Error> {
        loop {
            if self.remaining().is_some_and(|r| r.is_zero()) {
                return Err(self.deadline_error());
            }
            let started = Instant::now();
            let attempt = self.attempt::<T>(request);
            let outcome = match self.deadline {
                Some(d) => match tokio::time::timeout_at(d.at + DEADLINE_GRACE, attempt).await {
                    Ok(outcome) => outcome,
                    Err(_) => return Err(self.deadline_error()),
                },
                None => attempt.await,
            };
            match outcome {
                Attempt::Done(value) => {
                    if std::mem::take(&mut self.failing) {
                        tracing::info!(call_id = self.call_id, "reached Countersign again");
                    }
                    return Ok((value, started.elapsed()));
                }
                Attempt::Fatal(error) => return Err(error),
                Attempt::Retry(why) => {
                    let pause = self.backoff.pause();
                    if !std::mem::replace(&mut self.failing, true) {
                        tracing::warn!(call_id = self.call_id, "{why}; retrying until it answers");
                    } else {
                        tracing::debug!(call_id = self.call_id, ?pause, "{why}; retrying");
                    }
                    self.sleep(pause).await?;
                }
            }
        }
    }

    /// Pauses before the next attempt, but not past the deadline.
    async fn sleep(&self, pause: Duration) -> Result<(), Error> {
        match self.remaining() {
            Some(left) if left <= pause => {
                tokio::time::sleep(left).await;
                Err(self.deadline_error())
            }
            _ => {
                tokio::time::sleep(pause).await;
                Ok(())
            }
        }
    }

    async fn attempt<T: DeserializeOwned>(&self, request: &Request) -> Attempt<T> {
        let mut url = self.transport.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(&request.segments);
        }
        url.set_query(request.query.as_deref());
        let mut builder = self
            .transport
            .http
            .request(request.method.clone(), url)
            .bearer_auth(&self.transport.api_key)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(request.timeout);
        if let Some(body) = &request.body {
            builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
        }
        let method = request.method_name();
        let response = match builder.send().await {
            Ok(response) => response,
            Err(e) if e.is_builder() => return Attempt::Fatal(Error::Http(e)),
            Err(e) => return Attempt::Retry(format!("{method} {}: {}", request.path(), describe(&e))),
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                return Attempt::Retry(format!("{method} {}: reading the answer: {}", request.path(), describe(&e)));
            }
        };
        if status.is_success() {
            return match serde_json::from_slice(&body) {
                Ok(value) => Attempt::Done(value),
                Err(source) => Attempt::Fatal(Error::Decode { method, path: request.path(), source }),
            };
        }
        let (code, message) = error_body(status, &body);
        if retryable(status) {
            return Attempt::Retry(format!("{method} {}: HTTP {} {code}: {message}", request.path(), status.as_u16()));
        }
        Attempt::Fatal(Error::Api { method, path: request.path(), status: status.as_u16(), code, message })
    }

    /// Long-polls `segments` until `decided` accepts the object, the request fails for good, or the
    /// deadline passes. `wait` is the longest single poll.
    pub(crate) async fn wait_for<T, D>(
        &mut self,
        segments: &[&str],
        wait: Duration,
        decided: impl Fn(T) -> Option<D>,
    ) -> Result<D, Error>
    where
        T: DeserializeOwned,
    {
        loop {
            let wait = match self.remaining() {
                Some(left) if left.is_zero() => return Err(self.deadline_error()),
                Some(left) => wait.min(left),
                None => wait,
            };
            let (object, took) = self.send::<T>(&Request::get(segments).waiting(wait)).await?;
            if let Some(done) = decided(object) {
                return Ok(done);
            }
            if took < wait / 2 {
                // Answered pending long before the wait was up: a server shutting down, or one that
                // ignores `wait`. Pause so that this never turns into a tight polling loop.
                let pause = self.backoff.pause();
                tracing::debug!(call_id = self.call_id, ?took, ?pause, "pending answer came early");
                self.sleep(pause).await?;
            } else {
                self.backoff.reset();
            }
        }
    }
}

/// 503 (database unavailable), gateway errors, rate limits and internal errors may pass.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 425 | 429 | 500 | 502 | 503 | 504)
}

/// Reads `{"error": {"code", "message"}}`, or falls back to the status and the body's text.
fn error_body(status: StatusCode, body: &[u8]) -> (String, String) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let field = |name: &str| error.and_then(|e| e.get(name)).and_then(|v| v.as_str()).map(str::to_owned);
    let code = field("code").unwrap_or_else(|| format!("http_{}", status.as_u16()));
    let message = field("message").unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text: String = text.chars().take(300).collect();
        if text.trim().is_empty() { status.canonical_reason().unwrap_or("no message").to_owned() } else { text }
    });
    (code, message)
}

/// A transport error with its causes, which reqwest keeps in the source chain.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100_ms_to_5_s_with_jitter() {
        let mut backoff = Backoff::new();
        let pauses: Vec<Duration> = (0..10).map(|_| backoff.pause()).collect();
        assert!(pauses[0] >= Duration::from_millis(50) && pauses[0] <= Duration::from_millis(100), "{pauses:?}");
        assert!(pauses[1] >= Duration::from_millis(100) && pauses[1] <= Duration::from_millis(200), "{pauses:?}");
        for pause in &pauses[7..] {
            assert!(*pause >= Duration::from_millis(2500) && *pause <= MAX_PAUSE, "{pauses:?}");
        }
        backoff.reset();
        assert!(backoff.pause() <= FIRST_PAUSE);
    }

    #[test]
    fn a_wait_is_sent_in_plain_seconds() {
        assert_eq!(Request::get(&["x"]).waiting(Duration::from_secs(30)).query.as_deref(), Some("wait=30"));
        assert_eq!(Request::get(&["x"]).waiting(Duration::from_millis(1500)).query.as_deref(), Some("wait=1.5"));
    }

    #[test]
    fn errors_are_read_from_the_json_body_or_the_status() {
        let (code, message) =
            error_body(StatusCode::UNAUTHORIZED, br#"{"error":{"code":"unauthorized","message":"unknown key"}}"#);
        assert_eq!((code.as_str(), message.as_str()), ("unauthorized", "unknown key"));
        let (code, message) = error_body(StatusCode::BAD_GATEWAY, b"");
        assert_eq!((code.as_str(), message.as_str()), ("http_502", "Bad Gateway"));
        assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!retryable(StatusCode::UNAUTHORIZED) && !retryable(StatusCode::NOT_FOUND));
        assert!(!retryable(StatusCode::BAD_REQUEST) && !retryable(StatusCode::CONFLICT));
    }
}
