//! Governance: the terms a policy rule sets on one request when it is created (who may approve and
//! how many, whether the key's owner is barred, its deadline and escalation ladder), stored with
//! the request so that a later policy change never moves the goal posts; and the timers those
//! terms schedule.

use crate::policy::{OnExpire, PolicyAction, PolicyRule};
use crate::{Actor, Decision, Ending, Outcome, RequestKind, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

/// The terms of the rule that matched a request at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Governance {
    /// The rule's name.
    pub rule: String,
    /// What the rule did: `approve`, `deny` or `ask`.
    pub action: String,
    /// Who must approve, and how many distinct people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Quorum>,
    /// The owner of the requesting key may not approve.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub separation_of_duties: bool,
    /// The person who owns the key that asked (lower-cased email), if the key names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When the request expires, in microseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_us: Option<i64>,
    /// How long it was given, as written for people (`4h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_after: Option<String>,
    /// What expiry does: `deny` (it ends as expired) or `approve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_expire: Option<String>,
    /// The escalation ladder: who is told after how long.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalate: Vec<Step>,
}

/// A quorum: `count` distinct people, of `group` when one is named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub count: u32,
}

/// One step of an escalation ladder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Seconds after the request was created.
    pub after_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<String>,
}

/// Writes a duration the way policy files do (`90s` → `1m 30s`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    parts.join(" ")
}

impl Governance {
    /// The terms `rule` sets on a request created at `at` by a key owned by `owner`; the
    /// agent's own deadline (`spec.expires_at`) applies when it is sooner than the rule's, or
    /// when the rule sets none.
    pub fn of(rule: &PolicyRule, owner: Option<&str>, at: Timestamp, agent_deadline: Option<Timestamp>) -> Self {
        let rule_deadline = rule.expire_after.map(|d| at.as_micros().saturating_add(micros(d)));
        let (expires_at_us, expire_after) = match (rule_deadline, agent_deadline.map(Timestamp::as_micros)) {
            (Some(r), Some(a)) if a < r => (Some(a), None),
            (Some(r), _) => (Some(r), rule.expire_after.map(format_duration)),
            (None, Some(a)) => (Some(a), None),
            (None, None) => (None, None),
        };
        Self {
            rule: rule.name.clone(),
            action: rule.action.as_str().to_owned(),
            approvers: rule.approvers.as_ref().map(|a| Quorum { group: a.group.clone(), count: a.count }),
            separation_of_duties: rule.separation_of_duties,
            owner: owner.map(str::to_lowercase),
            expires_at_us,
            expire_after,
            on_expire: expires_at_us.map(|_| rule.on_expire.as_str().to_owned()),
            escalate: rule
                .escalate
                .iter()
                .map(|s| Step { after_secs: s.after.as_secs(), email: s.to.email.clone(), slack: s.to.slack.clone() })
                .collect(),
        }
    }

    /// Terms for a request no rule governs but whose agent set a deadline (it is denied on expiry).
    pub fn deadline_only(at: Timestamp) -> Self {
        Self {
            rule: String::new(),
            action: PolicyAction::Ask.as_str().to_owned(),
            approvers: None,
            separation_of_duties: false,
            owner: None,
            expires_at_us: Some(at.as_micros()),
            expire_after: None,
            on_expire: Some(OnExpire::Deny.as_str().to_owned()),
            escalate: Vec::new(),
        }
    }

    /// True when the rule decided at creation (approve or deny): no person is asked.
    pub fn decided_at_creation(&self) -> bool {
        self.action != PolicyAction::Ask.as_str()
    }

    /// True when the terms change anything beyond "ask one person" (worth storing).
    pub fn binds(&self) -> bool {
        self.decided_at_creation()
            || self.approvers.as_ref().is_some_and(|q| q.count > 1 || q.group.is_some())
            || self.separation_of_duties
            || self.expires_at_us.is_some()
            || !self.escalate.is_empty()
    }

