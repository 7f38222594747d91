//! The event log: every change to a request is written with its event, in the change's own
//! transaction, by the backend's write path. After commit, two steps read the log:
//!
//! - **sealing** gives each event its position in its project's hash chain (SQLite seals in the
//!   writer's transaction; on PostgreSQL one instance, the leader, seals shortly after commit);
//! - **routing** turns each event into the deliveries the channels want (webhook POSTs, emails),
//!   by the rules of [`countersign_core::route`]: on SQLite in the writer's transaction, so a
//!   change, its event and its deliveries commit together; on PostgreSQL in the sealer's
//!   transaction, which then wakes the delivery workers.
//!
//! Routing is idempotent: a delivery's id is derived from its event and target, so
//! routing an event again after a lost commit queues the very same delivery (same `webhook-id`,
//! same Message-ID).

use countersign_core::Timestamp;
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

/// The name of the server key routing derives delivery ids from.
pub(crate) const ROUTE_SALT: &str = "route_salt";

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

/// Appends a project event on SQLite, sealed at once (in the caller's write transaction, which
/// holds SQLite's write lock, so it cannot interleave with the writer's batches).
pub(crate) async fn log_project_event_sqlite(
    conn: &mut sqlx::SqliteConnection,
    event: &countersign_core::event::ProjectEvent,
) -> crate::StoreResult<()> {
    let row = Logged::project(event);
    log_sqlite(conn, &row).await
}

/// A request event appended outside the group-commit writer (a vote), sealed at once; true if
/// it queued deliveries (announce them once committed).
pub(crate) async fn log_request_event_sqlite(
    conn: &mut sqlx::SqliteConnection,
    event: &countersign_core::event::RequestEvent,
) -> crate::StoreResult<bool> {
    use countersign_core::route::{ProjectChannels, SpecChannels, routes};
    log_sqlite(conn, &Logged::request(event)).await?;
    // Routed in the same transaction, as the writer routes its events (a vote updates Slack).
    let slack = sqlx::query("SELECT 1 FROM slack_connections WHERE project_id = $1")
        .bind(&event.project_id)
        .fetch_optional(&mut *conn)
        .await?
        .is_some();
    let project = ProjectChannels { slack, ..ProjectChannels::default() };
    let routed = routes(event, SpecChannels::NOBODY, &[], project);
    if routed.is_empty() {
        return Ok(false);
    }
    let salt: String = sqlx::query_scalar("SELECT value FROM server_keys WHERE name = $1")
        .bind(ROUTE_SALT)
        .fetch_one(&mut *conn)
        .await?;
    for route in routed {
        sqlx::query(
            "INSERT INTO deliveries (id, channel, target, project_id, kind, call_id, event_type, event_seq, \
             created_at, status, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, 'pending', $8) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(route.delivery_id(&salt, event, 0))
        .bind(route.channel.as_str())
        .bind(route.target)
        .bind(&event.project_id)
        .bind(event.request_kind.as_str())
        .bind(&event.call_id)
        .bind(event.webhook_event().as_str())
        .bind(event.at.as_micros())
        .execute(&mut *conn)
        .await?;
    }
    Ok(true)
}

/// A request event appended outside the change statements (a vote); sealed and routed by the
/// leader, whose sealer announces the deliveries (so this never says it queued any itself).
pub(crate) async fn log_request_event_postgres(
    conn: &mut sqlx::PgConnection,
    event: &countersign_core::event::RequestEvent,
) -> crate::StoreResult<bool> {
    log_postgres(conn, &Logged::request(event)).await?;
    Ok(false)
}

/// The columns of an event logged outside the hot write paths.
pub(crate) struct Logged {
    project_id: String,
    request_kind: &'static str,
    call_id: String,
    kind: &'static str,
    at: i64,
    body: String,
}

impl Logged {
    fn project(event: &countersign_core::event::ProjectEvent) -> Self {
        Self {
            project_id: event.project_id.clone(),
            request_kind: countersign_core::event::ProjectEvent::REQUEST_KIND,
            call_id: String::new(),
            kind: event.kind_str(),
            at: event.at.as_micros(),
            body: event.to_json(),
        }
    }

    fn request(event: &countersign_core::event::RequestEvent) -> Self {
        Self {
            project_id: event.project_id.clone(),
            request_kind: event.request_kind.as_str(),
            call_id: event.call_id.clone(),
            kind: event.kind().as_str(),
            at: event.at.as_micros(),
            body: event.to_json(),
        }
    }
}

async fn log_sqlite(conn: &mut sqlx::SqliteConnection, event: &Logged) -> crate::StoreResult<()> {
    let body = &event.body;
    let head: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM chain_heads WHERE project_id = $1")
        .bind(&event.project_id)
        .fetch_optional(&mut *conn)
        .await?;
    let mut heads = Heads::default();
    if let Some((seq, hash)) = head {
        heads.insert(event.project_id.clone(), seq, &hash)?;
    }
    let (seq, prev, hash) = heads.seal(&event.project_id, body);
    let now = Timestamp::now().as_micros();
    sqlx::query(
        "INSERT INTO events (project_id, request_kind, call_id, type, at, escalations, body, seq, prev_hash, hash, \
         sealed_at, routed_at) VALUES ($1, $2, $10, $3, $4, 0, $5, $6, $7, $8, $9, $9)",
    )
    .bind(&event.project_id)
    .bind(event.request_kind)
    .bind(event.kind)
    .bind(event.at)
    .bind(body)
    .bind(seq)
    .bind(prev)
    .bind(&hash)
    .bind(now)
    .bind(&event.call_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO chain_heads (project_id, seq, hash) VALUES ($1, $2, $3) \
         ON CONFLICT (project_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .bind(&event.project_id)
    .bind(seq)
    .bind(&hash)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Appends a project event on PostgreSQL, unsealed: the leader's sealer seals it shortly after
/// commit, in order with the request events (it routes nowhere).
pub(crate) async fn log_project_event_postgres(
    conn: &mut sqlx::PgConnection,
    event: &countersign_core::event::ProjectEvent,
) -> crate::StoreResult<()> {
    log_postgres(conn, &Logged::project(event)).await
}

async fn log_postgres(conn: &mut sqlx::PgConnection, event: &Logged) -> crate::StoreResult<()> {
    sqlx::query(
        "INSERT INTO events (project_id, request_kind, call_id, type, at, escalations, body) \
         VALUES ($1, $2, $3, $4, $5, 0, $6)",
    )
    .bind(&event.project_id)
    .bind(event.request_kind)
    .bind(&event.call_id)
    .bind(event.kind)
    .bind(event.at)
    .bind(&event.body)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
