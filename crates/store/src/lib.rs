//! Countersign's storage: the [`Store`] interface the server and CLI are written against, split by
//! concern ([`Projects`], [`People`], [`Requests`], [`Listings`], [`Deliveries`], [`Slack`],
//! [`Policies`]), and one
//! implementation per database backend, each owning its migrations.
//!
//! Each trait is implemented once. Where the SQL is the same on both backends (projects, people,
//! listings, deliveries), the trait's module holds a macro that implements it for a backend's
//! store (in an anonymous `const` block, so the imports and helpers it brings stay out of the
//! backend's module), and each backend invokes it with the few expressions its dialect spells
//! differently. [`Requests`], how requests are created, decided and escalated, differs for real
//! and is written in `sqlite/` (the group-commit writer) and `postgres/` (conditional statements
//! that NOTIFY the other instances, and the change feed).

pub mod copy;
mod deliveries;
mod emails;
pub(crate) mod error;
mod events;
mod executions;
mod inspect;
mod listing;
mod people;
mod policies;
pub mod postgres;
mod projects;
mod queue;
mod receipts;
mod requests;
mod row;
pub mod secrets;
mod slack;
mod sms;
pub mod sqlite;
mod stats;
mod timers;
mod webhooks;

use std::sync::Arc;

pub use deliveries::Deliveries;
pub use error::{StoreError, StoreResult};
pub use events::{AuditEvent, ChainState};
pub use executions::{Executed, Executions};
pub use inspect::{Inspection, inspect};
pub use listing::{DecidedStatus, Listings, RequestFilter};
pub use people::{Credentials, NewSession, People, Session};
pub use policies::{Group, GroupChange, Policies, StoredPolicy, Voted};
pub use projects::{ApiKeyRecord, NewApiKey, Projects};
pub use queue::{Attempt, AttemptOutcome, Claimed, Delivery};
pub use receipts::{Receipts, SigningKey};
pub use requests::{Change, Created, Feed, Page, PageRequest, Requests};
pub use slack::{RequestClaim, Slack, SlackConnection, SlackMessage};
pub use sms::{Medium, PhoneSet, Sms, SmsCode, TwilioConnection};
pub use stats::{Gauges, PendingCount, QueueGauge, Stats, metrics};
pub use timers::{Fired, FiredChange};
pub use webhooks::{NewWebhookEndpoint, WebhookEndpoint};

/// The storage traits, for callers: `use countersign_store::prelude::*;`.
/// Waits for a first write, then takes the others already queued, up to `max` in all: a group
/// to commit together (SQLite's writer, PostgreSQL's create batches). `None` once the queue is
/// closed and empty.
pub(crate) async fn gather<T>(queue: &mut tokio::sync::mpsc::Receiver<T>, max: usize) -> Option<Vec<T>> {
    let mut group = vec![queue.recv().await?];
    while group.len() < max {
        match queue.try_recv() {
            Ok(next) => group.push(next),
            Err(_) => break,
        }
    }
    Some(group)
}

pub mod prelude {
    pub use crate::{
        Deliveries, Executions, Listings, People, Policies, Projects, Receipts, Requests, Slack, Sms, Stats, Store,
    };
}

/// Syncs the directory that holds `path`, so a file created or renamed there survives a crash.
pub(crate) fn sync_dir_of(path: &std::path::Path) -> std::io::Result<()> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_owned(),
        None => std::path::PathBuf::from("."),
    };
    std::fs::File::open(&dir)?.sync_all()
}

/// Everything Countersign persists. Every method that returns `Ok` after a write has committed it
/// durably: a crash right after loses nothing.
pub trait Store:
    Projects + People + Requests + Listings + Deliveries + Slack + Sms + Policies + Receipts + Executions + Stats + 'static
{
}

impl<
    T: Projects
        + People
        + Requests
        + Listings
        + Deliveries
        + Slack
        + Sms
        + Policies
        + Receipts
        + Executions
        + Stats
        + 'static,
> Store for T
{
}

/// Opens the store a database URL names: `postgres://...` (or `postgresql://...`), or
/// `sqlite://PATH` (or a plain file path).
/// Its secrets are sealed with `keyring`'s current key (see [`secrets`]).
pub async fn open(url: &str, keyring: secrets::Keyring) -> StoreResult<Arc<dyn Store>> {
    match sqlite_path(url) {
        None => Ok(Arc::new(postgres::PostgresStore::open(url, keyring).await?)),
        Some(path) => Ok(Arc::new(sqlite::SqliteStore::open(&path, keyring).await?)),
    }
}

/// The file of a SQLite database URL (`sqlite://PATH`, `sqlite:PATH` or a plain path); `None`
/// for PostgreSQL (`postgres://...`, `postgresql://...`).
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return None;
    }
    let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    Some(std::path::PathBuf::from(path))
}
