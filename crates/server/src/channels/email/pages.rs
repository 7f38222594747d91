//! The pages behind email links: `GET /email/{token}` shows the request and a form for the link's
//! action; `POST` decides. Opening a link never decides by itself (mail scanners open links), and
//! the token, bound to one request and one action, is what authorizes the form.

use super::links::{LinkAction, LinkError};
use crate::html::detail::Detail;
use crate::html::extract::{PageForm, PagePath};
use crate::html::{PageError, render};
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
    let record = state
        .store
        .request(&claims.project_id, claims.kind, &claims.call_id)
        .await
        .map_err(crate::error::ApiError::from)?
        .ok_or_else(|| {
            PageError::new(StatusCode::NOT_FOUND, "Not found", "The request of this link no longer exists.")
        })?;
    let project = state.store.project_by_id(&claims.project_id).await.map_err(crate::error::ApiError::from)?;
    Ok((claims.action, record, project.map(|p| p.name).unwrap_or_default()))
}

fn page(state: &AppState, action: LinkAction, record: &RequestRecord, project: &str, token: &str) -> LinkPage {
    let d = Detail::new(project, record, "", state.settings.limits.max_page_render_bytes);
    LinkPage { d, action: action.as_str(), post_url: format!("/email/{token}") }
}

/// Shows the request and the link's form (or what was decided).
pub async fn show(State(state): State<AppState>, PagePath(token): PagePath<String>) -> Result<Response, PageError> {
    let (action, record, project) = load(&state, &token).await?;
    Ok(render(&page(&state, action, &record, &project, &token)))
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
    let fallback = state.store.default_email(&record.project_id).await.map_err(crate::error::ApiError::from)?;
    let sent_to = super::compose::channel_of(&record, fallback.as_deref()).map(|e| e.address.to_lowercase());
    let actor = Actor { email: sent_to, ..Actor::new(DecisionChannel::Email) };
    let (status, notice, error) =
        match state.requests.decide(&RequestKey::of(&record), intent, &Fields::PERSON, actor).await {
            Ok(_) => (StatusCode::OK, "Done: the agent has your decision.".to_owned(), String::new()),
            Err(err) if err.status() == StatusCode::CONFLICT => (
                StatusCode::CONFLICT,
                "This request was already decided; nothing was changed.".to_owned(),
                String::new(),
            ),
            Err(err) if err.status() == StatusCode::BAD_REQUEST => {
                (StatusCode::BAD_REQUEST, String::new(), err.message().to_owned())
            }
            Err(err) => return Err(err.into()),
        };
    let fresh = state
        .store
        .request(&record.project_id, record.kind, &record.call_id)
        .await
        .map_err(crate::error::ApiError::from)?;
    let fresh = fresh.unwrap_or(record);
    let mut shown = page(&state, action, &fresh, &project, &token);
    shown.d.notice = notice;
    shown.d.error = error;
    Ok((status, render(&shown)).into_response())
}
