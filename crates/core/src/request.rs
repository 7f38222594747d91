//! Requests: approvals (function calls) and questions (human contacts), and their lifecycle.
//!
//! A request is created pending and becomes completed by exactly one decision, which never changes
//! afterwards. The spec is kept as the JSON the agent sent so that it round-trips exactly.

use crate::wire::{
    FunctionCallRespond, FunctionCallSpec, FunctionCallStatus, HumanContactRespond, HumanContactSpec,
    HumanContactStatus, ResponseOption,
};
use crate::{Decision, Invalid, Outcome, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// Longest accepted `call_id` or `run_id`.
pub const MAX_ID_LEN: usize = 512;

/// The two kinds of request an agent can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// An approval for a function call.
    FunctionCall,
    /// A question to a human ("human as tool").
    HumanContact,
}

impl RequestKind {
    /// Name used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FunctionCall => "function_call",
            Self::HumanContact => "human_contact",
        }
    }

    /// Parses the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "function_call" => Some(Self::FunctionCall),
            "human_contact" => Some(Self::HumanContact),
            _ => None,
        }
    }

    /// Name for people, e.g. in error messages.
    pub fn noun(self) -> &'static str {
        match self {
            Self::FunctionCall => "function call",
            Self::HumanContact => "human contact",
        }
    }

    fn options_field(self) -> &'static str {
        match self {
            Self::FunctionCall => "reject_options",
            Self::HumanContact => "response_options",
        }
    }
}

/// A validated create request from an agent.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub kind: RequestKind,
    pub call_id: String,
    pub run_id: String,
    /// The spec exactly as sent (its JSON text, so numbers of any size and spelling survive).
    pub spec: Box<RawValue>,
}

/// The outer shape of a create body; the spec is kept as text.
#[derive(Deserialize)]
struct Envelope {
    run_id: String,
    call_id: String,
    spec: Box<RawValue>,
}

impl NewRequest {
    /// Validates a create body (`FunctionCall` or `HumanContact` JSON). Any `status` sent is ignored.
    pub fn parse(kind: RequestKind, body: &[u8]) -> Result<Self, Invalid> {
        let envelope: Envelope = from_json(body)?;
        check_id("call_id", &envelope.call_id)?;
        check_id("run_id", &envelope.run_id)?;
        let spec = envelope.spec.get().as_bytes();
        let options = match kind {
            RequestKind::FunctionCall => {
                let spec: FunctionCallSpec = from_json(spec).map_err(|e| e.within("spec"))?;
                if spec.fn_name.trim().is_empty() {
                    return Err(Invalid::new("spec.fn", "must name the function (got an empty string)"));
                }
                spec.reject_options
            }
            RequestKind::HumanContact => {
                let spec: HumanContactSpec = from_json(spec).map_err(|e| e.within("spec"))?;
                if spec.msg.trim().is_empty() {
                    return Err(Invalid::new("spec.msg", "must hold the question for the human (got an empty string)"));
                }
                spec.response_options
            }
        };
        check_unique_options(kind, options.as_deref())?;
        Ok(Self { kind, call_id: envelope.call_id, run_id: envelope.run_id, spec: envelope.spec })
    }

    /// True when this create repeats `existing` (a safe client retry): same run and same spec.
    /// A field sent as `null` and one left out count as the same, since clients differ there.
    pub fn same_as(&self, existing: &RequestRecord) -> bool {
        let value = |raw: &RawValue| serde_json::from_str::<Value>(raw.get()).unwrap_or_default();
        self.kind == existing.kind
            && self.run_id == existing.run_id
            && same_json(&value(&self.spec), &value(&existing.spec))
    }
}

