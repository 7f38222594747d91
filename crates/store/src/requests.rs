//! Approval requests and their event log: the [`Requests`] trait, and [`impl_requests`], which
//! implements it for both backends. Reads share one SQL text; the write path, the change feed and
//! shutting down differ, and each backend writes them as [`BackendRequests`].

use crate::listing::RequestFilter;
use crate::{AuditEvent, ChainState, StoreResult};
use async_trait::async_trait;
use countersign_core::{Escalation, Outcome, RequestKind, RequestRecord};
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

/// Requests from agents, their decisions and escalations, and the audit log of it all.
#[async_trait]
pub trait Requests: Send + Sync {
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
    /// Requests of the given projects matching `filter`: pending ones newest asked first, or
    /// decided ones newest decided first.
    async fn list_requests(
        &self,
        project_ids: &[String],
        filter: &RequestFilter,
        limit: u32,
        offset: u32,
    ) -> StoreResult<Page>;

    /// Sealed events of one project's chain after position `after`, in chain order.
    async fn audit_events(&self, project_id: &str, after: u64, limit: u32) -> StoreResult<Vec<AuditEvent>>;
    /// The event chains: of one project, or of every project that has events.
    async fn chains(&self, project_id: Option<&str>) -> StoreResult<Vec<ChainState>>;

    /// Creates, decisions and escalations committed by any process on this database, for backends
    /// that several processes share; `None` when this process is the only one deciding (SQLite).
    fn changes(&self) -> Option<broadcast::Receiver<Feed>>;

    /// Finishes outstanding writes and closes connections.
    async fn close(&self);
}

/// The part of [`Requests`] each backend writes itself (the same methods, forwarded by
/// [`impl_requests`]): how a change is written with its event, how other processes hear of it,
/// and shutting down.
#[async_trait]
pub(crate) trait BackendRequests: Send + Sync {
    /// See [`Requests::create_request`].
    async fn create_request(&self, request: &RequestRecord) -> StoreResult<Created>;
    /// See [`Requests::decide`].
    async fn decide(
        &self,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
        outcome: &Outcome,
    ) -> StoreResult<Change>;
    /// See [`Requests::escalate`].
    async fn escalate(
        &self,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
        escalation: &Escalation,
    ) -> StoreResult<Change>;
    /// See [`Requests::changes`].
    fn changes(&self) -> Option<broadcast::Receiver<Feed>> {
        None
    }
    /// See [`Requests::close`].
    async fn close(&self);
}

/// The WHERE clause of the pending listing: $1 project, $2 kind, $3 optional run.
macro_rules! pending_filter {
    () => {
        "project_id = $1 AND kind = $2 AND responded_at IS NULL AND ($3 IS NULL OR run_id = $3)"
    };
}
pub(crate) use pending_filter;

/// Implements [`Requests`] for a backend's store (a struct with a `pool: sqlx::Pool<$db>` that
/// implements [`BackendRequests`]). The listing's dialect expressions are passed on to
/// [`crate::listing::listing_queries`].
macro_rules! impl_requests {
    ($store:ty, $db:ty, function: $fn_expr:literal, decider_email: $email_expr:literal, like: $like:literal) => {
        const _: () = {
            use crate::events::{AuditEvent, AuditRow, ChainState};
            use crate::requests::{BackendRequests, pending_filter};
            use crate::row::{RequestRow, readable, request_columns};
            use crate::{Change, Created, Feed, Page, PageRequest, RequestFilter, Requests, StoreResult};
            use countersign_core::event::{ChainHash, Checkpoint};
            use countersign_core::{Escalation, Outcome, RequestKind, RequestRecord};

            mod listing {
                crate::listing::listing_queries!($db, $fn_expr, $email_expr, $like);
            }

            #[async_trait::async_trait]
            impl Requests for $store {
                async fn create_request(&self, request: &RequestRecord) -> StoreResult<Created> {
                    <Self as BackendRequests>::create_request(self, request).await
                }

                async fn request(
                    &self,
                    project_id: &str,
                    kind: RequestKind,
                    call_id: &str,
                ) -> StoreResult<Option<RequestRecord>> {
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
                    <Self as BackendRequests>::decide(self, project_id, kind, call_id, outcome).await
                }

                async fn escalate(
                    &self,
                    project_id: &str,
                    kind: RequestKind,
                    call_id: &str,
                    escalation: &Escalation,
                ) -> StoreResult<Change> {
                    <Self as BackendRequests>::escalate(self, project_id, kind, call_id, escalation).await
                }

                async fn pending(&self, project_id: &str, kind: RequestKind, page: &PageRequest) -> StoreResult<Page> {
                    // Rows past max_bytes (counted from the page's start) are not even read.
                    let rows: Vec<RequestRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        request_columns!(),
                        " FROM (SELECT ",
                        request_columns!(),
                        ", sum(octet_length(spec)) OVER (ORDER BY requested_at, call_id ROWS UNBOUNDED PRECEDING) \
                         - octet_length(spec) AS before FROM (SELECT ",
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
                    let (total,): (i64,) =
                        sqlx::query_as(concat!("SELECT count(*) FROM requests WHERE ", pending_filter!()))
                            .bind(project_id)
                            .bind(kind.as_str())
                            .bind(&page.run_id)
                            .fetch_one(&self.pool)
                            .await?;
                    Ok(Page { items: readable(rows), total: total as u64 })
                }

                async fn all_pending(&self) -> StoreResult<Vec<RequestRecord>> {
                    let rows: Vec<RequestRow> =
                        sqlx::query_as(concat!("SELECT ", request_columns!(), " FROM requests WHERE responded_at IS NULL"))
                            .fetch_all(&self.pool)
                            .await?;
                    Ok(readable(rows))
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

                async fn audit_events(&self, project_id: &str, after: u64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
                    let rows: Vec<AuditRow> = sqlx::query_as(
                        "SELECT project_id, seq, prev_hash, hash, body, sealed_at FROM events \
                         WHERE project_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    )
                    .bind(project_id)
                    .bind(i64::try_from(after).unwrap_or(i64::MAX))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.into_iter().map(AuditEvent::try_from).collect()
                }

                async fn chains(&self, project_id: Option<&str>) -> StoreResult<Vec<ChainState>> {
                    let rows: Vec<(String, Option<i64>, Option<String>, i64)> = sqlx::query_as(
                        "SELECT p.project_id, h.seq, h.hash, \
                                (SELECT count(*) FROM events e WHERE e.project_id = p.project_id AND e.seq IS NULL) \
                         FROM (SELECT project_id FROM chain_heads UNION SELECT DISTINCT project_id FROM events) p \
                         LEFT JOIN chain_heads h ON h.project_id = p.project_id \
                         WHERE $1 IS NULL OR p.project_id = $1 ORDER BY p.project_id",
                    )
                    .bind(project_id)
                    .fetch_all(&self.pool)
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

                fn changes(&self) -> Option<tokio::sync::broadcast::Receiver<Feed>> {
                    <Self as BackendRequests>::changes(self)
                }

                async fn close(&self) {
                    <Self as BackendRequests>::close(self).await
                }
            }
        };
    };
}
pub(crate) use impl_requests;
