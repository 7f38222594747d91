//! Webhook endpoints as people and programs manage them: validation, and the JSON shapes the API
//! and `countersign webhooks` show. Used by the API handlers and the CLI alike.

use crate::error::{ApiError, ApiResult};
use countersign_core::Invalid;
use countersign_core::event::Stamp;
use countersign_core::route::Channel;
use countersign_core::webhook::{self, EventType, Format};
use countersign_store::{Attempt, Delivery, NewWebhookEndpoint, Store, WebhookEndpoint};
use serde_json::{Value, json};

/// A checked endpoint definition: the normalized URL, the events and the format.
pub struct Checked {
    pub url: String,
    pub events: Vec<EventType>,
    pub format: Format,
}

/// The longest webhook URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Checks an endpoint definition without storing anything (events default to the two
/// `*.completed` ones, the format to `v1beta2`). Unless `allow_private` (the
/// `limits.allow_private_webhook_targets` setting), a URL whose host is a loopback, private,
/// link-local or unspecified address (or `localhost`) is refused.
pub fn validate(
    url: &str,
    events: Option<&[String]>,
    format: Option<&str>,
    allow_private: bool,
) -> Result<Checked, Invalid> {
    if url.len() > MAX_URL_BYTES {
        return Err(Invalid::new("url", format!("the URL is {} bytes; the limit is {MAX_URL_BYTES}", url.len())));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| Invalid::new("url", format!("{url:?} is not a URL: {e}")))
        .and_then(|u| match u.scheme() {
            "http" | "https" if u.host().is_some() => Ok(u),
            _ => Err(Invalid::new("url", format!("{url:?} must be an http:// or https:// URL with a host"))),
        })?;
    if !allow_private && let Some(reason) = refusal(&parsed) {
        return Err(Invalid::new(
            "url",
            format!(
                "{url:?} points to {reason}; webhooks may not target loopback, private, link-local or unspecified \
                 addresses unless the server's configuration allows it (limits.allow_private_webhook_targets = true, \
                 or COUNTERSIGN_ALLOW_PRIVATE_WEBHOOK_TARGETS=true)"
            ),
        ));
    }
    let events = webhook::parse_events(&events.map(|e| e.join(",")).unwrap_or_default())?;
    let format = Format::parse(format.unwrap_or("v1beta2"))?;
    Ok(Checked { url: parsed.to_string(), events, format })
}

/// Why webhooks may not target this URL's host as written, e.g. `a link-local address
/// (169.254.169.254)`; `None` for a public address or a name (names are checked on the addresses
/// they resolve to, when delivering). The URL parser reads numeric IPv4 forms (`2130706433`,
/// `0x7f000001`, `017700000001`, `127.1`) as the addresses they mean.
pub fn refusal(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    let ip = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().ok().map(std::net::IpAddr::V6),
        None => host.parse::<std::net::Ipv4Addr>().ok().map(std::net::IpAddr::V4),
    };
    match ip {
        Some(ip) => webhook::forbidden_ip(ip).map(|r| format!("{r} ({ip})")),
        None => webhook::forbidden_name(host).map(|r| format!("{r} ({host})")),
    }
}

/// Validates (see [`validate`]) and stores a new endpoint of a project; the result holds its
/// secret (show it once). The change is logged with `stamp`.
pub async fn add(
    store: &dyn Store,
    project_id: &str,
    url: &str,
    events: Option<&[String]>,
    format: Option<&str>,
    allow_private: bool,
    stamp: &Stamp,
) -> ApiResult<WebhookEndpoint> {
    let checked = validate(url, events, format, allow_private)?;
    let new = NewWebhookEndpoint {
        project_id: project_id.to_owned(),
        url: checked.url,
        events: checked.events,
        format: checked.format,
        secret: webhook::generate_secret(),
    };
    let endpoint = store.add_webhook(&new, stamp).await?;
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
        Some(d) if d.project_id == project_id && d.channel == Channel::Webhook => Ok(d),
        _ => Err(ApiError::not_found(format!("no webhook delivery {id:?} in this project"))),
    }
}

/// An endpoint as listed; the secret only when just created.
pub fn endpoint_json(e: &WebhookEndpoint, with_secret: bool) -> Value {
    let mut out = json!({
        "id": e.id,
        "url": e.url,
        "events": e.events.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
        "format": e.format.as_str(),
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
        "endpoint_id": d.target,
        "event_type": d.event_type.as_str(),
        "call_id": d.call_id,
        "status": d.status.as_str(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> Option<String> {
        validate(url, None, None, false).err().map(|e| e.message)
    }

    #[test]
    fn private_targets_are_refused_in_every_spelling_unless_allowed() {
        for (url, reason) in [
            ("http://169.254.169.254/latest/meta-data", "link-local address (169.254.169.254)"),
            ("http://[::1]:8080/hook", "loopback address (::1)"),
            ("http://localhost:3000/hook", "loopback address (localhost)"),
            ("http://API.LOCALHOST/hook", "loopback address (api.localhost)"),
            ("http://0.0.0.0/", "unspecified address (0.0.0.0)"),
            // The URL parser reads numeric, hex, octal and short IPv4 forms as the address.
            ("http://2130706433/", "loopback address (127.0.0.1)"),
            ("http://0x7f000001/", "loopback address (127.0.0.1)"),
            ("http://017700000001/", "loopback address (127.0.0.1)"),
            ("http://127.1/", "loopback address (127.0.0.1)"),
            ("http://127.0.0.1./", "loopback address (127.0.0.1)"),
            ("http://127.0.0.1%2e/", "loopback address (127.0.0.1)"),
            ("http://hooks.example.com@127.0.0.1/", "loopback address (127.0.0.1)"),
            ("http://10.0.0.1/", "private address (10.0.0.1)"),
            ("https://192.168.1.1/", "private address (192.168.1.1)"),
            ("http://[fe80::1]/", "link-local address (fe80::1)"),
            ("http://[::ffff:127.0.0.1]/", "loopback address (::ffff:127.0.0.1)"),
            ("http://[::ffff:7f00:1]/", "loopback address (::ffff:127.0.0.1)"),
            ("http://100.64.1.1/", "carrier-grade NAT"),
        ] {
            let message = refused(url).unwrap_or_else(|| panic!("{url} accepted"));
            assert!(message.contains(reason), "{url}: {message}");
            assert!(message.contains("limits.allow_private_webhook_targets"), "{message}");
            assert!(validate(url, None, None, true).is_ok(), "{url} with the opt-in");
        }
        for url in [
            "https://hooks.example.com/cs",
            "http://8.8.8.8/x",
            "http://[2606:4700::1111]/",
            "http://localhost.example.com/",
        ] {
            assert_eq!(refused(url), None, "{url}");
        }
    }
}
