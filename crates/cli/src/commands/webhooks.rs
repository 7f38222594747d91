//! `countersign webhooks add|list|remove|deliveries|attempts|redeliver`, on the database directly.

use super::groups::cli_stamp;
use crate::cli::WebhooksCommand;
use anyhow::{Context, anyhow, bail};
use countersign_core::route::{Channel, DeliveryStatus};
use countersign_core::webhook::EventType;
use countersign_core::{ProjectName, Timestamp};
use countersign_server::error::ApiError;
use countersign_server::services::webhooks::{self as service, attempt_json, delivery_json, endpoint_json};
use countersign_store::{Delivery, Store, WebhookEndpoint};
use serde_json::{Value, json};
use std::collections::HashMap;

/// How many characters of an error fit in the LAST column of the delivery log.
const LAST_WIDTH: usize = 40;

/// Runs a webhooks command; `allow_private` is the `limits.allow_private_webhook_targets` setting
/// (without it, endpoints on loopback, private and link-local addresses are refused).
pub async fn run(store: &dyn Store, cmd: WebhooksCommand, allow_private: bool) -> anyhow::Result<()> {
    match cmd {
        WebhooksCommand::Add { url, project, events, format, json } => {
            add(store, &url, &project, events, &format, json, allow_private).await
        }
        WebhooksCommand::List { project, json } => list(store, project.as_deref(), json).await,
        WebhooksCommand::Remove { id } => match store.remove_webhook(&id, &cli_stamp()).await? {
            Some(endpoint) => {
                println!(
                    "Removed webhook endpoint {} ({}); its undelivered events are marked failed.",
                    endpoint.id, endpoint.url
                );
                Ok(())
            }
            None => bail!("no webhook endpoint {id:?}; see `countersign webhooks list`"),
        },
        WebhooksCommand::Deliveries { endpoint_id, limit, json } => deliveries(store, &endpoint_id, limit, json).await,
        WebhooksCommand::Attempts { delivery_id, json } => attempts(store, &delivery_id, json).await,
        WebhooksCommand::Redeliver { delivery_id, json } => redeliver(store, &delivery_id, json).await,
    }
}

