//! The requests the load creates and decides, as the HumanLayer API spells them: paths, bodies,
//! and what a stored request (a GET's answer or a webhook's event) says. No I/O.

use serde_json::{Value, json};
use std::fmt;

/// A function call (approval) or a human contact (question).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    FunctionCall,
    HumanContact,
}

impl Kind {
    /// The collection requests are created in and read from.
    pub fn collection(self) -> &'static str {
        match self {
            Kind::FunctionCall => "function_calls",
            Kind::HumanContact => "contact_requests",
        }
    }

    /// The collection under `/agent/` where decisions and escalations go.
    fn agent_collection(self) -> &'static str {
        match self {
            Kind::FunctionCall => "function_calls",
            Kind::HumanContact => "human_contacts",
        }
    }
}

/// One request: its kind and call id (unique within the run's project).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: Kind,
    pub call_id: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noun = match self.kind {
            Kind::FunctionCall => "function call",
            Kind::HumanContact => "human contact",
        };
        write!(f, "{noun} {}", self.call_id)
    }
}

impl Key {
    pub fn create_path(&self) -> String {
        format!("/humanlayer/v1/{}", self.kind.collection())
    }

    pub fn get_path(&self) -> String {
        format!("/humanlayer/v1/{}/{}", self.kind.collection(), self.call_id)
    }

    pub fn respond_path(&self) -> String {
        format!("/humanlayer/v1/agent/{}/{}/respond", self.kind.agent_collection(), self.call_id)
    }

    pub fn escalate_path(&self) -> String {
        format!("/humanlayer/v1/agent/{}/{}/escalate_email", self.kind.agent_collection(), self.call_id)
    }
}

/// A decision, as sent and as stored. Every decision the load sends carries a unique text, so
/// two decisions are equal only if they are the same one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Approved { comment: String },
    Rejected { comment: String },
    Answered { response: String },
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Approved { comment } => write!(f, "approved({comment})"),
            Decision::Rejected { comment } => write!(f, "rejected({comment})"),
            Decision::Answered { response } => write!(f, "answered({response})"),
        }
    }
}

impl Decision {
    /// The respond body.
    pub fn body(&self) -> Value {
        match self {
            Decision::Approved { comment } => json!({"approved": true, "comment": comment}),
            Decision::Rejected { comment } => json!({"approved": false, "comment": comment}),
            Decision::Answered { response } => json!({"response": response}),
        }
    }

    /// A decision fitting `kind`, made unique by `tag`.
    pub fn for_kind(kind: Kind, approve: bool, tag: &str) -> Self {
        match (kind, approve) {
            (Kind::FunctionCall, true) => Decision::Approved { comment: format!("ok {tag}") },
            (Kind::FunctionCall, false) => Decision::Rejected { comment: format!("no {tag}") },
            (Kind::HumanContact, _) => Decision::Answered { response: format!("answer {tag}") },
        }
    }
}

/// What the server holds about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub run_id: String,
    /// `spec`, serialized again (key order is kept: serde_json's `preserve_order`).
    pub spec: String,
    /// `None` while pending.
    pub decision: Option<Decision>,
    /// The `escalation_msg` of each recorded escalation.
    pub escalations: Vec<String>,
}

/// A create's body: `(run_id, spec serialized, body)`.
pub fn create_body(key: &Key, run_id: &str, n: u64, cycle: u32) -> (String, Value) {
    let spec = match key.kind {
        Kind::FunctionCall => json!({
            "fn": "transfer",
            "kwargs": {"n": n, "amount": (n * 37) % 10_000, "to": format!("acct-{}", n % 97), "memo": "torture ✓"},
            "state": {"cycle": cycle, "nested": [1, 2.5, {"k": "v", "z": null}]},
        }),
        Kind::HumanContact => json!({
            "msg": format!("question {n}: which account?"),
            "subject": format!("torture {cycle}"),
            "state": {"cycle": cycle},
        }),
    };
    let spec_text = spec.to_string();
    let body = json!({"run_id": run_id, "call_id": key.call_id, "spec": spec});
    (spec_text, body)
}

