//! The axum application: the route table, and the OpenAPI document built from it.

use crate::api::{self, extract::JsonBytes};
use crate::error::ApiError;
use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
        (name = "audit", description = "The tamper-evident event log of the key's project (a Countersign extension)"),
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
        .routes(routes!(api::audit::list))
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
