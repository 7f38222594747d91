//! The pages behind email links: `GET /email/{token}` shows the request and a form for the link's
//! action; `POST` decides. Opening a link never decides by itself (mail scanners open links), and
//! the token, bound to one request and one action, is what authorizes the form.

use super::links::{LinkAction, LinkError};
use crate::error::ApiError;
use crate::html::detail::{Detail, quorum_progress};
use crate::html::extract::{PageForm, PagePath};
use crate::html::{PageError, render, sentence};
use crate::services::live::RequestKey;
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use countersign_core::{Actor, DecisionChannel, Fields, Intent, RequestRecord, Timestamp};
use serde::Deserialize;

#[derive(Template)]
#[template(path = "email_link.html")]
struct LinkPage {
    d: Detail,
    action: &'static str,
    post_url: String,
}

async fn load(state: &AppState, token: &str) -> Result<(LinkAction, RequestRecord, String), PageError> {
    let claims = state.links.verify(token, Timestamp::now()).map_err(|e| match e {
        LinkError::Forged => PageError::new(
            StatusCode::BAD_REQUEST,
            "Link not valid",
            "This link was not made by this Countersign server, or it was changed. Use the link in the email as it is.",
        ),
        LinkError::Expired => PageError::new(
            StatusCode::GONE,
            "Link expired",
            "This link has expired. The request can still be decided in the inbox or from the terminal.",
        ),
    })?;
    let gone = || PageError::new(StatusCode::NOT_FOUND, "Not found", "The request of this link no longer exists.");
    let record = state
        .store
        .request(&claims.project_id, claims.kind, &claims.call_id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(gone)?;
    let project = state.store.project_by_id(&claims.project_id).await.map_err(ApiError::from)?;
    Ok((claims.action, record, project.map(|p| p.name).unwrap_or_default()))
}

/// The address the request's email went to: the person a link decides as.
async fn recipient(state: &AppState, record: &RequestRecord) -> Result<Option<String>, PageError> {
    let fallback = state.store.default_email(&record.project_id).await.map_err(ApiError::from)?;
    Ok(super::compose::channel_of(record, fallback.as_deref()).map(|e| e.address.to_lowercase()))
}

/// The link's page; under a quorum, with the votes so far, and without the form once the
/// recipient has voted.
async fn page(
    state: &AppState,
    action: LinkAction,
    record: &RequestRecord,
    project: &str,
    token: &str,
) -> Result<LinkPage, PageError> {
    let mut d = Detail::new(project, record, "", state.settings.limits.max_page_render_bytes);
    if record.outcome.is_none() && quorum_progress(record, &[]).is_some() {
        let votes =
            state.store.votes(&record.project_id, record.kind, &record.call_id).await.map_err(ApiError::from)?;
        d.show_votes(record, &votes, recipient(state, record).await?.as_deref());
    }
    Ok(LinkPage { d, action: action.as_str(), post_url: format!("/email/{token}") })
}

/// Shows the request and the link's form (or what was decided).
pub async fn show(State(state): State<AppState>, PagePath(token): PagePath<String>) -> Result<Response, PageError> {
    let (action, record, project) = load(&state, &token).await?;
    Ok(render(&page(&state, action, &record, &project, &token).await?))
}

#[derive(Deserialize)]
pub struct LinkForm {
    comment: Option<String>,
    text: Option<String>,
    option: Option<String>,
}

/// Decides the link's request with the link's action.
pub async fn decide(
    State(state): State<AppState>,
    PagePath(token): PagePath<String>,
    PageForm(form): PageForm<LinkForm>,
) -> Result<Response, PageError> {
    let (action, record, project) = load(&state, &token).await?;
    let option = form.option.filter(|o| !o.is_empty());
    let fixed = option.as_ref().and_then(|name| record.options().into_iter().find(|o| &o.name == name));
    let fixed = fixed.is_some_and(|o| !o.interactive.unwrap_or(false) && o.prompt_fill.is_some());
    let intent = match action {
        LinkAction::Approve => Intent::Approve { comment: form.comment.or(form.text), updated_kwargs: None },
        LinkAction::Reject => Intent::Reject { comment: if fixed { None } else { form.text.or(form.comment) }, option },
        LinkAction::Answer => {
            Intent::Answer { response: if fixed { None } else { form.text.or(form.comment) }, option }
        }
    }
    .trimmed();
    let actor = Actor { email: recipient(&state, &record).await?, ..Actor::new(DecisionChannel::Email) };
    let decided = state.requests.decide(&RequestKey::of(&record), intent, &Fields::PERSON, actor).await;
    let fresh = state.store.request(&record.project_id, record.kind, &record.call_id).await.map_err(ApiError::from)?;
    let fresh = fresh.unwrap_or(record);
    let (status, notice, error) = match decided {
        Ok(_) if fresh.outcome.is_none() => {
            (StatusCode::OK, "Done: your approval is counted; the request needs more.".to_owned(), String::new())
        }
        Ok(_) => (StatusCode::OK, "Done: the agent has your decision.".to_owned(), String::new()),
        Err(err) if err.status() == StatusCode::CONFLICT && fresh.outcome.is_some() => {
            (StatusCode::CONFLICT, "This request was already decided; nothing was changed.".to_owned(), String::new())
        }
        // Still pending: the 409 says this person voted already, and when.
        Err(err) if err.status() == StatusCode::CONFLICT => {
            (StatusCode::CONFLICT, format!("{}.", err.message().trim_end_matches('.')), String::new())
        }
        // A policy's refusal (not in the group, separation of duties) is said on the page.
        Err(err) if err.status() == StatusCode::BAD_REQUEST || err.status() == StatusCode::FORBIDDEN => {
            (err.status(), String::new(), sentence(err.message()))
        }
        Err(err) => return Err(err.into()),
    };
    let mut shown = page(&state, action, &fresh, &project, &token).await?;
    shown.d.notice = notice;
    shown.d.error = error;
    Ok((status, render(&shown)).into_response())
}
