//! The embedded SQLite backend: WAL mode with `synchronous=FULL`, so a commit is on disk before it
//! is acknowledged. Hot-path writes go through one group-commit writer ([`writer`]); reads use a
//! small pool of connections that never block the writer.

mod checkpoint;
mod writer;

use crate::row::{KeyRow, ProjectRow, RequestRow, request_columns, select_keys};
use crate::{
    ApiKeyRecord, Attempt, AttemptOutcome, Change, Claimed, ClaimedEmail, Created, Credentials, Delivery, EmailMessage,
    NewApiKey, NewSession, NewWebhookEndpoint, Page, PageRequest, RequestFilter, Session, Store, StoreError,
    StoreResult, WebhookEndpoint,
};
use async_trait::async_trait;
use checkpoint::Checkpointer;
use countersign_core::api_key::KeyHash;
use countersign_core::{
    Email, Escalation, Outcome, Project, ProjectName, RequestKind, RequestRecord, Role, Timestamp, User,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;
use writer::Writer;

/// The WHERE clause of the pending listing: ?1 project, ?2 kind, ?3 optional run.
macro_rules! pending_filter {
    () => {
        "project_id = ?1 AND kind = ?2 AND responded_at IS NULL AND (?3 IS NULL OR run_id = ?3)"
    };
}

mod log {
    crate::events::event_queries!(sqlx::SqlitePool);
}

mod people {
    crate::users::user_queries!(sqlx::SqlitePool);
}

mod hooks {
    crate::webhooks::webhook_queries!(sqlx::SqlitePool, "", "");
}

mod mail {
    crate::emails::email_queries!(sqlx::SqlitePool, "");
}

mod listing {
    crate::listing::listing_queries!(
        sqlx::Sqlite,
        sqlx::SqlitePool,
        "json_extract(spec, '$.fn')",
        "json_extract(decided_by, '$.email')",
        "LIKE"
    );
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

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
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> StoreResult<Self> {
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
        let bookkeeping = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone().synchronous(SqliteSynchronous::Normal))
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let fresh = countersign_core::session::random_text(32);
        let salt = mail::server_key(&pool, crate::events::ROUTE_SALT, &fresh).await?;
        let writer = Writer::start(options.pragma("wal_autocheckpoint", "0"), salt).await?;
        let checkpointer = Checkpointer::start(pool.clone());
        Ok(Self { pool, bookkeeping, writer, checkpointer })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ensure_project(&self, name: &ProjectName) -> StoreResult<Project> {
        sqlx::query("INSERT INTO projects (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(name.as_str())
            .bind(Timestamp::now().as_micros())
            .execute(&self.pool)
            .await?;
        self.project_by_name(name.as_str())
            .await?
            .ok_or_else(|| StoreError::Internal(format!("project {name} vanished after insert")))
    }

    async fn project_by_name(&self, name: &str) -> StoreResult<Option<Project>> {
        let row: Option<ProjectRow> = sqlx::query_as("SELECT id, name, created_at FROM projects WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Project::from))
    }

    async fn project_by_id(&self, id: &str) -> StoreResult<Option<Project>> {
        let row: Option<ProjectRow> = sqlx::query_as("SELECT id, name, created_at FROM projects WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Project::from))
    }

    async fn insert_api_key(&self, key: NewApiKey) -> StoreResult<ApiKeyRecord> {
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO api_keys (id, project_id, name, display_prefix, key_hash, created_at, scopes) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&key.project_id)
        .bind(&key.name)
        .bind(&key.display_prefix)
        .bind(&key.hash.0[..])
        .bind(Timestamp::now().as_micros())
        .bind(key.scopes.to_text())
        .execute(&self.pool)
        .await?;
        let row: KeyRow =
            sqlx::query_as(concat!(select_keys!(), " WHERE k.id = ?")).bind(&id).fetch_one(&self.pool).await?;
        Ok(row.into())
    }

    async fn api_keys(&self, project_name: Option<&str>) -> StoreResult<Vec<ApiKeyRecord>> {
        let rows: Vec<KeyRow> =
            sqlx::query_as(concat!(select_keys!(), " WHERE ?1 IS NULL OR p.name = ?1 ORDER BY k.created_at, k.id"))
                .bind(project_name)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(ApiKeyRecord::from).collect())
    }

    async fn revoke_api_key(&self, id_or_prefix: &str) -> StoreResult<Option<ApiKeyRecord>> {
        sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE (id = ?2 OR display_prefix = ?2) AND revoked_at IS NULL")
            .bind(Timestamp::now().as_micros())
            .bind(id_or_prefix)
            .execute(&self.pool)
            .await?;
        let row: Option<KeyRow> = sqlx::query_as(concat!(select_keys!(), " WHERE k.id = ?1 OR k.display_prefix = ?1"))
            .bind(id_or_prefix)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(ApiKeyRecord::from))
    }

    async fn authenticate(&self, hash: &KeyHash) -> StoreResult<Option<(ApiKeyRecord, Project)>> {
        let row: Option<KeyRow> =
            sqlx::query_as(concat!(select_keys!(), " WHERE k.key_hash = ? AND k.revoked_at IS NULL"))
                .bind(&hash.0[..])
                .fetch_optional(&self.pool)
                .await?;
        let Some(key) = row.map(ApiKeyRecord::from) else { return Ok(None) };
        let project = self
            .project_by_id(&key.project_id)
            .await?
            .ok_or_else(|| StoreError::Internal(format!("key {} has no project", key.id)))?;
        Ok(Some((key, project)))
    }

    async fn count_active_api_keys(&self) -> StoreResult<u64> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL").fetch_one(&self.pool).await?;
        Ok(n as u64)
    }

    async fn create_user(
        &self,
        email: &Email,
        role: Role,
        password_hash: Option<&str>,
        project_ids: &[String],
    ) -> StoreResult<Option<User>> {
        people::create_user(&self.pool, email, role, password_hash, project_ids).await
    }

    async fn users(&self, project_name: Option<&str>) -> StoreResult<Vec<User>> {
        people::users(&self.pool, project_name).await
    }

    async fn disable_user(&self, email: &Email) -> StoreResult<Option<User>> {
        people::disable_user(&self.pool, email).await
    }

    async fn change_user_projects(
        &self,
        email: &Email,
        add: &[String],
        remove: &[String],
    ) -> StoreResult<Option<User>> {
        people::change_user_projects(&self.pool, email, add, remove).await
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        people::user(&self.pool, id).await
    }

    async fn credentials(&self, email: &Email) -> StoreResult<Option<Credentials>> {
        people::credentials(&self.pool, email).await
    }

    async fn create_session(&self, session: &NewSession) -> StoreResult<()> {
        people::create_session(&self.pool, session).await
    }

    async fn session(&self, hash: &KeyHash, now: Timestamp) -> StoreResult<Option<Session>> {
        people::session(&self.pool, hash, now).await
    }

    async fn delete_session(&self, hash: &KeyHash) -> StoreResult<()> {
        people::delete_session(&self.pool, hash).await
    }

    async fn create_password_token(&self, user_id: &str, hash: &KeyHash, expires_at: Timestamp) -> StoreResult<()> {
        people::create_password_token(&self.pool, user_id, hash, expires_at).await
    }

    async fn password_token_usable(&self, hash: &KeyHash, now: Timestamp) -> StoreResult<bool> {
        people::password_token_usable(&self.pool, hash, now).await
    }

    async fn set_password_with_token(
        &self,
        hash: &KeyHash,
        password_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<User>> {
        people::set_password_with_token(&self.pool, hash, password_hash, now).await
    }

    async fn list_requests(
        &self,
        project_ids: &[String],
        filter: &RequestFilter,
        limit: u32,
        offset: u32,
    ) -> StoreResult<Page> {
        listing::list_requests(&self.pool, project_ids, filter, limit, offset).await
    }

    async fn add_webhook(&self, new: &NewWebhookEndpoint) -> StoreResult<WebhookEndpoint> {
        hooks::add(&self.pool, new).await
    }

    async fn webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
        hooks::endpoint(&self.pool, id).await
    }

    async fn webhooks(&self, project_id: Option<&str>) -> StoreResult<Vec<WebhookEndpoint>> {
        hooks::list(&self.pool, project_id).await
    }

    async fn remove_webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
        hooks::remove(&self.pool, id).await
    }

    async fn deliveries(&self, endpoint_id: &str, limit: u32) -> StoreResult<Vec<Delivery>> {
        hooks::deliveries(&self.pool, endpoint_id, limit).await
    }

    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
        hooks::delivery(&self.pool, id).await
    }

    async fn attempts(&self, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
        hooks::attempts(&self.pool, delivery_id).await
    }

    async fn claim_deliveries(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> StoreResult<Vec<Claimed>> {
        hooks::claim(&self.bookkeeping, now, lease_until, limit).await
    }

    async fn finish_attempts(&self, attempts: &[(Claimed, AttemptOutcome)]) -> StoreResult<Vec<bool>> {
        hooks::finish(&self.bookkeeping, attempts).await
    }

    async fn redeliver(&self, id: &str) -> StoreResult<Option<Delivery>> {
        hooks::redeliver(&self.pool, id).await
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<Timestamp>> {
        hooks::next_due(&self.pool).await
    }

    async fn set_default_email(&self, project_id: &str, address: Option<&str>) -> StoreResult<bool> {
        mail::set_default_email(&self.pool, project_id, address).await
    }

    async fn default_email(&self, project_id: &str) -> StoreResult<Option<String>> {
        mail::default_email(&self.pool, project_id).await
    }

    async fn claim_emails(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> StoreResult<Vec<ClaimedEmail>> {
        mail::claim(&self.pool, now, lease_until, limit).await
    }

    async fn finish_email(
        &self,
        claimed: &ClaimedEmail,
        recipients: &[String],
        error: Option<&str>,
        retry_at: Option<Timestamp>,
    ) -> StoreResult<bool> {
        mail::finish(&self.pool, claimed, recipients, error, retry_at).await
    }

    async fn email_by_message_ids(&self, ids: &[String]) -> StoreResult<Option<EmailMessage>> {
        mail::by_message_ids(&self.pool, ids).await
    }

    async fn emails_of(&self, project_id: &str, kind: RequestKind, call_id: &str) -> StoreResult<Vec<EmailMessage>> {
        mail::of_request(&self.pool, project_id, kind.as_str(), call_id).await
    }

    async fn next_email_due(&self) -> StoreResult<Option<Timestamp>> {
        mail::next_due(&self.pool).await
    }

    async fn set_inbound_email_secret(&self, project_id: &str, hash: Option<&KeyHash>) -> StoreResult<bool> {
        mail::set_inbound_email_secret(&self.pool, project_id, hash.map(|h| &h.0[..])).await
    }

    async fn project_by_inbound_email_secret(&self, hash: &KeyHash) -> StoreResult<Option<Project>> {
        match mail::project_id_by_inbound_email_secret(&self.pool, &hash.0[..]).await? {
            Some(id) => self.project_by_id(&id).await,
            None => Ok(None),
        }
    }

    async fn server_key(&self, name: &str, fresh: &str) -> StoreResult<String> {
        mail::server_key(&self.pool, name, fresh).await
    }

    async fn create_request(&self, request: &RequestRecord) -> StoreResult<Created> {
        self.writer.create(request).await
    }

    async fn request(&self, project_id: &str, kind: RequestKind, call_id: &str) -> StoreResult<Option<RequestRecord>> {
        let row: Option<RequestRow> = sqlx::query_as(concat!(
            "SELECT ",
            request_columns!(),
            " FROM requests WHERE project_id = ? AND kind = ? AND call_id = ?"
        ))
        .bind(project_id)
        .bind(kind.as_str())
        .bind(call_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(RequestRecord::try_from).transpose()
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

    async fn pending(&self, project_id: &str, kind: RequestKind, page: &PageRequest) -> StoreResult<Page> {
        // Rows past max_bytes (counted from the page's start) are not even read.
        let rows: Vec<RequestRow> = sqlx::query_as(concat!(
            "SELECT ",
            request_columns!(),
            " FROM (SELECT ",
            request_columns!(),
            ", sum(length(CAST(spec AS BLOB))) OVER (ORDER BY requested_at, call_id ROWS UNBOUNDED PRECEDING) - length(CAST(spec AS BLOB)) AS before \
             FROM (SELECT ",
            request_columns!(),
            " FROM requests WHERE ",
            pending_filter!(),
            " ORDER BY requested_at, call_id LIMIT ?4 OFFSET ?5) page) sized WHERE before < ?6 \
             ORDER BY requested_at, call_id"
        ))
        .bind(project_id)
        .bind(kind.as_str())
        .bind(&page.run_id)
        .bind(i64::from(page.limit))
        .bind(i64::from(page.offset))
        .bind(page.max_bytes.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX)))
        .fetch_all(&self.pool)
        .await?;
        let (total,): (i64,) = sqlx::query_as(concat!("SELECT count(*) FROM requests WHERE ", pending_filter!()))
            .bind(project_id)
            .bind(kind.as_str())
            .bind(&page.run_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(Page { items: crate::row::readable(rows), total: total as u64 })
    }

    async fn all_pending(&self) -> StoreResult<Vec<RequestRecord>> {
        let rows: Vec<RequestRow> =
            sqlx::query_as(concat!("SELECT ", request_columns!(), " FROM requests WHERE responded_at IS NULL"))
                .fetch_all(&self.pool)
                .await?;
        Ok(crate::row::readable(rows))
    }

    async fn audit_events(&self, project_id: &str, after: u64, limit: u32) -> StoreResult<Vec<crate::AuditEvent>> {
        log::audit(&self.pool, project_id, after, limit).await
    }

    async fn chains(&self, project_id: Option<&str>) -> StoreResult<Vec<crate::ChainState>> {
        log::chains(&self.pool, project_id).await
    }

    async fn close(&self) {
        self.writer.stop().await;
        self.checkpointer.stop().await;
        self.bookkeeping.close().await;
        self.pool.close().await;
    }
}
