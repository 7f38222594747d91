//! The axum application: the faces' and channels' routers assembled, with the OpenAPI document
//! built from them, the fallbacks and the layers every route sits behind.

use crate::channels::email;
use crate::error::ApiError;
use crate::error::JsonBytes;
use crate::faces::api;
use crate::faces::{terminal, web};
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

/// The routes in the OpenAPI document, with the document.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/humanlayer/v1", api::routes().merge(email::inbound_routes()))
        .merge(api::health_routes())
}

/// `GET /.well-known/countersign/keys.json`: the public keys receipts are signed with (a JWK set,
/// each key with `valid_from` and, once rotated out, `valid_until`), for anyone to verify them.
async fn receipt_keys(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<axum::response::Response, ApiError> {
    let keys = state.store.signing_keys().await?;
    let body = crate::services::receipts::jwks(&keys);
    Ok(axum::response::IntoResponse::into_response((
        [(axum::http::header::CACHE_CONTROL, "public, max-age=60")],
        axum::Json(body),
    )))
}

/// The whole application and its OpenAPI document, with the routes the binary `mounted` (e.g. `/mcp`).
pub fn router(state: AppState, mounted: Router) -> Router {
    let (router, openapi) = documented_routes().split_for_parts();
    let openapi_json = JsonBytes::from(openapi.to_json().expect("the OpenAPI document serializes").into_bytes()).0;
    let max_body = state.settings.max_body_bytes;
    router
        .route("/openapi.json", get(move || std::future::ready(JsonBytes(openapi_json.clone()))))
        .route("/.well-known/countersign/keys.json", get(receipt_keys))
        .route("/metrics", get(crate::metrics::scrape_with_token))
        .nest("/api/v1", terminal::routes())
        .merge(mounted.with_state::<AppState>(()))
        .merge(web::routes())
        .merge(email::routes())
        .merge(crate::channels::slack::routes())
        .merge(crate::channels::sms::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TraceLayer::new_for_http().make_span_with(crate::guard::request_span))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::guard::guard))
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_has_the_email_channels_inbound_endpoint() {
        let (_, doc) = super::documented_routes().split_for_parts();
        let inbound = doc.paths.paths.get("/humanlayer/v1/email/inbound").expect("the inbound endpoint is documented");
        let post = inbound.post.as_ref().expect("as a POST");
        assert_eq!(post.tags.as_deref(), Some(&["email".to_owned()][..]));
        assert!(doc.paths.paths.contains_key("/healthz"));
        assert!(doc.paths.paths.contains_key("/humanlayer/v1/function_calls"));
    }
}
