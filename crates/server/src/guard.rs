//! Layers every request passes: a deadline (`limits.request_timeout_secs`) for all but
//! long-polls and streams, plain-text rejections of the framework turned into the API's JSON
//! errors, and access-log URIs with their secrets blanked.

use crate::error::ApiError;
use crate::services::requests::MAX_WAIT;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Longest plain-text rejection turned into JSON; the framework's are a line or two.
const MAX_REJECTION_TEXT: usize = 4096;

/// Both guards in one layer (one middleware costs a boxed future and a clone of the router per
/// request, so they share it): the [`deadline`], then [`json_rejections`].
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    json_rejections(deadline(&state, req, next).await).await
}

/// Answers 503 `request_timeout` when a request takes longer than `limits.request_timeout_secs`;
/// a long-poll (`?wait=`) gets its wait on top, and streams (`/events`, `/mcp`) are not timed
/// (their responses start at once and then stay open by design).
async fn deadline(state: &AppState, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/mcp" || path == "/events" {
        return next.run(req).await;
    }
    let limit = Duration::from_secs(state.settings.limits.request_timeout_secs.max(1));
    let limit = if is_long_poll(req.uri()) { limit + MAX_WAIT } else { limit };
    // tokio registers the timer only when the request is not done at its first poll, so a poll
    // answered from memory costs no timer.
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!(
                "the request took longer than {} s (limits.request_timeout_secs) and was abandoned; retry it",
                limit.as_secs()
            ),
        )
        .into_response(),
    }
}

fn is_long_poll(uri: &Uri) -> bool {
    uri.query().is_some_and(|q| q.split('&').any(|pair| pair == "wait" || pair.starts_with("wait=")))
}

/// Turns the framework's `text/plain` rejections (a path segment that is not UTF-8, a body that
/// is not the JSON or form it should be, a missing content type) into the API's JSON error with
/// the same status and words. Pages and JSON answers pass untouched.
async fn json_rejections(response: Response) -> Response {
    let status = response.status();
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_REJECTION_TEXT).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    let code = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        s if s.is_server_error() => "internal",
        _ => "error",
    };
    let mut json = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}

/// The URI as the access log shows it: email-link tokens (`/email/<token>`) and any `token`
/// query value (`/set-password?token=...`) are replaced by `…`, so a debug log never holds a
/// working link.
pub fn loggable_uri(uri: &Uri) -> String {
    let path = uri.path();
    let mut out = match path.strip_prefix("/email/") {
        Some(rest) if !rest.is_empty() && rest != "inbound" => "/email/…".to_owned(),
        _ => path.to_owned(),
    };
    if let Some(query) = uri.query() {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("token") || name.ends_with("token") => {
                    out.push_str(name);
                    out.push_str("=…");
                }
                _ => out.push_str(pair),
            }
        }
    }
    out
}

/// The access log's span of a request: method and the [`loggable_uri`].
pub fn request_span(req: &Request<Body>) -> tracing::Span {
    tracing::debug_span!("request", method = %req.method(), uri = %loggable_uri(req.uri()), version = ?req.version())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_leave_the_log() {
        let uri = |s: &str| loggable_uri(&s.parse().unwrap());
        assert_eq!(uri("/email/eyJhbGciOi.abc.def"), "/email/…");
        assert_eq!(uri("/email/inbound"), "/email/inbound");
        assert_eq!(uri("/set-password?token=csp_secret&next=/"), "/set-password?token=…&next=/");
        assert_eq!(uri("/humanlayer/v1/function_calls/c1?wait=5"), "/humanlayer/v1/function_calls/c1?wait=5");
    }

    #[test]
    fn long_polls_are_told_by_their_wait() {
        assert!(is_long_poll(&"/x?wait=30".parse().unwrap()));
        assert!(is_long_poll(&"/x?a=1&wait".parse().unwrap()));
        assert!(!is_long_poll(&"/x?awaited=1".parse().unwrap()));
        assert!(!is_long_poll(&"/x".parse().unwrap()));
    }
}