/// Parses JSON text into `T`, naming the offending field on failure.
pub(crate) fn from_json<'a, T: Deserialize<'a>>(text: &'a [u8]) -> Result<T, Invalid> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(Invalid::from_serde)?;
    de.end().map_err(|e| Invalid::new(".", format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

fn check_id(field: &str, id: &str) -> Result<(), Invalid> {
    if id.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Invalid::new(field, format!("is {} bytes long; the limit is {MAX_ID_LEN}", id.len())));
    }
    if id.chars().any(|c| c.is_control() || c == '/' || c == '?' || c == '#') {
        return Err(Invalid::new(field, "must not contain '/', '?', '#' or control characters (it is used in URLs)"));
    }
    Ok(())
}

fn check_unique_options(kind: RequestKind, options: Option<&[ResponseOption]>) -> Result<(), Invalid> {
    let field = format!("spec.{}", kind.options_field());
    let options = options.unwrap_or_default();
    for (i, option) in options.iter().enumerate() {
        if option.name.trim().is_empty() {
            return Err(Invalid::new(format!("{field}[{i}].name"), "must not be empty"));
        }
        if options[..i].iter().any(|o| o.name == option.name) {
            return Err(Invalid::new(
                format!("{field}[{i}].name"),
                format!("{:?} is used twice; names must be unique", option.name),
            ));
        }
    }
    Ok(())
}

/// Equality of JSON documents where an object key holding `null` equals an absent key.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let non_null = |m: &serde_json::Map<String, Value>| m.iter().filter(|(_, v)| !v.is_null()).count();
            non_null(a) == non_null(b)
                && a.iter().filter(|(_, v)| !v.is_null()).all(|(k, v)| b.get(k).is_some_and(|w| same_json(v, w)))
        }
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_json(x, y)),
        _ => a == b,
    }
}

/// A stored request with its outcome, if decided.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub project_id: String,
    pub kind: RequestKind,
    pub call_id: String,
    pub run_id: String,
    /// The spec exactly as the agent sent it.
    pub spec: Box<RawValue>,
    pub requested_at: Timestamp,
    /// `None` while pending.
    pub outcome: Option<Outcome>,
    /// Recorded escalations, oldest first.
    pub escalations: Vec<Value>,
    /// The terms of the policy rule that governs it, if one set any.
    pub policy: Option<crate::governance::Governance>,
}

impl RequestRecord {
    /// What this request's receipt states, once decided (its `kid` is set by the signer).
    pub fn receipt_claims(&self) -> Option<countersign_receipt::Claims> {
        /// The two fields of the spec a receipt states (the rest, `state` included, is skipped).
        #[derive(Deserialize, Default)]
        struct Called {
            #[serde(rename = "fn", default)]
            function: Option<String>,
            #[serde(default)]
            kwargs: Option<Value>,
        }
        let outcome = self.outcome.as_ref()?;
        let spec: Called = serde_json::from_str(self.spec.get()).unwrap_or_default();
        let (decision, comment, args) = match &outcome.decision {
            Decision::Approved { comment, updated_kwargs } => {
                let edited = updated_kwargs.as_deref().and_then(|k| serde_json::from_str::<Value>(k).ok());
                ("approved", comment.clone(), edited.or(spec.kwargs))
            }
            Decision::Rejected { comment, .. } => ("rejected", Some(comment.clone()), spec.kwargs),
            Decision::Answered { response, .. } => ("answered", Some(response.clone()), None),
            Decision::Ended { ending, comment } => (ending.as_str(), Some(comment.clone()), spec.kwargs),
        };
        let function_call = self.kind == RequestKind::FunctionCall;
        Some(countersign_receipt::Claims {
            v: countersign_receipt::VERSION,
            project: self.project_id.clone(),
            kind: self.kind.as_str().to_owned(),
            call_id: self.call_id.clone(),
            run_id: self.run_id.clone(),
            function: spec.function.filter(|_| function_call),
            args_sha256: args.filter(|_| function_call).map(|a| countersign_receipt::args_sha256(&a)),
            decision: decision.to_owned(),
            comment_sha256: comment.map(|c| countersign_receipt::text_sha256(&c)),
            decided_by: serde_json::to_value(&outcome.decided_by).unwrap_or_default(),
            decided_at: outcome.responded_at.to_rfc3339(),
            rule: outcome
                .decided_by
                .rule
                .clone()
                .or_else(|| self.policy.as_ref().map(|p| p.rule.clone()))
                .filter(|r| !r.is_empty()),
            kid: String::new(),
        })
    }

    /// A pending record for a new request.
    pub fn new(project_id: &str, new: NewRequest, requested_at: Timestamp) -> Self {
        Self {
            project_id: project_id.to_owned(),
            kind: new.kind,
            call_id: new.call_id,
            run_id: new.run_id,
            spec: new.spec,
            requested_at,
            outcome: None,
            escalations: Vec::new(),
            policy: None,
        }
    }

    /// True until a decision is recorded.
    pub fn is_pending(&self) -> bool {
        self.outcome.is_none()
    }

