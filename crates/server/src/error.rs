//! The one error type of the HTTP face. Every error is answered as JSON
//! `{"error": {"code": ..., "message": ...}}` with its status; internal failures are logged with
//! the place they happened and answered without details.

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use countersign_core::Invalid;
use countersign_store::StoreError;
use serde_json::json;
use std::panic::Location;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Extra fields of the error object (e.g. `execution` on a second start).
    detail: Option<Box<(&'static str, serde_json::Value)>>,
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), detail: None }
    }

    /// The same error with one more field in its JSON object, for programs to read.
    pub fn with_detail(mut self, field: &'static str, value: serde_json::Value) -> Self {
        self.detail = Some(Box::new((field, value)));
        self
    }

    /// 400: the input broke a rule; the message names the field.
    pub fn invalid(err: Invalid) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", err.to_string())
    }

    /// 401: no key, or one we do not know.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 with a message.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 500: logged here with the caller's location; the client learns nothing more.
    #[track_caller]
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let at = Location::caller();
        tracing::error!(%detail, file = at.file(), line = at.line(), "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error; the server log has details")
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code, e.g. `conflict`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<Invalid> for ApiError {
    fn from(err: Invalid) -> Self {
        Self::invalid(err)
    }
}

impl From<StoreError> for ApiError {
    #[track_caller]
    fn from(err: StoreError) -> Self {
        metrics::counter!(crate::metrics::STORE_ERRORS).increment(1);
        match err {
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; nothing was changed, retry shortly",
                )
            }
            StoreError::Internal(detail) => Self::internal(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(detail) = self.detail {
            let (field, value) = *detail;
            error[field] = value;
        }
        let body = json!({ "error": error }).to_string();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The JSON shape of every error response, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Machine-readable: `invalid_request`, `unauthorized`, `not_found`, `conflict`, `payload_too_large`, `unavailable`, `internal`.
    code: String,
    /// What was wrong and how to fix it; names the offending field.
    message: String,
}

/// A JSON response whose body is already serialized.
pub struct JsonBytes(pub Bytes);

impl IntoResponse for JsonBytes {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], self.0).into_response()
    }
}

impl From<Vec<u8>> for JsonBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(Bytes::from(bytes))
    }
}
