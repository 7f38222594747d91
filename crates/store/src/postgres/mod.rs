//! The PostgreSQL backend, for several Countersign instances sharing one database. Every write is
//! its own transaction (PostgreSQL groups concurrent commits itself); the first decision wins
//! through a conditional UPDATE. Decisions and escalations NOTIFY in the same statement, so every
//! instance learns of them the moment they commit ([`Requests::changes`]).

mod batch;
mod listen;
mod sealer;

use crate::row::outcome_columns;
use crate::timers::{Change as TimerChange, DueRow, Fired, Planned, plan, select_due};
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
crate::stats::impl_stats!(PostgresStore, sqlx::Postgres);
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
crate::policies::impl_policies!(PostgresStore, sqlx::Postgres, begin: "BEGIN", lock: "FOR UPDATE", log_request: crate::events::log_request_event_postgres);
crate::slack::impl_slack!(PostgresStore, sqlx::Postgres);
crate::sms::impl_sms!(PostgresStore, sqlx::Postgres);
crate::receipts::impl_receipts!(PostgresStore, sqlx::Postgres, begin: "BEGIN");
crate::executions::impl_executions!(PostgresStore, sqlx::Postgres, begin: "BEGIN", lock: "FOR UPDATE", log_request: crate::events::log_request_event_postgres);

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

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
    /// Plain creates, inserted in batches (see [`batch`]).
    creates: batch::Creates,
    /// The master keys its secrets are sealed with (see [`crate::secrets`]).
    keyring: crate::secrets::Keyring,
    /// How many secrets were (re)sealed when it opened.
    resealed: u64,
}

crate::secrets::secrets_queries!(sqlx::Postgres, begin: "BEGIN", lock: "SELECT pg_advisory_xact_lock(7460551205)");

/// Brings the schema of the database `url` up to date, and nothing else (no keys, no rows):
/// what `countersign migrate` copies into.
pub async fn migrate_schema(url: &str) -> StoreResult<()> {
    let pool = sqlx::PgPool::connect(url).await.map_err(|e| StoreError::Unavailable(format!("cannot connect: {e}")))?;
    let result = MIGRATOR.run(&pool).await;
    pool.close().await;
    Ok(result?)
}

impl PostgresStore {
    /// A write transaction for an administrative change and the events that log it.
    pub(crate) async fn begin_change(&self) -> StoreResult<sqlx::Transaction<'_, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// Logs an administrative change's events in its transaction (the leader's sealer seals them
    /// after the commit).
    pub(crate) async fn log_change(
        conn: &mut sqlx::PgConnection,
        events: &[countersign_core::event::ProjectEvent],
    ) -> StoreResult<()> {
        for event in events {
            crate::events::log_project_event_postgres(conn, event).await?;
        }
        Ok(())
    }

    /// Connects and brings the schema up to date. A database that cannot be reached is reported
    /// with its host, port and the cause.
    pub async fn open(url: &str, keyring: crate::secrets::Keyring) -> StoreResult<Self> {
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
        let resealed = prepare(&pool, &keyring).await?;
        let fresh = countersign_core::session::random_text(32);
        let salt = Self::server_key_in(&pool, &keyring, crate::events::ROUTE_SALT, &fresh).await?;
        let (feed, _) = tokio::sync::broadcast::channel(4096);
        let listener = tokio::spawn(listen::run(pool.clone(), feed.clone()));
        let (created, queue) = tokio::sync::mpsc::unbounded_channel();
        let announcer = tokio::spawn(listen::announce_creates(pool.clone(), queue));
        let seal = std::sync::Arc::new(tokio::sync::Notify::new());
        let sealer = tokio::spawn(sealer::run(options, seal.clone(), feed.clone(), salt));
        let creates = batch::Creates::start(pool.clone());
        Ok(Self { pool, feed, listener, created, announcer, seal, sealer, creates, keyring, resealed })
    }
}

/// Each write is one statement that also logs its event (and, for decisions and escalations,
/// notifies every instance); the sealer seals and routes the events shortly after.
#[async_trait]
impl Requests for PostgresStore {
    async fn create_request(&self, request: &RequestRecord) -> StoreResult<Created> {
        let event = RequestEvent::created(request).to_json();
        let timers = match (&request.policy, &request.outcome) {
            (Some(policy), None) => policy.timers(request.requested_at),
            _ => Vec::new(),
        };
        if request.outcome.is_some() || request.policy.is_some() {
            return self.create_governed(request, event, timers).await;
        }
        let inserted = self
            .creates
            .insert(batch::NewRow {
                project_id: request.project_id.clone(),
                kind: request.kind.as_str(),
                call_id: request.call_id.clone(),
                run_id: request.run_id.clone(),
                spec: request.spec.get().to_owned(),
                requested_at: request.requested_at.as_micros(),
                event,
            })
            .await?;
        self.created_or_existing(request, inserted).await
    }

