//! Durable timers: the escalation steps and deadlines a policy sets on a request, written with it
//! (see the backends' create paths) and fired once by [`crate::Requests::fire_timers`]. What a
//! due timer does is worked out here, the same for both backends, from the request's stored terms.

use countersign_core::governance::{Governance, TimerAction};
use countersign_core::{Escalation, Outcome, RequestKind, Timestamp};

/// A timer that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    pub project_id: String,
    pub kind: RequestKind,
    pub call_id: String,
    pub action: TimerAction,
    pub due: Timestamp,
    /// False when the request had ended already (the timer is spent, nothing changed).
    pub applied: bool,
    /// What it wrote (so the in-memory views need not read the request again).
    pub change: FiredChange,
}

/// What a fired timer wrote to its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FiredChange {
    /// The request ended (expired, or approved on expiry).
    Decided(Box<Outcome>),
    /// This escalation record was appended.
    Escalated(serde_json::Value),
    /// Nothing (the timer could not be read).
    Nothing,
}

/// A due timer as read with its request: (id, project, kind, call id, action JSON, due,
/// the request's terms, when it was requested).
pub(crate) type DueRow = (i64, String, String, String, String, i64, Option<String>, i64);

/// The SELECT of due timers with their requests (`$1` now, `$2` limit), oldest due first; a
/// backend appends its locking clause.
macro_rules! select_due {
    () => {
        "SELECT t.id, t.project_id, t.kind, t.call_id, t.action, t.due_at, r.policy, r.requested_at \
         FROM timers t JOIN requests r ON r.project_id = t.project_id AND r.kind = t.kind AND r.call_id = t.call_id \
         WHERE t.fired_at IS NULL AND t.due_at <= $1 ORDER BY t.due_at LIMIT $2"
    };
}
pub(crate) use select_due;

/// What firing one timer writes.
pub(crate) enum Change {
    Decide(Box<Outcome>),
    Escalate(Escalation),
    /// Nothing to do (unreadable terms or action, a step past the ladder): only marked fired.
    Nothing,
}

/// One due timer, planned.
pub(crate) struct Planned {
    pub id: i64,
    pub project_id: String,
    pub kind: RequestKind,
    pub call_id: String,
    pub action: TimerAction,
    pub due: Timestamp,
    pub change: Change,
}

/// Plans due rows at `now`. Only the first timer of each request is taken (the others fire on the
/// next round, so two changes to one request never meet in one statement).
pub(crate) fn plan(rows: Vec<DueRow>, now: Timestamp) -> Vec<Planned> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(rows.len());
    for (id, project_id, kind, call_id, action, due, policy, requested_at) in rows {
        if !seen.insert((project_id.clone(), kind.clone(), call_id.clone())) {
            continue;
        }
        let Some(kind) = RequestKind::parse(&kind) else { continue };
        let terms: Option<Governance> = policy.as_deref().and_then(|p| serde_json::from_str(p).ok());
        let action_parsed = TimerAction::from_json(&action);
        let change = match (terms, action_parsed) {
            (Some(terms), Some(TimerAction::Expire)) => {
                Change::Decide(Box::new(terms.expiry_outcome(kind, Timestamp::from_micros(requested_at), now)))
            }
            (Some(terms), Some(TimerAction::Escalate { step })) => match terms.escalation_record(step, now) {
                Some(record) => Change::Escalate(Escalation { record }),
                None => Change::Nothing,
            },
            _ => {
                tracing::warn!(id, %call_id, action, "a timer cannot be read; it is spent without effect");
                Change::Nothing
            }
        };
        out.push(Planned {
            id,
            project_id,
            kind,
            call_id,
            action: action_parsed.unwrap_or(TimerAction::Expire),
            due: Timestamp::from_micros(due),
            change,
        });
    }
    out
}

impl Planned {
    /// What the caller hears of it.
    pub(crate) fn fired(&self, applied: bool) -> Fired {
        Fired {
            project_id: self.project_id.clone(),
            kind: self.kind,
            call_id: self.call_id.clone(),
            action: self.action,
            due: self.due,
            applied,
            change: match &self.change {
                Change::Decide(outcome) => FiredChange::Decided(outcome.clone()),
                Change::Escalate(escalation) => FiredChange::Escalated(escalation.record.clone()),
                Change::Nothing => FiredChange::Nothing,
            },
        }
    }
}
