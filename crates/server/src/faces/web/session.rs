//! The browser session: the cookie that carries it, the extractor that requires it (sending
//! people without one to the login page), and the CSRF check of state-changing forms. Only
//! sessions opened in a browser count: a terminal login's token is no cookie.

use crate::error::ApiError;
use crate::html::{PageError, segment};
use crate::services::people;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use countersign_core::session::same_secret;
use countersign_store::Session;

/// The session cookie.
pub const SESSION_COOKIE: &str = "countersign_session";
/// The login form's CSRF cookie (there is no session yet to bind it to).
pub const LOGIN_CSRF_COOKIE: &str = "countersign_login";

/// True when cookies must be `Secure`: the public URL is https, or a proxy says the request was.
fn secure(state: &AppState, headers: &HeaderMap) -> bool {
    state.settings.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
        || headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// An HttpOnly, SameSite=Lax cookie for the whole site. It lasts until the browser closes; the
/// server ends the session itself after its lifetime.
pub fn cookie(state: &AppState, headers: &HeaderMap, name: &'static str, value: String) -> Cookie<'static> {
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure(state, headers))
        .build()
}

/// A cookie that removes `name`.
pub fn removal(name: &'static str) -> Cookie<'static> {
    Cookie::build((name, "")).path("/").build()
}

/// A signed-in person in a browser.
pub struct WebSession {
    pub session: Session,
    pub token: String,
}

impl WebSession {
    /// The form's (or the `X-CSRF-Token` header's) token matches this session's.
    pub fn csrf_ok(&self, form_token: &str, headers: &HeaderMap) -> bool {
        let given = if form_token.is_empty() {
            headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or_default()
        } else {
            form_token
        };
        !given.is_empty() && same_secret(given, &self.session.csrf_token)
    }
}

/// No session: pages go to the login page (htmx requests are told to), streams get 401.
pub enum NoSession {
    Login(String),
    Htmx,
    Error(ApiError),
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            Self::Login(next) => Redirect::to(&format!("/login?next={}", segment(&next))).into_response(),
            Self::Htmx => {
                let mut response = StatusCode::UNAUTHORIZED.into_response();
                response.headers_mut().insert("hx-redirect", HeaderValue::from_static("/login"));
                response
            }
            Self::Error(err) => PageError::from(err).into_response(),
        }
    }
}

impl FromRequestParts<AppState> for WebSession {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let jar = CookieJar::from_headers(&parts.headers);
        let token = jar.get(SESSION_COOKIE).map(|c| c.value().to_owned()).unwrap_or_default();
        let session = if token.is_empty() {
            None
        } else {
            people::web_session(state.store.as_ref(), &token).await.map_err(NoSession::Error)?
        };
        match session {
            Some(session) => Ok(Self { session, token }),
            None if super::is_htmx(&parts.headers) => Err(NoSession::Htmx),
            None if parts.headers.get(header::ACCEPT).is_some_and(|v| v == "text/event-stream") => {
                Err(NoSession::Error(ApiError::unauthorized("not signed in")))
            }
            None => Err(NoSession::Login(parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned())),
        }
    }
}
