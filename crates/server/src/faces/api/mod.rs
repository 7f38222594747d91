//! The HumanLayer-compatible API under `/humanlayer/v1`, one module per resource. The handlers
//! only extract, call [`crate::services::requests::Requests`], and answer.

pub mod audit;
pub mod extract;
pub mod function_calls;
pub mod health;
pub mod human_contacts;
pub mod policy;
pub mod project;
pub mod webhooks;

use crate::error::ApiResult;
use crate::error::JsonBytes;
use crate::services::auth::Caller;
use crate::services::live::RequestKey;
use crate::services::requests::MAX_WAIT;
use crate::state::AppState;
use countersign_core::api_key::Scope;
use countersign_core::{Actor, Invalid, NewRequest, RequestKind};
use countersign_store::PageRequest;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The HumanLayer routes, relative to `/humanlayer/v1` (where `app` nests them).
pub fn routes() -> OpenApiRouter<AppState> {
    use {function_calls as fc, human_contacts as hc};
    OpenApiRouter::new()
        .routes(routes!(fc::create))
        .routes(routes!(fc::get))
        .routes(routes!(fc::respond))
        .routes(routes!(fc::escalate_email))
        .routes(routes!(fc::cancel))
        .routes(routes!(fc::report_execution, fc::execution))
        .routes(routes!(fc::pending))
        .routes(routes!(hc::create))
        .routes(routes!(hc::create_alias))
        .routes(routes!(hc::get))
        .routes(routes!(hc::get_alias))
        .routes(routes!(hc::respond))
        .routes(routes!(hc::escalate_email))
        .routes(routes!(hc::cancel))
        .routes(routes!(hc::pending))
        .routes(routes!(project::get))
        .routes(routes!(webhooks::add, webhooks::list))
        .routes(routes!(webhooks::remove))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::delivery))
        .routes(routes!(webhooks::redeliver))
        .routes(routes!(audit::list))
        .routes(routes!(policy::show, policy::set))
        .routes(routes!(policy::test))
}

/// The liveness and readiness routes, `/healthz` and `/readyz`, outside the HumanLayer prefix.
pub fn health_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health::healthz)).routes(routes!(health::readyz))
}

/// Query of the GET endpoints.
#[derive(Debug, Deserialize, IntoParams)]
pub struct WaitParams {
    /// Seconds to wait for a decision before answering with the pending object (at most 60).
    pub wait: Option<f64>,
}

/// Query of the pending lists.
#[derive(Debug, Deserialize, IntoParams)]
pub struct PendingParams {
    /// Page size, 1 to `max_page_items` (1000 by default; default 100). A page also stops before
    /// it passes `max_page_bytes`; `has_more` tells, and the next `offset` is `offset + items`.
    pub limit: Option<u32>,
    /// Items to skip (default 0).
    pub offset: Option<u32>,
    /// Only requests of this run.
    pub run_id: Option<String>,
}

pub(super) fn key(caller: &Caller, kind: RequestKind, call_id: String) -> RequestKey {
    RequestKey { project_id: caller.project.id.clone(), kind, call_id }
}

async fn create(state: &AppState, caller: &Caller, kind: RequestKind, body: &[u8]) -> ApiResult<JsonBytes> {
    caller.require(Scope::Agent)?;
    let new = NewRequest::parse(kind, body)?;
    Ok(JsonBytes(state.requests.create(&caller.project.id, new, caller.owner.as_deref()).await?))
}

async fn get(
    state: &AppState,
    caller: &Caller,
    kind: RequestKind,
    call_id: String,
    params: WaitParams,
) -> ApiResult<JsonBytes> {
    caller.require(Scope::Agent)?;
    let key = key(caller, kind, call_id);
    match params.wait {
        None => Ok(JsonBytes(state.requests.get(&key).await?)),
        Some(secs) if secs.is_finite() && secs >= 0.0 => {
            let wait = Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64()));
            Ok(JsonBytes(state.requests.wait(&key, wait).await?))
        }
        Some(_) => Err(Invalid::new("wait", "must be a number of seconds from 0 to 60").into()),
    }
}

async fn respond(
    state: &AppState,
    caller: &Caller,
    kind: RequestKind,
    call_id: String,
    body: Value,
) -> ApiResult<JsonBytes> {
    caller.require(Scope::Decide)?;
    let key = key(caller, kind, call_id);
    // A key that names its owner decides as that person (quorums and separation of duties count them).
    let actor = Actor { email: caller.owner.as_deref().map(str::to_owned), ..Actor::api_key(&caller.key_prefix) };
    Ok(JsonBytes(state.requests.respond(&key, &body, actor).await?))
}

async fn escalate(
    state: &AppState,
    caller: &Caller,
    kind: RequestKind,
    call_id: String,
    body: Value,
) -> ApiResult<JsonBytes> {
    caller.require(Scope::Agent)?;
    let key = key(caller, kind, call_id);
    let by = format!("api key {}", caller.key_prefix);
    Ok(JsonBytes(state.requests.escalate(&key, body, &by).await?))
}

/// Body of a cancel: why, optionally (an empty body is fine).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Why the agent withdrew the request; what people and channels are shown.
    pub reason: Option<String>,
}

async fn cancel(
    state: &AppState,
    caller: &Caller,
    kind: RequestKind,
    call_id: String,
    body: &[u8],
) -> ApiResult<JsonBytes> {
    caller.require(Scope::Agent)?;
    let body: CancelBody = if body.iter().all(u8::is_ascii_whitespace) {
        CancelBody::default()
    } else {
        let mut de = serde_json::Deserializer::from_slice(body);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| crate::error::ApiError::invalid(Invalid::from_serde(e)))?
    };
    let key = key(caller, kind, call_id);
    Ok(JsonBytes(state.requests.cancel(&key, body.reason, Actor::api_key(&caller.key_prefix)).await?))
}

async fn pending(state: &AppState, caller: &Caller, kind: RequestKind, params: PendingParams) -> ApiResult<JsonBytes> {
    caller.require(Scope::Agent)?;
    let limits = &state.settings.limits;
    let limit = params.limit.unwrap_or(100).clamp(1, limits.max_page_items.max(1));
    let offset = params.offset.unwrap_or(0);
    let max_bytes = Some(limits.max_page_bytes as u64);
    let page = PageRequest { limit, offset, run_id: params.run_id, max_bytes };
    let found = state.requests.pending(&caller.project.id, kind, &page).await?;
    // A page stops early rather than grow past max_page_bytes (it always holds one item).
    let mut out = Vec::from(&b"{\"items\":["[..]);
    let mut sent = 0usize;
    for item in &found.items {
        let json = item.to_json();
        if sent > 0 && out.len() + json.len() > limits.max_page_bytes {
            break;
        }
        if sent > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&json);
        sent += 1;
    }
    let has_more = u64::from(offset) + (sent as u64) < found.total;
    out.extend_from_slice(
        format!("],\"total\":{},\"limit\":{limit},\"offset\":{offset},\"has_more\":{has_more}}}", found.total)
            .as_bytes(),
    );
    Ok(JsonBytes::from(out))
}
