//! Webhook endpoints of the key's project (a Countersign extension of the HumanLayer API):
//! add, list, remove, the delivery log, and redelivery.

use super::extract::{ApiQuery, JsonObject};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::services::auth::Admin;
use crate::services::webhooks as service;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

/// Body of `POST /webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where to POST events (http or https).
    pub url: String,
    /// Events to send; default `function_call.completed` and `human_contact.completed`. Others:
    /// `function_call.created`, `human_contact.created`, `function_call.escalated`,
    /// `human_contact.escalated`.
    pub events: Option<Vec<String>>,
    /// `v1beta2` (default: `{"is_test","type","event"}`) or `legacy` (the bare object).
    pub format: Option<String>,
}

/// Add a webhook endpoint; the answer holds its signing secret, shown only this once. URLs to
/// loopback, private, link-local or unspecified addresses (and `localhost`) are refused unless the
/// server allows them (`limits.allow_private_webhook_targets`).
#[utoipa::path(post, path = "/webhooks", tag = "webhooks", request_body = NewEndpoint,
    responses((status = 201, description = "The endpoint, with `secret`"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn add(
    State(state): State<AppState>,
    Admin(caller): Admin,
    JsonObject(body): JsonObject,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body: NewEndpoint = serde_path_to_error::deserialize(body)
        .map_err(|e| ApiError::invalid(countersign_core::Invalid::from_serde(e)))?;
    let endpoint = service::add(
        state.store.as_ref(),
        &caller.project.id,
        &body.url,
        body.events.as_deref(),
        body.format.as_deref(),
        state.settings.limits.allow_private_webhook_targets,
        &caller.stamp(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(service::endpoint_json(&endpoint, true))))
}

/// List the project's webhook endpoints (without secrets).
#[utoipa::path(get, path = "/webhooks", tag = "webhooks", responses((status = 200), (status = 401, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, Admin(caller): Admin) -> ApiResult<Json<Value>> {
    let endpoints = state.store.webhooks(Some(&caller.project.id)).await?;
    let items: Vec<Value> = endpoints.iter().map(|e| service::endpoint_json(e, false)).collect();
    Ok(Json(json!({ "items": items })))
}

/// Remove an endpoint; its undelivered events are marked failed.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    service::endpoint_of(state.store.as_ref(), &caller.project.id, &id).await?;
    state.store.remove_webhook(&id, &caller.stamp()).await?;
    tracing::info!(%id, "webhook endpoint removed");
    Ok(StatusCode::NO_CONTENT)
}

/// Query of the delivery log.
#[derive(Debug, Deserialize, IntoParams)]
pub struct LogParams {
    /// Most deliveries to return, newest first (1 to 1000, default 100).
    pub limit: Option<u32>,
}

/// An endpoint's deliveries, newest first.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = String, Path), LogParams),
    responses((status = 200), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<LogParams>,
) -> ApiResult<Json<Value>> {
    service::endpoint_of(state.store.as_ref(), &caller.project.id, &id).await?;
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let items: Vec<Value> = state.store.deliveries(&id, limit).await?.iter().map(service::delivery_json).collect();
    Ok(Json(json!({ "items": items })))
}

/// One delivery with its attempts.
#[utoipa::path(get, path = "/webhook_deliveries/{id}", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delivery(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let d = service::delivery_of(state.store.as_ref(), &caller.project.id, &id).await?;
    let attempts: Vec<Value> = state.store.attempts(&id).await?.iter().map(service::attempt_json).collect();
    let mut out = service::delivery_json(&d);
    out["attempts_log"] = json!(attempts);
    Ok(Json(out))
}

/// Send a delivery again now (delivered, failed or pending).
#[utoipa::path(post, path = "/webhook_deliveries/{id}/redeliver", tag = "webhooks", params(("id" = String, Path)),
    responses((status = 200), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn redeliver(
    State(state): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    service::delivery_of(state.store.as_ref(), &caller.project.id, &id).await?;
    let d = state
        .store
        .redeliver(&id, &caller.stamp())
        .await?
        .ok_or_else(|| ApiError::not_found("the delivery vanished"))?;
    state.requests.wake_workers();
    tracing::info!(%id, "webhook redelivery requested");
    Ok(Json(service::delivery_json(&d)))
}