/// Reads a request as the API returns it (a FunctionCall or HumanContact object).
pub fn parse_stored(kind: Kind, value: &Value) -> Result<Stored, String> {
    let run_id = value.get("run_id").and_then(Value::as_str).ok_or("no run_id")?.to_owned();
    let spec = value.get("spec").ok_or("no spec")?.to_string();
    let status = value.get("status").unwrap_or(&Value::Null);
    let text = |field: &str| status.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
    let decision = match kind {
        Kind::FunctionCall => match status.get("approved") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(true)) => Some(Decision::Approved { comment: text("comment") }),
            Some(Value::Bool(false)) => Some(Decision::Rejected { comment: text("comment") }),
            Some(other) => return Err(format!("status.approved is {other}")),
        },
        Kind::HumanContact => match status.get("response") {
            None | Some(Value::Null) => None,
            Some(Value::String(response)) => Some(Decision::Answered { response: response.clone() }),
            Some(other) => return Err(format!("status.response is {other}")),
        },
    };
    let escalations = value
        .get("escalations")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(|e| e.get("escalation_msg")?.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    Ok(Stored { run_id, spec, decision, escalations })
}

/// Reads a `v1beta2` webhook body: the request it is about and what it says.
pub fn parse_webhook(body: &Value) -> Result<(Key, Stored), String> {
    let kind = match body.get("type").and_then(Value::as_str) {
        Some("function_call.completed") => Kind::FunctionCall,
        Some("human_contact.completed") => Kind::HumanContact,
        other => return Err(format!("unexpected webhook type {other:?}")),
    };
    let event = body.get("event").ok_or("no event")?;
    let call_id = event.get("call_id").and_then(Value::as_str).ok_or("no event.call_id")?.to_owned();
    Ok((Key { kind, call_id }, parse_stored(kind, event)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_humanlayer_api() {
        let fc = Key { kind: Kind::FunctionCall, call_id: "c1".into() };
        let hc = Key { kind: Kind::HumanContact, call_id: "c2".into() };
        assert_eq!(fc.respond_path(), "/humanlayer/v1/agent/function_calls/c1/respond");
        assert_eq!(hc.respond_path(), "/humanlayer/v1/agent/human_contacts/c2/respond");
        assert_eq!(hc.get_path(), "/humanlayer/v1/contact_requests/c2");
        assert_eq!(hc.escalate_path(), "/humanlayer/v1/agent/human_contacts/c2/escalate_email");
    }

    #[test]
    fn a_pending_function_call_has_no_decision() {
        let v = json!({"run_id": "r", "call_id": "c", "spec": {"fn": "f", "kwargs": {"b": 1, "a": 2}},
                       "status": {"approved": null, "comment": null}});
        let s = parse_stored(Kind::FunctionCall, &v).unwrap();
        assert_eq!(s.decision, None);
        assert_eq!(s.spec, r#"{"fn":"f","kwargs":{"b":1,"a":2}}"#, "key order is kept");
    }

    #[test]
    fn decisions_read_back_as_sent() {
        for d in
            [Decision::for_kind(Kind::FunctionCall, true, "t1"), Decision::for_kind(Kind::FunctionCall, false, "t2")]
        {
            let mut status = d.body();
            status["reject_option_name"] = Value::Null;
            let v = json!({"run_id": "r", "spec": {}, "status": status, "escalations": [{"escalation_msg": "e"}]});
            let s = parse_stored(Kind::FunctionCall, &v).unwrap();
            assert_eq!(s.decision, Some(d));
            assert_eq!(s.escalations, vec!["e".to_owned()]);
        }
        let answer = Decision::for_kind(Kind::HumanContact, true, "t3");
        let v = json!({"run_id": "r", "spec": {"msg": "m"}, "status": answer.body()});
        assert_eq!(parse_stored(Kind::HumanContact, &v).unwrap().decision, Some(answer));
    }

    #[test]
    fn a_webhook_names_its_request_and_decision() {
        let body = json!({"is_test": false, "type": "human_contact.completed",
            "event": {"run_id": "r", "call_id": "hc-1", "spec": {"msg": "m"}, "status": {"response": "x"}}});
        let (key, stored) = parse_webhook(&body).unwrap();
        assert_eq!(key, Key { kind: Kind::HumanContact, call_id: "hc-1".into() });
        assert_eq!(stored.decision, Some(Decision::Answered { response: "x".into() }));
        assert!(parse_webhook(&json!({"type": "function_call.created", "event": {}})).is_err());
    }

    #[test]
    fn create_bodies_carry_the_spec_sent() {
        let key = Key { kind: Kind::FunctionCall, call_id: "fc-9".into() };
        let (spec, body) = create_body(&key, "run", 9, 3);
        assert_eq!(body["spec"].to_string(), spec);
        assert_eq!(body["call_id"], "fc-9");
    }
}
