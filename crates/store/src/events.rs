//! The event log: every change to a request is written with its event, in the change's own
//! transaction, by the backend's write path. After commit, two steps read the log:
//!
//! - **sealing** gives each event its position in its project's hash chain (SQLite seals in the
//!   writer's transaction; on PostgreSQL one instance, the leader, seals shortly after commit);
//! - **routing** turns each event into the deliveries the channels want (webhook POSTs, emails),
//!   by the rules of [`countersign_core::route`]: on SQLite in the writer's transaction (any
//!   event left unrouted, in a delivery worker's claim); on PostgreSQL in the sealer's
//!   transaction, which then wakes the delivery workers.
//!
//! SQLite routes in the writer's transaction too, so a change, its event and its deliveries commit
//! together. Routing is idempotent: a delivery's id is derived from its event and target, so
//! routing an event again after a lost commit queues the very same delivery (same `webhook-id`,
//! same Message-ID).

use countersign_core::Timestamp;
use countersign_core::event::RequestEvent;
use countersign_core::event::{ChainHash, Checkpoint, chain_hash};
use std::collections::HashMap;

/// One sealed event, as the audit log exports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub project_id: String,
    /// Position in the project's chain (1 = first).
    pub seq: u64,
    pub prev_hash: ChainHash,
    pub hash: ChainHash,
    /// The event's JSON form: exactly the bytes its hash covers.
    pub body: String,
    pub sealed_at: Timestamp,
}

/// A project's chain as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    pub project_id: String,
    /// The last sealed event, as recorded when it was sealed (`None` before the first).
    pub head: Option<Checkpoint>,
    /// Events committed but not sealed yet.
    pub unsealed: u64,
}

/// Where the next event of each project goes: the heads of the chains being extended.
#[derive(Debug, Default)]
pub(crate) struct Heads(HashMap<String, Checkpoint>);

impl Heads {
    /// Takes a stored head (`seq`, hex `hash`).
    pub(crate) fn insert(&mut self, project_id: String, seq: i64, hash: &str) -> crate::StoreResult<()> {
        let head = ChainHash::from_hex(hash)
            .ok_or_else(|| crate::StoreError::Internal(format!("chain head of {project_id} is not a hash")))?;
        self.0.insert(project_id, Checkpoint { count: u64::try_from(seq).unwrap_or(0), head });
        Ok(())
    }

    /// Seals the next event of a project: its position, previous hash and hash, all hex.
    pub(crate) fn seal(&mut self, project_id: &str, body: &str) -> (i64, String, String) {
        let head = self.0.entry(project_id.to_owned()).or_insert(Checkpoint { count: 0, head: ChainHash::GENESIS });
        let seq = head.count + 1;
        let hash = chain_hash(seq, &head.head, body.as_bytes());
        let prev = std::mem::replace(&mut head.head, hash);
        head.count = seq;
        (i64::try_from(seq).expect("chains stay below 2^63 events"), prev.to_hex(), hash.to_hex())
    }

    /// The heads moved, to store: (project, seq, hex hash).
    pub(crate) fn rows(&self) -> impl Iterator<Item = (&str, i64, String)> {
        self.0.iter().map(|(p, h)| (p.as_str(), i64::try_from(h.count).unwrap_or(i64::MAX), h.head.to_hex()))
    }
}

/// The id of the webhook delivery of an event to an endpoint (also its `webhook-id`).
pub(crate) fn delivery_id(salt: &str, event: &RequestEvent, escalations: i64, endpoint_id: &str) -> String {
    format!("msg_{}", countersign_core::route::delivery_key(salt, event, escalations, endpoint_id))
}

/// The Message-ID of the email of an event.
pub(crate) fn message_id(salt: &str, event: &RequestEvent, escalations: i64) -> String {
    format!("<{}@countersign>", countersign_core::route::delivery_key(salt, event, escalations, "email"))
}

/// The name of the server key routing derives delivery ids from.
pub(crate) const ROUTE_SALT: &str = "route_salt";

/// An event read back for routing.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct UnroutedRow {
    pub id: i64,
    pub project_id: String,
    pub escalations: i64,
    pub body: String,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AuditRow {
    project_id: String,
    seq: i64,
    prev_hash: String,
    hash: String,
    body: String,
    sealed_at: i64,
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = crate::StoreError;

    fn try_from(r: AuditRow) -> Result<Self, Self::Error> {
        // A hash that is not one (changed by hand) is read as zeros: verification then names it.
        let hash = |h: &str| ChainHash::from_hex(h).unwrap_or(ChainHash([0xff; 32]));
        Ok(Self {
            seq: u64::try_from(r.seq).map_err(|_| crate::StoreError::Internal(format!("event at {}", r.seq)))?,
            prev_hash: hash(&r.prev_hash),
            hash: hash(&r.hash),
            project_id: r.project_id,
            body: r.body,
            sealed_at: Timestamp::from_micros(r.sealed_at),
        })
    }
}

