//! Countersign's storage: the [`Store`] trait the server and CLI are written against, and one
//! implementation per database backend, each owning its migrations.

mod emails;
mod error;
mod events;
mod listing;
pub mod postgres;
mod row;
pub mod sqlite;
mod users;
mod webhooks;

use async_trait::async_trait;
use countersign_core::api_key::KeyHash;
use countersign_core::session::SessionKind;
use countersign_core::{
    Email, Escalation, Outcome, Project, ProjectName, RequestKind, RequestRecord, Role, Timestamp, User,
};
use std::sync::Arc;

pub use emails::{ClaimedEmail, EmailMessage};
pub use error::{StoreError, StoreResult};
pub use events::{AuditEvent, ChainState};
pub use listing::{DecidedStatus, RequestFilter};
pub use webhooks::{Attempt, AttemptOutcome, Claimed, Delivery, NewWebhookEndpoint, WebhookEndpoint};

/// What checking a password needs about an enabled person.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_id: String,
    /// argon2 PHC string; `None` until a password is set.
    pub password_hash: Option<String>,
}

/// A session to store (its token only as a hash).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub hash: KeyHash,
    pub user_id: String,
    pub kind: SessionKind,
    pub csrf_token: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A live session: who is signed in, and the projects they see.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub kind: SessionKind,
    pub csrf_token: String,
    pub expires_at: Timestamp,
    /// The person's projects, by name.
    pub projects: Vec<Project>,
}

/// A stored API key (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub project_id: String,
    pub project_name: String,
    pub name: Option<String>,
    /// The first characters of the key, e.g. `cs_AbC123`.
    pub display_prefix: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// What the key may do.
    pub scopes: countersign_core::api_key::Scopes,
}

/// What to store for a new key.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub project_id: String,
    pub name: Option<String>,
    pub display_prefix: String,
    pub hash: KeyHash,
    /// What the key may do.
    pub scopes: countersign_core::api_key::Scopes,
}

/// Result of creating a request.
#[derive(Debug, Clone)]
pub enum Created {
    /// Stored now, exactly as given.
    New,
    /// A request with this `call_id` already existed; it is returned unchanged.
    Existing(Box<RequestRecord>),
}

/// Result of recording a decision or an escalation on a pending request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Recorded and committed.
    Done,
    /// The request was already decided; nothing changed.
    AlreadyDecided,
    /// No such request in this project.
    NotFound,
}

/// Which page of a listing to return.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: u32,
    pub offset: u32,
    /// Only requests of this run.
    pub run_id: Option<String>,
    /// Leave out the requests whose spec starts past this many bytes from the page's start (the
    /// first one is always returned).
    pub max_bytes: Option<u64>,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<RequestRecord>,
    pub total: u64,
}

/// What other processes sharing the database did, as far as the in-memory views must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// Requests were created in a project (by any process, this one included; shortly after).
    Created { project_id: String },
    /// A request was decided or escalated (by any process, this one included).
    Changed { project_id: String, kind: RequestKind, call_id: String },
    /// Changes may have been missed (the listening connection was lost and is back): re-check
    /// everything held in memory.
    Resync,
    /// Deliveries were queued (routed from the event log): the delivery workers have work.
    Queued,
}