    /// The options a human may pick from (`reject_options` or `response_options`).
    pub fn options(&self) -> Vec<ResponseOption> {
        #[derive(Deserialize)]
        struct Options {
            reject_options: Option<Vec<ResponseOption>>,
            response_options: Option<Vec<ResponseOption>>,
        }
        let options: Option<Options> = serde_json::from_str(self.spec.get()).ok();
        let options = options.and_then(|o| match self.kind {
            RequestKind::FunctionCall => o.reject_options,
            RequestKind::HumanContact => o.response_options,
        });
        options.unwrap_or_default()
    }

    /// One line for people: the function of an approval, the question (its first line).
    pub fn summary(&self) -> String {
        #[derive(Deserialize)]
        struct Named {
            #[serde(rename = "fn")]
            fn_name: Option<String>,
            msg: Option<String>,
            subject: Option<String>,
        }
        let named: Option<Named> = serde_json::from_str(self.spec.get()).ok();
        let text = named.and_then(|n| match self.kind {
            RequestKind::FunctionCall => n.fn_name,
            RequestKind::HumanContact => n.subject.filter(|s| !s.trim().is_empty()).or(n.msg),
        });
        let text = text.unwrap_or_default();
        let line = text.lines().next().unwrap_or_default();
        if line.chars().count() > 120 {
            format!("{}…", line.chars().take(119).collect::<String>())
        } else {
            line.to_owned()
        }
    }

    /// A top-level field of the spec as the JSON text sent (`kwargs`, `state`, `msg`...); `None` when absent or null.
    pub fn spec_field(&self, name: &str) -> Option<Box<RawValue>> {
        let fields: std::collections::HashMap<String, Box<RawValue>> = serde_json::from_str(self.spec.get()).ok()?;
        fields.into_iter().find(|(k, _)| k == name).map(|(_, v)| v).filter(|v| v.get() != "null")
    }

    /// The spec's `channel`, if it has a valid one.
    pub fn channel(&self) -> Option<crate::wire::ContactChannel> {
        #[derive(Deserialize)]
        struct WithChannel {
            channel: Option<crate::wire::ContactChannel>,
        }
        serde_json::from_str::<WithChannel>(self.spec.get()).ok().and_then(|c| c.channel)
    }

    /// Parses a HumanLayer respond body into the decision it asks for, checked against this
    /// request (the API's way of deciding).
    pub fn parse_decision(&self, body: &Value) -> Result<Decision, Invalid> {
        self.decision(Intent::from_respond(self.kind, body)?, &Fields::API)
    }

    /// Checks what a decider asks for against this request and builds the decision: a rejection
    /// with an option but no comment takes the option's `prompt_fill`, and one with neither gets
    /// `""` (the SDKs need a string); an answer with an option and no text takes the option's
    /// `prompt_fill` (else its title or name), and may never be empty. Errors name the fields as
    /// the decider knows them (`fields`).
    pub fn decision(&self, intent: Intent, fields: &Fields) -> Result<Decision, Invalid> {
        match (self.kind, intent) {
            (RequestKind::FunctionCall, Intent::Approve { comment, updated_kwargs }) => Ok(Decision::Approved {
                comment,
                updated_kwargs: updated_kwargs.map(|m| serde_json::to_string(&m).expect("JSON values serialize")),
            }),
            (RequestKind::FunctionCall, Intent::Reject { comment, option }) => {
                let option = self.find_option(fields.reject_option, option.as_deref())?;
                let comment =
                    comment.or_else(|| option.as_ref().and_then(|o| o.prompt_fill.clone())).unwrap_or_default();
                Ok(Decision::Rejected { comment, option: option.map(|o| o.name) })
            }
            (RequestKind::HumanContact, Intent::Answer { response, option }) => {
                let option = self.find_option(fields.response_option, option.as_deref())?;
                let given = response.filter(|s| !s.trim().is_empty());
                let response = given.or_else(|| {
                    option
                        .as_ref()
                        .map(|o| o.prompt_fill.clone().or_else(|| o.title.clone()).unwrap_or_else(|| o.name.clone()))
                });
                match response {
                    Some(response) if !response.trim().is_empty() => {
                        Ok(Decision::Answered { response, option: option.map(|o| o.name) })
                    }
                    _ => Err(Invalid::new(fields.response, "must be a non-empty string (or name a response option)")),
                }
            }
            (RequestKind::FunctionCall, Intent::Answer { .. }) => {
                Err(Invalid::new(fields.action, "this is an approval: approve or reject it"))
            }
            (RequestKind::HumanContact, Intent::Approve { .. } | Intent::Reject { .. }) => {
                Err(Invalid::new(fields.action, "this is a question: answer it"))
            }
        }
    }