/// Who gets one routed event.
pub(crate) struct Routes<'a> {
    pub webhooks: Vec<&'a crate::WebhookEndpoint>,
    pub email: Option<countersign_core::route::EmailPurpose>,
    pub event: countersign_core::event::RequestEvent,
}

/// Applies the routing rules to an event read back from the log; `None` (and a warning) when its
/// bytes are no event this version reads: it is skipped, never retried forever.
pub(crate) fn routes<'a>(
    row: &UnroutedRow,
    endpoints: &'a [crate::WebhookEndpoint],
    project: countersign_core::route::ProjectChannels,
) -> Option<Routes<'a>> {
    use countersign_core::route::{email_wants, webhook_wants};
    let event = match countersign_core::event::RequestEvent::from_json(&row.body) {
        Ok(event) => event,
        Err(err) => {
            tracing::warn!(event = row.id, %err, "an event in the log cannot be read; nothing is delivered for it");
            return None;
        }
    };
    Some(Routes {
        webhooks: endpoints.iter().filter(|e| webhook_wants(&e.events, &event)).collect(),
        email: email_wants(&event, project),
        event,
    })
}

/// Queries of the event log both backends share: `$lock` locks the events a router takes, and
/// `$route_in_claims` says whether delivery workers route what is left unrouted (SQLite, where
/// the writer routes and this only catches up; PostgreSQL routes in the sealer instead).
macro_rules! event_queries {
    ($pool:ty, $conn:ty, $lock:literal, $route_in_claims:literal) => {
        use crate::events::{AuditEvent, AuditRow, ChainState, UnroutedRow, delivery_id, message_id, routes};
        use crate::webhooks::{EndpointRow, endpoint_columns};
        use crate::{StoreResult, WebhookEndpoint};
        use countersign_core::Timestamp;
        use countersign_core::event::{ChainHash, Checkpoint};
        use countersign_core::route::ProjectChannels;

        /// Most events routed in one claim.
        const ROUTE_BATCH: i64 = 256;
        /// Rows per multi-row INSERT of deliveries (10 parameters each).
        const ROWS: usize = 100;

        /// Routes up to [`ROUTE_BATCH`] unrouted events, in the caller's transaction: queues
        /// their webhook deliveries and emails and marks them routed. Returns how many it routed.
        pub(super) async fn route(conn: &mut $conn, salt: &str, now: Timestamp) -> StoreResult<usize> {
            if !$route_in_claims {
                return Ok(0);
            }
            let rows: Vec<UnroutedRow> = sqlx::query_as(concat!(
                "UPDATE events SET routed_at = $1 WHERE routed_at IS NULL AND id IN \
                 (SELECT id FROM events WHERE routed_at IS NULL ORDER BY id LIMIT $2 ",
                $lock,
                ") RETURNING id, project_id, escalations, body"
            ))
            .bind(now.as_micros())
            .bind(ROUTE_BATCH)
            .fetch_all(&mut *conn)
            .await?;
            if rows.is_empty() {
                return Ok(0);
            }
            let mut projects: std::collections::HashMap<String, (Vec<WebhookEndpoint>, ProjectChannels)> =
                Default::default();
            for row in &rows {
                if projects.contains_key(&row.project_id) {
                    continue;
                }
                let endpoints: Vec<EndpointRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    endpoint_columns!(),
                    " FROM webhook_endpoints WHERE project_id = $1 AND disabled_at IS NULL"
                ))
                .bind(&row.project_id)
                .fetch_all(&mut *conn)
                .await?;
                let default: Option<(Option<String>,)> = sqlx::query_as("SELECT default_email FROM projects WHERE id = $1")
                    .bind(&row.project_id)
                    .fetch_optional(&mut *conn)
                    .await?;
                let channels = ProjectChannels { default_email: default.and_then(|(d,)| d).is_some() };
                projects.insert(row.project_id.clone(), (endpoints.into_iter().map(Into::into).collect(), channels));
            }
            let mut deliveries = Vec::new();
            let mut emails = Vec::new();
            for row in &rows {
                let (endpoints, channels) = &projects[&row.project_id];
                let Some(r) = routes(row, endpoints, *channels) else { continue };
                let at = r.event.at.as_micros();
                let kind = r.event.request_kind.as_str();
                for endpoint in r.webhooks {
                    let id = delivery_id(salt, &r.event, row.escalations, &endpoint.id);
                    let what = r.event.webhook_event().as_str();
                    deliveries.push((id, endpoint.id.clone(), row, kind, r.event.call_id.clone(), what, at));
                }
                if let Some(purpose) = r.email {
                    emails.push((message_id(salt, &r.event, row.escalations), row, kind, r.event.call_id.clone(), purpose.as_str(), at));
                }
            }
            for chunk in deliveries.chunks(ROWS) {
                let mut sql = String::from(
                    "INSERT INTO webhook_deliveries (id, endpoint_id, project_id, kind, call_id, event_type, event_seq, \
                     created_at, status, next_attempt_at) VALUES ",
                );
                for i in 0..chunk.len() {
                    let p = i * 9;
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, 'pending', ${})",
                        p + 1, p + 2, p + 3, p + 4, p + 5, p + 6, p + 7, p + 8, p + 9
                    ));
                }
                sql.push_str(" ON CONFLICT (id) DO NOTHING");
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (id, endpoint_id, row, kind, call_id, what, at) in chunk {
                    query = query
                        .bind(id)
                        .bind(endpoint_id)
                        .bind(&row.project_id)
                        .bind(*kind)
                        .bind(call_id)
                        .bind(*what)
                        .bind(row.escalations)
                        .bind(*at)
                        .bind(*at);
                }
                query.execute(&mut *conn).await?;
            }
            for chunk in emails.chunks(ROWS) {
                let mut sql = String::from(
                    "INSERT INTO email_messages (id, project_id, kind, call_id, purpose, event_seq, created_at, status, \
                     next_attempt_at) VALUES ",
                );
                for i in 0..chunk.len() {
                    let p = i * 8;
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${}, 'pending', ${})",
                        p + 1, p + 2, p + 3, p + 4, p + 5, p + 6, p + 7, p + 8
                    ));
                }
                sql.push_str(" ON CONFLICT (id) DO NOTHING");
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (id, row, kind, call_id, purpose, at) in chunk {
                    query = query
                        .bind(id)
                        .bind(&row.project_id)
                        .bind(*kind)
                        .bind(call_id)
                        .bind(*purpose)
                        .bind(row.escalations)
                        .bind(*at)
                        .bind(*at);
                }
                query.execute(&mut *conn).await?;
            }
            Ok(rows.len())
        }

        /// True when some committed event is not routed yet.
        pub(super) async fn unrouted(pool: &$pool) -> StoreResult<bool> {
            if !$route_in_claims {
                return Ok(false);
            }
            let row: Option<(i64,)> =
                sqlx::query_as("SELECT id FROM events WHERE routed_at IS NULL LIMIT 1").fetch_optional(pool).await?;
            Ok(row.is_some())
        }

        pub(super) async fn audit(pool: &$pool, project_id: &str, after: u64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
            let rows: Vec<AuditRow> = sqlx::query_as(
                "SELECT project_id, seq, prev_hash, hash, body, sealed_at FROM events \
                 WHERE project_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(project_id)
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(AuditEvent::try_from).collect()
        }

        pub(super) async fn chains(pool: &$pool, project_id: Option<&str>) -> StoreResult<Vec<ChainState>> {
            let rows: Vec<(String, Option<i64>, Option<String>, i64)> = sqlx::query_as(
                "SELECT p.project_id, h.seq, h.hash, \
                        (SELECT count(*) FROM events e WHERE e.project_id = p.project_id AND e.seq IS NULL) \
                 FROM (SELECT project_id FROM chain_heads UNION SELECT DISTINCT project_id FROM events) p \
                 LEFT JOIN chain_heads h ON h.project_id = p.project_id \
                 WHERE $1 IS NULL OR p.project_id = $1 ORDER BY p.project_id",
            )
            .bind(project_id)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(project_id, seq, hash, unsealed)| ChainState {
                    head: seq.zip(hash).map(|(seq, hash)| Checkpoint {
                        count: u64::try_from(seq).unwrap_or(0),
                        head: ChainHash::from_hex(&hash).unwrap_or(ChainHash([0xff; 32])),
                    }),
                    project_id,
                    unsealed: u64::try_from(unsealed).unwrap_or(0),
                })
                .collect())
        }
    };
}
pub(crate) use event_queries;
