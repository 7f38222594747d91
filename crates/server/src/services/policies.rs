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

/// Parses and checks a policy for a project: valid, and every group it names exists there. A
/// missing group is reported at the line of the rule that names it.
pub async fn validate(store: &dyn Store, project_id: &str, source: &str, text: &str) -> Result<Policy, Refused> {
    let policy = Policy::parse(source, text).map_err(Refused::Invalid)?;
    for rule in policy.rules() {
        let Some(group) = rule.approvers.as_ref().and_then(|a| a.group.as_deref()) else { continue };
        let found = store.group(project_id, group).await.map_err(|e| Refused::Store(e.into()))?;
        if found.is_none() {
            let line = text.lines().nth(rule.line.saturating_sub(1)).unwrap_or_default().to_owned();
            return Err(Refused::Invalid(PolicyError {
                source: source.to_owned(),
                line: rule.line,
                column: 1,
                message: format!(
                    "rule \"{}\" asks group \"{group}\", which this project does not have; create it first with \
                     `countersign groups create {group} --project PROJECT --member EMAIL`",
                    rule.name
                ),
                text: line,
            }));
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
    let governed = govern(policy, record, owner);
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

/// Applies `policy` to a new request (`owner`: the requesting key's owner). Rules that approve or
/// deny apply to function calls only; a question is only ever asked (their `ask` terms apply).
pub fn govern(policy: Option<&Policy>, record: &RequestRecord, owner: Option<&str>) -> Governed {
    let deadline = agent_deadline(record).ok().flatten();
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
