//! The key's project's policy (a Countersign extension): show it, set it (validated first; a bad
//! file is refused with its line and the old policy stays), and test what it does with a request
//! without creating anything. Admin keys only.

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::services::auth::Admin;
use crate::services::policies as service;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use bytes::Bytes;
use countersign_core::{Invalid, RequestKind};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

/// The project's policy: its text, version, rule names, and who set it when (`policy: null`
/// when none is set).
#[utoipa::path(get, path = "/policy", tag = "policy", responses((status = 200), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn show(State(state): State<AppState>, Admin(caller): Admin) -> ApiResult<Json<Value>> {
    let stored = state.store.policy(&caller.project.id).await?;
    Ok(Json(service::policy_json(stored.as_ref())))
}

/// Set the project's policy: the body is the TOML file. Refused with `invalid_policy` and the
/// line when it is not valid (the policy in force stays); logged in the audit chain.
#[utoipa::path(put, path = "/policy", tag = "policy", request_body(content = String, content_type = "application/toml"),
    responses((status = 200), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn set(State(state): State<AppState>, Admin(caller): Admin, body: Bytes) -> ApiResult<Json<Value>> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid(Invalid::new(".", "the policy must be UTF-8 text (a TOML file)")))?;
    let by = format!("API key {}", caller.key_prefix);
    let stored = service::set(state.store.as_ref(), &caller.project.id, service::API_SOURCE, text, &by).await?;
    state.requests.policies.forget(&caller.project.id);
    Ok(Json(service::policy_json(Some(&stored))))
}

/// Body of `POST /policy/test`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestBody {
    /// `function_call` (default) or `human_contact`.
    pub kind: Option<String>,
    /// The run id the request would have (default `policy-test`).
    pub run_id: Option<String>,
    /// The spec, as in a create: `{fn, kwargs, channel?}` or `{msg, channel?}`.
    #[schema(value_type = Object)]
    pub spec: Value,
    /// A policy file to test instead of the one in force (a draft).
    pub policy: Option<String>,
}

/// What the policy does with a request: which rule decides and what would happen. Nothing is
/// created or stored.
#[utoipa::path(post, path = "/policy/test", tag = "policy", request_body = TestBody,
    responses((status = 200), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn test(State(state): State<AppState>, Admin(caller): Admin, body: Bytes) -> ApiResult<Json<Value>> {
    let body: TestBody = {
        let mut de = serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize(&mut de).map_err(|e| ApiError::invalid(Invalid::from_serde(e)))?
    };
    let kind = match body.kind.as_deref().unwrap_or("function_call") {
        "function_call" => RequestKind::FunctionCall,
        "human_contact" => RequestKind::HumanContact,
        other => {
            return Err(ApiError::invalid(Invalid::new(
                "kind",
                format!("{other:?} is not a kind; use function_call or human_contact"),
            )));
        }
    };
    let record = service::test_record(&caller.project.id, kind, body.run_id.as_deref(), &body.spec)?;
    let policy = match &body.policy {
        Some(text) => Some(std::sync::Arc::new(
            service::validate(state.store.as_ref(), &caller.project.id, service::API_SOURCE, text).await?,
        )),
        None => state.requests.policies.of(state.store.as_ref(), &caller.project.id).await?,
    };
    let report = service::test(policy.as_deref(), &record, caller.owner.as_deref());
    Ok(Json(json!(report)))
}
