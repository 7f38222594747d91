//! Extractors and responses that keep the JSON error contract: a bad body or query string is a
//! JSON 400 (or 413) that says what was wrong, never axum's plain-text rejection.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use countersign_core::Invalid;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A request body that must hold a JSON object, kept as the bytes sent. It nests at most
/// `max_json_depth` levels (checked before anything parses it).
pub struct RawJsonObject(pub Bytes);

impl FromRequest<AppState> for RawJsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body is larger than the server's limit (max_body_bytes in the configuration)",
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", format!("cannot read the body: {rejection}"))
            }
        })?;
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {
                countersign_core::json_depth::check(&bytes, state.settings.limits.max_json_depth)
                    .map_err(|why| ApiError::invalid(Invalid::new(".", format!("the body {why}"))))?;
                Ok(Self(bytes))
            }
            Some(_) => Err(ApiError::invalid(Invalid::new(".", "the body must be a JSON object"))),
            None => Err(ApiError::invalid(Invalid::new(".", "the body is empty; send a JSON object"))),
        }
    }
}

/// A request body that must be a JSON object, parsed.
pub struct JsonObject(pub Value);

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let RawJsonObject(bytes) = RawJsonObject::from_request(req, state).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::invalid(Invalid::new(".", format!("the body is not valid JSON: {e}"))))?;
        Ok(Self(value))
    }
}

/// A query string parsed into `T`, with JSON errors.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state).await.map(|q| Self(q.0)).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", format!("bad query string: {}", e.body_text()))
        })
    }
}
