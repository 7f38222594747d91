//! At-most-once execution of approved calls: the agent's `started` / `finished` / `failed`
//! reports, checked and recorded with their audit event (see [`countersign_core::execution`]).

use crate::error::{ApiError, ApiResult};
use crate::services::live::RequestKey;
use countersign_core::Timestamp;
use countersign_core::event::RequestEvent;
use countersign_core::execution::{ExecutionReport, Refused};
use countersign_store::{Executed, Store};
use serde_json::Value;

/// Records `report` on the call `key` names; the execution's JSON as it is now. A second start,
/// an end before the start, or a second end is a 409 whose error carries the execution as it is
/// (`error.execution`); a call that is not approved is a 409 that says what it is.
pub async fn report(store: &dyn Store, key: &RequestKey, report: ExecutionReport) -> ApiResult<Value> {
    let event = RequestEvent::executed(&key.project_id, key.kind, &key.call_id, &report, Timestamp::now());
    let call = &key.call_id;
    match store.record_execution(&event).await? {
        Executed::Recorded(execution) => {
            tracing::info!(call_id = %call, state = execution.state.as_str(), by = %report.by, "execution reported");
            Ok(execution.to_json(call))
        }
        Executed::Replayed(execution) => Ok(execution.to_json(call)),
        Executed::Refused(Refused::AlreadyStarted(now)) => {
            tracing::warn!(call_id = %call, by = %report.by, first = %now.started_by, "a second start of an approved call was refused");
            Err(ApiError::conflict(format!(
                "function call {call:?} already {}; it must not run again (check what the first run did)",
                now.describe()
            ))
            .with_detail("execution", now.to_json(call)))
        }
        Executed::Refused(Refused::AlreadyEnded(now)) => {
            Err(ApiError::conflict(format!("function call {call:?} {}; its end was reported already", now.describe()))
                .with_detail("execution", now.to_json(call)))
        }
        Executed::Refused(Refused::NotStarted) => Err(ApiError::conflict(format!(
            "function call {call:?} was not started: report {{\"state\": \"started\"}} before it runs"
        ))),
        Executed::NotApproved(None) => Err(ApiError::not_found(format!("no function call {call:?} in this project"))),
        Executed::NotApproved(Some(decision)) => Err(ApiError::conflict(format!(
            "function call {call:?} is {decision}, not approved: only an approved call may run"
        ))),
    }
}

/// The execution of a call: its JSON, or 404 when it was not started (or there is no such call).
pub async fn get(store: &dyn Store, key: &RequestKey) -> ApiResult<Value> {
    match store.execution(&key.project_id, key.kind, &key.call_id).await? {
        Some(execution) => Ok(execution.to_json(&key.call_id)),
        None => Err(ApiError::not_found(format!(
            "function call {:?} has no execution reported (not started, or no such call)",
            key.call_id
        ))),
    }
}
