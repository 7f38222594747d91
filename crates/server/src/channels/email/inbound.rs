//! Replies by email: `POST /humanlayer/v1/email/inbound` takes a raw MIME message, as inbound-mail
//! services forward it. It is authenticated by the project's inbound-email secret (`countersign
//! projects inbound-email-secret PROJECT`), as `Authorization: Bearer <secret>` or as the password
//! of HTTP Basic auth, never by an API key: the agent holds its key, and with it could otherwise
//! forge a reply from the approver. The reply is matched to its request through `In-Reply-To` /
//! `References` and the Message-ID we sent; only an address the email went to may decide, and what
//! the first line says decides (see `countersign_core::reply`). The decision records that it came
//! by inbound email (`via: inbound_email`): the sender is the `From:` the mail service saw.

use crate::error::{ApiError, ApiResult, ErrorBody, JsonBytes};
use crate::services::live::RequestKey;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use countersign_core::api_key::{KEY_PREFIX, KeyHash};
use countersign_core::decision::Via;
use countersign_core::{Actor, DecisionChannel, Fields, Invalid, Project, reply};

/// Every inbound-email secret starts with this (API keys start with `cs_`).
pub const SECRET_PREFIX: &str = "csie_";

/// Most Message-IDs of a reply's thread looked up (In-Reply-To first, then References newest
/// first): each is a database read, and a crafted reply can carry thousands.
pub const MAX_THREAD_IDS: usize = 64;

/// A fresh inbound-email secret: shown once, stored only as its hash.
pub struct InboundSecret {
    pub secret: String,
    pub hash: KeyHash,
}

/// Generates a project's inbound-email secret (190 random bits, like API keys).
pub fn generate_secret() -> InboundSecret {
    let secret = format!("{SECRET_PREFIX}{}", countersign_core::session::random_text(32));
    InboundSecret { hash: KeyHash::of(&secret), secret }
}

const HOW: &str = "authenticate with the project's inbound-email secret from `countersign projects \
                   inbound-email-secret PROJECT`, as `Authorization: Bearer <secret>` or as the \
                   Basic-auth password";

/// The secret presented: a Bearer token, or the password of Basic auth.
fn presented(headers: &HeaderMap) -> Result<String, ApiError> {
    let header = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized(format!("missing Authorization header; {HOW}")))?;
    let value = header.to_str().map_err(|_| ApiError::unauthorized("Authorization header is not valid text"))?;
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let secret = if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| ApiError::unauthorized(format!("the Basic credentials are not valid base64; {HOW}")))?;
        decoded.split_once(':').map_or(decoded.clone(), |(_, password)| password.to_owned())
    } else {
        return Err(ApiError::unauthorized(format!("Authorization must use the Bearer or Basic scheme; {HOW}")));
    };
    if secret.is_empty() {
        return Err(ApiError::unauthorized(format!("empty inbound-email secret; {HOW}")));
    }
    Ok(secret)
}

/// The project whose inbound-email secret was presented.
async fn project_of(state: &AppState, headers: &HeaderMap) -> Result<Project, ApiError> {
    let secret = presented(headers)?;
    if !secret.starts_with(SECRET_PREFIX) && secret.starts_with(KEY_PREFIX) {
        return Err(ApiError::unauthorized(format!(
            "API keys cannot post inbound email (an agent's key could forge a reply from the approver); {HOW}"
        )));
    }
    state.store.project_by_inbound_email_secret(&KeyHash::of(&secret)).await?.ok_or_else(|| {
        ApiError::unauthorized(format!("unknown or rotated inbound-email secret; {HOW} (rotating it prints a new one)"))
    })
}

/// Decide a request by an emailed reply (raw MIME in the body, `message/rfc822`), authenticated by
/// the project's inbound-email secret (`Authorization: Bearer <secret>`, or the Basic-auth password),
/// not by an API key.
#[utoipa::path(post, path = "/email/inbound", tag = "email", request_body(content = String, content_type = "message/rfc822"),
    responses((status = 200, description = "The decided request"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, description = "The sender was not a recipient", body = ErrorBody),
              (status = 404, description = "No email of ours in this thread", body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn receive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<JsonBytes> {
    let project = project_of(&state, &headers).await?;
    let message = mail_parser::MessageParser::default()
        .parse(&body[..])
        .ok_or_else(|| ApiError::invalid(Invalid::new(".", "the body is not a MIME email message")))?;
    // In-Reply-To (the parent), then References newest first (they are listed from the root).
    let mut ids: Vec<String> = Vec::new();
    for (header, newest_first) in [(message.in_reply_to(), false), (message.references(), true)] {
        let mut values: Vec<&str> = match (header.as_text_list(), header.as_text()) {
            (Some(list), _) => list.iter().map(|s| s.as_ref()).collect(),
            (None, Some(one)) => vec![one],
            _ => Vec::new(),
        };
        if newest_first {
            values.reverse();
        }
        for id in values {
            let bare = id.trim().trim_start_matches('<').trim_end_matches('>');
            let id = format!("<{bare}>");
            if ids.len() < MAX_THREAD_IDS && !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    if ids.is_empty() {
        return Err(ApiError::invalid(Invalid::new(
            "In-Reply-To",
            "the email is not a reply (no In-Reply-To or References)",
        )));
    }
    let sent =
        state.store.email_by_message_ids(&ids).await?.filter(|m| m.project_id == project.id).ok_or_else(|| {
            ApiError::not_found("this email does not reply to any email Countersign sent for this project")
        })?;
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
    let intent = reply::intent(sent.kind, &text)?;
    let key = RequestKey { project_id: sent.project_id.clone(), kind: sent.kind, call_id: sent.call_id.clone() };
    let actor = Actor { email: Some(from.clone()), via: Some(Via::InboundEmail), ..Actor::new(DecisionChannel::Email) };
    let json = state.requests.decide(&key, intent, &Fields::PERSON, actor).await?;
    tracing::info!(%from, call_id = %sent.call_id, "decided by an emailed reply");
    Ok(JsonBytes(json))
}
