//! At-most-once execution of an approved function call: the agent reports `started` once (a
//! second start is refused, with when and by whom it started), then `finished` (with the SHA-256
//! of its result, if it gives one) or `failed`. Each report is an event of the request's audit
//! chain.

use crate::{Invalid, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Longest error text a `failed` report may carry, in characters.
pub const MAX_ERROR_CHARS: usize = 2000;
/// Longest start token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 128;

/// Where an execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionState {
    /// Running (or crashed before it reported an end).
    Started,
    Finished,
    Failed,
}

impl ExecutionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Finished => "finished",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Started, Self::Finished, Self::Failed].into_iter().find(|s| s.as_str() == text)
    }
}

/// One report from the agent, as sent and checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionReport {
    pub state: ExecutionState,
    /// Hex SHA-256 of the result (`finished` only; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_sha256: Option<String>,
    /// What went wrong (`failed` only; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Who reported it (the API key, as `key cs_…`).
    pub by: String,
    /// A start's token, chosen by the agent (`started` only; optional): a start sent again with
    /// the same token (a retry whose answer was lost) gets the same 200, not a 409. Kept out of
    /// the audit log.
    #[serde(default, skip_serializing)]
    pub token: Option<String>,
}

impl ExecutionReport {
    /// Parses the body of `POST /function_calls/{call_id}/execution`:
    /// `{"state": "started" | "finished" | "failed", "result_sha256"?: hex, "error"?: text}`.
    pub fn parse(body: &Value, by: &str) -> Result<Self, Invalid> {
        let object = body.as_object().ok_or_else(|| Invalid::new("body", "must be a JSON object"))?;
        if let Some(unknown) =
            object.keys().find(|k| !["state", "result_sha256", "error", "token"].contains(&k.as_str()))
        {
            return Err(Invalid::new(
                unknown,
                "is not a field of an execution report (state, result_sha256, error, token)",
            ));
        }
        let state = object
            .get("state")
            .and_then(Value::as_str)
            .and_then(ExecutionState::parse)
            .ok_or_else(|| Invalid::new("state", "must be \"started\", \"finished\" or \"failed\""))?;
        let text = |field: &str| match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Invalid::new(field, "must be a string")),
        };
        let result_sha256 = text("result_sha256")?.map(|h| h.to_ascii_lowercase());
        if let Some(hash) = &result_sha256 {
            if state != ExecutionState::Finished {
                return Err(Invalid::new("result_sha256", "is only sent with state \"finished\""));
            }
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Invalid::new("result_sha256", "must be 64 hex digits (a SHA-256)"));
            }
        }
        let error = text("error")?;
        if let Some(error) = &error {
            if state != ExecutionState::Failed {
                return Err(Invalid::new("error", "is only sent with state \"failed\""));
            }
            if error.chars().count() > MAX_ERROR_CHARS {
                return Err(Invalid::new("error", format!("is longer than {MAX_ERROR_CHARS} characters")));
            }
        }
        let token = text("token")?;
        if let Some(token) = &token {
            if state != ExecutionState::Started {
                return Err(Invalid::new("token", "is only sent with state \"started\""));
            }
            if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
                return Err(Invalid::new("token", format!("must be 1 to {MAX_TOKEN_BYTES} bytes")));
            }
        }
        Ok(Self { state, result_sha256, error, by: by.to_owned(), token })
    }
}

/// The execution of one approved call, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub state: ExecutionState,
    pub started_at: Timestamp,
    pub started_by: String,
    /// When it finished or failed.
    pub ended_at: Option<Timestamp>,
    pub result_sha256: Option<String>,
    pub error: Option<String>,
    /// The start's token, if the agent sent one (never shown).
    pub start_token: Option<String>,
}

/// What a report did to the execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// It changed: the execution now.
    Changed(Execution),
    /// A start sent again with the same token: nothing changes, the start is answered again.
    Replayed(Execution),
}

/// Why a report does not apply to the execution as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `started` when it was started already (the execution as it is).
    AlreadyStarted(Box<Execution>),
    /// `finished`/`failed` before `started`.
    NotStarted,
    /// `finished`/`failed` after it ended (the execution as it is).
    AlreadyEnded(Box<Execution>),
}

impl Execution {
    /// The execution after `report` at `at`, or why the report does not apply. A call starts at
    /// most once and ends at most once.
    pub fn apply(current: Option<&Execution>, report: &ExecutionReport, at: Timestamp) -> Result<Applied, Refused> {
        match (current, report.state) {
            (None, ExecutionState::Started) => Ok(Applied::Changed(Execution {
                state: ExecutionState::Started,
                started_at: at,
                started_by: report.by.clone(),
                ended_at: None,
                result_sha256: None,
                error: None,
                start_token: report.token.clone(),
            })),
            (Some(now), ExecutionState::Started)
                if now.state == ExecutionState::Started
                    && report.token.is_some()
                    && now.start_token == report.token =>
            {
                Ok(Applied::Replayed(now.clone()))
            }
            (Some(now), ExecutionState::Started) => Err(Refused::AlreadyStarted(Box::new(now.clone()))),
            (None, _) => Err(Refused::NotStarted),
            (Some(now), _) if now.state != ExecutionState::Started => Err(Refused::AlreadyEnded(Box::new(now.clone()))),
            (Some(now), end) => Ok(Applied::Changed(Execution {
                state: end,
                ended_at: Some(at),
                result_sha256: report.result_sha256.clone(),
                error: report.error.clone(),
                ..now.clone()
            })),
        }
    }

