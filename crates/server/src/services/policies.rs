//! Project policies as the server applies them: set (validated, groups checked, logged in the
//! audit chain), read, tested without creating anything, and evaluated on every create.
//!
//! Each project's parsed policy is kept for [`POLICY_CACHE_TTL`]; a policy set by another process
//! (`countersign policy set` on the server's database, or another instance) applies within that
//! time.

use crate::error::{ApiError, ApiResult};
use axum::http::StatusCode;
use countersign_core::event::ProjectEvent;
use countersign_core::governance::Governance;
use countersign_core::policy::{CallData, Policy, PolicyAction, PolicyError};
use countersign_core::{Actor, Decision, Invalid, Outcome, RequestKind, RequestRecord, Timestamp};
use countersign_store::{Store, StoredPolicy};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long a project's policy is used without reading it again.
pub const POLICY_CACHE_TTL: Duration = Duration::from_secs(1);

/// The name policy errors give a policy set through the API.
pub const API_SOURCE: &str = "policy.toml";

#[derive(Clone)]
struct Cached {
    version: Option<i64>,
    policy: Option<Arc<Policy>>,
    at: Instant,
}

/// The projects' policies, parsed.
#[derive(Default)]
pub struct Policies {
    cache: RwLock<HashMap<String, Cached>>,
}

/// Why a policy was refused.
#[derive(Debug)]
pub enum Refused {
    /// The file is not a valid policy (where and why).
    Invalid(PolicyError),
    /// The store failed.
    Store(ApiError),
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Invalid(err) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_policy", err.to_string()),
            Refused::Store(err) => err,
        }
    }
}

/// Parses and checks a policy for a project: valid, every group it names exists there, and a
/// ladder step to Slack has a Slack connection to post with. What is missing is reported at the
/// line of the rule that needs it.
pub async fn validate(store: &dyn Store, project_id: &str, source: &str, text: &str) -> Result<Policy, Refused> {
    let policy = Policy::parse(source, text).map_err(Refused::Invalid)?;
    let refuse = |rule: &countersign_core::policy::PolicyRule, message: String| {
        let line = text.lines().nth(rule.line.saturating_sub(1)).unwrap_or_default().to_owned();
        Refused::Invalid(PolicyError { source: source.to_owned(), line: rule.line, column: 1, message, text: line })
    };
    let mut slack = None;
    for rule in policy.rules() {
        if let Some(group) = rule.approvers.as_ref().and_then(|a| a.group.as_deref()) {
            let found = store.group(project_id, group).await.map_err(|e| Refused::Store(e.into()))?;
            if found.is_none() {
                return Err(refuse(
                    rule,
                    format!(
                        "rule \"{}\" asks group \"{group}\", which this project does not have; create it first with \
                         `countersign groups create {group} --project PROJECT --member EMAIL`",
                        rule.name
                    ),
                ));
            }
        }
        if let Some(channel) = rule.escalate.iter().find_map(|step| step.to.slack.as_deref()) {
            if slack.is_none() {
                slack = Some(store.slack_connection(project_id).await.map_err(|e| Refused::Store(e.into()))?.is_some());
            }
            if slack == Some(false) {
                return Err(refuse(
                    rule,
                    format!(
                        "rule \"{}\" escalates to Slack ({channel}), but this project is not connected to Slack; \
                         connect it first with `countersign slack connect --project PROJECT`",
                        rule.name
                    ),
                ));
            }
        }
    }
    Ok(policy)
}

/// Sets a project's policy after [`validate`], logging the change with who made it.
pub async fn set(
    store: &dyn Store,
    project_id: &str,
    source: &str,
    text: &str,
    by: &str,
) -> Result<StoredPolicy, Refused> {
    let policy = validate(store, project_id, source, text).await?;
    let rules = policy.rules().iter().map(|r| r.name.clone()).collect();
    let event = ProjectEvent::policy_set(project_id, by, Timestamp::now(), text, rules);
    let stored = store.set_policy(text, &event).await.map_err(|e| Refused::Store(e.into()))?;
    tracing::info!(project_id, version = stored.version, rules = policy.rules().len(), by, "policy set");
    Ok(stored)
}

