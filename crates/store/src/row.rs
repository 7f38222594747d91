//! Rows as every backend stores them, and their conversion to domain records.

use crate::{ApiKeyRecord, StoreError, StoreResult};
use countersign_core::governance::Governance;
use countersign_core::{Actor, Decision, Ending, Outcome, Project, RequestKind, RequestRecord, Timestamp};
use serde_json::Value;

/// Columns of `requests`, in the order of [`REQUEST_COLUMNS`].
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RequestRow {
    project_id: String,
    kind: String,
    call_id: String,
    run_id: String,
    spec: String,
    requested_at: i64,
    responded_at: Option<i64>,
    approved: Option<bool>,
    comment: Option<String>,
    response: Option<String>,
    option_name: Option<String>,
    decided_by: Option<String>,
    escalations: String,
    updated_kwargs: Option<String>,
    policy: Option<String>,
    ended: Option<String>,
}

/// The column list matching [`RequestRow`], as a literal for `concat!`.
macro_rules! request_columns {
    () => {
        "project_id, kind, call_id, run_id, spec, requested_at, responded_at, \
         approved, comment, response, option_name, decided_by, escalations, updated_kwargs, policy, ended"
    };
}
pub(crate) use request_columns;

/// The deepest stored JSON read back into values. Bodies are refused above `max_json_depth`
/// (64 by default), and older servers accepted up to 127 levels: everything they stored reads
/// back. Deeper text is not parsed at all, so no row can exhaust the stack.
pub const MAX_STORED_DEPTH: usize = 256;

/// Parses stored JSON without serde_json's 128-level recursion limit (which once made accepted
/// rows unreadable), after checking its depth in one flat pass.
pub(crate) fn stored_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    countersign_core::json_depth::check(text.as_bytes(), MAX_STORED_DEPTH)?;
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let value = T::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Converts rows to records, setting aside (and logging) any that cannot be read, so one bad
/// row never fails a listing or the server's start.
pub(crate) fn readable(rows: Vec<RequestRow>) -> Vec<RequestRecord> {
    rows.into_iter()
        .filter_map(|row| {
            let (project_id, call_id) = (row.project_id.clone(), row.call_id.clone());
            match RequestRecord::try_from(row) {
                Ok(record) => Some(record),
                Err(err) => {
                    tracing::error!(%err, %project_id, %call_id, "a stored request cannot be read; it is left out");
                    None
                }
            }
        })
        .collect()
}

fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("stored {what} is unreadable: {err}"))
}

impl TryFrom<RequestRow> for RequestRecord {
    type Error = StoreError;

    fn try_from(row: RequestRow) -> StoreResult<Self> {
        let kind = RequestKind::parse(&row.kind).ok_or_else(|| corrupt("kind", &row.kind))?;
        let spec = serde_json::value::RawValue::from_string(row.spec).map_err(|e| corrupt("spec", e))?;
        let escalations: Vec<Value> = stored_json(&row.escalations).map_err(|e| corrupt("escalations", e))?;
        let policy: Option<Governance> =
            row.policy.as_deref().map(stored_json).transpose().map_err(|e| corrupt("policy", e))?;
        let outcome = match row.responded_at {
            None => None,
            Some(at) => {
                let ending = row.ended.as_deref().and_then(Ending::parse);
                let decision = match (kind, row.approved, ending) {
                    (_, _, Some(ending)) => {
                        Decision::Ended { ending, comment: row.comment.or(row.response).unwrap_or_default() }
                    }
                    (RequestKind::FunctionCall, Some(true), None) => {
                        Decision::Approved { comment: row.comment, updated_kwargs: row.updated_kwargs }
                    }
                    (RequestKind::FunctionCall, _, None) => {
                        Decision::Rejected { comment: row.comment.unwrap_or_default(), option: row.option_name }
                    }
                    (RequestKind::HumanContact, _, None) => {
                        Decision::Answered { response: row.response.unwrap_or_default(), option: row.option_name }
                    }
                };
                let decided_by: Actor =
                    stored_json(row.decided_by.as_deref().unwrap_or("null")).map_err(|e| corrupt("decided_by", e))?;
                Some(Outcome { responded_at: Timestamp::from_micros(at), decision, decided_by })
            }
        };
        Ok(RequestRecord {
            project_id: row.project_id,
            kind,
            call_id: row.call_id,
            run_id: row.run_id,
            spec,
            requested_at: Timestamp::from_micros(row.requested_at),
            outcome,
            escalations,
            policy,
        })
    }
}

/// The decision columns of an outcome.
pub(crate) struct OutcomeColumns {
    pub approved: Option<bool>,
    pub comment: Option<String>,
    pub response: Option<String>,
    pub option: Option<String>,
    pub decided_by: String,
    pub updated_kwargs: Option<String>,
    /// `expired` or `cancelled` for a request that ended without a decision.
    pub ended: Option<&'static str>,
}

pub(crate) fn outcome_columns(kind: RequestKind, outcome: &Outcome) -> OutcomeColumns {
    let decided_by = serde_json::to_string(&outcome.decided_by).expect("actors always serialize");
    let none = OutcomeColumns {
        approved: None,
        comment: None,
        response: None,
        option: None,
        decided_by,
        updated_kwargs: None,
        ended: None,
    };
    match &outcome.decision {
        Decision::Approved { comment, updated_kwargs } => OutcomeColumns {
            approved: Some(true),
            comment: comment.clone(),
            updated_kwargs: updated_kwargs.clone(),
            ..none
        },
        Decision::Rejected { comment, option } => {
            OutcomeColumns { approved: Some(false), comment: Some(comment.clone()), option: option.clone(), ..none }
        }
        Decision::Answered { response, option } => {
            OutcomeColumns { response: Some(response.clone()), option: option.clone(), ..none }
        }
        Decision::Ended { ending, comment } => OutcomeColumns {
            approved: Some(false).filter(|_| kind == RequestKind::FunctionCall),
            comment: Some(comment.clone()),
            ended: Some(ending.as_str()),
            ..none
        },
    }
}

/// Columns of `projects`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ProjectRow {
    id: String,
    name: String,
    created_at: i64,
}

impl From<ProjectRow> for Project {
    fn from(row: ProjectRow) -> Self {
        Project { id: row.id, name: row.name, created_at: Timestamp::from_micros(row.created_at) }
    }
}

/// Columns of `api_keys` joined with the project name, in the order of [`KEY_COLUMNS`].
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct KeyRow {
    id: String,
    project_id: String,
    project_name: String,
    name: Option<String>,
    display_prefix: String,
    created_at: i64,
    revoked_at: Option<i64>,
    scopes: String,
    owner: Option<String>,
}

/// Select list and join for [`KeyRow`], as a literal for `concat!`.
macro_rules! select_keys {
    () => {
        "SELECT k.id, k.project_id, p.name AS project_name, k.name, k.display_prefix, k.created_at, k.revoked_at, k.scopes, k.owner \
         FROM api_keys k JOIN projects p ON p.id = k.project_id"
    };
}
pub(crate) use select_keys;

impl From<KeyRow> for ApiKeyRecord {
    fn from(row: KeyRow) -> Self {
        ApiKeyRecord {
            id: row.id,
            project_id: row.project_id,
            project_name: row.project_name,
            name: row.name,
            display_prefix: row.display_prefix,
            created_at: Timestamp::from_micros(row.created_at),
            revoked_at: row.revoked_at.map(Timestamp::from_micros),
            scopes: countersign_core::api_key::Scopes::from_text(&row.scopes),
            owner: row.owner,
        }
    }
}
