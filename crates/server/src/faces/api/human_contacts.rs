//! Questions to humans: `/contact_requests` (alias `/human_contacts`) and `/agent/human_contacts/...`.

use super::extract::{ApiQuery, JsonObject, RawJsonObject};
use super::{PendingParams, WaitParams};
use crate::error::JsonBytes;
use crate::error::{ApiResult, ErrorBody};
use crate::services::auth::Caller;
use crate::state::AppState;
use axum::extract::{Path, State};
use countersign_core::RequestKind::HumanContact as KIND;
use countersign_core::wire::{EscalationBody, HumanContact, HumanContactCreate, HumanContactRespond};

/// Ask a human a question (idempotent for an identical body).
#[utoipa::path(post, path = "/contact_requests", tag = "human_contacts", request_body = HumanContactCreate,
    responses((status = 200, description = "Created, or the identical existing request", body = HumanContact),
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

/// Get a question; with `wait`, answer as soon as it is decided.
#[utoipa::path(get, path = "/contact_requests/{call_id}", tag = "human_contacts", params(("call_id" = String, Path), WaitParams),
    responses((status = 200, body = HumanContact), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(call_id): Path<String>,
    ApiQuery(params): ApiQuery<WaitParams>,
) -> ApiResult<JsonBytes> {
    super::get(&state, &caller, KIND, call_id, params).await
}

/// Answer a question; the first answer wins.
#[utoipa::path(post, path = "/agent/human_contacts/{call_id}/respond", tag = "human_contacts",
    params(("call_id" = String, Path)), request_body = HumanContactRespond,
    responses((status = 200, body = HumanContact), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "already decided", body = ErrorBody)))]
pub async fn respond(
    State(state): State<AppState>,
    caller: Caller,
    Path(call_id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<JsonBytes> {
    super::respond(&state, &caller, KIND, call_id, body).await
}

/// Record an email escalation of a pending question.
#[utoipa::path(post, path = "/agent/human_contacts/{call_id}/escalate_email", tag = "human_contacts",
    params(("call_id" = String, Path)), request_body = EscalationBody,
    responses((status = 200, body = HumanContact), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "already decided", body = ErrorBody)))]
pub async fn escalate_email(
    State(state): State<AppState>,
    caller: Caller,
    Path(call_id): Path<String>,
    JsonObject(body): JsonObject,
) -> ApiResult<JsonBytes> {
    super::escalate(&state, &caller, KIND, call_id, body).await
}

/// Cancel a pending question (the agent no longer needs the answer): it ends as `cancelled`,
/// with the reason as its `response` (the released SDKs wait for one); channels update their
/// messages.
#[utoipa::path(post, path = "/contact_requests/{call_id}/cancel", tag = "human_contacts",
    params(("call_id" = String, Path)), request_body(content = super::CancelBody, description = "optional"),
    responses((status = 200, body = HumanContact), (status = 404, body = ErrorBody),
              (status = 409, description = "already decided", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(call_id): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<JsonBytes> {
    super::cancel(&state, &caller, KIND, call_id, &body).await
}

/// Pending questions of the key's project, oldest first.
#[utoipa::path(get, path = "/agent/human_contacts/pending", tag = "human_contacts", params(PendingParams),
    responses((status = 200, description = "`{items, total, limit, offset, has_more}`"), (status = 401, body = ErrorBody)))]
pub async fn pending(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PendingParams>,
) -> ApiResult<JsonBytes> {
    super::pending(&state, &caller, KIND, params).await
}

/// Ask a human a question (the documented `/human_contacts` alias of `/contact_requests`).
#[utoipa::path(post, path = "/human_contacts", tag = "human_contacts", request_body = HumanContactCreate,
    responses((status = 200, body = HumanContact), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_alias(
    State(state): State<AppState>,
    caller: Caller,
    RawJsonObject(body): RawJsonObject,
) -> ApiResult<JsonBytes> {
    super::create(&state, &caller, KIND, &body).await
}

/// Get a question (alias of `/contact_requests/{call_id}`).
#[utoipa::path(get, path = "/human_contacts/{call_id}", tag = "human_contacts", params(("call_id" = String, Path), WaitParams),
    responses((status = 200, body = HumanContact), (status = 404, body = ErrorBody)))]
pub async fn get_alias(
    State(state): State<AppState>,
    caller: Caller,
    Path(call_id): Path<String>,
    ApiQuery(params): ApiQuery<WaitParams>,
) -> ApiResult<JsonBytes> {
    super::get(&state, &caller, KIND, call_id, params).await
}