/// Everything Countersign persists. Every method that returns `Ok` after a write has committed it
/// durably: a crash right after loses nothing.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Returns the project with this name, creating it if needed.
    async fn ensure_project(&self, name: &ProjectName) -> StoreResult<Project>;
    /// The project with this name, if any.
    async fn project_by_name(&self, name: &str) -> StoreResult<Option<Project>>;
    /// The project with this id, if any.
    async fn project_by_id(&self, id: &str) -> StoreResult<Option<Project>>;

    /// Stores a new API key.
    async fn insert_api_key(&self, key: NewApiKey) -> StoreResult<ApiKeyRecord>;
    /// Lists keys, of one project or of all, oldest first.
    async fn api_keys(&self, project_name: Option<&str>) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Revokes the key with this id or display prefix; returns it, or `None` if there is none.
    async fn revoke_api_key(&self, id_or_prefix: &str) -> StoreResult<Option<ApiKeyRecord>>;
    /// The active (unrevoked) key with this hash and its project.
    async fn authenticate(&self, hash: &KeyHash) -> StoreResult<Option<(ApiKeyRecord, Project)>>;
    /// How many unrevoked keys exist across all projects.
    async fn count_active_api_keys(&self) -> StoreResult<u64>;

    /// Creates a person in the given projects; `None` when the email is already taken.
    async fn create_user(
        &self,
        email: &Email,
        role: Role,
        password_hash: Option<&str>,
        project_ids: &[String],
    ) -> StoreResult<Option<User>>;
    /// People, of one project or of all, by email.
    async fn users(&self, project_name: Option<&str>) -> StoreResult<Vec<User>>;
    /// Disables a person; returns them, or `None` if there is nobody with that email.
    async fn disable_user(&self, email: &Email) -> StoreResult<Option<User>>;
    /// Adds a person to the projects `add` and takes them out of `remove` (ids), in one
    /// transaction; returns them as they are now, or `None` if there is nobody with that email.
    async fn change_user_projects(&self, email: &Email, add: &[String], remove: &[String])
    -> StoreResult<Option<User>>;

    /// The person with this id (enabled or not).
    async fn user(&self, id: &str) -> StoreResult<Option<User>>;
    /// The password hash of an enabled person, by email.
    async fn credentials(&self, email: &Email) -> StoreResult<Option<Credentials>>;
    /// Stores a session (and drops expired ones).
    async fn create_session(&self, session: &NewSession) -> StoreResult<()>;
    /// The unexpired session with this token hash, of an enabled person.
    async fn session(&self, hash: &KeyHash, now: Timestamp) -> StoreResult<Option<Session>>;
    /// Ends a session (logout).
    async fn delete_session(&self, hash: &KeyHash) -> StoreResult<()>;
    /// Stores a one-time set-password token.
    async fn create_password_token(&self, user_id: &str, hash: &KeyHash, expires_at: Timestamp) -> StoreResult<()>;
    /// True when a set-password token is unused, unexpired and its person enabled (it stays
    /// usable: this only asks).
    async fn password_token_usable(&self, hash: &KeyHash, now: Timestamp) -> StoreResult<bool>;
    /// Uses a set-password token: sets the password and ends the person's sessions. `None` when
    /// the token is unknown, used, expired, or the person is disabled.
    async fn set_password_with_token(
        &self,
        hash: &KeyHash,
        password_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<User>>;

    /// Requests of the given projects matching `filter`: pending ones newest asked first, or
    /// decided ones newest decided first.
    async fn list_requests(
        &self,
        project_ids: &[String],
        filter: &RequestFilter,
        limit: u32,
        offset: u32,
    ) -> StoreResult<Page>;

    /// Adds a webhook endpoint.
    async fn add_webhook(&self, new: &NewWebhookEndpoint) -> StoreResult<WebhookEndpoint>;
    /// An active endpoint.
    async fn webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>>;
    /// Active endpoints, of one project or of all, oldest first.
    async fn webhooks(&self, project_id: Option<&str>) -> StoreResult<Vec<WebhookEndpoint>>;
    /// Removes an endpoint; its pending deliveries are marked failed. Returns it, if it existed.
    async fn remove_webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>>;
    /// An endpoint's deliveries, newest first.
    async fn deliveries(&self, endpoint_id: &str, limit: u32) -> StoreResult<Vec<Delivery>>;
    /// One delivery.
    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>>;
    /// A delivery's attempts, oldest first.
    async fn attempts(&self, delivery_id: &str) -> StoreResult<Vec<Attempt>>;
    /// Claims up to `limit` due deliveries for one attempt each, until `lease_until`; no other
    /// worker (of any instance) claims them meanwhile.
    async fn claim_deliveries(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> StoreResult<Vec<Claimed>>;
    /// Records attempts of claimed deliveries, all in one transaction; per attempt, `false` if its
    /// claim had lapsed (nothing recorded for it).
    async fn finish_attempts(&self, attempts: &[(Claimed, AttemptOutcome)]) -> StoreResult<Vec<bool>>;
    /// Schedules a delivery for another attempt now (whatever its status).
    async fn redeliver(&self, id: &str) -> StoreResult<Option<Delivery>>;
    /// When the next pending delivery is due, if any.
    async fn next_delivery_due(&self) -> StoreResult<Option<Timestamp>>;

    /// Sets (or clears) a project's default email address; `false` if there is no such project.
    async fn set_default_email(&self, project_id: &str, address: Option<&str>) -> StoreResult<bool>;
    /// A project's default email address.
    async fn default_email(&self, project_id: &str) -> StoreResult<Option<String>>;

    /// Claims up to `limit` due emails for one sending attempt each, until `lease_until`.
    async fn claim_emails(&self, now: Timestamp, lease_until: Timestamp, limit: u32) -> StoreResult<Vec<ClaimedEmail>>;
    /// Records a sending attempt: sent (to `recipients`), or failed with `error` and retried at
    /// `retry_at` (given up when `None`). `false` if the claim had lapsed.
    async fn finish_email(
        &self,
        claimed: &ClaimedEmail,
        recipients: &[String],
        error: Option<&str>,
        retry_at: Option<Timestamp>,
    ) -> StoreResult<bool>;
    /// The first email found among these Message-IDs (a reply's In-Reply-To and References).
    async fn email_by_message_ids(&self, ids: &[String]) -> StoreResult<Option<EmailMessage>>;
    /// The emails of one request, oldest first.
    async fn emails_of(&self, project_id: &str, kind: RequestKind, call_id: &str) -> StoreResult<Vec<EmailMessage>>;
    /// When the next pending email is due, if any.
    async fn next_email_due(&self) -> StoreResult<Option<Timestamp>>;
    /// Sets (or, with `None`, removes) the hash of a project's inbound-email secret, replacing
    /// any earlier one; `false` if there is no such project.
    async fn set_inbound_email_secret(&self, project_id: &str, hash: Option<&KeyHash>) -> StoreResult<bool>;
    /// The project whose inbound-email secret has this hash.
    async fn project_by_inbound_email_secret(&self, hash: &KeyHash) -> StoreResult<Option<Project>>;
    /// A server-wide secret by name, created from `fresh` by whichever instance asks first.
    async fn server_key(&self, name: &str, fresh: &str) -> StoreResult<String>;

    /// Stores a new pending request, unless one with the same project, kind and `call_id` exists.
    async fn create_request(&self, request: &RequestRecord) -> StoreResult<Created>;
    /// One request of a project.
    async fn request(&self, project_id: &str, kind: RequestKind, call_id: &str) -> StoreResult<Option<RequestRecord>>;
    /// Records a decision if, and only if, the request is still pending (the first decision wins).
    async fn decide(
        &self,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
        outcome: &Outcome,
    ) -> StoreResult<Change>;
    /// Appends an escalation to a pending request.
    async fn escalate(
        &self,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
        escalation: &Escalation,
    ) -> StoreResult<Change>;
    /// Pending requests of a project, oldest first.
    async fn pending(&self, project_id: &str, kind: RequestKind, page: &PageRequest) -> StoreResult<Page>;
    /// Every pending request of every project (to warm the server's in-memory view at start).
    async fn all_pending(&self) -> StoreResult<Vec<RequestRecord>>;

    /// Sealed events of one project's chain after position `after`, in chain order.
    async fn audit_events(&self, project_id: &str, after: u64, limit: u32) -> StoreResult<Vec<AuditEvent>>;
    /// The event chains: of one project, or of every project that has events.
    async fn chains(&self, project_id: Option<&str>) -> StoreResult<Vec<ChainState>>;

    /// Creates, decisions and escalations committed by any process on this database, for backends that
    /// several processes share; `None` when this process is the only one deciding (SQLite).
    fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Feed>> {
        None
    }

    /// Finishes outstanding writes and closes connections.
    async fn close(&self);
}

/// Opens the store a database URL names: `postgres://...` (or `postgresql://...`), or
/// `sqlite://PATH` (or a plain file path).
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::PostgresStore::open(url).await?));
    }
    let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    Ok(Arc::new(sqlite::SqliteStore::open(std::path::Path::new(path)).await?))
}
