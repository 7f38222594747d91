//! The one delivery queue: a row per event and channel (each webhook endpoint that subscribed to
//! the event, the event's email), routed from the event log in the transaction that writes or
//! seals the event (see [`crate::events`]). A worker per channel claims due rows with a lease, the
//! channel attempts them, and the outcomes are recorded in batches with every attempt logged.
//! The queries are the same on both backends but for the claim's row selection (PostgreSQL skips
//! rows another instance has locked).

use crate::StoreError;
use countersign_core::route::{Channel, DeliveryStatus};
use countersign_core::webhook::EventType;
use countersign_core::{RequestKind, Timestamp};

/// One event's delivery on one channel, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The `webhook-id` header of a webhook; the Message-ID (with its angle brackets) of an email.
    pub id: String,
    pub channel: Channel,
    /// The webhook endpoint's id; `None` for email.
    pub target: Option<String>,
    pub project_id: String,
    pub kind: RequestKind,
    pub call_id: String,
    pub event_type: EventType,
    /// How many escalations the request had when the event happened (for an escalation: which
    /// one, 1 being the first).
    pub event_seq: u32,
    pub created_at: Timestamp,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: Option<Timestamp>,
    /// The HTTP status a webhook endpoint last answered.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub last_latency_ms: Option<u64>,
    pub delivered_at: Option<Timestamp>,
    /// An email's recipients, once sent.
    pub recipients: Vec<String>,
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
}

/// How an attempt went.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub at: Timestamp,
    /// A webhook endpoint's HTTP status.
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
    /// Delivered (a 2xx answer, an email accepted).
    pub delivered: bool,
    /// When not delivered: the next attempt, or `None` to give up (failed).
    pub retry_at: Option<Timestamp>,
    /// An email's recipients, when sent.
    pub recipients: Vec<String>,
    /// Not attempted after all, only put off until `retry_at` (a channel pacing its sends): no
    /// attempt is counted or logged.
    pub deferred: bool,
}

