//! The HumanLayer-compatible API under `/humanlayer/v1`, one module per resource. The handlers
//! only extract, call [`crate::requests::Requests`], and answer.

pub mod extract;
pub mod function_calls;
pub mod health;
pub mod human_contacts;
pub mod project;
pub mod webhooks;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::live::RequestKey;
use crate::requests::MAX_WAIT;
use countersign_core::{Actor, Invalid, NewRequest, RequestKind};
use countersign_store::PageRequest;
use extract::JsonBytes;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use utoipa::IntoParams;

/// Query of the GET endpoints.
#[derive(Debug, Deserialize, IntoParams)]
pub struct WaitParams {
    /// Seconds to wait for a decision before answering with the pending object (at most 60).
    pub wait: Option<f64>,
}

/// Query of the pending lists.
#[derive(Debug, Deserialize, IntoParams)]
pub struct PendingParams {
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// Items to skip (default 0).
    pub offset: Option<u32>,
    /// Only requests of this run.
    pub run_id: Option<String>,
}

fn key(caller: &Caller, kind: RequestKind, call_id: String) -> RequestKey {
    RequestKey { project_id: caller.project.id.clone(), kind, call_id }
}

async fn create(state: &AppState, caller: &Caller, kind: RequestKind, body: &[u8]) -> ApiResult<JsonBytes> {
    let new = NewRequest::parse(kind, body)?;
    Ok(JsonBytes(state.requests.create(&caller.project.id, new).await?))
}

async fn get(
    state: &AppState,
    caller: &Caller,
    kind: RequestKind,
    call_id: String,
    params: WaitParams,
) -> ApiResult<JsonBytes> {
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
    let key = key(caller, kind, call_id);
    Ok(JsonBytes(state.requests.decide(&key, &body, Actor::api_key(&caller.key_prefix)).await?))
}

async fn escalate(
    state: &AppState,
    caller: &Caller,
    kind: RequestKind,
    call_id: String,
    body: Value,
) -> ApiResult<JsonBytes> {
    let key = key(caller, kind, call_id);
    let by = format!("api key {}", caller.key_prefix);
    Ok(JsonBytes(state.requests.escalate(&key, body, &by).await?))
}

async fn pending(state: &AppState, caller: &Caller, kind: RequestKind, params: PendingParams) -> ApiResult<JsonBytes> {
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let offset = params.offset.unwrap_or(0);
    let page = PageRequest { limit, offset, run_id: params.run_id };
    let found = state.requests.pending(&caller.project.id, kind, &page).await?;
    let has_more = u64::from(offset) + (found.items.len() as u64) < found.total;
    let mut out = Vec::from(&b"{\"items\":["[..]);
    for (i, item) in found.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&item.to_json());
    }
    out.extend_from_slice(
        format!("],\"total\":{},\"limit\":{limit},\"offset\":{offset},\"has_more\":{has_more}}}", found.total)
            .as_bytes(),
    );
    Ok(JsonBytes::from(out))
}
