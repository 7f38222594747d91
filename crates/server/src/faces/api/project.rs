//! `GET /project`: which project the key belongs to (used by `hlyr login` and `ping`).

use crate::error::ErrorBody;
use crate::services::auth::Caller;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

/// The key's project.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectInfo {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub organization: String,
}

/// The project of the API key.
#[utoipa::path(get, path = "/project", tag = "project",
    responses((status = 200, body = ProjectInfo), (status = 401, body = ErrorBody)))]
pub async fn get(State(state): State<AppState>, caller: Caller) -> Json<ProjectInfo> {
    Json(ProjectInfo {
        id: caller.project.id.clone(),
        name: caller.project.name.clone(),
        slug: caller.project.name.clone(),
        organization: state.settings.organization.clone(),
    })
}
