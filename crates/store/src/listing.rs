//! Listings across a person's projects: the inbox (pending, newest first) and the history
//! (decided, newest first) with its filters. Built with sqlx's `QueryBuilder` so the filters bind
//! as parameters; the few expressions that differ between the SQL dialects come in as arguments
//! of [`listing_queries`] (through [`crate::requests::impl_requests`]).

/// How a decided request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedStatus {
    Approved,
    Rejected,
    Answered,
}

impl DecidedStatus {
    /// Parses `approved`, `rejected` or `answered`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "approved" => Some(Self::Approved),
            "rejected" => Some(Self::Rejected),
            "answered" => Some(Self::Answered),
            _ => None,
        }
    }

    /// The name, as in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Answered => "answered",
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

/// Defines `list_requests` for one database. `$fn_expr` and `$email_expr` extract the function
/// name and the decider's email; `$like` is the case-insensitive LIKE of the dialect.
macro_rules! listing_queries {
    ($db:ty, $fn_expr:literal, $email_expr:literal, $like:literal) => {
        use crate::listing::{DecidedStatus, RequestFilter, contains_pattern};
        use crate::row::{RequestRow, request_columns};
        use crate::{Page, StoreResult};
        use sqlx::QueryBuilder;

        fn push_where(q: &mut QueryBuilder<$db>, project_ids: &[String], filter: &RequestFilter) {
            q.push(" FROM requests WHERE project_id IN (");
            let mut ids = q.separated(", ");
            for id in project_ids {
                ids.push_bind(id.clone());
            }
            q.push(")");
            q.push(if filter.pending { " AND responded_at IS NULL" } else { " AND responded_at IS NOT NULL" });
            match filter.status {
                Some(DecidedStatus::Approved) => q.push(" AND kind = 'function_call' AND approved = ").push_bind(true),
                Some(DecidedStatus::Rejected) => q.push(" AND kind = 'function_call' AND approved = ").push_bind(false),
                Some(DecidedStatus::Answered) => q.push(" AND kind = 'human_contact'"),
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

        pub(super) async fn list_requests(
            pool: &sqlx::Pool<$db>,
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
            let (total,): (i64,) = count.build_query_as().fetch_one(pool).await?;
            let mut select = QueryBuilder::<$db>::new(concat!("SELECT ", request_columns!()));
            push_where(&mut select, project_ids, filter);
            select.push(if filter.pending { " ORDER BY requested_at DESC" } else { " ORDER BY responded_at DESC" });
            select.push(", call_id LIMIT ").push_bind(i64::from(limit)).push(" OFFSET ").push_bind(i64::from(offset));
            let rows: Vec<RequestRow> = select.build_query_as().fetch_all(pool).await?;
            Ok(Page { items: crate::row::readable(rows), total: u64::try_from(total).unwrap_or(0) })
        }
    };
}
pub(crate) use listing_queries;

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(super::contains_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }
}
