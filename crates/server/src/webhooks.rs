//! Webhook endpoints as people and programs manage them: validation, and the JSON shapes the API
//! and `countersign webhooks` show. Used by the API handlers and the CLI alike.

use crate::error::{ApiError, ApiResult};
use countersign_core::Invalid;
use countersign_core::webhook::{self, Format};
use countersign_store::{Attempt, Delivery, NewWebhookEndpoint, Store, WebhookEndpoint};
use serde_json::{Value, json};

/// A checked endpoint definition: the normalized URL, the event names and the format.
pub struct Checked {
    pub url: String,
    pub events: Vec<String>,
    pub format: Format,
}

/// Checks an endpoint definition without storing anything (events default to the two
/// `*.completed` ones, the format to `v1beta2`).
pub fn validate(url: &str, events: Option<&[String]>, format: Option<&str>) -> Result<Checked, Invalid> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Invalid::new("url", format!("{url:?} is not a URL: {e}")))
        .and_then(|u| match u.scheme() {
            "http" | "https" if u.host().is_some() => Ok(u),
            _ => Err(Invalid::new("url", format!("{url:?} must be an http:// or https:// URL with a host"))),
        })?;
    let events = webhook::parse_events(&events.map(|e| e.join(",")).unwrap_or_default())?;
    let format = Format::parse(format.unwrap_or("v1beta2"))?;
    Ok(Checked { url: parsed.to_string(), events: events.iter().map(|e| e.as_str().to_owned()).collect(), format })
}

/// Validates and stores a new endpoint of a project; the result holds its secret (show it once).
pub async fn add(
    store: &dyn Store,
    project_id: &str,
    url: &str,
    events: Option<&[String]>,
    format: Option<&str>,
) -> ApiResult<WebhookEndpoint> {
    let checked = validate(url, events, format)?;
    let new = NewWebhookEndpoint {
        project_id: project_id.to_owned(),
        url: checked.url,
        events: checked.events,
        format: checked.format.as_str().to_owned(),
        secret: webhook::generate_secret(),
    };
    let endpoint = store.add_webhook(&new).await?;
    tracing::info!(id = %endpoint.id, url = %endpoint.url, "webhook endpoint added");
    Ok(endpoint)
}

/// An endpoint of this project (404 for other projects' endpoints).
pub async fn endpoint_of(store: &dyn Store, project_id: &str, id: &str) -> ApiResult<WebhookEndpoint> {
    match store.webhook(id).await? {
        Some(e) if e.project_id == project_id => Ok(e),
        _ => Err(ApiError::not_found(format!("no webhook endpoint {id:?} in this project"))),
    }
}

/// A delivery of one of this project's endpoints.
pub async fn delivery_of(store: &dyn Store, project_id: &str, id: &str) -> ApiResult<Delivery> {
    match store.delivery(id).await? {
        Some(d) if d.project_id == project_id => Ok(d),
        _ => Err(ApiError::not_found(format!("no webhook delivery {id:?} in this project"))),
    }
}

/// An endpoint as listed; the secret only when just created.
pub fn endpoint_json(e: &WebhookEndpoint, with_secret: bool) -> Value {
    let mut out = json!({
        "id": e.id,
        "url": e.url,
        "events": e.events,
        "format": e.format,
        "created_at": e.created_at.to_rfc3339(),
    });
    if with_secret {
        out["secret"] = json!(e.secret);
    }
    out
}

/// A delivery as listed.
pub fn delivery_json(d: &Delivery) -> Value {
    json!({
        "id": d.id,
        "endpoint_id": d.endpoint_id,
        "event_type": d.event_type,
        "call_id": d.call_id,
        "status": d.status,
        "attempts": d.attempts,
        "created_at": d.created_at.to_rfc3339(),
        "next_attempt_at": d.next_attempt_at.map(|t| t.to_rfc3339()),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "last_latency_ms": d.last_latency_ms,
        "delivered_at": d.delivered_at.map(|t| t.to_rfc3339()),
    })
}

/// An attempt as listed.
pub fn attempt_json(a: &Attempt) -> Value {
    json!({
        "attempt": a.attempt,
        "at": a.at.to_rfc3339(),
        "status_code": a.status_code,
        "error": a.error,
        "latency_ms": a.latency_ms,
    })
}
