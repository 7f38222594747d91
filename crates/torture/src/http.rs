//! Talking to the server under test: one HTTP client, answers classified for the counts
//! (`201`, `409 conflict`, `503 unavailable`, `no answer`), and the counts themselves by phase
//! and operation.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One server instance as the load sees it.
#[derive(Clone, Debug)]
pub struct Target {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

/// The HTTP side of the load: a client and the project's key.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    key: Arc<str>,
}

/// What came back for one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Answer {
        status: u16,
        body: Bytes,
        /// Whether `Content-Type` was `application/json`.
        json: bool,
    },
    /// No HTTP answer: refused or reset connection, or our timeout.
    NoAnswer(String),
}

impl Reply {
    pub fn status(&self) -> Option<u16> {
        match self {
            Reply::Answer { status, .. } => Some(*status),
            Reply::NoAnswer(_) => None,
        }
    }

    pub fn is_success(&self) -> bool {
        self.status().is_some_and(|s| (200..300).contains(&s))
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        match self {
            Reply::Answer { body, .. } => serde_json::from_slice(body).ok(),
            Reply::NoAnswer(_) => None,
        }
    }

    /// How the counts name this answer: `200`, `409 conflict`, `503 unavailable`,
    /// `500 (not JSON)`, `no answer (timeout)`, `no answer (connection)`.
    pub fn label(&self) -> String {
        match self {
            Reply::Answer { status, json, .. } if (200..300).contains(status) => {
                if *json {
                    status.to_string()
                } else {
                    format!("{status} (not JSON)")
                }
            }
            Reply::Answer { status, json: false, .. } => format!("{status} (not JSON)"),
            Reply::Answer { status, .. } => {
                let code = self.json().and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
                match code {
                    Some(code) => format!("{status} {code}"),
                    None => format!("{status} (no error code)"),
                }
            }
            Reply::NoAnswer(why) if why.contains("timed out") => "no answer (timeout)".into(),
            Reply::NoAnswer(_) => "no answer (connection)".into(),
        }
    }
}

impl Api {
    pub fn new(key: &str) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self { client, key: key.into() })
    }

    /// Sends one request (with the key; `body` as JSON) and waits at most `timeout`.
    pub async fn send(
        &self,
        target: &Target,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Reply {
        let mut request =
            self.client.request(method, format!("{}{path}", target.base)).bearer_auth(&*self.key).timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return Reply::NoAnswer(describe(&err)),
        };
        let status = response.status().as_u16();
        let json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        match response.bytes().await {
            Ok(body) => Reply::Answer { status, body, json },
            Err(err) => Reply::NoAnswer(describe(&err)),
        }
    }
}

fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".to_owned()
    } else {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(inner) = source {
            text.push_str(": ");
            text.push_str(&inner.to_string());
            source = inner.source();
        }
        text
    }
}

/// Counts of one operation in one phase.
#[derive(Debug, Default, Clone, Serialize)]
pub struct OpCounts {
    /// By [`Reply::label`].
    pub answers: BTreeMap<String, u64>,
    /// The slowest answer (or give-up), in milliseconds.
    pub max_ms: u64,
}

/// When and in which phase a request was sent.
pub struct Started {
    phase: String,
    at: Instant,
}

impl Started {
    pub fn elapsed(&self) -> Duration {
        self.at.elapsed()
    }
}

/// Answers counted by phase (`load`, `pg stopped`, `disk full`, ...) and operation.
#[derive(Clone, Default)]
pub struct Stats {
    inner: Arc<Mutex<StatsInner>>,
}

#[derive(Default)]
struct StatsInner {
    phase: String,
    counts: BTreeMap<String, BTreeMap<String, OpCounts>>,
}

impl Stats {
    /// Answers completed from now on count under `phase`.
    pub fn set_phase(&self, phase: &str) {
        self.inner.lock().unwrap().phase = phase.to_owned();
    }

    /// Notes when and in which phase a request is sent: its answer counts under that phase,
    /// however late it comes (a write sent while the disk is full counts as such).
    pub fn start(&self) -> Started {
        Started { phase: self.inner.lock().unwrap().phase.clone(), at: Instant::now() }
    }

    pub fn record(&self, op: &str, reply: &Reply, started: &Started) {
        self.count(&started.phase, op, &reply.label(), started.at.elapsed());
    }

    /// Counts one outcome of `op` under `label` in the current phase.
    pub fn record_label(&self, op: &str, label: &str) {
        let phase = self.inner.lock().unwrap().phase.clone();
        self.count(&phase, op, label, Duration::ZERO);
    }

    fn count(&self, phase: &str, op: &str, label: &str, took: Duration) {
        let ms = took.as_millis() as u64;
        let label = label.to_owned();
        let mut inner = self.inner.lock().unwrap();
        let phase = phase.to_owned();
        let counts = inner.counts.entry(phase).or_default().entry(op.to_owned()).or_default();
        *counts.answers.entry(label).or_default() += 1;
        counts.max_ms = counts.max_ms.max(ms);
    }

    /// Phase → operation → counts.
    pub fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, OpCounts>> {
        self.inner.lock().unwrap().counts.clone()
    }

    /// How many answers of `op` in `phase` had a label starting with `prefix`.
    pub fn answered(&self, phase: &str, op: &str, prefix: &str) -> u64 {
        let inner = self.inner.lock().unwrap();
        inner
            .counts
            .get(phase)
            .and_then(|ops| ops.get(op))
            .map(|c| c.answers.iter().filter(|(l, _)| l.starts_with(prefix)).map(|(_, n)| n).sum())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str, json: bool) -> Reply {
        Reply::Answer { status, body: Bytes::from(body.to_owned()), json }
    }

    #[test]
    fn answers_are_labelled_by_status_and_error_code() {
        assert_eq!(answer(201, "{}", true).label(), "201");
        assert_eq!(answer(503, r#"{"error":{"code":"unavailable","message":"m"}}"#, true).label(), "503 unavailable");
        assert_eq!(answer(500, "oops", false).label(), "500 (not JSON)");
        assert_eq!(answer(502, "{}", true).label(), "502 (no error code)");
        assert_eq!(Reply::NoAnswer("timed out".into()).label(), "no answer (timeout)");
        assert_eq!(Reply::NoAnswer("connection refused".into()).label(), "no answer (connection)");
    }

    #[test]
    fn answers_count_in_the_phase_they_were_sent_in() {
        let stats = Stats::default();
        stats.set_phase("a");
        let early = stats.start();
        stats.record("create", &answer(201, "{}", true), &stats.start());
        stats.set_phase("b");
        stats.record("create", &answer(503, r#"{"error":{"code":"unavailable"}}"#, true), &early);
        stats.record("create", &answer(503, r#"{"error":{"code":"unavailable"}}"#, true), &stats.start());
        stats.record_label("race outcome", "one won, one 409");
        assert_eq!(stats.answered("a", "create", "201"), 1);
        assert_eq!(stats.answered("a", "create", "503"), 1);
        assert_eq!(stats.answered("b", "create", "503"), 1);
        assert_eq!(stats.answered("b", "create", "2"), 0);
        assert_eq!(stats.answered("b", "race outcome", "one won"), 1);
    }
}
