//! Replies by email: `POST /humanlayer/v1/email/inbound` takes a raw MIME message, as inbound-mail
//! services forward it (authenticated with the project's key). The reply is matched to its request
//! through `In-Reply-To` / `References` and the Message-ID we sent; only an address the email went
//! to may decide, and what the first line says decides (see `countersign_core::reply`).

use crate::api::extract::JsonBytes;
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::live::RequestKey;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use countersign_core::{Actor, Decision, DecisionChannel, Invalid, reply};
use serde_json::json;

/// Decide a request by an emailed reply (raw MIME in the body, `message/rfc822`).
#[utoipa::path(post, path = "/email/inbound", tag = "email", request_body(content = String, content_type = "message/rfc822"),
    responses((status = 200, description = "The decided request"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, description = "The sender was not a recipient", body = ErrorBody),
              (status = 404, description = "No email of ours in this thread", body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn receive(State(state): State<AppState>, caller: Caller, body: Bytes) -> ApiResult<JsonBytes> {
    let message = mail_parser::MessageParser::default()
        .parse(&body[..])
        .ok_or_else(|| ApiError::invalid(Invalid::new(".", "the body is not a MIME email message")))?;
    let mut ids: Vec<String> = Vec::new();
    for header in [message.in_reply_to(), message.references()] {
        let values: Vec<String> = match (header.as_text(), header.as_text_list()) {
            (Some(one), _) => vec![one.to_owned()],
            (None, Some(list)) => list.iter().map(|s| s.to_string()).collect(),
            _ => Vec::new(),
        };
        for id in values {
            let bare = id.trim().trim_start_matches('<').trim_end_matches('>').to_owned();
            ids.push(format!("<{bare}>"));
        }
    }
    if ids.is_empty() {
        return Err(ApiError::invalid(Invalid::new(
            "In-Reply-To",
            "the email is not a reply (no In-Reply-To or References)",
        )));
    }
    let sent = state.store.email_by_message_ids(&ids).await?.filter(|m| m.project_id == caller.project.id).ok_or_else(
        || ApiError::not_found("this email does not reply to any email Countersign sent for this project"),
    )?;
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::to_lowercase)
        .ok_or_else(|| ApiError::invalid(Invalid::new("From", "the email has no sender address")))?;
    if !sent.recipients.contains(&from) {
        tracing::warn!(%from, message_id = %sent.id, call_id = %sent.call_id, "refused an emailed reply from an address the email was not sent to");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{from} did not receive this email, so it cannot answer it"),
        ));
    }
    let text = message.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    let decision = reply::decision(sent.kind, &text)?;
    let body = match decision {
        Decision::Approved { comment, .. } => json!({"approved": true, "comment": comment}),
        Decision::Rejected { comment, .. } => json!({"approved": false, "comment": comment}),
        Decision::Answered { response, .. } => json!({"response": response}),
    };
    let key = RequestKey { project_id: sent.project_id.clone(), kind: sent.kind, call_id: sent.call_id.clone() };
    let actor = Actor { channel: DecisionChannel::Email, api_key: None, user_id: None, email: Some(from.clone()) };
    let json = state.requests.decide(&key, &body, actor).await?;
    tracing::info!(%from, call_id = %sent.call_id, "decided by an emailed reply");
    Ok(JsonBytes(json))
}
