//! Reading requests and their event log: the [`Listings`] trait (one request, the pending pages
//! agents poll, the inbox and history across a person's projects, the audit chains), and
//! [`impl_listings`], which implements it for both backends with one SQL text. The inbox and
//! history filters are built with sqlx's `QueryBuilder` so they bind as parameters; the few
//! expressions that differ between the SQL dialects come in as arguments of [`impl_listings`].

use crate::{AuditEvent, ChainState, Page, PageRequest, StoreResult};
use async_trait::async_trait;
use countersign_core::{RequestKind, RequestRecord};

/// How a decided request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedStatus {
    Approved,
    Rejected,
    Answered,
    /// Its deadline passed with nobody deciding.
    Expired,
    /// The agent withdrew it.
    Cancelled,
}

impl DecidedStatus {
    /// Every status, in the order people are offered them.
    pub const ALL: [Self; 5] = [Self::Approved, Self::Rejected, Self::Answered, Self::Expired, Self::Cancelled];

    /// Parses `approved`, `rejected`, `answered`, `expired` or `cancelled`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// The name, as in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Answered => "answered",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Which requests a listing returns. Every text filter is exact but `decided_by` (part of the
/// email) and `text` (part of the call id, run id, spec, comment or response, any case).
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Pending requests (the inbox) instead of decided ones (the history).
    pub pending: bool,
    pub status: Option<DecidedStatus>,
    pub run_id: Option<String>,
    /// The function name of an approval.
    pub function: Option<String>,
    pub decided_by: Option<String>,
    pub text: Option<String>,
}

/// `%text%` for LIKE, with the wildcards in `text` escaped by `\`.
pub(crate) fn contains_pattern(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

/// Requests and their events as they are read: the same SQL on every backend.
#[async_trait]
pub trait Listings: Send + Sync {
    /// One request of a project.
    async fn request(&self, project_id: &str, kind: RequestKind, call_id: &str) -> StoreResult<Option<RequestRecord>>;
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
}

/// The WHERE clause of the pending listing: $1 project, $2 kind, $3 optional run.
macro_rules! pending_filter {
    () => {
        "project_id = $1 AND kind = $2 AND responded_at IS NULL AND ($3 IS NULL OR run_id = $3)"
    };
}
pub(crate) use pending_filter;

/// Implements [`Listings`] for a backend's store (a struct with a `pool: sqlx::Pool<$db>`).
/// `function` and `decider_email` extract the function name and the decider's email from the
/// stored JSON; `like` is the dialect's case-insensitive LIKE.
macro_rules! impl_listings {
    ($store:ty, $db:ty, function: $fn_expr:literal, decider_email: $email_expr:literal, like: $like:literal) => {
        const _: () = {
            use crate::events::{AuditEvent, AuditRow, ChainState};
            use crate::listing::{DecidedStatus, Listings, RequestFilter, contains_pattern, pending_filter};
            use crate::row::{RequestRow, readable, request_columns};
            use crate::{Page, PageRequest, StoreResult};
            use countersign_core::event::{ChainHash, Checkpoint};
            use countersign_core::{RequestKind, RequestRecord};
            use sqlx::QueryBuilder;

            /// Appends the FROM and WHERE of a listing: `filter` over the projects `project_ids`.
            fn push_where(q: &mut QueryBuilder<$db>, project_ids: &[String], filter: &RequestFilter) {
                q.push(" FROM requests WHERE project_id IN (");
                let mut ids = q.separated(", ");
                for id in project_ids {
                    ids.push_bind(id.clone());
                }
                q.push(")");
                q.push(if filter.pending { " AND responded_at IS NULL" } else { " AND responded_at IS NOT NULL" });
                // An ended request (expired, cancelled) is stored as a rejection or an answer for the
                // SDKs, with `ended` saying how it ended: only its own filter finds it.
                match filter.status {
                    Some(DecidedStatus::Approved) => {
                        q.push(" AND kind = 'function_call' AND ended IS NULL AND approved = ").push_bind(true)
                    }
                    Some(DecidedStatus::Rejected) => {
                        q.push(" AND kind = 'function_call' AND ended IS NULL AND approved = ").push_bind(false)
                    }
                    Some(DecidedStatus::Answered) => q.push(" AND kind = 'human_contact' AND ended IS NULL"),
                    Some(ended @ (DecidedStatus::Expired | DecidedStatus::Cancelled)) => {
                        q.push(" AND ended = ").push_bind(ended.as_str())
                    }
                    None => q,
                };
                if let Some(run_id) = &filter.run_id {
                    q.push(" AND run_id = ").push_bind(run_id.clone());
                }
                if let Some(function) = &filter.function {
                    q.push(concat!(" AND kind = 'function_call' AND ", $fn_expr, " = ")).push_bind(function.clone());
                }
                if let Some(email) = &filter.decided_by {
                    q.push(concat!(" AND ", $email_expr, " ", $like, " ")).push_bind(contains_pattern(email));
                    q.push(" ESCAPE '\\'");
                }
                if let Some(text) = &filter.text {
                    let pattern = contains_pattern(text);
                    q.push(" AND (");
                    for (i, column) in ["call_id", "run_id", "spec", "comment", "response"].into_iter().enumerate() {
                        if i > 0 {
                            q.push(" OR ");
                        }
                        q.push(column).push(concat!(" ", $like, " ")).push_bind(pattern.clone()).push(" ESCAPE '\\'");
                    }
                    q.push(")");
                }
            }

            #[async_trait::async_trait]
            impl Listings for $store {
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
                    if project_ids.is_empty() {
                        return Ok(Page { items: Vec::new(), total: 0 });
                    }
                    let mut count = QueryBuilder::<$db>::new("SELECT COUNT(*)");
                    push_where(&mut count, project_ids, filter);
                    let (total,): (i64,) = count.build_query_as().fetch_one(&self.pool).await?;
                    let mut select = QueryBuilder::<$db>::new(concat!("SELECT ", request_columns!()));
                    push_where(&mut select, project_ids, filter);
                    select.push(if filter.pending { " ORDER BY requested_at DESC" } else { " ORDER BY responded_at DESC" });
                    select.push(", call_id LIMIT ").push_bind(i64::from(limit)).push(" OFFSET ").push_bind(i64::from(offset));
                    let rows: Vec<RequestRow> = select.build_query_as().fetch_all(&self.pool).await?;
                    Ok(Page { items: readable(rows), total: u64::try_from(total).unwrap_or(0) })
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
            }
        };
    };
}
pub(crate) use impl_listings;

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(super::contains_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }

    #[test]
    fn every_status_parses_from_its_name() {
        for status in super::DecidedStatus::ALL {
            assert_eq!(super::DecidedStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(super::DecidedStatus::parse("pending"), None);
    }
}
