//! `GET /audit`: the key's project's audit log (a Countersign extension of the HumanLayer API).

use super::extract::ApiQuery;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::services::audit::{event_json, head_json};
use crate::services::auth::Admin;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use countersign_core::Invalid;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

/// Most events one page returns.
pub const MAX_LIMIT: u32 = 1000;

/// Query of `GET /audit`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditParams {
    /// Only events after this chain position (default 0: from the first).
    pub after: Option<u64>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

/// The project's sealed events after position `after`, in chain order, each with its position,
/// hash and previous hash so anyone can re-verify the chain: `hash = SHA-256("countersign.event.v1\0"
/// || seq as 8 bytes big-endian || prev_hash || event)`, `event` being the exact text given. Also the
/// chain's head and how many events wait to be sealed. Needs a key with the `admin` scope.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditParams),
    responses((status = 200, description = "`{events, head, unsealed, next_after}`"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> ApiResult<Json<Value>> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(Invalid::new("limit", format!("must be from 1 to {MAX_LIMIT}"))));
    }
    let after = params.after.unwrap_or(0);
    let events = state.store.audit_events(&caller.project.id, after, limit).await?;
    let chain = state.store.chains(Some(&caller.project.id)).await?.into_iter().next();
    let next_after = events.last().map_or(after, |e| e.seq);
    Ok(Json(json!({
        "project": caller.project.name,
        "events": events.iter().map(event_json).collect::<Vec<_>>(),
        "head": head_json(chain.as_ref().and_then(|c| c.head)),
        "unsealed": chain.map_or(0, |c| c.unsealed),
        "next_after": next_after,
    })))
}
