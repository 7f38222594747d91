//! Webhook endpoints: the queries both backends share. Their deliveries are rows of the one
//! delivery queue (see [`crate::queue`]).

use crate::StoreError;
use countersign_core::Timestamp;
use countersign_core::webhook::{EventType, Format};

/// A webhook endpoint of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: String,
    pub project_id: String,
    pub url: String,
    /// The events it is sent.
    pub events: Vec<EventType>,
    /// How its bodies look.
    pub format: Format,
    /// `whsec_...`; shown once when created.
    pub secret: String,
    pub created_at: Timestamp,
}

/// What to store for a new endpoint.
#[derive(Debug, Clone)]
pub struct NewWebhookEndpoint {
    pub project_id: String,
    pub url: String,
    pub events: Vec<EventType>,
    pub format: Format,
    pub secret: String,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EndpointRow {
    id: String,
    project_id: String,
    url: String,
    events: String,
    format: String,
    secret: String,
    created_at: i64,
}

impl EndpointRow {
    /// The endpoint, its secret opened with `ring`.
    pub(crate) fn open(self, ring: &crate::secrets::Keyring) -> Result<WebhookEndpoint, StoreError> {
        let secret = ring.open(&crate::secrets::place("webhook_endpoints", "secret", &self.id), &self.secret)?;
        WebhookEndpoint::try_from(EndpointRow { secret, ..self })
    }
}

impl TryFrom<EndpointRow> for WebhookEndpoint {
    type Error = StoreError;

    /// The endpoint as stored (its `secret` as the row holds it).
    fn try_from(r: EndpointRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str, err: &dyn std::fmt::Display| {
            StoreError::Internal(format!("webhook endpoint {}: stored {what} is unreadable: {err}", r.id))
        };
        let names: Vec<String> = serde_json::from_str(&r.events).map_err(|e| corrupt("events", &e))?;
        let events = names
            .iter()
            .map(|name| EventType::parse(name).ok_or_else(|| corrupt("events", &format!("{name:?} is not an event"))))
            .collect::<Result<_, _>>()?;
        let format = Format::parse(&r.format).map_err(|e| corrupt("format", &e))?;
        Ok(Self {
            events,
            format,
            id: r.id,
            project_id: r.project_id,
            url: r.url,
            secret: r.secret,
            created_at: Timestamp::from_micros(r.created_at),
        })
    }
}

/// The stored form of an endpoint's events: a JSON array of their names.
pub(crate) fn events_text(events: &[EventType]) -> String {
    let names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    serde_json::to_string(&names).expect("strings serialize")
}

macro_rules! endpoint_columns {
    () => {
        "id, project_id, url, events, format, secret, created_at"
    };
}
pub(crate) use endpoint_columns;

/// Defines the webhook endpoint queries over one pool type.
macro_rules! webhook_queries {
    ($pool:ty, $conn:ty) => {
        use crate::webhooks::{EndpointRow, NewWebhookEndpoint, WebhookEndpoint, endpoint_columns};
        use crate::StoreResult;
        use crate::secrets::Keyring;
        use countersign_core::Timestamp;

        /// Inserts an endpoint in the caller's transaction; returns its id.
        pub(super) async fn add(conn: &mut $conn, ring: &Keyring, new: &NewWebhookEndpoint) -> StoreResult<String> {
            let id = format!("wh_{}", uuid::Uuid::now_v7().simple());
            let events = crate::webhooks::events_text(&new.events);
            sqlx::query(
                "INSERT INTO webhook_endpoints (id, project_id, url, events, format, secret, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&id)
            .bind(&new.project_id)
            .bind(&new.url)
            .bind(&events)
            .bind(new.format.as_str())
            .bind(ring.seal(&crate::secrets::place("webhook_endpoints", "secret", &id), &new.secret))
            .bind(Timestamp::now().as_micros())
            .execute(&mut *conn)
            .await?;
            Ok(id)
        }

        pub(super) async fn endpoint(pool: &$pool, ring: &Keyring, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
            let row: Option<EndpointRow> = sqlx::query_as(concat!(
                "SELECT ",
                endpoint_columns!(),
                " FROM webhook_endpoints WHERE id = $1 AND disabled_at IS NULL"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?;
            row.map(|r| r.open(ring)).transpose()
        }

        pub(super) async fn list(pool: &$pool, ring: &Keyring, project_id: Option<&str>) -> StoreResult<Vec<WebhookEndpoint>> {
            let rows: Vec<EndpointRow> = sqlx::query_as(concat!(
                "SELECT ",
                endpoint_columns!(),
                " FROM webhook_endpoints WHERE disabled_at IS NULL AND ($1 IS NULL OR project_id = $1) ORDER BY created_at"
            ))
            .bind(project_id)
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(|r| r.open(ring)).collect()
        }

        /// Removes an active endpoint in the caller's transaction (its pending deliveries fail);
        /// returns it, if it was active.
        pub(super) async fn remove(conn: &mut $conn, ring: &Keyring, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
            let row: Option<EndpointRow> = sqlx::query_as(concat!(
                "SELECT ",
                endpoint_columns!(),
                " FROM webhook_endpoints WHERE id = $1 AND disabled_at IS NULL"
            ))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(found) = row.map(|r| r.open(ring)).transpose()? else { return Ok(None) };
            let now = Timestamp::now().as_micros();
            sqlx::query("UPDATE webhook_endpoints SET disabled_at = $1 WHERE id = $2").bind(now).bind(id).execute(&mut *conn).await?;
            sqlx::query(
                "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, \
                 last_error = 'the endpoint was removed' WHERE target = $1 AND channel = 'webhook' AND status = 'pending'",
            )
            .bind(id)
            .execute(&mut *conn)
            .await?;
            Ok(Some(found))
        }
    };
}
pub(crate) use webhook_queries;

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(events: &str, format: &str) -> EndpointRow {
        EndpointRow {
            id: "wh_1".into(),
            project_id: "p1".into(),
            url: "https://example.com/hook".into(),
            events: events.into(),
            format: format.into(),
            secret: "whsec_x".into(),
            created_at: 0,
        }
    }

    #[test]
    fn events_and_format_are_stored_by_name_and_read_back_typed() {
        let events = [EventType::FunctionCallCompleted, EventType::HumanContactEscalated];
        let text = events_text(&events);
        assert_eq!(text, r#"["function_call.completed","human_contact.escalated"]"#);
        let endpoint = WebhookEndpoint::try_from(stored(&text, "legacy")).unwrap();
        assert_eq!((endpoint.events, endpoint.format), (events.to_vec(), Format::Legacy));
    }

    #[test]
    fn an_unknown_stored_event_or_format_is_an_error_not_a_default() {
        for (events, format) in [(r#"["function_call.done"]"#, "v1beta2"), ("[]", "xml"), ("nonsense", "legacy")] {
            let err = WebhookEndpoint::try_from(stored(events, format)).unwrap_err();
            assert!(matches!(&err, StoreError::Internal(m) if m.contains("wh_1")), "{err}");
        }
    }
}
