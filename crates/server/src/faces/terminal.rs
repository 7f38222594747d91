//! The JSON API behind `countersign login`, `inbox`, `approve`, `reject` and `answer`, under
//! `/api/v1`. A person signs in with email and password and gets a bearer token (`cst_...`);
//! everything after is scoped to their projects. Errors follow the API's JSON contract.

use crate::error::{ApiError, ApiResult};
use crate::html::detail::quorum_progress;
use crate::services::people::{self, ClientAddr, Person, Refused};
use crate::services::requests::describe;
use crate::state::AppState;
use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::{get, post};
use countersign_core::Intent;
use countersign_core::session::SessionKind;
use countersign_core::{DecisionChannel, RequestRecord};
use countersign_store::{Session, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::faces::api::extract::{ApiQuery, JsonObject};

/// Routes relative to `/api/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/inbox", get(inbox))
        .route("/decide", post(decide))
}

/// A person signed in from the terminal (bearer session token).
pub struct TerminalSession {
    pub session: Session,
    token: String,
}

impl FromRequestParts<AppState> for TerminalSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let not_signed_in = || ApiError::unauthorized("not signed in, or the login expired: run `countersign login`");
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_owned())
            .ok_or_else(not_signed_in)?;
        let session = people::session(state.store.as_ref(), &token).await?.ok_or_else(not_signed_in)?;
        Ok(Self { session, token })
    }
}

impl TerminalSession {
    fn person(&self) -> Person<'_> {
        Person { session: &self.session, channel: DecisionChannel::Cli }
    }
}

#[derive(Deserialize)]
struct LoginBody {
    email: String,
    password: String,
}

fn parse<T: serde::de::DeserializeOwned>(body: Value) -> ApiResult<T> {
    serde_path_to_error::deserialize(body).map_err(|e| ApiError::invalid(countersign_core::Invalid::from_serde(e)))
}

async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, Refused> {
    let body: LoginBody = parse(body)?;
    let signed_in =
        state.people.login(state.store.as_ref(), &body.email, &body.password, SessionKind::Cli, client).await?;
    let session = &signed_in.session;
    Ok(Json(json!({
        "token": signed_in.token,
        "email": session.user.email,
        "user_id": session.user.id,
        "role": session.user.role.as_str(),
        "projects": session.projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        "expires_at": session.expires_at.to_rfc3339(),
    })))
}

async fn logout(State(state): State<AppState>, who: TerminalSession) -> ApiResult<StatusCode> {
    people::logout(state.store.as_ref(), &who.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(who: TerminalSession) -> Json<Value> {
    let session = &who.session;
    Json(json!({
        "email": session.user.email,
        "user_id": session.user.id,
        "role": session.user.role.as_str(),
        "projects": session.projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        "expires_at": session.expires_at.to_rfc3339(),
    }))
}

#[derive(Deserialize)]
struct InboxQuery {
    limit: Option<u32>,
}

async fn inbox(
    State(state): State<AppState>,
    who: TerminalSession,
    ApiQuery(query): ApiQuery<InboxQuery>,
) -> ApiResult<Json<Value>> {
    let person = who.person();
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let page = person.inbox(state.store.as_ref(), limit).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for record in &page.items {
        items.push(item(state.store.as_ref(), &person, record).await?);
    }
    Ok(Json(json!({"items": items, "total": page.total})))
}

/// One request as the terminal lists it: where it is, what it asks, and the full object; while
/// pending under a quorum, how many approvals it needs (`needed`) and the `votes` so far.
async fn item(store: &dyn Store, person: &Person<'_>, record: &RequestRecord) -> ApiResult<Value> {
    let request: Value = serde_json::from_slice(&record.to_json()).unwrap_or_default();
    let mut item = json!({
        "project": person.project_name(&record.project_id),
        "kind": record.kind.as_str(),
        "call_id": record.call_id,
        "run_id": record.run_id,
        "summary": record.summary(),
        "requested_at": record.requested_at.to_rfc3339(),
        "status": describe(record),
        "request": request,
    });
    if record.outcome.is_none()
        && let Some((_, needed)) = quorum_progress(record, &[])
    {
        let votes = store.votes(&record.project_id, record.kind, &record.call_id).await?;
        item["needed"] = json!(needed);
        item["votes"] = serde_json::to_value(&votes).map_err(|e| ApiError::internal(format!("votes: {e}")))?;
    }
    Ok(item)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    call_id: String,
    project: Option<String>,
    action: String,
    comment: Option<String>,
    option: Option<String>,
    text: Option<String>,
    /// Approve with these arguments instead of the agent's.
    updated_kwargs: Option<Value>,
}

async fn decide(
    State(state): State<AppState>,
    who: TerminalSession,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    let body: DecideBody = parse(body)?;
    let action = match body.action.as_str() {
        "approve" => Intent::approve(body.comment, body.updated_kwargs)?,
        "reject" => Intent::Reject { comment: body.comment, option: body.option },
        "answer" => Intent::Answer { response: body.text, option: body.option },
        other => {
            return Err(ApiError::invalid(countersign_core::Invalid::new(
                "action",
                format!("{other:?} is not an action: use approve, reject or answer"),
            )));
        }
    };
    let person = who.person();
    let record = person.find(state.store.as_ref(), action.kind(), &body.call_id, body.project.as_deref()).await?;
    let json = person.decide(&state.requests, &record, action).await?;
    let decided: RequestRecord = state
        .store
        .request(&record.project_id, record.kind, &record.call_id)
        .await?
        .ok_or_else(|| ApiError::internal("a decided request vanished"))?;
    let mut out = item(state.store.as_ref(), &person, &decided).await?;
    out["request"] = serde_json::from_slice(&json).unwrap_or_default();
    Ok(Json(out))
}