    fn find_option(&self, field: &str, name: Option<&str>) -> Result<Option<ResponseOption>, Invalid> {
        let Some(name) = name else { return Ok(None) };
        let options = self.options();
        match options.iter().find(|o| o.name == name) {
            Some(o) => Ok(Some(o.clone())),
            None if options.is_empty() => Err(Invalid::new(
                field,
                format!("{name:?} is not an option: this request has no {}", self.kind.options_field()),
            )),
            None => {
                let names: Vec<&str> = options.iter().map(|o| o.name.as_str()).collect();
                Err(Invalid::new(field, format!("{name:?} is not an option; choose one of {names:?}")))
            }
        }
    }

    /// The HumanLayer JSON of this request and where its `spec` sits in it, so that a holder of
    /// the JSON needs no second copy of the spec.
    pub fn to_json_with_spec(&self) -> (Vec<u8>, std::ops::Range<usize>) {
        let json = self.to_json();
        // The serializer writes `{"run_id":…,"call_id":…,"spec":` and then the spec verbatim.
        let text = |s: &str| serde_json::to_string(s).expect("strings serialize").len();
        let start = r#"{"run_id":,"call_id":,"spec":"#.len() + text(&self.run_id) + text(&self.call_id);
        let range = start..start + self.spec.get().len();
        debug_assert_eq!(json.get(range.clone()), Some(self.spec.get().as_bytes()));
        (json, range)
    }

    /// The HumanLayer JSON of this request (`FunctionCall` or `HumanContact`).
    pub fn to_json(&self) -> Vec<u8> {
        self.to_json_with_receipt(None)
    }

    /// [`Self::to_json`] with the decision's signed receipt as `status.receipt` (not stored: the
    /// server signs it when it shows a decided request; Ed25519 is deterministic, so the same
    /// decision and key give the same receipt).
    pub fn to_json_with_receipt(&self, receipt: Option<&str>) -> Vec<u8> {
        let requested_at = Some(self.requested_at.to_rfc3339());
        let responded_at = self.outcome.as_ref().map(|o| o.responded_at.to_rfc3339());
        let user_info = self.outcome.as_ref().map(|o| serde_json::to_value(&o.decided_by).unwrap_or_default());
        let escalations = (!self.escalations.is_empty()).then_some(&self.escalations);
        let updated_kwargs = match self.outcome.as_ref().map(|o| &o.decision) {
            Some(Decision::Approved { updated_kwargs: Some(text), .. }) => RawValue::from_string(text.clone()).ok(),
            _ => None,
        };
        let (approved, comment, option, response) = match self.outcome.as_ref().map(|o| &o.decision) {
            None => (None, None, None, None),
            Some(Decision::Approved { comment, .. }) => (Some(true), comment.clone(), None, None),
            Some(Decision::Rejected { comment, option }) => (Some(false), Some(comment.clone()), option.clone(), None),
            Some(Decision::Answered { response, option }) => (None, None, option.clone(), Some(response.clone())),
            // The released SDKs wait until `approved` or `response` is set: an ended request
            // reads as a rejection, or as this answer, with the reason as its text.
            Some(Decision::Ended { comment, .. }) => match self.kind {
                RequestKind::FunctionCall => (Some(false), Some(comment.clone()), None, None),
                RequestKind::HumanContact => (None, None, None, Some(comment.clone())),
            },
        };
        let out = match self.kind {
            RequestKind::FunctionCall => serde_json::to_vec(&View {
                run_id: &self.run_id,
                call_id: &self.call_id,
                spec: &self.spec,
                status: FunctionCallStatus {
                    requested_at,
                    responded_at,
                    approved,
                    comment,
                    reject_option_name: option,
                    slack_message_ts: None,
                    user_info,
                    updated_kwargs,
                    receipt: receipt.map(str::to_owned),
                },
                escalations,
            }),
            RequestKind::HumanContact => serde_json::to_vec(&View {
                run_id: &self.run_id,
                call_id: &self.call_id,
                spec: &self.spec,
                status: HumanContactStatus {
                    requested_at,
                    responded_at,
                    response,
                    response_option_name: option,
                    user_info,
                    receipt: receipt.map(str::to_owned),
                },
                escalations,
            }),
        };
        out.expect("JSON values always serialize")
    }
}