impl AttemptOutcome {
    /// The status the delivery has after this attempt, and its next attempt.
    pub(crate) fn next(&self) -> (DeliveryStatus, Option<i64>) {
        match (self.delivered, self.retry_at) {
            (true, _) => (DeliveryStatus::Delivered, None),
            (false, Some(at)) => (DeliveryStatus::Pending, Some(at.as_micros())),
            (false, None) => (DeliveryStatus::Failed, None),
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    id: String,
    channel: String,
    target: Option<String>,
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
    recipients: Option<String>,
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;

    fn try_from(r: DeliveryRow) -> Result<Self, StoreError> {
        let bad =
            |what: &str, value: &str| StoreError::Internal(format!("delivery {}: unknown {what} {value:?}", r.id));
        Ok(Self {
            channel: Channel::parse(&r.channel).ok_or_else(|| bad("channel", &r.channel))?,
            kind: RequestKind::parse(&r.kind).ok_or_else(|| bad("request kind", &r.kind))?,
            event_type: EventType::parse(&r.event_type).ok_or_else(|| bad("event type", &r.event_type))?,
            status: DeliveryStatus::parse(&r.status).ok_or_else(|| bad("status", &r.status))?,
            recipients: match &r.recipients {
                Some(text) => serde_json::from_str(text).map_err(|_| bad("recipient list", text))?,
                None => Vec::new(),
            },
            id: r.id,
            target: r.target,
            project_id: r.project_id,
            call_id: r.call_id,
            event_seq: u32::try_from(r.event_seq).unwrap_or(0),
            created_at: Timestamp::from_micros(r.created_at),
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            next_attempt_at: r.next_attempt_at.map(Timestamp::from_micros),
            last_status: r.last_status.and_then(|s| u16::try_from(s).ok()),
            last_error: r.last_error,
            last_latency_ms: r.last_latency_ms.and_then(|l| u64::try_from(l).ok()),
            delivered_at: r.delivered_at.map(Timestamp::from_micros),
        })
    }
}

/// Rows that cannot be read are left out (and logged) rather than failing the whole list: one
/// bad row holds up only itself.
pub(crate) fn readable(rows: Vec<DeliveryRow>) -> Vec<Delivery> {
    rows.into_iter()
        .filter_map(|row| {
            Delivery::try_from(row)
                .inspect_err(|err| tracing::error!(%err, "a delivery cannot be read; it is skipped"))
                .ok()
        })
        .collect()
}

macro_rules! delivery_columns {
    () => {
        "id, channel, target, project_id, kind, call_id, event_type, event_seq, created_at, status, attempts, \
         next_attempt_at, last_status, last_error, last_latency_ms, delivered_at, recipients"
    };
}
pub(crate) use delivery_columns;

/// Defines the queue's queries over one pool type; `$skip_locked` ends the claim's row selection
/// (`FOR UPDATE SKIP LOCKED` on PostgreSQL, nothing on SQLite, whose writes are serialized), and
/// `$relaxed` (run first in the worker's transactions) lets them commit without waiting for the
/// disk: losing a claim or an attempt record in a crash only means one more attempt, which
/// at-least-once allows. (SQLite gets the same from its bookkeeping connection's settings.)
macro_rules! queue_queries {
    ($pool:ty, $skip_locked:literal, $relaxed:literal) => {
        use crate::StoreResult;
        use crate::error::forget_on_error;
        use crate::queue::{Attempt, AttemptOutcome, Claimed, Delivery, DeliveryRow, delivery_columns, readable};
        use countersign_core::route::Channel;
        use countersign_core::{RequestKind, Timestamp};

        pub(crate) async fn claim(
            pool: &$pool,
            channel: Channel,
            now: Timestamp,
            lease_until: Timestamp,
            limit: u32,
        ) -> StoreResult<Vec<Claimed>> {
            let mut conn = pool.acquire().await?;
            // On SQLite (no SKIP LOCKED: its writes are serialized), a read first. The workers are
            // woken after every write, mostly with nothing due, and an UPDATE takes SQLite's write
            // lock even when it matches nothing: it then contended with the group-commit writer,
            // whose transaction waited in the busy handler for a millisecond or more each time.
            // (PostgreSQL's UPDATE of no rows blocks no one.) The row is only looked for, not
            // read.
            if $skip_locked.is_empty() {
                let due: StoreResult<Option<_>> = sqlx::query(
                    "SELECT 1 FROM deliveries WHERE channel = $1 AND status = 'pending' AND next_attempt_at <= $2 \
                     AND (lease_until IS NULL OR lease_until < $2) LIMIT 1",
                )
                .bind(channel.as_str())
                .bind(now.as_micros())
                .fetch_optional(&mut *conn)
                .await
                .map_err(Into::into);
                if forget_on_error(&mut conn, due)?.is_none() {
                    return Ok(Vec::new());
                }
            }
            let lease = countersign_core::session::random_text(24);
            let claimed: StoreResult<Vec<DeliveryRow>> = async {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                if !$relaxed.is_empty() {
                    sqlx::query($relaxed).execute(&mut *tx).await?;
                }
                let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
                    "UPDATE deliveries SET lease = $1, lease_until = $2 WHERE id IN (SELECT id FROM deliveries \
                 WHERE channel = $3 AND status = 'pending' AND next_attempt_at <= $4 \
                 AND (lease_until IS NULL OR lease_until < $4) ORDER BY next_attempt_at LIMIT $5 ",
                    $skip_locked,
                    ") RETURNING ",
                    delivery_columns!()
                ))
                .bind(&lease)
                .bind(lease_until.as_micros())
                .bind(channel.as_str())
                .bind(now.as_micros())
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(rows)
            }
            .await;
            let rows = forget_on_error(&mut conn, claimed)?;
            Ok(readable(rows).into_iter().map(|delivery| Claimed { delivery, lease: lease.clone() }).collect())
        }

        pub(crate) async fn finish(pool: &$pool, attempts: &[(Claimed, AttemptOutcome)]) -> StoreResult<Vec<bool>> {
            let mut conn = pool.acquire().await?;
            let finished: StoreResult<Vec<bool>> = async {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                if !$relaxed.is_empty() {
                    sqlx::query($relaxed).execute(&mut *tx).await?;
                }
                let mut recorded = Vec::with_capacity(attempts.len());
                for (claimed, outcome) in attempts {
                    if outcome.deferred {
                        let updated = sqlx::query(
                            "UPDATE deliveries SET next_attempt_at = $1, lease = NULL, lease_until = NULL \
                         WHERE id = $2 AND lease = $3",
                        )
                        .bind(outcome.retry_at.unwrap_or(outcome.at).as_micros())
                        .bind(&claimed.delivery.id)
                        .bind(&claimed.lease)
                        .execute(&mut *tx)
                        .await?;
                        recorded.push(updated.rows_affected() == 1);
                        continue;
                    }
                    let attempt = i64::from(claimed.delivery.attempts) + 1;
                    let (status, next) = outcome.next();
                    let recipients = (!outcome.recipients.is_empty())
                        .then(|| serde_json::to_string(&outcome.recipients).expect("strings serialize"));
                    let updated = sqlx::query(
                        "UPDATE deliveries SET status = $1, attempts = $2, next_attempt_at = $3, lease = NULL, \
                     lease_until = NULL, last_status = $4, last_error = $5, last_latency_ms = $6, \
                     delivered_at = CASE WHEN $1 = 'delivered' THEN $7 ELSE delivered_at END, \
                     recipients = COALESCE($10, recipients) WHERE id = $8 AND lease = $9",
                    )
                    .bind(status.as_str())
                    .bind(attempt)
                    .bind(next)
                    .bind(outcome.status_code.map(i64::from))
                    .bind(outcome.error.as_deref())
                    .bind(i64::try_from(outcome.latency_ms).unwrap_or(i64::MAX))
                    .bind(outcome.at.as_micros())
                    .bind(&claimed.delivery.id)
                    .bind(&claimed.lease)
                    .bind(recipients)
                    .execute(&mut *tx)
                    .await?;
                    // Not updated: the lease expired and another worker took the delivery over.
                    let done = updated.rows_affected() == 1;
                    if done {
                        sqlx::query(
                            "INSERT INTO delivery_attempts (delivery_id, attempt, at, status_code, error, latency_ms) \
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
            .await;
            forget_on_error(&mut conn, finished)
        }

        pub(crate) async fn next_due(pool: &$pool, channel: Channel) -> StoreResult<Option<Timestamp>> {
            let row: Option<(Option<i64>,)> = sqlx::query_as(
                "SELECT MIN(COALESCE(CASE WHEN lease_until > next_attempt_at THEN lease_until END, next_attempt_at)) \
                 FROM deliveries WHERE channel = $1 AND status = 'pending'",
            )
            .bind(channel.as_str())
            .fetch_optional(pool)
            .await?;
            Ok(row.and_then(|(at,)| at).map(Timestamp::from_micros))
        }

        pub(crate) async fn delivery(pool: &$pool, id: &str) -> StoreResult<Option<Delivery>> {
            let rows: Vec<DeliveryRow> =
                sqlx::query_as(concat!("SELECT ", delivery_columns!(), " FROM deliveries WHERE id = $1"))
                    .bind(id)
                    .fetch_all(pool)
                    .await?;
            Ok(readable(rows).pop())
        }

        pub(crate) async fn of_target(pool: &$pool, target: &str, limit: u32) -> StoreResult<Vec<Delivery>> {
            let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
                "SELECT ",
                delivery_columns!(),
                " FROM deliveries WHERE target = $1 ORDER BY created_at DESC, id LIMIT $2"
            ))
            .bind(target)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            Ok(readable(rows))
        }

        pub(crate) async fn of_request(
            pool: &$pool,
            channel: Channel,
            project_id: &str,
            kind: RequestKind,
            call_id: &str,
        ) -> StoreResult<Vec<Delivery>> {
            let rows: Vec<DeliveryRow> = sqlx::query_as(concat!(
                "SELECT ",
                delivery_columns!(),
                " FROM deliveries WHERE project_id = $1 AND kind = $2 AND call_id = $3 AND channel = $4 \
                 ORDER BY created_at, id"
            ))
            .bind(project_id)
            .bind(kind.as_str())
            .bind(call_id)
            .bind(channel.as_str())
            .fetch_all(pool)
            .await?;
            Ok(readable(rows))
        }

        /// The first delivery of `channel` found among `ids`, in their order.
        pub(crate) async fn first_of(pool: &$pool, channel: Channel, ids: &[String]) -> StoreResult<Option<Delivery>> {
            for id in ids {
                if let Some(found) = delivery(pool, id).await?.filter(|d| d.channel == channel) {
                    return Ok(Some(found));
                }
            }
            Ok(None)
        }

        pub(crate) async fn attempts(pool: &$pool, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
            let rows: Vec<(i64, i64, Option<i64>, Option<String>, i64)> = sqlx::query_as(
                "SELECT attempt, at, status_code, error, latency_ms FROM delivery_attempts WHERE delivery_id = $1 \
                 ORDER BY attempt",
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
    };
}
pub(crate) use queue_queries;
