//! `/mcp`: the human tools over MCP's streamable HTTP, mounted on the server by the binary
//! (`Server::mount`). Each call works on the server's own requests for the project of the bearer
//! API key.

use crate::tools::{Desk, HumanTools};
use axum::Router;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use countersign_core::api_key::Scope;
use countersign_server::services::auth::Caller;
use countersign_server::state::AppState;
use rmcp::RoleServer;
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::collections::HashMap;
use std::sync::Arc;

/// The run id of requests whose HTTP request names none.
const DEFAULT_RUN_ID: &str = "mcp";

/// `/mcp`: the tools for the project of the bearer API key (401 without one, 403 without the
/// `agent` scope). Requests are grouped under run id `mcp`, or the one the client names in an
/// `X-Countersign-Run-Id` header or a `?run_id=` query parameter. Stateless (no MCP sessions), so
/// any instance of a multi-instance deployment can answer.
pub fn router(state: AppState) -> Router {
    // Every request needs an API key, as the rest of the API, so the Host check that protects
    // key-less local servers from DNS rebinding is not needed (and would refuse public hostnames).
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .disable_allowed_hosts()
        .with_max_request_body_bytes(state.settings.max_body_bytes);
    let tools_state = state.clone();
    let tools =
        move || Ok(HumanTools::new(Desk::Local { state: tools_state.clone(), run_id: DEFAULT_RUN_ID.to_owned() }));
    let service = StreamableHttpService::new(tools, Arc::new(NeverSessionManager::default()), config);
    Router::new().route_service("/mcp", service).route_layer(axum::middleware::from_fn_with_state(state, authenticate))
}

/// Refuses requests without a valid API key with the `agent` scope (the tools create requests
/// and wait on them); hands the caller to the tools.
async fn authenticate(caller: Caller, mut request: Request, next: Next) -> Response {
    if let Err(refused) = caller.require(Scope::Agent) {
        return refused.into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The caller that [`router`] authenticated.
pub(crate) fn caller(ctx: &RequestContext<RoleServer>) -> Result<Caller, String> {
    ctx.extensions
        .get::<Parts>()
        .and_then(|parts| parts.extensions.get::<Caller>())
        .cloned()
        .ok_or_else(|| "no API key came with this MCP request".to_owned())
}

/// The run id the HTTP request asked for: the `X-Countersign-Run-Id` header, else the `run_id`
/// query parameter of the `/mcp` URL (for clients whose config holds only a URL).
pub(crate) fn requested_run_id(ctx: &RequestContext<RoleServer>) -> Option<String> {
    let parts = ctx.extensions.get::<Parts>()?;
    let header = parts.headers.get("x-countersign-run-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let query = || {
        let axum::extract::Query(mut params) =
            axum::extract::Query::<HashMap<String, String>>::try_from_uri(&parts.uri).ok()?;
        params.remove("run_id")
    };
    header.or_else(query).map(|id| id.trim().to_owned()).filter(|id| !id.is_empty())
}