/// What a policy does with a request, for `policy test`: which rule decides, and the outcome.
#[derive(Debug, Serialize)]
pub struct TestReport {
    /// The deciding rule's name; `null` when none matched.
    pub rule: Option<String>,
    /// `approve`, `deny` or `ask`.
    pub action: &'static str,
    /// What would happen, for people.
    pub outcome: String,
    /// The terms the request would carry (quorum, deadline, ladder), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terms: Option<Governance>,
    /// Conditions that could not be evaluated on the way: `{rule, error}`.
    pub errors: Vec<Value>,
}

/// What `policy` does with `record` (nothing is created or stored).
pub fn test(policy: Option<&Policy>, record: &RequestRecord, owner: Option<&str>) -> TestReport {
    let governed = govern(policy, record, owner, agent_deadline(record).ok().flatten());
    let errors = governed.errors.iter().map(|(rule, error)| json!({"rule": rule, "error": error})).collect();
    let (action, outcome) = match &governed.outcome {
        Some(o) => match &o.decision {
            Decision::Approved { .. } => ("approve", "approved at once: the agent runs the function".to_owned()),
            Decision::Rejected { comment, .. } => {
                ("deny", format!("denied at once: the agent is told \"{}\"", denied_message(record, comment)))
            }
            _ => ("deny", "ended at once".to_owned()),
        },
        None => ("ask", asked(governed.terms.as_ref())),
    };
    TestReport { rule: governed.rule, action, outcome, terms: governed.terms, errors }
}

