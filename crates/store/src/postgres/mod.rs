//! The PostgreSQL backend, for several Countersign instances sharing one database. Every write is
//! its own transaction (PostgreSQL groups concurrent commits itself); the first decision wins
//! through a conditional UPDATE. Decisions and escalations NOTIFY in the same statement, so every
//! instance learns of them the moment they commit ([`Store::changes`]).

mod listen;
mod sealer;

use crate::row::{KeyRow, ProjectRow, RequestRow, outcome_columns, request_columns, select_keys};
use crate::{
    ApiKeyRecord, Attempt, AttemptOutcome, Change, Claimed, ClaimedEmail, Created, Credentials, Delivery, EmailMessage,
    Feed, NewApiKey, NewSession, NewWebhookEndpoint, Page, PageRequest, RequestFilter, Session, Store, StoreError,
    StoreResult, WebhookEndpoint,
};
use async_trait::async_trait;
use countersign_core::api_key::KeyHash;
use countersign_core::event::RequestEvent;
use countersign_core::{
    Email, Escalation, Outcome, Project, ProjectName, RequestKind, RequestRecord, Role, Timestamp, User,
};
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

mod log {
    crate::events::event_queries!(sqlx::PgPool);
}

mod people {
    crate::users::user_queries!(sqlx::PgPool);
}

mod hooks {
    crate::webhooks::webhook_queries!(sqlx::PgPool, "FOR UPDATE SKIP LOCKED", "SET LOCAL synchronous_commit TO OFF");
}

mod mail {
    crate::emails::email_queries!(sqlx::PgPool, "FOR UPDATE SKIP LOCKED");
}

mod listing {
    crate::listing::listing_queries!(
        sqlx::Postgres,
        sqlx::PgPool,
        "(spec::jsonb ->> 'fn')",
        "(decided_by::jsonb ->> 'email')",
        "ILIKE"
    );
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The WHERE clause of the pending listing: $1 project, $2 kind, $3 optional run.
macro_rules! pending_filter {
    () => {
        "project_id = $1 AND kind = $2 AND responded_at IS NULL AND ($3::text IS NULL OR run_id = $3)"
    };
}

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
        let salt =
            mail::server_key(&pool, crate::events::ROUTE_SALT, &countersign_core::session::random_text(32)).await?;
        let (feed, _) = tokio::sync::broadcast::channel(4096);
        let listener = tokio::spawn(listen::run(pool.clone(), feed.clone()));
        let (created, queue) = tokio::sync::mpsc::unbounded_channel();
        let announcer = tokio::spawn(listen::announce_creates(pool.clone(), queue));
        let seal = std::sync::Arc::new(tokio::sync::Notify::new());
        let sealer = tokio::spawn(sealer::run(options, seal.clone(), feed.clone(), salt));
        Ok(Self { pool, feed, listener, created, announcer, seal, sealer })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ensure_project(&self, name: &ProjectName) -> StoreResult<Project> {
        sqlx::query("INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
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
        let row: Option<ProjectRow> = sqlx::query_as("SELECT id, name, created_at FROM projects WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Project::from))
    }

    async fn project_by_id(&self, id: &str) -> StoreResult<Option<Project>> {
        let row: Option<ProjectRow> = sqlx::query_as("SELECT id, name, created_at FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Project::from))
    }

    async fn insert_api_key(&self, key: NewApiKey) -> StoreResult<ApiKeyRecord> {
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO api_keys (id, project_id, name, display_prefix, key_hash, created_at, scopes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
            sqlx::query_as(concat!(select_keys!(), " WHERE k.id = $1")).bind(&id).fetch_one(&self.pool).await?;
        Ok(row.into())
    }

    async fn api_keys(&self, project_name: Option<&str>) -> StoreResult<Vec<ApiKeyRecord>> {
        let rows: Vec<KeyRow> = sqlx::query_as(concat!(
            select_keys!(),
            " WHERE $1::text IS NULL OR p.name = $1 ORDER BY k.created_at, k.id"
        ))
        .bind(project_name)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(ApiKeyRecord::from).collect())
    }

    async fn revoke_api_key(&self, id_or_prefix: &str) -> StoreResult<Option<ApiKeyRecord>> {
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE (id = $2 OR display_prefix = $2) AND revoked_at IS NULL",
        )
        .bind(Timestamp::now().as_micros())
        .bind(id_or_prefix)
        .execute(&self.pool)
        .await?;
        let row: Option<KeyRow> = sqlx::query_as(concat!(select_keys!(), " WHERE k.id = $1 OR k.display_prefix = $1"))
            .bind(id_or_prefix)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(ApiKeyRecord::from))
    }

    async fn authenticate(&self, hash: &KeyHash) -> StoreResult<Option<(ApiKeyRecord, Project)>> {
        let row: Option<KeyRow> =
            sqlx::query_as(concat!(select_keys!(), " WHERE k.key_hash = $1 AND k.revoked_at IS NULL"))
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
        hooks::claim(&self.pool, now, lease_until, limit).await
    }

    async fn finish_attempts(&self, attempts: &[(Claimed, AttemptOutcome)]) -> StoreResult<Vec<bool>> {
        hooks::finish(&self.pool, attempts).await
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

    async fn request(&self, project_id: &str, kind: RequestKind, call_id: &str) -> StoreResult<Option<RequestRecord>> {
        let row: Option<RequestRow> = sqlx::query_as(concat!(
            "SELECT ",
            request_columns!(),
            " FROM requests WHERE project_id = $1 AND kind = $2 AND call_id = $3"
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

    async fn pending(&self, project_id: &str, kind: RequestKind, page: &PageRequest) -> StoreResult<Page> {
        // Rows past max_bytes (counted from the page's start) are not even read.
        let rows: Vec<RequestRow> = sqlx::query_as(concat!(
            "SELECT ",
            request_columns!(),
            " FROM (SELECT ",
            request_columns!(),
            ", sum(octet_length(spec)) OVER (ORDER BY requested_at, call_id ROWS UNBOUNDED PRECEDING) - octet_length(spec) AS before \
             FROM (SELECT ",
            request_columns!(),
            " FROM requests WHERE ",
            pending_filter!(),
            " ORDER BY requested_at, call_id LIMIT $4 OFFSET $5) page) sized WHERE before < $6 \
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
