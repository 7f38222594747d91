//! Extractors of the page routes whose rejections are pages, not axum's plain text: a bad form
//! body (wrong content type, undecodable fields), query string or path segment is answered with
//! the HTML error page, or with the JSON error shape when the client's `Accept` prefers JSON.

use super::PageError;
use crate::error::ApiError;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Form, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// A form body (`application/x-www-form-urlencoded`).
pub struct PageForm<T>(pub T);

/// A query string.
pub struct PageQuery<T>(pub T);

/// Path parameters.
pub struct PagePath<T>(pub T);

/// A rejected form, query or path: a page or JSON, as the client prefers.
pub struct BadInput {
    json: bool,
    status: StatusCode,
    message: String,
}

impl BadInput {
    fn new(headers: &HeaderMap, status: StatusCode, what: &str, detail: String) -> Self {
        // axum's texts start with a generic phrase and then say what failed, e.g.
        // "Failed to deserialize form body: missing field `x`".
        let detail = detail.trim().trim_end_matches('.').to_owned();
        Self { json: prefers_json(headers), status, message: format!("{what} {detail}.") }
    }
}

impl IntoResponse for BadInput {
    fn into_response(self) -> Response {
        if self.json {
            let code = match self.status {
                StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                _ => "invalid_request",
            };
            return ApiError::new(self.status, code, self.message).into_response();
        }
        let title = match self.status {
            StatusCode::PAYLOAD_TOO_LARGE => "Too large",
            _ => "Cannot read that",
        };
        PageError::new(self.status, title, self.message).into_response()
    }
}

/// True when `Accept` ranks `application/json` above HTML (`text/html`, or `*/*` for it).
pub fn prefers_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else { return false };
    let (mut json, mut html) = (0.0_f32, 0.0_f32);
    for entry in accept.split(',') {
        let mut parts = entry.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()))
            .next()
            .unwrap_or(1.0);
        match media.as_str() {
            "application/json" | "application/*" => json = json.max(q),
            "text/html" | "text/*" => html = html.max(q),
            "*/*" => html = html.max(q * 0.99),
            _ => {}
        }
    }
    json > html
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for PageForm<T> {
    type Rejection = BadInput;

    async fn from_request(req: Request, state: &S) -> Result<Self, BadInput> {
        let headers = req.headers().clone();
        match Form::<T>::from_request(req, state).await {
            Ok(Form(value)) => Ok(Self(value)),
            Err(rejection) => {
                let (what, detail) = match &rejection {
                    FormRejection::InvalidFormContentType(_) => (
                        "This form must be sent as",
                        "application/x-www-form-urlencoded (a browser form post)".to_owned(),
                    ),
                    FormRejection::FailedToDeserializeForm(e) => ("The form's fields are not valid:", e.body_text()),
                    FormRejection::FailedToDeserializeFormBody(e) => {
                        ("The form's fields are not valid:", e.body_text())
                    }
                    _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                        ("The form is", "larger than the server accepts".to_owned())
                    }
                    _ => ("The form cannot be read:", rejection.body_text()),
                };
                Err(BadInput::new(&headers, rejection.status(), what, strip_axum_prefix(&detail)))
            }
        }
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for PageQuery<T> {
    type Rejection = BadInput;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, BadInput> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => {
                let detail = match &rejection {
                    QueryRejection::FailedToDeserializeQueryString(e) => e.body_text(),
                    _ => rejection.body_text(),
                };
                Err(BadInput::new(
                    &parts.headers,
                    StatusCode::BAD_REQUEST,
                    "The address's query is not valid:",
                    strip_axum_prefix(&detail),
                ))
            }
        }
    }
}

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PagePath<T> {
    type Rejection = BadInput;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, BadInput> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => {
                let status = match &rejection {
                    PathRejection::FailedToDeserializePathParams(_) => StatusCode::BAD_REQUEST,
                    _ => rejection.status(),
                };
                Err(BadInput::new(
                    &parts.headers,
                    status,
                    "The address is not valid:",
                    strip_axum_prefix(&rejection.body_text()),
                ))
            }
        }
    }
}

/// `"Failed to deserialize form body: missing field `x`"` → `"missing field `x`"`.
fn strip_axum_prefix(text: &str) -> String {
    const PREFIXES: [&str; 4] = [
        "Failed to deserialize form body: ",
        "Failed to deserialize form: ",
        "Failed to deserialize query string: ",
        "Invalid URL: ",
    ];
    PREFIXES.iter().find_map(|p| text.strip_prefix(p)).unwrap_or(text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn json_only_when_preferred() {
        assert!(prefers_json(&accept("application/json")));
        assert!(prefers_json(&accept("application/json, */*;q=0.5")));
        assert!(!prefers_json(&accept("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")));
        assert!(!prefers_json(&accept("*/*")));
        assert!(!prefers_json(&HeaderMap::new()));
        assert!(!prefers_json(&accept("text/html, application/json;q=0.5")));
    }
}
