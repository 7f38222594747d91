//! Approvals: `/function_calls` and `/agent/function_calls/...`.

use super::extract::{ApiQuery, JsonObject, RawJsonObject};
use super::{PendingParams, WaitParams};
use crate::error::JsonBytes;
use crate::error::{ApiResult, ErrorBody};
use crate::services::auth::Caller;
use crate::state::AppState;
use axum::extract::{Path, State};
use countersign_core::RequestKind::FunctionCall as KIND;
use countersign_core::wire::{EscalationBody, FunctionCall, FunctionCallCreate, FunctionCallRespond};

/// Create an approval request (idempotent for an identical body).
#[utoipa::path(post, path = "/function_calls", tag = "function_calls", request_body = FunctionCallCreate,
    responses((status = 200, description = "Created, or the identical existing request", body = FunctionCall),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 409, description = "call_id exists with a different body", body = ErrorBody),
              (status = 413, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RawJsonObject(body): RawJsonObject,
) -> ApiResult<JsonBytes> {
    super::create(&state, &caller, KIND, &body).await
}

/// Get an approval request; with `wait`, answer as soon as it is decided.
#[utoipa::path(get, path = "/function_calls/{call_id}", tag = "function_calls", params(("call_id" = String, Path), WaitParams),
    responses((status = 200, body = FunctionCall), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(call_id): Path<String>,
    ApiQuery(params): ApiQuery<WaitParams>,
) -> ApiResult<JsonBytes> {
    super::get(&state, &caller, KIND, call_id, params).await
}

/// Approve or reject; the first response wins.
#[utoipa::path(post, path = "/agent/function_calls/{call_id}/respond", tag = "function_calls",
    params(("call_id" = String, Path)), request_body = FunctionCallRespond,
    responses((status = 200, body = FunctionCall), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "already decided", body = ErrorBody)))]
pub async fn respond(
    State(state): State<AppState>,
    caller: Caller,
    Path(call_id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<JsonBytes> {
    super::respond(&state, &caller, KIND, call_id, body).await
}

/// Record an email escalation of a pending approval.
#[utoipa::path(post, path = "/agent/function_calls/{call_id}/escalate_email", tag = "function_calls",
    params(("call_id" = String, Path)), request_body = EscalationBody,
    responses((status = 200, body = FunctionCall), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "already decided", body = ErrorBody)))]
pub async fn escalate_email(
    State(state): State<AppState>,
    caller: Caller,
    Path(call_id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<JsonBytes> {
    super::escalate(&state, &caller, KIND, call_id, body).await
}

/// Cancel a pending approval (the agent no longer needs it): it ends as `cancelled`, with
/// `approved: false` and the reason as the comment; channels update their messages.
#[utoipa::path(post, path = "/function_calls/{call_id}/cancel", tag = "function_calls",
    params(("call_id" = String, Path)), request_body(content = super::CancelBody, description = "optional"),
    responses((status = 200, body = FunctionCall), (status = 404, body = ErrorBody),
              (status = 409, description = "already decided", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(call_id): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<JsonBytes> {
    super::cancel(&state, &caller, KIND, call_id, &body).await
}

/// Report running an approved call: `{"state": "started"}` succeeds once (a second start is 409,
/// with when and by whom it started in `error.execution`), then `{"state": "finished",
/// "result_sha256": "<hex>"}` (the hash optional) or `{"state": "failed", "error": "..."}`. Each
/// report is an event of the audit log.
#[utoipa::path(post, path = "/function_calls/{call_id}/execution", tag = "function_calls",
    params(("call_id" = String, Path)),
    responses((status = 200, description = "`{call_id, state, started_at, started_by, ended_at, result_sha256, error}`"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "started already, not started, ended already, or not approved", body = ErrorBody)))]
pub async fn report_execution(
    State(state): State<AppState>,
    caller: Caller,
    Path(call_id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<axum::Json<serde_json::Value>> {
    caller.require(countersign_core::api_key::Scope::Agent)?;
    let by = format!("key {}", caller.key_prefix);
    let report = countersign_core::execution::ExecutionReport::parse(&body, &by)?;
    let key = super::key(&caller, KIND, call_id);
    Ok(axum::Json(crate::services::executions::report(state.store.as_ref(), &key, report).await?))
}

/// The execution of an approved call as reported (404 until it is started).
#[utoipa::path(get, path = "/function_calls/{call_id}/execution", tag = "function_calls",
    params(("call_id" = String, Path)),
    responses((status = 200, description = "`{call_id, state, started_at, started_by, ended_at, result_sha256, error}`"),
              (status = 404, body = ErrorBody)))]
pub async fn execution(
    State(state): State<AppState>,
    caller: Caller,
    Path(call_id): Path<String>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    caller.require(countersign_core::api_key::Scope::Agent)?;
    let key = super::key(&caller, KIND, call_id);
    Ok(axum::Json(crate::services::executions::get(state.store.as_ref(), &key).await?))
}

/// Pending approvals of the key's project, oldest first.
#[utoipa::path(get, path = "/agent/function_calls/pending", tag = "function_calls", params(PendingParams),
    responses((status = 200, description = "`{items, total, limit, offset, has_more}`"), (status = 401, body = ErrorBody)))]
pub async fn pending(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PendingParams>,
) -> ApiResult<JsonBytes> {
    super::pending(&state, &caller, KIND, params).await
}
