//! The PostgreSQL backend, for several Countersign instances sharing one database. Every write is
//! its own transaction (PostgreSQL groups concurrent commits itself); the first decision wins
//! through a conditional UPDATE. Decisions and escalations NOTIFY in the same statement, so every
//! instance learns of them the moment they commit ([`Requests::changes`]).

mod listen;
mod sealer;

use crate::row::outcome_columns;
use crate::{Change, Created, Feed, Listings, Requests, StoreError, StoreResult};
use async_trait::async_trait;
use countersign_core::event::RequestEvent;
use countersign_core::{Escalation, Outcome, RequestKind, RequestRecord, Timestamp};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};
use std::str::FromStr;
use std::time::Duration;

// Decisions and escalations test "still pending" as `coalesce(responded_at, -1) = -1`, not
// `responded_at IS NULL`: the latter lets the planner pick the partial `requests_pending` index
// (and filter every pending request of the project) whenever the table has no statistics yet.

/// Logs the event (kind, time and body parameters) of the rows in `changed`, in the statement
/// that changed them.
macro_rules! log_changed {
    ($kind:literal, $at:literal, $body:literal) => {
        concat!(
            "logged AS (INSERT INTO events (project_id, request_kind, call_id, type, at, escalations, body) SELECT \
             project_id, kind, call_id, ",
            $kind,
            ", ",
            $at,
            ", json_array_length(escalations::json), ",
            $body,
            " FROM changed) "
        )
    };
}

/// Notifies every instance of the rows in `changed`, in the statement that changed them (so only
/// when it commits). Payload: `project_id|kind|call_id`.
macro_rules! notify_changed {
    () => {
        "SELECT pg_notify('countersign_requests', project_id || '|' || kind || '|' || call_id) FROM changed"
    };
}

crate::projects::impl_projects!(PostgresStore, sqlx::Postgres);
crate::people::impl_people!(PostgresStore, sqlx::Postgres);
crate::listing::impl_listings!(
    PostgresStore,
    sqlx::Postgres,
    function: "(spec::jsonb ->> 'fn')",
    decider_email: "(decided_by::jsonb ->> 'email')",
    like: "ILIKE"
);
// Claims skip the rows another instance has locked, and commit without waiting for the disk.
crate::deliveries::impl_deliveries!(
    PostgresStore,
    sqlx::Postgres,
    claims: pool,
    skip_locked: "FOR UPDATE SKIP LOCKED",
    relaxed: "SET LOCAL synchronous_commit TO OFF"
);
crate::slack::impl_slack!(PostgresStore, sqlx::Postgres);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Countersign's storage in a PostgreSQL database.
pub struct PostgresStore {
    pool: PgPool,
    feed: tokio::sync::broadcast::Sender<Feed>,
    listener: tokio::task::JoinHandle<()>,
    /// Projects with new requests, announced to other instances by [`listen::announce_creates`].
    created: tokio::sync::mpsc::UnboundedSender<String>,
    announcer: tokio::task::JoinHandle<()>,
    /// Poked after each write that logged an event, for the sealer (if this instance leads).
    seal: std::sync::Arc<tokio::sync::Notify>,
    sealer: tokio::task::JoinHandle<()>,
}

impl PostgresStore {
    /// Connects and brings the schema up to date. A database that cannot be reached is reported
    /// with its host, port and the cause.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid PostgreSQL URL: {e}")))?;
        let (host, port) = (options.get_host().to_owned(), options.get_port());
        let unreachable =
            |e: sqlx::Error| StoreError::Unavailable(format!("cannot connect to PostgreSQL at {host}:{port}: {e}"));
        // One direct connection first: a pool would only report that it timed out, not why.
        sqlx::PgConnection::connect_with(&options).await.map_err(unreachable)?.close().await.map_err(unreachable)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // No ping before every statement: a connection that died with the server fails
            // its statement (a 503) and is dropped; the pool then opens fresh ones.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .map_err(unreachable)?;
        MIGRATOR.run(&pool).await?;
        let fresh = countersign_core::session::random_text(32);
        let salt = Self::server_key_in(&pool, crate::events::ROUTE_SALT, &fresh).await?;
        let (feed, _) = tokio::sync::broadcast::channel(4096);
        let listener = tokio::spawn(listen::run(pool.clone(), feed.clone()));
        let (created, queue) = tokio::sync::mpsc::unbounded_channel();
        let announcer = tokio::spawn(listen::announce_creates(pool.clone(), queue));
        let seal = std::sync::Arc::new(tokio::sync::Notify::new());
        let sealer = tokio::spawn(sealer::run(options, seal.clone(), feed.clone(), salt));
        Ok(Self { pool, feed, listener, created, announcer, seal, sealer })
    }
}

