//! Webhook endpoints and the delivery outbox: the queries both backends share (the outbox rows are
//! routed from the event log, see [`crate::events`]). Only the claim differs:
//! PostgreSQL skips rows another instance has locked.

use countersign_core::{RequestKind, Timestamp};

/// A webhook endpoint of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: String,
    pub project_id: String,
    pub url: String,
    /// Event names, e.g. `function_call.completed`.
    pub events: Vec<String>,
    /// `v1beta2` or `legacy`.
    pub format: String,
    /// `whsec_...`; shown once when created.
    pub secret: String,
    pub created_at: Timestamp,
}

/// What to store for a new endpoint.
#[derive(Debug, Clone)]
pub struct NewWebhookEndpoint {
    pub project_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub format: String,
    pub secret: String,
}

/// Where a delivery stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub endpoint_id: String,
    pub project_id: String,
    pub kind: RequestKind,
    pub call_id: String,
    pub event_type: String,
    /// How many escalations the request had when the event happened.
    pub event_seq: u32,
    pub created_at: Timestamp,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<Timestamp>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub last_latency_ms: Option<u64>,
    pub delivered_at: Option<Timestamp>,
}

/// One attempt at a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempt: u32,
    pub at: Timestamp,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
}

/// A delivery claimed by one worker for its next attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    /// Proves the claim when the attempt is recorded.
    pub lease: String,
    pub endpoint: WebhookEndpoint,
}

/// How an attempt went.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub at: Timestamp,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
    /// A 2xx answer.
    pub delivered: bool,
    /// When not delivered: the next attempt, or `None` to give up (failed).
    pub retry_at: Option<Timestamp>,
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

