//! The axum application: shared state, the route table, and the OpenAPI document built from it.

use crate::api::{self, extract::JsonBytes};
use crate::auth::KeyCache;
use crate::error::ApiError;
use crate::requests::Requests;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::get;
use countersign_store::Store;
use std::ops::Deref;
use std::sync::Arc;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Settings of the HTTP face.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Organization name reported by `GET /project`.
    pub organization: String,
    /// Public base URL; when it is `https://...`, session cookies are marked `Secure` (they also
    /// are behind a proxy that sends `X-Forwarded-Proto: https`). Links in emails start with it
    /// (without it, with `http://` and the bound address).
    pub public_url: Option<String>,
    /// How to send email.
    pub email: crate::email::EmailSettings,
    /// Bounds on what clients can send and make the server hold.
    pub limits: crate::limits::Limits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            organization: "countersign".into(),
            public_url: None,
            email: crate::email::EmailSettings::default(),
            limits: crate::limits::Limits::default(),
        }
    }
}

/// What every handler can reach.
pub struct Inner {
    pub store: Arc<dyn Store>,
    pub requests: Requests,
    pub keys: KeyCache,
    pub settings: Settings,
    /// Signs and checks the links in emails.
    pub links: Arc<crate::email::links::LinkSigner>,
    /// The public base URL, without a trailing slash.
    pub public_base: String,
    /// Guards passwords: the argon2 cap and the login throttles of this server.
    pub people: crate::people::Gate,
}

/// Cheaply clonable handle to [`Inner`].
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    /// State over a store; `links` signs email links, `public_base` starts them.
    pub fn new(
        store: Arc<dyn Store>,
        settings: Settings,
        links: Arc<crate::email::links::LinkSigner>,
        public_base: String,
    ) -> Self {
        Self(Arc::new(Inner {
            requests: Requests::new(store.clone(), settings.limits.clone()),
            keys: KeyCache::default(),
            people: crate::people::Gate::new(&settings.limits),
            store,
            settings,
            links,
            public_base,
        }))
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Countersign", description = "Human-in-the-loop approvals for AI agents; HumanLayer-compatible API."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "function_calls", description = "Approvals of function calls"),
        (name = "human_contacts", description = "Questions to humans"),
        (name = "project", description = "The key's project"),
        (name = "email", description = "Replies by email (a Countersign extension)"),
        (name = "webhooks", description = "Signed webhooks of the key's project (a Countersign extension)"),
        (name = "health", description = "Liveness"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The HumanLayer routes, relative to `/humanlayer/v1`.
fn humanlayer_routes() -> OpenApiRouter<AppState> {
    use api::{function_calls as fc, human_contacts as hc};
    OpenApiRouter::new()
        .routes(routes!(fc::create))
        .routes(routes!(fc::get))
        .routes(routes!(fc::respond))
        .routes(routes!(fc::escalate_email))
        .routes(routes!(fc::pending))
        .routes(routes!(hc::create))
        .routes(routes!(hc::create_alias))
        .routes(routes!(hc::get))
        .routes(routes!(hc::get_alias))
        .routes(routes!(hc::respond))
        .routes(routes!(hc::escalate_email))
        .routes(routes!(hc::pending))
        .routes(routes!(api::project::get))
        .routes(routes!(api::webhooks::add, api::webhooks::list))
        .routes(routes!(api::webhooks::remove))
        .routes(routes!(api::webhooks::deliveries))
        .routes(routes!(api::webhooks::delivery))
        .routes(routes!(api::webhooks::redeliver))
        .routes(routes!(crate::email::inbound::receive))
}

/// The whole application and its OpenAPI document.
pub fn router(state: AppState) -> Router {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/humanlayer/v1", humanlayer_routes())
        .routes(routes!(api::health::healthz))
        .split_for_parts();
    let openapi_json = JsonBytes::from(openapi.to_json().expect("the OpenAPI document serializes").into_bytes()).0;
    let max_body = state.settings.max_body_bytes;
    router
        .route("/openapi.json", get(move || std::future::ready(JsonBytes(openapi_json.clone()))))
        .nest("/api/v1", crate::terminal::routes())
        .merge(crate::mcp::routes(state.clone()))
        .merge(crate::web::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::guard::guard))
        .layer(TraceLayer::new_for_http().make_span_with(crate::guard::request_span))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::internal("a handler panicked"))
        }))
        .with_state(state)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route for {method} {}; the HumanLayer API is under /humanlayer/v1 (see /openapi.json)",
        uri.path()
    ))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {} (see /openapi.json)", uri.path()),
    )
}