/// Each write is one statement that also logs its event (and, for decisions and escalations,
/// notifies every instance); the sealer seals and routes the events shortly after.
#[async_trait]
impl Requests for PostgresStore {
    async fn create_request(&self, request: &RequestRecord) -> StoreResult<Created> {
        let event = RequestEvent::created(request).to_json();
        let inserted = sqlx::query(
            "WITH inserted AS (INSERT INTO requests (project_id, kind, call_id, run_id, spec, requested_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (project_id, kind, call_id) DO NOTHING RETURNING 1) \
             INSERT INTO events (project_id, request_kind, call_id, type, at, escalations, body) \
             SELECT $1, $2, $3, 'created', $6, 0, $7 FROM inserted RETURNING 1",
        )
        .bind(&request.project_id)
        .bind(request.kind.as_str())
        .bind(&request.call_id)
        .bind(&request.run_id)
        .bind(request.spec.get())
        .bind(request.requested_at.as_micros())
        .bind(event)
        .fetch_optional(&self.pool)
        .await?;
        if inserted.is_some() {
            self.seal.notify_one();
            // Other instances' inboxes hear of it shortly (not in this transaction: a NOTIFY
            // serializes commits, which cost half the create throughput).
            let _ = self.created.send(request.project_id.clone());
            return Ok(Created::New);
        }
        let existing = self
            .request(&request.project_id, request.kind, &request.call_id)
            .await?
            .ok_or_else(|| StoreError::Internal(format!("request {} conflicted but is missing", request.call_id)))?;
        Ok(Created::Existing(Box::new(existing)))
    }

    async fn decide(
        &self,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
        outcome: &Outcome,
    ) -> StoreResult<Change> {
        let c = outcome_columns(outcome);
        let event = RequestEvent::decided(project_id, kind, call_id, outcome).to_json();
        let done = sqlx::query(concat!(
            "WITH changed AS (UPDATE requests SET responded_at = $1, approved = $2, comment = $3, response = $4, \
             option_name = $5, decided_by = $6, updated_kwargs = $10 WHERE project_id = $7 AND kind = $8 \
             AND call_id = $9 AND coalesce(responded_at, -1) = -1 RETURNING project_id, kind, call_id, escalations), ",
            log_changed!("'decided'", "$1", "$11"),
            notify_changed!()
        ))
        .bind(outcome.responded_at.as_micros())
        .bind(c.approved)
        .bind(c.comment)
        .bind(c.response)
        .bind(c.option)
        .bind(c.decided_by)
        .bind(project_id)
        .bind(kind.as_str())
        .bind(call_id)
        .bind(c.updated_kwargs)
        .bind(event)
        .fetch_all(&self.pool)
        .await?;
        self.change(project_id, kind, call_id, done.len() as u64).await
    }

    async fn escalate(
        &self,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
        escalation: &Escalation,
    ) -> StoreResult<Change> {
        let at = Timestamp::now();
        let event = RequestEvent::escalated(project_id, kind, call_id, escalation, at).to_json();
        // Appended as text (not jsonb) so that what the client sent keeps its exact form.
        let done = sqlx::query(concat!(
            "WITH changed AS (UPDATE requests SET escalations = CASE WHEN escalations = '[]' THEN '[' || $1 || ']' \
             ELSE substr(escalations, 1, length(escalations) - 1) || ',' || $1 || ']' END \
             WHERE project_id = $2 AND kind = $3 AND call_id = $4 AND coalesce(responded_at, -1) = -1 \
             RETURNING project_id, kind, call_id, escalations), ",
            log_changed!("'escalated'", "$5", "$6"),
            notify_changed!()
        ))
        .bind(escalation.record.to_string())
        .bind(project_id)
        .bind(kind.as_str())
        .bind(call_id)
        .bind(at.as_micros())
        .bind(event)
        .fetch_all(&self.pool)
        .await?;
        self.change(project_id, kind, call_id, done.len() as u64).await
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Feed>> {
        Some(self.feed.subscribe())
    }

    async fn close(&self) {
        self.listener.abort();
        self.announcer.abort();
        self.sealer.abort();
        self.pool.close().await;
    }
}

impl PostgresStore {
    /// Tells a conditional update that changed nothing apart: already decided, or not there at all.
    async fn change(&self, project_id: &str, kind: RequestKind, call_id: &str, rows: u64) -> StoreResult<Change> {
        if rows > 0 {
            self.seal.notify_one();
            return Ok(Change::Done);
        }
        let exists = sqlx::query("SELECT 1 FROM requests WHERE project_id = $1 AND kind = $2 AND call_id = $3")
            .bind(project_id)
            .bind(kind.as_str())
            .bind(call_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(if exists.is_some() { Change::AlreadyDecided } else { Change::NotFound })
    }
}
