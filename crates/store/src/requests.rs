//! How requests are written: the [`Requests`] trait, which each backend implements its own way
//! (SQLite's group-commit writer; PostgreSQL's conditional statements that NOTIFY the other
//! instances), and the types of the request interface. Reading them is [`crate::Listings`].

use crate::StoreResult;
use crate::timers::Fired;
use async_trait::async_trait;
use countersign_core::{Escalation, Outcome, RequestKind, RequestRecord, Timestamp};
use tokio::sync::broadcast;

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

/// Requests from agents: stored, decided and escalated, each change committed with its event;
/// and how the processes sharing the database hear of it.
#[async_trait]
pub trait Requests: Send + Sync {
    /// Stores a new pending request, unless one with the same project, kind and `call_id` exists.
    async fn create_request(&self, request: &RequestRecord) -> StoreResult<Created>;
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

    /// Fires the timers due at `now` (at most `limit`, oldest first): each escalates or ends its
    /// request as its stored terms say, if it is still pending, with its event, and is marked
    /// fired in the same transaction. A timer fires once, also with several instances.
    async fn fire_timers(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<Fired>>;

    /// What the in-memory views and the delivery workers must hear of: on a backend that several
    /// processes share, the creates, decisions and escalations of any of them; on SQLite, where
    /// this process is the only one writing, only [`Feed::Queued`]. `None`: nothing to hear.
    fn changes(&self) -> Option<broadcast::Receiver<Feed>> {
        None
    }

    /// Finishes outstanding writes and closes connections.
    async fn close(&self);
}