impl From<EndpointRow> for WebhookEndpoint {
    fn from(r: EndpointRow) -> Self {
        Self {
            id: r.id,
            project_id: r.project_id,
            url: r.url,
            events: serde_json::from_str(&r.events).unwrap_or_default(),
            format: r.format,
            secret: r.secret,
            created_at: Timestamp::from_micros(r.created_at),
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    id: String,
    endpoint_id: String,
    project_id: String,
    kind: String,
    call_id: String,
    event_type: String,
    event_seq: i64,
    created_at: i64,
    status: String,
    attempts: i64,
    next_attempt_at: Option<i64>,
    last_status: Option<i64>,
    last_error: Option<String>,
    last_latency_ms: Option<i64>,
    delivered_at: Option<i64>,
}

impl From<DeliveryRow> for Delivery {
    fn from(r: DeliveryRow) -> Self {
        Self {
            id: r.id,
            endpoint_id: r.endpoint_id,
            project_id: r.project_id,
            kind: RequestKind::parse(&r.kind).unwrap_or(RequestKind::FunctionCall),
            call_id: r.call_id,
            event_type: r.event_type,
            event_seq: u32::try_from(r.event_seq).unwrap_or(0),
            created_at: Timestamp::from_micros(r.created_at),
            status: r.status,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            next_attempt_at: r.next_attempt_at.map(Timestamp::from_micros),
            last_status: r.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: r.last_error,
            last_latency_ms: r.last_latency_ms.and_then(|l| u64::try_from(l).ok()),
            delivered_at: r.delivered_at.map(Timestamp::from_micros),
        }
    }
}

macro_rules! endpoint_columns {
    () => {
        "id, project_id, url, events, format, secret, created_at"
    };
}
macro_rules! delivery_columns {
    () => {
        "id, endpoint_id, project_id, kind, call_id, event_type, event_seq, created_at, status, attempts, \
         next_attempt_at, last_status, last_error, last_latency_ms, delivered_at"
    };
}
pub(crate) use {delivery_columns, endpoint_columns};

/// Defines the webhook queries over one pool type; `$skip_locked` ends the claim's row selection
/// (`FOR UPDATE SKIP LOCKED` on PostgreSQL, nothing on SQLite, whose writes are serialized), and
/// `$relaxed` (run first in the worker's transactions) lets them commit without waiting for the
/// disk: losing a claim or an attempt record in a crash only means one more delivery, which
/// at-least-once allows. (SQLite gets the same from its bookkeeping connection's settings.)
macro_rules! webhook_queries {
    ($pool:ty, $skip_locked:literal, $relaxed:literal) => {
        use crate::webhooks::{
            Attempt, AttemptOutcome, Claimed, Delivery, DeliveryRow, EndpointRow, NewWebhookEndpoint, WebhookEndpoint,
            delivery_columns, endpoint_columns,
        };
        use crate::StoreResult;
        use countersign_core::Timestamp;

        pub(super) async fn add(pool: &$pool, new: &NewWebhookEndpoint) -> StoreResult<WebhookEndpoint> {
            let id = format!("wh_{}", uuid::Uuid::now_v7().simple());
            let events = serde_json::to_string(&new.events).expect("strings serialize");
            sqlx::query(
                "INSERT INTO webhook_endpoints (id, project_id, url, events, format, secret, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&id)
            .bind(&new.project_id)
            .bind(&new.url)
            .bind(&events)
            .bind(&new.format)
            .bind(&new.secret)
            .bind(Timestamp::now().as_micros())
            .execute(pool)
            .await?;
            Ok(endpoint(pool, &id).await?.expect("just inserted"))
        }

        pub(super) async fn endpoint(pool: &$pool, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
            let row: Option<EndpointRow> = sqlx::query_as(concat!(
                "SELECT ",
                endpoint_columns!(),
                " FROM webhook_endpoints WHERE id = $1 AND disabled_at IS NULL"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(Into::into))
        }

        pub(super) async fn list(pool: &$pool, project_id: Option<&str>) -> StoreResult<Vec<WebhookEndpoint>> {
            let rows: Vec<EndpointRow> = sqlx::query_as(concat!(
                "SELECT ",
                endpoint_columns!(),
                " FROM webhook_endpoints WHERE disabled_at IS NULL AND ($1 IS NULL OR project_id = $1) ORDER BY created_at"
            ))
            .bind(project_id)
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        pub(super) async fn remove(pool: &$pool, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
            let found = endpoint(pool, id).await?;
            if found.is_some() {
                let now = Timestamp::now().as_micros();
                let mut tx = pool.begin().await?;
                sqlx::query("UPDATE webhook_endpoints SET disabled_at = $1 WHERE id = $2").bind(now).bind(id).execute(&mut *tx).await?;
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, \
                     last_error = 'the endpoint was removed' WHERE endpoint_id = $1 AND status = 'pending'",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            Ok(found)
        }

        pub(super) async fn deliveries(pool: &$pool, endpoint_id: &str, limit: u32) -> StoreResult<Vec<Delivery>> {
            let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
                "SELECT ",
                delivery_columns!(),
                " FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY created_at DESC, id LIMIT $2"
            ))
            .bind(endpoint_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        pub(super) async fn delivery(pool: &$pool, id: &str) -> StoreResult<Option<Delivery>> {
            let row: Option<DeliveryRow> =
                sqlx::query_as(concat!("SELECT ", delivery_columns!(), " FROM webhook_deliveries WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            Ok(row.map(Into::into))
        }

        pub(super) async fn attempts(pool: &$pool, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
            let rows: Vec<(i64, i64, Option<i64>, Option<String>, i64)> = sqlx::query_as(
                "SELECT attempt, at, status_code, error, latency_ms FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt",
            )
            .bind(delivery_id)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(attempt, at, status_code, error, latency_ms)| Attempt {
                    attempt: u32::try_from(attempt).unwrap_or(0),
                    at: Timestamp::from_micros(at),
                    status_code: status_code.and_then(|s| u16::try_from(s).ok()),
                    error,
                    latency_ms: u64::try_from(latency_ms).unwrap_or(0),
                })
                .collect())
        }

        pub(super) async fn claim(
            pool: &$pool,
            now: Timestamp,
            lease_until: Timestamp,
            limit: u32,
        ) -> StoreResult<Vec<Claimed>> {
            let lease = countersign_core::session::random_text(24);
            let mut tx = pool.begin().await?;
            if !$relaxed.is_empty() {
                sqlx::query($relaxed).execute(&mut *tx).await?;
            }
            let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
                "UPDATE webhook_deliveries SET lease = $1, lease_until = $2 WHERE id IN (SELECT id FROM webhook_deliveries \
                 WHERE status = 'pending' AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
                 ORDER BY next_attempt_at LIMIT $4 ",
                $skip_locked,
                ") RETURNING ",
                delivery_columns!()
            ))
            .bind(&lease)
            .bind(lease_until.as_micros())
            .bind(now.as_micros())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            let mut endpoints: std::collections::HashMap<String, Option<WebhookEndpoint>> = Default::default();
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let delivery = Delivery::from(row);
                if !endpoints.contains_key(&delivery.endpoint_id) {
                    let ep: Option<EndpointRow> =
                        sqlx::query_as(concat!("SELECT ", endpoint_columns!(), " FROM webhook_endpoints WHERE id = $1"))
                            .bind(&delivery.endpoint_id)
                            .fetch_optional(pool)
                            .await?;
                    endpoints.insert(delivery.endpoint_id.clone(), ep.map(Into::into));
                }
                if let Some(Some(endpoint)) = endpoints.get(&delivery.endpoint_id) {
                    out.push(Claimed { delivery, lease: lease.clone(), endpoint: endpoint.clone() });
                }
            }
            Ok(out)
        }

        pub(super) async fn finish(pool: &$pool, attempts: &[(Claimed, AttemptOutcome)]) -> StoreResult<Vec<bool>> {
            let mut tx = pool.begin().await?;
            if !$relaxed.is_empty() {
                sqlx::query($relaxed).execute(&mut *tx).await?;
            }
            let mut recorded = Vec::with_capacity(attempts.len());
            for (claimed, outcome) in attempts {
                let attempt = i64::from(claimed.delivery.attempts) + 1;
                let (status, next) = match (outcome.delivered, outcome.retry_at) {
                    (true, _) => ("delivered", None),
                    (false, Some(at)) => ("pending", Some(at.as_micros())),
                    (false, None) => ("failed", None),
                };
                let updated = sqlx::query(
                    "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3, lease = NULL, \
                     lease_until = NULL, last_status = $4, last_error = $5, last_latency_ms = $6, \
                     delivered_at = CASE WHEN $1 = 'delivered' THEN $7 ELSE delivered_at END \
                     WHERE id = $8 AND lease = $9",
                )
                .bind(status)
                .bind(attempt)
                .bind(next)
                .bind(outcome.status_code.map(i64::from))
                .bind(outcome.error.as_deref())
                .bind(i64::try_from(outcome.latency_ms).unwrap_or(i64::MAX))
                .bind(outcome.at.as_micros())
                .bind(&claimed.delivery.id)
                .bind(&claimed.lease)
                .execute(&mut *tx)
                .await?;
                // Not updated: the lease expired and another worker took the delivery over.
                let done = updated.rows_affected() == 1;
                if done {
                    sqlx::query(
                        "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, latency_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    )
                    .bind(&claimed.delivery.id)
                    .bind(attempt)
                    .bind(outcome.at.as_micros())
                    .bind(outcome.status_code.map(i64::from))
                    .bind(outcome.error.as_deref())
                    .bind(i64::try_from(outcome.latency_ms).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await?;
                }
                recorded.push(done);
            }
            tx.commit().await?;
            Ok(recorded)
        }

        pub(super) async fn redeliver(pool: &$pool, id: &str) -> StoreResult<Option<Delivery>> {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, lease = NULL, lease_until = NULL \
                 WHERE id = $2 AND endpoint_id IN (SELECT id FROM webhook_endpoints WHERE disabled_at IS NULL)",
            )
            .bind(Timestamp::now().as_micros())
            .bind(id)
            .execute(pool)
            .await?;
            delivery(pool, id).await
        }

        pub(super) async fn next_due(pool: &$pool) -> StoreResult<Option<Timestamp>> {
            let row: Option<(Option<i64>,)> = sqlx::query_as(
                "SELECT MIN(COALESCE(CASE WHEN lease_until > next_attempt_at THEN lease_until END, next_attempt_at)) \
                 FROM webhook_deliveries WHERE status = 'pending'",
            )
            .fetch_optional(pool)
            .await?;
            Ok(row.and_then(|(at,)| at).map(Timestamp::from_micros))
        }
    };
}
pub(crate) use webhook_queries;