    /// How many distinct approvals complete the request (1 without a quorum).
    pub fn needed(&self) -> u32 {
        self.approvers.as_ref().map_or(1, |q| q.count.max(1))
    }

    /// The timers these terms schedule for a request created at `at`: each escalation step, then
    /// the expiry. Steps due after the deadline are left out (the request has ended by then).
    pub fn timers(&self, at: Timestamp) -> Vec<Timer> {
        let mut out = Vec::new();
        for (i, step) in self.escalate.iter().enumerate() {
            let due = at.as_micros().saturating_add(micros(Duration::from_secs(step.after_secs)));
            if self.expires_at_us.is_some_and(|deadline| due >= deadline) {
                continue;
            }
            out.push(Timer { due: Timestamp::from_micros(due), action: TimerAction::Escalate { step: i } });
        }
        if let Some(deadline) = self.expires_at_us {
            out.push(Timer { due: Timestamp::from_micros(deadline), action: TimerAction::Expire });
        }
        out
    }

    /// The escalation record step `i` appends (as an agent's escalation would), recorded at `at`.
    pub fn escalation_record(&self, i: usize, at: Timestamp) -> Option<Value> {
        let step = self.escalate.get(i)?;
        let waited = format_duration(Duration::from_secs(step.after_secs));
        let mut channel = serde_json::Map::new();
        if let Some(email) = &step.email {
            channel.insert("email".into(), json!({ "address": email }));
        }
        if let Some(slack) = &step.slack {
            channel.insert("slack".into(), json!({ "channel_or_user_id": slack }));
        }
        Some(json!({
            "escalation_msg": format!("No decision after {waited} (policy rule \"{}\", step {} of {})", self.rule, i + 1, self.escalate.len()),
            "channel": Value::Object(channel),
            "escalated_at": at.to_rfc3339(),
            "escalated_by": "policy",
            "policy_step": i + 1,
        }))
    }

    /// The outcome of the expiry, at `at`: ended as expired, or approved by the policy.
    pub fn expiry_outcome(&self, kind: RequestKind, requested_at: Timestamp, at: Timestamp) -> Outcome {
        // How long it was given (not when the timer happened to fire).
        let deadline = self.expires_at_us.unwrap_or(at.as_micros());
        let waited = match &self.expire_after {
            Some(text) => text.clone(),
            // To the nearest second: an agent's deadline is a time, not a whole number of seconds.
            None => format_duration(Duration::from_secs(
                u64::try_from(deadline.saturating_sub(requested_at.as_micros()).saturating_add(500_000) / 1_000_000)
                    .unwrap_or(0),
            )),
        };
        let without = match kind {
            RequestKind::FunctionCall => "a decision",
            RequestKind::HumanContact => "an answer",
        };
        let comment = format!("expired after {waited} without {without}");
        let rule = if self.rule.is_empty() { None } else { Some(self.rule.clone()) };
        let approve =
            self.on_expire.as_deref() == Some(OnExpire::Approve.as_str()) && kind == RequestKind::FunctionCall;
        let decision = if approve {
            Decision::Approved { comment: Some(comment.clone()), updated_kwargs: None }
        } else {
            Decision::Ended { ending: Ending::Expired, comment: comment.clone() }
        };
        let reason = if approve { format!("{comment}; the rule approves on expiry") } else { comment };
        Outcome {
            responded_at: at,
            decision,
            decided_by: Actor { rule, reason: Some(reason), ..Actor::new(crate::DecisionChannel::Policy) },
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A durable timer: what to do to a request, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub due: Timestamp,
    pub action: TimerAction,
}

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerAction {
    /// Escalates to step `step` (0-based) of the ladder.
    Escalate { step: usize },
    /// Ends the request as its terms say.
    Expire,
}

impl TimerAction {
    /// The stored form.
    pub fn to_json(self) -> String {
        serde_json::to_string(&self).expect("timer actions serialize")
    }

    /// Reads the stored form.
    pub fn from_json(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}
