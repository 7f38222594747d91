//! The embedded SQLite backend in WAL mode; a commit is on disk before it is acknowledged: the
//! pool commits with `synchronous=FULL`, and the hot-path writes go through one group-commit
//! writer ([`writer`]) whose commits are answered after its own sync of the WAL file. Reads use a
//! small pool of connections that never block the writer.

pub mod backup;
mod checkpoint;
mod writer;

use crate::timers::{DueRow, Fired, plan, select_due};
use crate::{Change, Created, Feed, Requests, StoreError, StoreResult};
use async_trait::async_trait;
use checkpoint::{Checkpointer, Checkpoints};
use countersign_core::{Escalation, Outcome, RequestKind, RequestRecord, Timestamp};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use writer::Writer;

crate::projects::impl_projects!(SqliteStore, sqlx::Sqlite);
crate::stats::impl_stats!(SqliteStore, sqlx::Sqlite);
crate::people::impl_people!(SqliteStore, sqlx::Sqlite);
crate::listing::impl_listings!(
    SqliteStore,
    sqlx::Sqlite,
    function: "json_extract(spec, '$.fn')",
    decider_email: "json_extract(decided_by, '$.email')",
    like: "LIKE"
);
// The claims run on the bookkeeping connection; SQLite's writes are serialized, so there is no
// row to skip.
crate::deliveries::impl_deliveries!(SqliteStore, sqlx::Sqlite, claims: bookkeeping, skip_locked: "", relaxed: "");
crate::policies::impl_policies!(SqliteStore, sqlx::Sqlite, begin: "BEGIN IMMEDIATE", lock: "", log_request: crate::events::log_request_event_sqlite);
crate::slack::impl_slack!(SqliteStore, sqlx::Sqlite);
crate::sms::impl_sms!(SqliteStore, sqlx::Sqlite);
crate::receipts::impl_receipts!(SqliteStore, sqlx::Sqlite, begin: "BEGIN IMMEDIATE");
crate::executions::impl_executions!(SqliteStore, sqlx::Sqlite, begin: "BEGIN IMMEDIATE", lock: "", log_request: crate::events::log_request_event_sqlite);

crate::secrets::secrets_queries!(sqlx::Sqlite, begin: "BEGIN IMMEDIATE", lock: "SELECT 1");

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a connection waits for SQLite's write lock (held by another process, e.g. the CLI).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Countersign's storage in one SQLite file.
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection for the webhook worker's claims and attempt records, with
    /// `synchronous=NORMAL`: they commit without an fsync (the next durable commit carries them),
    /// since losing one in a crash only causes one more delivery.
    bookkeeping: SqlitePool,
    writer: Writer,
    checkpointer: Checkpointer,
    /// The master keys its secrets are sealed with (see [`crate::secrets`]).
    keyring: crate::secrets::Keyring,
    /// How many secrets were (re)sealed when it opened.
    resealed: u64,
    /// Only [`Feed::Queued`], sent by the writer once a batch that queued deliveries is durable.
    feed: tokio::sync::broadcast::Sender<Feed>,
}

impl SqliteStore {
    /// After a request event logged outside the writer (a vote, an execution) committed: tells
    /// the delivery workers if it queued deliveries.
    pub(crate) fn request_event_logged(&self, queued: bool) {
        if queued {
            writer::announce_queued(&self.feed);
        }
    }

    /// A write transaction for an administrative change and the events that log it.
    pub(crate) async fn begin_change(&self) -> StoreResult<sqlx::Transaction<'_, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Logs an administrative change's events in its transaction, sealed at once.
    pub(crate) async fn log_change(
        conn: &mut sqlx::SqliteConnection,
        events: &[countersign_core::event::ProjectEvent],
    ) -> StoreResult<()> {
        for event in events {
            crate::events::log_project_event_sqlite(conn, event).await?;
        }
        Ok(())
    }

    /// Opens (creating if needed) the database file and brings its schema up to date; its
    /// secrets are sealed with `keyring`'s current key.
    pub async fn open(path: &Path, keyring: crate::secrets::Keyring) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // Statement journals of multi-row inserts stay in memory instead of temp files.
            .pragma("temp_store", "memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        MIGRATOR.run(&pool).await?;
        let resealed = prepare(&pool, &keyring).await?;
        let bookkeeping = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone().synchronous(SqliteSynchronous::Normal))
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let fresh = countersign_core::session::random_text(32);
        let salt = Self::server_key_in(&pool, &keyring, crate::events::ROUTE_SALT, &fresh).await?;
        let checkpoints = Checkpoints::default();
        let (feed, _) = tokio::sync::broadcast::channel(16);
        let writer =
            Writer::start(options.pragma("wal_autocheckpoint", "0"), salt, checkpoints.clone(), feed.clone()).await?;
        let checkpointer = Checkpointer::start(pool.clone(), checkpoints);
        Ok(Self { pool, bookkeeping, writer, checkpointer, keyring, resealed, feed })
    }
}

/// The writes of requests go through the group-commit writer, which also seals and routes.
#[async_trait]
impl Requests for SqliteStore {
    async fn create_request(&self, request: &RequestRecord) -> StoreResult<Created> {
        self.writer.create(request).await
    }

    async fn decide(
        &self,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
        outcome: &Outcome,
    ) -> StoreResult<Change> {
        self.writer.decide(project_id, kind, call_id, outcome).await
    }

    async fn escalate(
        &self,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
        escalation: &Escalation,
    ) -> StoreResult<Change> {
        self.writer.escalate(project_id, kind, call_id, escalation).await
    }

    async fn fire_timers(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<Fired>> {
        let rows: Vec<DueRow> =
            sqlx::query_as(select_due!()).bind(now.as_micros()).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        let planned = plan(rows, now);
        if planned.is_empty() {
            return Ok(Vec::new());
        }
        let applied = self.writer.fire(&planned, now).await?;
        Ok(planned.iter().zip(applied).map(|(p, applied)| p.fired(applied)).collect())
    }

    /// Only [`Feed::Queued`]: this process is the only one writing, but its writer routes
    /// deliveries inside its batches, and the delivery workers should wake for those alone.
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Feed>> {
        Some(self.feed.subscribe())
    }

    async fn close(&self) {
        self.writer.stop().await;
        self.checkpointer.stop().await;
        self.bookkeeping.close().await;
        self.pool.close().await;
    }
}