    /// The API's JSON form.
    pub fn to_json(&self, call_id: &str) -> Value {
        json!({
            "call_id": call_id,
            "state": self.state.as_str(),
            "started_at": self.started_at.to_rfc3339(),
            "started_by": self.started_by,
            "ended_at": self.ended_at.map(|t| t.to_rfc3339()),
            "result_sha256": self.result_sha256,
            "error": self.error,
        })
    }

    /// One line for people: `started at … by …, not finished` / `finished at …`.
    pub fn describe(&self) -> String {
        let started = format!("started at {} by {}", self.started_at.to_rfc3339(), self.started_by);
        match (self.state, self.ended_at) {
            (ExecutionState::Started, _) | (_, None) => format!("{started}, and never reported finished or failed"),
            (state, Some(at)) => format!("{started}, {} at {}", state.as_str(), at.to_rfc3339()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: &str) -> ExecutionReport {
        ExecutionReport::parse(&json!({ "state": state }), "key cs_test").unwrap()
    }

    #[test]
    fn a_call_starts_once_and_ends_once() {
        let t0 = Timestamp::from_micros(1_000_000);
        let changed = |a: Result<Applied, Refused>| match a {
            Ok(Applied::Changed(e)) => e,
            other => panic!("{other:?}"),
        };
        let started = changed(Execution::apply(None, &report("started"), t0));
        assert_eq!(started.state, ExecutionState::Started);
        assert_eq!(started.started_by, "key cs_test");
        assert!(matches!(
            Execution::apply(Some(&started), &report("started"), t0),
            Err(Refused::AlreadyStarted(e)) if *e == started
        ));
        assert_eq!(Execution::apply(None, &report("finished"), t0), Err(Refused::NotStarted));
        let done =
            ExecutionReport::parse(&json!({"state": "finished", "result_sha256": "AB".repeat(32)}), "k").unwrap();
        let t1 = Timestamp::from_micros(2_000_000);
        let finished = changed(Execution::apply(Some(&started), &done, t1));
        assert_eq!(finished.state, ExecutionState::Finished);
        assert_eq!(finished.ended_at, Some(t1));
        assert_eq!(finished.result_sha256.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!(finished.started_by, "key cs_test", "who started stays recorded");
        assert!(matches!(Execution::apply(Some(&finished), &report("failed"), t1), Err(Refused::AlreadyEnded(_))));
        assert!(started.describe().contains("never reported finished"));
        assert!(finished.describe().contains("finished at"));
    }

    #[test]
    fn a_start_sent_again_with_its_token_is_answered_again() {
        let t0 = Timestamp::from_micros(1_000_000);
        let with = |token: &str| ExecutionReport::parse(&json!({"state": "started", "token": token}), "k").unwrap();
        let Ok(Applied::Changed(started)) = Execution::apply(None, &with("t-1"), t0) else { panic!() };
        assert_eq!(Execution::apply(Some(&started), &with("t-1"), t0), Ok(Applied::Replayed(started.clone())));
        assert!(matches!(Execution::apply(Some(&started), &with("t-2"), t0), Err(Refused::AlreadyStarted(_))));
        assert!(matches!(Execution::apply(Some(&started), &report("started"), t0), Err(Refused::AlreadyStarted(_))));
        assert!(!started.to_json("c").to_string().contains("t-1"), "the token is never shown");
    }

    #[test]
    fn reports_are_checked() {
        let bad = |body: Value| ExecutionReport::parse(&body, "k").unwrap_err().to_string();
        assert!(bad(json!({"state": "done"})).contains("state"));
        assert!(bad(json!({})).contains("state"));
        assert!(bad(json!([1])).contains("object"));
        assert!(bad(json!({"state": "finished", "result_sha256": "xyz"})).contains("64 hex"));
        assert!(bad(json!({"state": "started", "result_sha256": "ab".repeat(32)})).contains("only sent"));
        assert!(bad(json!({"state": "finished", "error": "x"})).contains("only sent"));
        assert!(bad(json!({"state": "failed", "error": "x".repeat(MAX_ERROR_CHARS + 1)})).contains("longer"));
        assert!(bad(json!({"state": "started", "extra": 1})).contains("extra"));
        let failed = ExecutionReport::parse(&json!({"state": "failed", "error": "disk full"}), "k").unwrap();
        assert_eq!(failed.error.as_deref(), Some("disk full"));
    }
}