async fn add(
    store: &dyn Store,
    url: &str,
    project: &str,
    events: Option<String>,
    format: &str,
    json: bool,
    allow_private: bool,
) -> anyhow::Result<()> {
    let name = ProjectName::parse(project)?;
    let events = events.map(|list| vec![list]);
    // Check first, so a refused endpoint does not leave a new, empty project behind.
    service::validate(url, events.as_deref(), Some(format), allow_private)?;
    let is_new = store.project_by_name(name.as_str()).await?.is_none();
    let project = store.ensure_project(&name).await.context("cannot create the project")?;
    let endpoint = service::add(store, &project.id, url, events.as_deref(), Some(format), allow_private, &cli_stamp())
        .await
        .map_err(|e| api_error(&e))?;
    if json {
        let mut out = endpoint_json(&endpoint, true);
        out["project"] = json!(project.name);
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if is_new {
        println!("Created project {:?}.", project.name);
    }
    println!("Added webhook endpoint {} to project {:?}:", endpoint.id, project.name);
    println!("  url:     {}", endpoint.url);
    println!("  events:  {}", event_names(&endpoint.events).join(", "));
    println!("  format:  {}", endpoint.format.as_str());
    println!("Receivers verify each POST with the secret, the Standard Webhooks way (any Standard Webhooks library");
    println!("does it): headers webhook-id, webhook-timestamp and webhook-signature, which is `v1,` + base64");
    println!(
        "HMAC-SHA256 of `<webhook-id>.<webhook-timestamp>.<body>`, keyed with the base64-decoded secret after `whsec_`."
    );
    println!("The signing secret is shown only this once:");
    println!("{}", endpoint.secret);
    Ok(())
}

/// The CLI's message for a failure of the shared webhook service.
fn api_error(e: &ApiError) -> anyhow::Error {
    match e.code() {
        // The detail was logged to stderr just before; the HTTP wording would point at a server log.
        "internal" => anyhow!("cannot add the webhook endpoint (the logged error above says why)"),
        _ => anyhow!("{}", e.message()),
    }
}

async fn list(store: &dyn Store, project: Option<&str>, json: bool) -> anyhow::Result<()> {
    let project_id = match project {
        Some(name) => match store.project_by_name(name).await? {
            Some(p) => Some(p.id),
            None => bail!("no project named {name:?}"),
        },
        None => None,
    };
    let endpoints = store.webhooks(project_id.as_deref()).await?;
    let names = project_names(store, &endpoints).await?;
    let project_of = |e: &WebhookEndpoint| names.get(&e.project_id).cloned().unwrap_or_else(|| e.project_id.clone());
    if json {
        let rows: Vec<Value> = endpoints
            .iter()
            .map(|e| {
                let mut row = endpoint_json(e, false);
                row["project"] = json!(project_of(e));
                row
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if endpoints.is_empty() {
        println!("No webhook endpoints. Add one with `countersign webhooks add --project NAME URL`.");
    } else {
        let rows = endpoints.iter().map(|e| {
            vec![
                e.id.clone(),
                project_of(e),
                e.url.clone(),
                events_cell(&e.events),
                e.format.as_str().to_owned(),
                utc(e.created_at),
            ]
        });
        super::table::print(&["ID", "PROJECT", "URL", "EVENTS", "FORMAT", "CREATED (UTC)"], rows);
    }
    Ok(())
}

/// Project names by id, for the endpoints listed.
async fn project_names(store: &dyn Store, endpoints: &[WebhookEndpoint]) -> anyhow::Result<HashMap<String, String>> {
    let mut names = HashMap::new();
    for e in endpoints {
        if !names.contains_key(&e.project_id)
            && let Some(p) = store.project_by_id(&e.project_id).await?
        {
            names.insert(p.id, p.name);
        }
    }
    Ok(names)
}

async fn deliveries(store: &dyn Store, endpoint_id: &str, limit: u32, json: bool) -> anyhow::Result<()> {
    let endpoint = store.webhook(endpoint_id).await?;
    let log = store.deliveries(endpoint_id, limit).await?;
    // A removed endpoint keeps its log; only an id with neither is unknown.
    if endpoint.is_none() && log.is_empty() {
        bail!("no webhook endpoint {endpoint_id:?}; see `countersign webhooks list`");
    }
    if json {
        let rows: Vec<Value> = log.iter().map(delivery_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if log.is_empty() {
        let events = endpoint.map(|e| events_cell(&e.events)).unwrap_or_default();
        println!(
            "No deliveries yet for {endpoint_id}. One is made for each of its events ({events}) as the project's \
             requests are created, decided or escalated."
        );
    } else {
        let rows = log.iter().map(|d| {
            vec![
                d.id.clone(),
                d.event_type.as_str().to_owned(),
                d.call_id.clone(),
                d.status.as_str().to_owned(),
                d.attempts.to_string(),
                last_cell(d),
                d.last_latency_ms.map(|ms| ms.to_string()).unwrap_or_default(),
                d.delivered_at.or(d.next_attempt_at).map(utc).unwrap_or_default(),
            ]
        });
        super::table::print(
            &["ID", "EVENT", "CALL", "STATUS", "ATTEMPTS", "LAST", "LATENCY (ms)", "NEXT / DELIVERED (UTC)"],
            rows,
        );
    }
    Ok(())
}

/// A webhook delivery (other channels' deliveries share the queue, not this command).
async fn webhook_delivery(store: &dyn Store, delivery_id: &str) -> anyhow::Result<Option<Delivery>> {
    Ok(store.delivery(delivery_id).await?.filter(|d| d.channel == Channel::Webhook))
}

async fn attempts(store: &dyn Store, delivery_id: &str, json: bool) -> anyhow::Result<()> {
    let Some(delivery) = webhook_delivery(store, delivery_id).await? else {
        bail!("no webhook delivery {delivery_id:?}; see `countersign webhooks deliveries ENDPOINT_ID`");
    };
    let attempts = store.attempts(delivery_id).await?;
    if json {
        // The same shape as the API's GET /webhook_deliveries/{id}.
        let mut out = delivery_json(&delivery);
        out["attempts_log"] = json!(attempts.iter().map(attempt_json).collect::<Vec<_>>());
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{}", summary(&delivery));
    if attempts.is_empty() {
        println!("No attempts yet.");
        return Ok(());
    }
    let rows = attempts.iter().map(|a| {
        vec![
            a.attempt.to_string(),
            utc(a.at),
            a.status_code.map(|s| s.to_string()).unwrap_or_default(),
            a.error.clone().unwrap_or_default(),
            a.latency_ms.to_string(),
        ]
    });
    super::table::print(&["ATTEMPT", "AT (UTC)", "STATUS", "ERROR", "LATENCY (ms)"], rows);
    Ok(())
}

async fn redeliver(store: &dyn Store, delivery_id: &str, json: bool) -> anyhow::Result<()> {
    let Some(delivery) = webhook_delivery(store, delivery_id).await? else {
        bail!("no webhook delivery {delivery_id:?}; see `countersign webhooks deliveries ENDPOINT_ID`");
    };
    let endpoint = delivery.target.as_deref().unwrap_or_default();
    if store.webhook(endpoint).await?.is_none() {
        bail!("the endpoint {endpoint} of delivery {delivery_id} was removed; there is nowhere to send it");
    }
    let delivery = store.redeliver(delivery_id, &cli_stamp()).await?.context("the delivery vanished")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&delivery_json(&delivery))?);
        return Ok(());
    }
    let plural = if delivery.attempts == 1 { "" } else { "s" };
    println!(
        "Delivery {} ({} for {}) is {} again, due now after {} attempt{plural} so far. A running server sends it \
         within a second; follow it with `countersign webhooks attempts {delivery_id}`.",
        delivery.id,
        delivery.event_type.as_str(),
        delivery.call_id,
        delivery.status.as_str(),
        delivery.attempts
    );
    Ok(())
}

/// One line about a delivery: what, where it stands, and when.
fn summary(d: &Delivery) -> String {
    let plural = if d.attempts == 1 { "" } else { "s" };
    let when = match (d.delivered_at, d.next_attempt_at) {
        (Some(at), _) if d.status == DeliveryStatus::Delivered => format!(", delivered {} UTC", utc(at)),
        (_, Some(at)) if d.status == DeliveryStatus::Pending => format!(", next attempt {} UTC", utc(at)),
        _ => String::new(),
    };
    format!(
        "Delivery {} of {} for {} to endpoint {}: {} after {} attempt{plural}{when}.",
        d.id,
        d.event_type.as_str(),
        d.call_id,
        d.target.as_deref().unwrap_or_default(),
        d.status.as_str(),
        d.attempts
    )
}

/// The last answer: the HTTP status, else the error (shortened), else nothing yet.
fn last_cell(d: &Delivery) -> String {
    match (d.last_status, &d.last_error) {
        (Some(status), _) => status.to_string(),
        (None, Some(error)) if error.chars().count() > LAST_WIDTH => {
            format!("{}…", error.chars().take(LAST_WIDTH - 1).collect::<String>())
        }
        (None, Some(error)) => error.clone(),
        (None, None) => String::new(),
    }
}

/// The events column: `all` when the endpoint hears every event.
fn events_cell(events: &[EventType]) -> String {
    if EventType::ALL.iter().all(|e| events.contains(e)) { "all".to_owned() } else { event_names(events).join(",") }
}

/// The names of events, e.g. `function_call.completed`.
fn event_names(events: &[EventType]) -> Vec<&'static str> {
    events.iter().map(|e| e.as_str()).collect()
}

/// A time as the tables show it: `2025-06-01 12:00:00` (UTC).
fn utc(t: Timestamp) -> String {
    t.to_rfc3339()[..19].replace('T', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(last_status: Option<u16>, last_error: Option<&str>) -> Delivery {
        Delivery {
            id: "msg_1".into(),
            channel: Channel::Webhook,
            target: Some("wh_1".into()),
            project_id: "p".into(),
            kind: countersign_core::RequestKind::FunctionCall,
            call_id: "call-1".into(),
            event_type: EventType::FunctionCallCompleted,
            event_seq: 0,
            created_at: Timestamp::from_micros(0),
            status: DeliveryStatus::Pending,
            attempts: 1,
            next_attempt_at: Some(Timestamp::from_micros(5_000_000)),
            last_status,
            last_error: last_error.map(Into::into),
            last_latency_ms: Some(12),
            delivered_at: None,
            recipients: Vec::new(),
        }
    }

    #[test]
    fn the_last_column_shows_the_status_or_a_short_error() {
        assert_eq!(last_cell(&delivery(Some(500), Some("the endpoint answered 500"))), "500");
        assert_eq!(
            last_cell(&delivery(None, Some("cannot connect to the endpoint"))),
            "cannot connect to the endpoint"
        );
        let long = last_cell(&delivery(None, Some(&"x".repeat(100))));
        assert_eq!(long.chars().count(), LAST_WIDTH);
        assert!(long.ends_with('…'));
        assert_eq!(last_cell(&delivery(None, None)), "");
    }

    #[test]
    fn a_summary_says_where_a_delivery_stands() {
        assert_eq!(
            summary(&delivery(Some(500), None)),
            "Delivery msg_1 of function_call.completed for call-1 to endpoint wh_1: pending after 1 attempt, \
             next attempt 1970-01-01 00:00:05 UTC."
        );
    }

    #[test]
    fn every_event_is_shown_as_all() {
        let all = EventType::ALL;
        assert_eq!(events_cell(&all), "all");
        assert_eq!(events_cell(&all[..2]), "function_call.created,function_call.completed");
    }
}