/// What the released SDKs tell the agent of a rejection.
fn denied_message(record: &RequestRecord, comment: &str) -> String {
    let name = serde_json::from_str::<Value>(record.spec.get())
        .ok()
        .and_then(|s| s.get("fn").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    format!("User denied {name} with message: {comment}")
}

fn asked(terms: Option<&Governance>) -> String {
    let Some(terms) = terms else { return "asked: one person's decision completes it".to_owned() };
    let mut parts = Vec::new();
    match &terms.approvers {
        Some(q) => parts.push(format!(
            "asked: {} distinct approval{}{} complete{} it; any one rejection rejects it",
            q.count,
            if q.count == 1 { "" } else { "s" },
            q.group.as_ref().map(|g| format!(" from group \"{g}\"")).unwrap_or_default(),
            if q.count == 1 { "s" } else { "" },
        )),
        None => parts.push("asked: one person's decision completes it".to_owned()),
    }
    if terms.separation_of_duties {
        parts.push(match &terms.owner {
            Some(owner) => format!("{owner} (the key's owner) may not approve"),
            None => "the key's owner may not approve (this key names no owner)".to_owned(),
        });
    }
    for step in &terms.escalate {
        let to: Vec<&str> = step.email.iter().chain(&step.slack).map(String::as_str).collect();
        parts.push(format!(
            "after {} escalates to {}",
            countersign_core::governance::format_duration(Duration::from_secs(step.after_secs)),
            to.join(" and ")
        ));
    }
    if let (Some(at), Some(on)) = (terms.expires_at_us, &terms.on_expire) {
        let verb = if on == "approve" { "is approved" } else { "expires (the agent sees a rejection)" };
        parts.push(format!("at {} it {verb} if undecided", Timestamp::from_micros(at)));
    }
    parts.join("; ")
}

/// A request after its project's policy: the rule that matched, the decision it made at
/// creation (approve or deny), and the terms it sets on an ask.
#[derive(Debug, Default)]
pub struct Governed {
    pub rule: Option<String>,
    pub outcome: Option<Outcome>,
    pub terms: Option<Governance>,
    pub errors: Vec<(String, String)>,
}

/// Applies `policy` to a new request (`owner`: the requesting key's owner; `deadline`: the
/// agent's own, from [`agent_deadline`]). Rules that approve or deny apply to function calls only;
/// a question is only ever asked (their `ask` terms apply).
pub fn govern(
    policy: Option<&Policy>,
    record: &RequestRecord,
    owner: Option<&str>,
    deadline: Option<Timestamp>,
) -> Governed {
    let mut governed = Governed::default();
    if let Some(policy) = policy {
        let data = CallData::of(record);
        let evaluation = policy.evaluate(&data.call());
        governed.errors = evaluation.errors;
        if let Some(rule) = evaluation.rule
            && (rule.action == PolicyAction::Ask || record.kind == RequestKind::FunctionCall)
        {
            governed.rule = Some(rule.name.clone());
            let at = record.requested_at;
            let decision = match rule.action {
                PolicyAction::Approve => {
                    Some(Decision::Approved { comment: rule.message.clone(), updated_kwargs: None })
                }
                PolicyAction::Deny => Some(Decision::Rejected {
                    comment: rule.message.clone().unwrap_or_else(|| format!("denied by policy rule \"{}\"", rule.name)),
                    option: None,
                }),
                PolicyAction::Ask => None,
            };
            governed.outcome = decision.map(|decision| Outcome {
                responded_at: at,
                decision,
                decided_by: Actor::policy(&rule.name, None),
            });
            let terms = Governance::of(rule, owner, at, deadline);
            governed.terms = terms.binds().then_some(terms);
            return governed;
        }
    }
    governed.terms = deadline.map(Governance::deadline_only);
    governed
}

/// The agent's own deadline, `spec.expires_at` (RFC 3339), if it set one.
pub fn agent_deadline(record: &RequestRecord) -> Result<Option<Timestamp>, Invalid> {
    let Some(raw) = record.spec_field("expires_at") else { return Ok(None) };
    let text: String = serde_json::from_str(raw.get())
        .map_err(|_| Invalid::new("spec.expires_at", "must be an RFC 3339 time, e.g. \"2026-12-31T17:00:00Z\""))?;
    let at = Timestamp::parse_rfc3339(&text).ok_or_else(|| {
        Invalid::new("spec.expires_at", format!("{text:?} is not an RFC 3339 time, e.g. \"2026-12-31T17:00:00Z\""))
    })?;
    if at <= record.requested_at {
        return Err(Invalid::new("spec.expires_at", format!("{text} has passed; give a time in the future")));
    }
    let max = record.requested_at.as_micros().saturating_add(365 * 24 * 3600 * 1_000_000);
    if at.as_micros() > max {
        return Err(Invalid::new(
            "spec.expires_at",
            "is more than 365 days away; the longest a request may wait is 365 days",
        ));
    }
    Ok(Some(at))
}

impl Policies {
    /// A project's policy, parsed (from the cache when fresh). A stored policy that no longer
    /// parses (written by a newer version) is logged and ignored: requests are asked.
    pub async fn of(&self, store: &dyn Store, project_id: &str) -> ApiResult<Option<Arc<Policy>>> {
        if let Some(hit) = self.cache.read().expect("policy cache lock").get(project_id)
            && hit.at.elapsed() < POLICY_CACHE_TTL
        {
            return Ok(hit.policy.clone());
        }
        let stored = store.policy(project_id).await?;
        let version = stored.as_ref().map(|s| s.version);
        let previous = self.cache.read().expect("policy cache lock").get(project_id).cloned();
        let policy = match previous {
            Some(p) if p.version == version => p.policy,
            _ => stored.and_then(|s| match Policy::parse("stored policy", &s.source) {
                Ok(policy) => Some(Arc::new(policy)),
                Err(err) => {
                    tracing::error!(project_id, %err, "the stored policy cannot be read; requests are asked");
                    None
                }
            }),
        };
        self.cache
            .write()
            .expect("policy cache lock")
            .insert(project_id.to_owned(), Cached { version, policy: policy.clone(), at: Instant::now() });
        Ok(policy)
    }

    /// Forgets a project's cached policy (after this process set a new one).
    pub fn forget(&self, project_id: &str) {
        self.cache.write().expect("policy cache lock").remove(project_id);
    }
}

/// A request as it would be created, for testing a policy (`run_id` defaults to `policy-test`).
pub fn test_record(
    project_id: &str,
    kind: RequestKind,
    run_id: Option<&str>,
    spec: &Value,
) -> Result<RequestRecord, Invalid> {
    let create = json!({"run_id": run_id.unwrap_or("policy-test"), "call_id": "policy-test", "spec": spec});
    let new = countersign_core::NewRequest::parse(kind, create.to_string().as_bytes())?;
    Ok(RequestRecord::new(project_id, new, Timestamp::now()))
}

/// The policy JSON the API shows: the text and who set it when.
pub fn policy_json(stored: Option<&StoredPolicy>) -> Value {
    match stored {
        None => json!({"policy": null, "version": 0, "rules": []}),
        Some(s) => {
            let rules: Vec<String> = Policy::parse("stored policy", &s.source)
                .map(|p| p.rules().iter().map(|r| r.name.clone()).collect())
                .unwrap_or_default();
            json!({
                "policy": s.source,
                "version": s.version,
                "rules": rules,
                "set_by": s.set_by,
                "set_at": s.set_at.to_rfc3339(),
            })
        }
    }
}

/// A rule people could add: a function approved at least `min` times by people and never
/// rejected, with what its approved arguments had in common.
#[derive(Debug, Clone, Serialize)]
pub struct Suggestion {
    #[serde(rename = "fn")]
    pub fn_name: String,
    /// Approvals by people (policy decisions do not count).
    pub approvals: u64,
    /// The condition its approved calls all met (`null` when they share nothing usable).
    pub when: Option<String>,
    /// The rule, ready to paste into the policy file.
    pub rule: String,
}

/// Most decided requests `suggest` reads.
pub const SUGGEST_SCAN_LIMIT: usize = 100_000;

/// Suggested `approve` rules from decided requests: per function, the ones people approved at
/// least `min` times and nobody (person or policy) rejected; the condition keeps each argument
/// whose value was the same in every approval (`args.currency == 'USD'`) and, for numbers, the
/// largest approved (`args.amount <= 120`). Nothing is applied.
pub fn suggest(decided: &[RequestRecord], min: u64) -> Vec<Suggestion> {
    use std::collections::BTreeMap;
    #[derive(Default)]
    struct Seen {
        approvals: u64,
        rejected: bool,
        args: Vec<serde_json::Map<String, Value>>,
    }
    let mut by_fn: BTreeMap<String, Seen> = BTreeMap::new();
    for record in decided.iter().filter(|r| r.kind == RequestKind::FunctionCall) {
        let Some(outcome) = &record.outcome else { continue };
        let data = CallData::of(record);
        let seen = by_fn.entry(data.fn_name.clone()).or_default();
        match &outcome.decision {
            Decision::Approved { .. } if outcome.decided_by.channel != countersign_core::DecisionChannel::Policy => {
                seen.approvals += 1;
                seen.args.push(data.args.as_object().cloned().unwrap_or_default());
            }
            Decision::Rejected { .. } => seen.rejected = true,
            _ => {}
        }
    }
    by_fn
        .into_iter()
        .filter(|(name, seen)| !name.is_empty() && !seen.rejected && seen.approvals >= min.max(1))
        .map(|(fn_name, seen)| {
            let when = common_condition(&seen.args);
            let mut rule = format!(
                "# approved {} times by people, never rejected\n[[rule]]\nname = {}\nmatch = {{ fn = {} }}\n",
                seen.approvals,
                toml_string(&format!("suggested: {fn_name}")),
                toml_string(&glob_literal(&fn_name)),
            );
            if let Some(when) = &when {
                rule.push_str(&format!("when = {}\n", toml_string(when)));
            }
            rule.push_str("action = \"approve\"\n");
            Suggestion { fn_name, approvals: seen.approvals, when, rule }
        })
        .collect()
}

/// What every approved call's arguments had in common, as CEL.
fn common_condition(calls: &[serde_json::Map<String, Value>]) -> Option<String> {
    let first = calls.first()?;
    let mut parts = Vec::new();
    for (key, value) in first {
        if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || key.starts_with(|c: char| c.is_ascii_digit())
        {
            continue; // not a CEL field name
        }
        let values: Vec<&Value> = calls.iter().filter_map(|args| args.get(key)).collect();
        if values.len() != calls.len() {
            continue;
        }
        if values.iter().all(|v| v.is_i64() || v.is_u64()) {
            let max = values.iter().filter_map(|v| v.as_i64()).max();
            if let Some(max) = max {
                parts.push(format!("args.{key} <= {max}"));
            }
        } else if values.iter().all(|v| *v == value) {
            match value {
                Value::String(text) if text.len() <= 200 => parts.push(format!("args.{key} == {}", cel_string(text))),
                Value::Bool(b) => parts.push(format!("args.{key} == {b}")),
                _ => {}
            }
        }
    }
    (!parts.is_empty()).then(|| parts.join(" && "))
}

fn cel_string(text: &str) -> String {
    let mut out = String::from("'");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A TOML basic string (JSON's escapes are TOML's).
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

/// A glob that matches exactly `name`.
fn glob_literal(name: &str) -> String {
    name.chars().map(|c| if matches!(c, '*' | '?' | '[' | ']') { format!("[{c}]") } else { c.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use countersign_core::{DecisionChannel, NewRequest};

    fn decided(
        call_id: &str,
        fn_name: &str,
        args: Value,
        decision: Decision,
        channel: DecisionChannel,
    ) -> RequestRecord {
        let body = json!({"run_id": "r", "call_id": call_id, "spec": {"fn": fn_name, "kwargs": args}});
        let new = NewRequest::parse(RequestKind::FunctionCall, body.to_string().as_bytes()).unwrap();
        let mut record = RequestRecord::new("p", new, Timestamp::now());
        record.outcome = Some(Outcome {
            responded_at: Timestamp::now(),
            decision,
            decided_by: Actor { email: Some("ada@x".into()), ..Actor::new(channel) },
        });
        record
    }

    fn approved() -> Decision {
        Decision::Approved { comment: None, updated_kwargs: None }
    }

    #[test]
    fn suggestions_are_functions_people_always_approved_with_what_they_had_in_common() {
        let mut records = Vec::new();
        for (i, amount) in [50, 120, 80].into_iter().enumerate() {
            let args = json!({"amount": amount, "currency": "USD", "note": format!("n{i}"), "it's": "x"});
            records.push(decided(&format!("r{i}"), "refund", args, approved(), DecisionChannel::Web));
        }
        for i in 0..3 {
            records.push(decided(&format!("d{i}"), "drop_table", json!({}), approved(), DecisionChannel::Web));
        }
        let rejected = Decision::Rejected { comment: "no".into(), option: None };
        records.push(decided("d9", "drop_table", json!({}), rejected, DecisionChannel::Api));
        for i in 0..5 {
            records.push(decided(&format!("p{i}"), "ping", json!({}), approved(), DecisionChannel::Policy));
        }
        records.push(decided("s1", "send*", json!({"to": "o'brien"}), approved(), DecisionChannel::Slack));
        let suggestions = suggest(&records, 3);
        let names: Vec<&str> = suggestions.iter().map(|s| s.fn_name.as_str()).collect();
        assert_eq!(names, ["refund"], "drop_table was rejected once; ping only by policy");
        let refund = &suggestions[0];
        assert_eq!(refund.approvals, 3);
        assert_eq!(refund.when.as_deref(), Some("args.amount <= 120 && args.currency == 'USD'"));
        // The suggested rule is a valid policy that approves what people approved.
        let policy = Policy::parse("suggested", &refund.rule).unwrap();
        let record =
            decided("new", "refund", json!({"amount": 100, "currency": "USD"}), approved(), DecisionChannel::Web);
        assert_eq!(
            policy.evaluate(&CallData::of(&record).call()).rule.map(|r| r.name.as_str()),
            Some("suggested: refund")
        );
        let over =
            decided("over", "refund", json!({"amount": 121, "currency": "USD"}), approved(), DecisionChannel::Web);
        assert!(policy.evaluate(&CallData::of(&over).call()).rule.is_none());
        // Odd names and texts stay valid TOML, CEL and globs.
        let odd = suggest(&records, 1).into_iter().find(|s| s.fn_name == "send*").unwrap();
        let policy = Policy::parse("odd", &odd.rule).unwrap();
        let same = decided("s2", "send*", json!({"to": "o'brien"}), approved(), DecisionChannel::Web);
        assert!(policy.evaluate(&CallData::of(&same).call()).rule.is_some(), "{}", odd.rule);
        let other = decided("s3", "sendX", json!({"to": "o'brien"}), approved(), DecisionChannel::Web);
        assert!(policy.evaluate(&CallData::of(&other).call()).rule.is_none(), "the glob is literal: {}", odd.rule);
    }
}