/// Borrowed serialization shape of `wire::FunctionCall` / `wire::HumanContact`.
#[derive(Serialize)]
struct View<'a, S> {
    run_id: &'a str,
    call_id: &'a str,
    spec: &'a RawValue,
    status: S,
    #[serde(skip_serializing_if = "Option::is_none")]
    escalations: Option<&'a Vec<Value>>,
}

/// What a decider asks to do with a request, before it is checked against it: the one typed way
/// every face (API, inbox, terminal, email link and reply) decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// Approve; with `updated_kwargs`, the function runs with these arguments instead.
    Approve { comment: Option<String>, updated_kwargs: Option<serde_json::Map<String, Value>> },
    /// Reject, with a comment, an option, both or neither.
    Reject { comment: Option<String>, option: Option<String> },
    /// Answer a question with text, an option, or both.
    Answer { response: Option<String>, option: Option<String> },
}

impl Intent {
    /// The intent of a HumanLayer respond body (`{approved, comment, reject_option_name,
    /// updated_kwargs}` or `{response, response_option_name}`).
    pub fn from_respond(kind: RequestKind, body: &Value) -> Result<Self, Invalid> {
        match kind {
            RequestKind::FunctionCall => {
                let r: FunctionCallRespond = serde_path_to_error::deserialize(body).map_err(Invalid::from_serde)?;
                match r.approved {
                    None => Err(Invalid::new("approved", "is required: true to approve, false to reject")),
                    Some(true) if r.reject_option_name.is_some() => {
                        Err(Invalid::new("reject_option_name", "only applies to a rejection (approved: false)"))
                    }
                    Some(true) => Self::approve(r.comment, r.updated_kwargs),
                    Some(false) if r.updated_kwargs.as_ref().is_some_and(|v| !v.is_null()) => {
                        Err(Invalid::new("updated_kwargs", "only applies to an approval (approved: true)"))
                    }
                    Some(false) => Ok(Self::Reject { comment: r.comment, option: r.reject_option_name }),
                }
            }
            RequestKind::HumanContact => {
                let r: HumanContactRespond = serde_path_to_error::deserialize(body).map_err(Invalid::from_serde)?;
                Ok(Self::Answer { response: r.response, option: r.response_option_name })
            }
        }
    }

    /// The kind of request the intent applies to.
    pub fn kind(&self) -> RequestKind {
        match self {
            Self::Approve { .. } | Self::Reject { .. } => RequestKind::FunctionCall,
            Self::Answer { .. } => RequestKind::HumanContact,
        }
    }

    /// An approval whose edited arguments came as JSON: an object, or null for none.
    pub fn approve(comment: Option<String>, updated_kwargs: Option<Value>) -> Result<Self, Invalid> {
        match updated_kwargs {
            None | Some(Value::Null) => Ok(Self::Approve { comment, updated_kwargs: None }),
            Some(Value::Object(map)) => Ok(Self::Approve { comment, updated_kwargs: Some(map) }),
            Some(_) => Err(Invalid::new("updated_kwargs", "must be a JSON object (the edited arguments)")),
        }
    }

    /// The same intent with its texts trimmed, and blank ones taken as not given (what a person
    /// typed into a form or a terminal).
    pub fn trimmed(self) -> Self {
        let text = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        match self {
            Self::Approve { comment, updated_kwargs } => Self::Approve { comment: text(comment), updated_kwargs },
            Self::Reject { comment, option } => Self::Reject { comment: text(comment), option: text(option) },
            Self::Answer { response, option } => Self::Answer { response: text(response), option: text(option) },
        }
    }
}

/// The names a decider knows the fields of a decision by, for the errors it is shown.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub action: &'static str,
    pub reject_option: &'static str,
    pub response_option: &'static str,
    pub response: &'static str,
}

impl Fields {
    /// The HumanLayer API's field names.
    pub const API: Fields = Fields {
        action: "approved",
        reject_option: "reject_option_name",
        response_option: "response_option_name",
        response: "response",
    };
    /// What people see in the inbox, the terminal and email pages: an action, an option, an answer.
    pub const PERSON: Fields =
        Fields { action: "action", reject_option: "option", response_option: "option", response: "answer" };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Actor;
    use serde_json::json;