    async fn decide(
        &self,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
        outcome: &Outcome,
    ) -> StoreResult<Change> {
        let c = outcome_columns(kind, outcome);
        let event = RequestEvent::decided(project_id, kind, call_id, outcome).to_json();
        let done = sqlx::query(concat!(
            "WITH changed AS (UPDATE requests SET responded_at = $1, approved = $2, comment = $3, response = $4, \
             option_name = $5, decided_by = $6, updated_kwargs = $10, ended = $12 WHERE project_id = $7 AND kind = $8 \
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
        .bind(c.ended)
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

    async fn fire_timers(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<Fired>> {
        let mut tx = self.pool.begin().await?;
        // Locked until commit; other instances skip them and take the next ones.
        let rows: Vec<DueRow> = sqlx::query_as(concat!(select_due!(), " FOR UPDATE OF t SKIP LOCKED"))
            .bind(now.as_micros())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let planned = plan(rows, now);
        let mut applied = std::collections::HashSet::new();
        let (mut decide, mut escalate) = (DecideColumns::default(), EscalateColumns::default());
        for p in &planned {
            match &p.change {
                TimerChange::Decide(outcome) => decide.push(p, outcome),
                TimerChange::Escalate(escalation) => escalate.push(p, escalation, now),
                TimerChange::Nothing => {}
            }
        }
        if !decide.keys.project_ids.is_empty() {
            let rows = sqlx::query(concat!(
                "WITH input AS (SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BOOLEAN[], \
                 $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[]) AS u(project_id, kind, call_id, at, approved, \
                 comment, response, decided_by, ended, body)), \
                 changed AS (UPDATE requests r SET responded_at = i.at, approved = i.approved, comment = i.comment, \
                 response = i.response, decided_by = i.decided_by, ended = i.ended FROM input i \
                 WHERE r.project_id = i.project_id AND r.kind = i.kind AND r.call_id = i.call_id \
                 AND coalesce(r.responded_at, -1) = -1 \
                 RETURNING r.project_id, r.kind, r.call_id, r.escalations, i.at, i.body), ",
                log_changed!("'decided'", "at", "body"),
                "SELECT project_id || '|' || kind || '|' || call_id, \
                 pg_notify('countersign_requests', project_id || '|' || kind || '|' || call_id) FROM changed"
            ))
            .bind(&decide.keys.project_ids)
            .bind(&decide.keys.kinds)
            .bind(&decide.keys.call_ids)
            .bind(&decide.keys.at)
            .bind(&decide.approved)
            .bind(&decide.comment)
            .bind(&decide.response)
            .bind(&decide.decided_by)
            .bind(&decide.ended)
            .bind(&decide.keys.bodies)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                applied.insert(sqlx::Row::try_get::<String, _>(&row, 0)?);
            }
        }
        if !escalate.keys.project_ids.is_empty() {
            let rows = sqlx::query(concat!(
                "WITH input AS (SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], \
                 $6::TEXT[]) AS u(project_id, kind, call_id, at, record, body)), \
                 changed AS (UPDATE requests r SET escalations = CASE WHEN r.escalations = '[]' THEN '[' || i.record || ']' \
                 ELSE substr(r.escalations, 1, length(r.escalations) - 1) || ',' || i.record || ']' END FROM input i \
                 WHERE r.project_id = i.project_id AND r.kind = i.kind AND r.call_id = i.call_id \
                 AND coalesce(r.responded_at, -1) = -1 \
                 RETURNING r.project_id, r.kind, r.call_id, r.escalations, i.at, i.body), ",
                log_changed!("'escalated'", "at", "body"),
                "SELECT project_id || '|' || kind || '|' || call_id, \
                 pg_notify('countersign_requests', project_id || '|' || kind || '|' || call_id) FROM changed"
            ))
            .bind(&escalate.keys.project_ids)
            .bind(&escalate.keys.kinds)
            .bind(&escalate.keys.call_ids)
            .bind(&escalate.keys.at)
            .bind(&escalate.records)
            .bind(&escalate.keys.bodies)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                applied.insert(sqlx::Row::try_get::<String, _>(&row, 0)?);
            }
        }
        let ids: Vec<i64> = planned.iter().map(|p| p.id).collect();
        sqlx::query("UPDATE timers SET fired_at = $1 WHERE id = ANY($2)")
            .bind(now.as_micros())
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if !applied.is_empty() {
            self.seal.notify_one();
        }
        Ok(planned
            .iter()
            .map(|p| p.fired(applied.contains(&format!("{}|{}|{}", p.project_id, p.kind.as_str(), p.call_id))))
            .collect())
    }

    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Feed>> {
        Some(self.feed.subscribe())
    }

    async fn close(&self) {
        self.listener.abort();
        self.announcer.abort();
        self.sealer.abort();
        self.creates.abort();
        self.pool.close().await;
    }
}

impl PostgresStore {
    /// After a request event logged outside the change statements (a vote, an execution)
    /// committed: the sealer seals and routes it now, and announces what it queued.
    pub(crate) fn request_event_logged(&self, _queued: bool) {
        self.seal.notify_one();
    }

    /// Creates a request that a policy decided at creation (stored decided, with both events) or
    /// whose terms schedule timers (stored with them), in one statement.
    async fn create_governed(
        &self,
        request: &RequestRecord,
        created: String,
        timers: Vec<countersign_core::governance::Timer>,
    ) -> StoreResult<Created> {
        let c = request.outcome.as_ref().map(|o| outcome_columns(request.kind, o));
        let decided = request
            .outcome
            .as_ref()
            .map(|o| RequestEvent::decided(&request.project_id, request.kind, &request.call_id, o).to_json());
        let (actions, dues): (Vec<String>, Vec<i64>) =
            timers.iter().map(|t| (t.action.to_json(), t.due.as_micros())).unzip();
        let inserted = sqlx::query(
            "WITH inserted AS (INSERT INTO requests (project_id, kind, call_id, run_id, spec, requested_at, policy, \
             responded_at, approved, comment, response, option_name, decided_by, updated_kwargs, ended) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (project_id, kind, call_id) DO NOTHING RETURNING 1), \
             logged AS (INSERT INTO events (project_id, request_kind, call_id, type, at, escalations, body) \
             SELECT $1, $2, $3, v.type, v.at, 0, v.body FROM inserted \
             CROSS JOIN (VALUES (1, 'created', $6::BIGINT, $16::TEXT), (2, 'decided', $8::BIGINT, $17::TEXT)) \
             AS v(o, type, at, body) WHERE v.body IS NOT NULL ORDER BY v.o RETURNING 1), \
             timed AS (INSERT INTO timers (project_id, kind, call_id, action, due_at) \
             SELECT $1, $2, $3, t.action, t.due FROM inserted \
             CROSS JOIN unnest($18::TEXT[], $19::BIGINT[]) AS t(action, due) RETURNING 1) \
             SELECT (SELECT count(*) FROM logged) + (SELECT count(*) FROM timed) FROM inserted",
        )
        .bind(&request.project_id)
        .bind(request.kind.as_str())
        .bind(&request.call_id)
        .bind(&request.run_id)
        .bind(request.spec.get())
        .bind(request.requested_at.as_micros())
        .bind(request.policy.as_ref().map(|p| serde_json::to_string(p).expect("governance serializes")))
        .bind(request.outcome.as_ref().map(|o| o.responded_at.as_micros()))
        .bind(c.as_ref().and_then(|c| c.approved))
        .bind(c.as_ref().and_then(|c| c.comment.clone()))
        .bind(c.as_ref().and_then(|c| c.response.clone()))
        .bind(c.as_ref().and_then(|c| c.option.clone()))
        .bind(c.as_ref().map(|c| c.decided_by.clone()))
        .bind(c.as_ref().and_then(|c| c.updated_kwargs.clone()))
        .bind(c.as_ref().and_then(|c| c.ended))
        .bind(created)
        .bind(decided)
        .bind(actions)
        .bind(dues)
        .fetch_optional(&self.pool)
        .await?;
        self.created_or_existing(request, inserted.is_some()).await
    }

    /// Answers a create: new (and announced), or the request already stored under its `call_id`.
    async fn created_or_existing(&self, request: &RequestRecord, inserted: bool) -> StoreResult<Created> {
        if inserted {
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

/// The request keys and event bodies of a set of timer changes, as arrays for `unnest`.
#[derive(Default)]
struct KeyColumns {
    project_ids: Vec<String>,
    kinds: Vec<&'static str>,
    call_ids: Vec<String>,
    at: Vec<i64>,
    bodies: Vec<String>,
}

impl KeyColumns {
    fn push(&mut self, p: &Planned, at: Timestamp, body: String) {
        self.project_ids.push(p.project_id.clone());
        self.kinds.push(p.kind.as_str());
        self.call_ids.push(p.call_id.clone());
        self.at.push(at.as_micros());
        self.bodies.push(body);
    }
}

/// Expiries fired together.
#[derive(Default)]
struct DecideColumns {
    keys: KeyColumns,
    approved: Vec<Option<bool>>,
    comment: Vec<Option<String>>,
    response: Vec<Option<String>>,
    decided_by: Vec<String>,
    ended: Vec<Option<&'static str>>,
}

impl DecideColumns {
    fn push(&mut self, p: &Planned, outcome: &Outcome) {
        let c = outcome_columns(p.kind, outcome);
        let body = RequestEvent::decided(&p.project_id, p.kind, &p.call_id, outcome).to_json();
        self.keys.push(p, outcome.responded_at, body);
        self.approved.push(c.approved);
        self.comment.push(c.comment);
        self.response.push(c.response);
        self.decided_by.push(c.decided_by);
        self.ended.push(c.ended);
    }
}

/// Escalation steps fired together.
#[derive(Default)]
struct EscalateColumns {
    keys: KeyColumns,
    records: Vec<String>,
}

impl EscalateColumns {
    fn push(&mut self, p: &Planned, escalation: &Escalation, at: Timestamp) {
        let body = RequestEvent::escalated(&p.project_id, p.kind, &p.call_id, escalation, at).to_json();
        self.keys.push(p, at, body);
        self.records.push(escalation.record.to_string());
    }
}
