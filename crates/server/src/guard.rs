//! Layers every request passes: a request id (the client's `x-request-id` when it is a sane
//! one, else a new one; on the log span and sent back), a deadline
//! (`limits.request_timeout_secs`) for all but long-polls and streams, plain-text rejections of
//! the framework turned into the API's JSON errors, and access-log URIs with their secrets blanked.

use crate::error::ApiError;
use crate::services::requests::MAX_WAIT;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Longest plain-text rejection turned into JSON; the framework's are a line or two.
const MAX_REJECTION_TEXT: usize = 4096;

/// The header a request id comes in and goes back in.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a client; a longer or odd one is replaced by a new id.
pub const MAX_REQUEST_ID: usize = 128;

/// The guards in one layer (one middleware costs a boxed future and a clone of the router per
/// request, so they share it), outside the access log's span: the [`request_id`] (set on the
/// request, so that the span shows it, and on the response), the [`deadline`], then
/// [`json_rejections`].
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = request_id(req.headers().get(&REQUEST_ID));
    req.headers_mut().insert(REQUEST_ID.clone(), id.clone());
    let measured = state.settings.metrics.enabled().then(|| Measured::of(&req));
    let mut response = json_rejections(deadline(&state, req, next).await).await;
    if let Some(measured) = measured {
        measured.record(response.status());
    }
    response.headers_mut().insert(REQUEST_ID.clone(), id);
    response
}

/// A request as the metrics see it (only when metrics are on).
struct Measured {
    route: String,
    method: axum::http::Method,
    /// Long-polls and streams last as long as they wait: counted, not timed.
    timed: bool,
    start: std::time::Instant,
}

impl Measured {
    fn of(req: &Request) -> Self {
        let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
        let timed = !(is_long_poll(req.uri()) || route == "/events" || route == "/mcp");
        Self { route, method: req.method().clone(), timed, start: std::time::Instant::now() }
    }

    fn record(self, status: StatusCode) {
        let elapsed = self.start.elapsed().as_secs_f64();
        let method = method_label(&self.method);
        if self.timed {
            metrics::histogram!(crate::metrics::HTTP_DURATION, "route" => self.route.clone(), "method" => method)
                .record(elapsed);
        }
        metrics::counter!(
            crate::metrics::HTTP_REQUESTS,
            "route" => self.route,
            "method" => method,
            "status" => status_label(status)
        )
        .increment(1);
    }
}

/// The method as a label: the common ones, else `other` (a client could send any token).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_label(status: StatusCode) -> &'static str {
    // Static strings for the statuses the server sends, so a label costs no allocation.
    match status.as_u16() {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        301 => "301",
        302 => "302",
        303 => "303",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        410 => "410",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 400 => "other_2xx_3xx",
        s if s < 500 => "other_4xx",
        _ => "other_5xx",
    }
}

/// The client's request id when it is 1 to [`MAX_REQUEST_ID`] characters of letters, digits and
/// `-_.:+/=` (UUIDs, ULIDs, base64, trace ids); otherwise a new one: 16 random hex digits.
fn request_id(given: Option<&HeaderValue>) -> HeaderValue {
    let sane = |v: &&HeaderValue| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b))
    };
    match given.filter(sane) {
        Some(value) => value.clone(),
        None => {
            let id = format!("{:016x}", rand::random::<u64>());
            HeaderValue::from_str(&id).expect("hex digits are a valid header value")
        }
    }
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

/// The span of a request, around every line it logs (so a decision's line names its request
/// id): the [`guard`]'s request id, the method and the [`loggable_uri`].
pub fn request_span(req: &Request<Body>) -> tracing::Span {
    let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
    tracing::info_span!("request", id, method = %req.method(), uri = %loggable_uri(req.uri()))
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
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        let given = |s: &str| request_id(Some(&HeaderValue::from_str(s).unwrap()));
        assert_eq!(given("0190c6a2-7b1e-7c3d-9f00-aa55aa55aa55"), "0190c6a2-7b1e-7c3d-9f00-aa55aa55aa55");
        assert_eq!(given("trace:ab/cd+ef=="), "trace:ab/cd+ef==");
        for odd in ["", "has space", "quote\"", "ünï", &"x".repeat(MAX_REQUEST_ID + 1)] {
            let made = request_id(HeaderValue::from_bytes(odd.as_bytes()).ok().as_ref());
            let made = made.to_str().unwrap();
            assert!(made.len() == 16 && made.bytes().all(|b| b.is_ascii_hexdigit()), "{odd:?} → {made}");
        }
        assert_ne!(request_id(None), request_id(None));
    }

    #[test]
    fn long_polls_are_told_by_their_wait() {
        assert!(is_long_poll(&"/x?wait=30".parse().unwrap()));
        assert!(is_long_poll(&"/x?a=1&wait".parse().unwrap()));
        assert!(!is_long_poll(&"/x?awaited=1".parse().unwrap()));
        assert!(!is_long_poll(&"/x".parse().unwrap()));
    }
}