    fn parse(kind: RequestKind, body: Value) -> Result<NewRequest, Invalid> {
        NewRequest::parse(kind, body.to_string().as_bytes())
    }

    fn approval(spec: Value) -> RequestRecord {
        let new = parse(RequestKind::FunctionCall, json!({"run_id": "r", "call_id": "c", "spec": spec})).unwrap();
        RequestRecord::new("p", new, Timestamp::from_micros(0))
    }

    #[test]
    fn every_decider_gets_the_same_checks_with_errors_in_its_own_words() {
        let record =
            approval(json!({"fn": "f", "kwargs": {}, "reject_options": [{"name": "later", "prompt_fill": "not now"}]}));
        let reject = |option: &str| Intent::Reject { comment: None, option: Some(option.into()) };
        // The API and a person reach the same decision from the same intent.
        for fields in [&Fields::API, &Fields::PERSON] {
            assert_eq!(
                record.decision(reject("later"), fields).unwrap(),
                Decision::Rejected { comment: "not now".into(), option: Some("later".into()) }
            );
        }
        let api = record.decision(reject("never"), &Fields::API).unwrap_err();
        let person = record.decision(reject("never"), &Fields::PERSON).unwrap_err();
        assert_eq!((api.field.as_str(), person.field.as_str()), ("reject_option_name", "option"));
        assert_eq!(api.message, person.message);
        let answer = Intent::Answer { response: Some("x".into()), option: None };
        assert_eq!(
            record.decision(answer, &Fields::PERSON).unwrap_err().to_string(),
            "action: this is an approval: approve or reject it"
        );
        // The respond body and the typed intent agree.
        let body = json!({"approved": true, "updated_kwargs": {"n": 2}});
        let intent = Intent::from_respond(RequestKind::FunctionCall, &body).unwrap();
        assert_eq!(intent, Intent::approve(None, Some(json!({"n": 2}))).unwrap());
        assert_eq!(record.parse_decision(&body).unwrap(), record.decision(intent, &Fields::API).unwrap());
        assert_eq!(Intent::approve(None, Some(json!([1]))).unwrap_err().field, "updated_kwargs");
        let typed = Intent::Reject { comment: Some("  ".into()), option: Some(" later ".into()) }.trimmed();
        assert_eq!(typed, Intent::Reject { comment: None, option: Some("later".into()) });
        let question = RequestRecord::new(
            "p",
            parse(RequestKind::HumanContact, json!({"run_id": "r", "call_id": "q", "spec": {"msg": "?"}})).unwrap(),
            Timestamp::from_micros(0),
        );
        let blank = Intent::Answer { response: None, option: None };
        assert_eq!(question.decision(blank, &Fields::PERSON).unwrap_err().field, "answer");
    }

    #[test]
    fn the_spec_is_located_in_the_json() {
        let body = r#"{"run_id": "r\"\u00e9é<", "call_id": "c\"x", "spec": {"msg": "hi \"there\"", "n": 1e2}}"#;
        let new = NewRequest::parse(RequestKind::HumanContact, body.as_bytes()).unwrap();
        let record = RequestRecord::new("p", new, Timestamp::from_micros(0));
        let (json, range) = record.to_json_with_spec();
        assert_eq!(&json[range], record.spec.get().as_bytes());
    }

    #[test]
    fn bad_create_bodies_name_the_field() {
        let cases = [
            (json!({"call_id": "c", "spec": {"fn": "f", "kwargs": {}}}), "run_id"),
            (json!({"run_id": "r", "call_id": "c", "spec": {"fn": "f", "kwargs": null}}), "spec.kwargs"),
            (json!({"run_id": "r", "call_id": "c", "spec": {"fn": "f", "kwargs": [1]}}), "spec.kwargs"),
            (json!({"run_id": "r", "call_id": "", "spec": {"fn": "f", "kwargs": {}}}), "call_id"),
            (json!({"run_id": "r", "call_id": "c", "spec": {"fn": "", "kwargs": {}}}), "spec.fn"),
            (json!({"run_id": "r", "call_id": "c", "spec": {"fn": "f", "kwargs": {}, "state": 3}}), "spec.state"),
            (
                json!({"run_id": "r", "call_id": "c", "spec": {"fn": "f", "kwargs": {}, "reject_options": [{"name": "a"}, {"name": "a"}]}}),
                "spec.reject_options[1].name",
            ),
        ];
        for (body, field) in cases {
            let err = parse(RequestKind::FunctionCall, body.clone()).unwrap_err();
            assert_eq!(err.field, field, "{body} gave {err}");
        }
    }

