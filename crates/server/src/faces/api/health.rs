//! `GET /healthz`: liveness; `GET /readyz`: readiness (the database answers, the server is not
//! shutting down), for load balancers and Kubernetes probes.

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// Health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (liveness) or `ready` (readiness).
    pub status: &'static str,
    pub version: &'static str,
    /// The git commit the binary was built from (`unknown` when built outside a checkout).
    pub commit: &'static str,
}

/// Liveness check. It needs no key, so it tells nothing about anyone's requests.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
pub async fn healthz(State(state): State<AppState>) -> Json<Health> {
    Json(Health { status: "ok", version: env!("CARGO_PKG_VERSION"), commit: state.settings.commit })
}

/// How long readiness waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness: 200 when the database answers within 2 s; 503 while it does not, and once the
/// server is shutting down (so that load balancers stop sending before it stops). No key needed;
/// the answer says nothing about the database beyond up or down (the log has the cause).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Health), (status = 503, description = "not ready", body = ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    let unavailable = |why: &str| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why);
    if *state.requests.closing().borrow() {
        return Err(unavailable("the server is shutting down"));
    }
    match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => {
            Ok(Json(Health { status: "ready", version: env!("CARGO_PKG_VERSION"), commit: state.settings.commit }))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the database does not answer");
            Err(unavailable("the database is unavailable"))
        }
        Err(_) => {
            tracing::warn!("not ready: the database did not answer within 2 s");
            Err(unavailable("the database did not answer within 2 s"))
        }
    }
}