    #[test]
    fn retries_match_with_nulls_or_omissions() {
        let stored = approval(json!({"fn": "f", "kwargs": {"x": 1}, "channel": null, "state": null}));
        let ts_retry = parse(
            RequestKind::FunctionCall,
            json!({"run_id": "r", "call_id": "c", "spec": {"fn": "f", "kwargs": {"x": 1}}}),
        )
        .unwrap();
        assert!(ts_retry.same_as(&stored));
        let different = parse(
            RequestKind::FunctionCall,
            json!({"run_id": "r", "call_id": "c", "spec": {"fn": "f", "kwargs": {"x": 2}}}),
        )
        .unwrap();
        assert!(!different.same_as(&stored));
    }

    #[test]
    fn rejections_always_carry_a_string_comment() {
        let record = approval(
            json!({"fn": "f", "kwargs": {}, "reject_options": [{"name": "later", "prompt_fill": "try tomorrow"}]}),
        );
        let d = record.parse_decision(&json!({"approved": false})).unwrap();
        assert_eq!(d, Decision::Rejected { comment: String::new(), option: None });
        let d = record.parse_decision(&json!({"approved": false, "reject_option_name": "later"})).unwrap();
        assert_eq!(d, Decision::Rejected { comment: "try tomorrow".into(), option: Some("later".into()) });
        assert_eq!(record.parse_decision(&json!({"approved": null})).unwrap_err().field, "approved");
        assert_eq!(
            record.parse_decision(&json!({"approved": false, "reject_option_name": "nope"})).unwrap_err().field,
            "reject_option_name"
        );
    }

    #[test]
    fn pending_and_decided_json() {
        let mut record = approval(json!({"fn": "f", "kwargs": {"b": 1, "a": 2}, "state": {"deep": [1, {"z": null}]}}));
        let pending: Value = serde_json::from_slice(&record.to_json()).unwrap();
        assert_eq!(pending["status"]["approved"], Value::Null);
        assert_eq!(pending["spec"].to_string(), record.spec.get());
        record.outcome = Some(Outcome {
            responded_at: Timestamp::from_micros(1),
            decision: Decision::Rejected { comment: "no".into(), option: None },
            decided_by: Actor::api_key("cs_abcdef"),
        });
        let done: Value = serde_json::from_slice(&record.to_json()).unwrap();
        assert_eq!(done["status"]["approved"], json!(false));
        assert_eq!(done["status"]["comment"], json!("no"));
        assert_eq!(done["status"]["user_info"]["channel"], json!("api"));
    }

    #[test]
    fn numbers_round_trip_exactly() {
        let text =
            r#"{"run_id":"r","call_id":"c","spec":{"fn":"f","kwargs":{"big":18446744073709551617,"x":1e2,"y":2.50}}}"#;
        let new = NewRequest::parse(RequestKind::FunctionCall, text.as_bytes()).unwrap();
        let record = RequestRecord::new("p", new, Timestamp::now());
        let out = String::from_utf8(record.to_json()).unwrap();
        assert!(out.contains(r#""kwargs":{"big":18446744073709551617,"x":1e2,"y":2.50}"#), "{out}");
        let syntax = NewRequest::parse(RequestKind::FunctionCall, b"{\"run_id\": ").unwrap_err();
        assert!(syntax.message.contains("EOF"), "{syntax}");
    }

    #[test]
    fn empty_answers_are_refused() {
        let new = parse(RequestKind::HumanContact, json!({"run_id": "r", "call_id": "c", "spec": {"msg": "?", "response_options": [{"name": "b", "title": "Blue"}]}})).unwrap();
        let record = RequestRecord::new("p", new, Timestamp::now());
        assert_eq!(record.parse_decision(&json!({"response": ""})).unwrap_err().field, "response");
        assert_eq!(record.parse_decision(&json!({"response": null})).unwrap_err().field, "response");
        assert_eq!(
            record.parse_decision(&json!({"response_option_name": "b"})).unwrap(),
            Decision::Answered { response: "Blue".into(), option: Some("b".into()) }
        );
    }
}
