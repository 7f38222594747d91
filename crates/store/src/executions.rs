//! At-most-once execution of approved function calls: the [`Executions`] trait, and
//! [`impl_executions`], which implements it for both backends with one SQL text. Each report is
//! checked against the execution as stored (see [`Execution::apply`]) and logged in the request's
//! audit chain, in one transaction that holds the request's row (PostgreSQL) or the write lock
//! (SQLite), so that of many concurrent starts exactly one wins.

use crate::StoreResult;
use async_trait::async_trait;
use countersign_core::RequestKind;
use countersign_core::event::RequestEvent;
use countersign_core::execution::{Execution, Refused};

/// What an execution report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executed {
    /// Recorded and logged; the execution as it is now.
    Recorded(Execution),
    /// A start sent again with its token: nothing changed; the execution as it is.
    Replayed(Execution),
    /// The report does not apply to the execution as it is (nothing changed).
    Refused(Refused),
    /// The request is not an approved function call (pending, rejected, ended, or a question);
    /// its decision, as `describe` names it, or `None` when there is no such request.
    NotApproved(Option<String>),
}

/// Execution reports of approved calls.
#[async_trait]
pub trait Executions: Send + Sync {
    /// Applies the report an `executed` event carries to its call, and logs the event.
    async fn record_execution(&self, event: &RequestEvent) -> StoreResult<Executed>;
    /// The execution of a call, if it was started.
    async fn execution(&self, project_id: &str, kind: RequestKind, call_id: &str) -> StoreResult<Option<Execution>>;
}

/// Implements [`Executions`] for a backend's store (a struct with a `pool: sqlx::Pool<$db>`),
/// whose `$begin` starts a write transaction, `$lock` locks the rows a `SELECT` reads, and
/// `$log_request` appends a request event inside it.
macro_rules! impl_executions {
    ($store:ty, $db:ty, begin: $begin:literal, lock: $lock:literal, log_request: $log_request:path) => {
        const _: () = {
            use $crate::executions::{Executed, Executions};
            use $crate::{StoreError, StoreResult};
            use async_trait::async_trait;
            use countersign_core::event::{EventBody, RequestEvent};
            use countersign_core::execution::{Applied, Execution, ExecutionState};
            use countersign_core::{RequestKind, Timestamp};
            use sqlx::Row;

            async fn read(
                conn: &mut <$db as sqlx::Database>::Connection,
                project_id: &str,
                kind: &str,
                call_id: &str,
            ) -> StoreResult<Option<Execution>> {
                let row = sqlx::query(
                    "SELECT state, started_at, started_by, ended_at, result_sha256, error, start_token FROM executions \
                     WHERE project_id = $1 AND kind = $2 AND call_id = $3",
                )
                .bind(project_id)
                .bind(kind)
                .bind(call_id)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let state: String = row.try_get("state")?;
                Ok(Some(Execution {
                    state: ExecutionState::parse(&state)
                        .ok_or_else(|| StoreError::Internal(format!("unknown execution state {state:?}")))?,
                    started_at: Timestamp::from_micros(row.try_get("started_at")?),
                    started_by: row.try_get("started_by")?,
                    ended_at: row.try_get::<Option<i64>, _>("ended_at")?.map(Timestamp::from_micros),
                    result_sha256: row.try_get("result_sha256")?,
                    error: row.try_get("error")?,
                    start_token: row.try_get("start_token")?,
                }))
            }

            #[async_trait]
            impl Executions for $store {
                async fn record_execution(&self, event: &RequestEvent) -> StoreResult<Executed> {
                    let EventBody::Executed { report } = &event.body else {
                        return Err(StoreError::Internal("record_execution needs an executed event".into()));
                    };
                    let mut conn = self.pool.acquire().await?;
                    let result = record(self, &mut conn, event, report).await;
                    $crate::error::forget_on_error(&mut conn, result)
                }

                async fn execution(
                    &self,
                    project_id: &str,
                    kind: RequestKind,
                    call_id: &str,
                ) -> StoreResult<Option<Execution>> {
                    let mut conn = self.pool.acquire().await?;
                    read(&mut conn, project_id, kind.as_str(), call_id).await
                }
            }

            /// [`Executions::record_execution`] in one transaction on `conn`.
            async fn record(
                store: &$store,
                conn: &mut sqlx::pool::PoolConnection<$db>,
                event: &RequestEvent,
                report: &countersign_core::execution::ExecutionReport,
            ) -> StoreResult<Executed> {
                    let (project_id, kind, call_id) = (&event.project_id, event.request_kind.as_str(), &event.call_id);
                    let mut tx = sqlx::Connection::begin_with(&mut **conn, $begin).await?;
                    let request = sqlx::query(concat!(
                        "SELECT responded_at, approved, ended FROM requests \
                         WHERE project_id = $1 AND kind = $2 AND call_id = $3 ",
                        $lock
                    ))
                    .bind(project_id)
                    .bind(kind)
                    .bind(call_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(request) = request else { return Ok(Executed::NotApproved(None)) };
                    let responded: Option<i64> = request.try_get("responded_at")?;
                    let approved: Option<bool> = request.try_get("approved")?;
                    let ended: Option<String> = request.try_get("ended")?;
                    if event.request_kind != RequestKind::FunctionCall || approved != Some(true) || ended.is_some() {
                        let decision = match (responded, approved, ended) {
                            (None, _, _) => "pending".to_owned(),
                            (_, _, Some(ended)) => ended,
                            _ if event.request_kind != RequestKind::FunctionCall => "answered".to_owned(),
                            _ => "rejected".to_owned(),
                        };
                        return Ok(Executed::NotApproved(Some(decision)));
                    }
                    let current = read(&mut tx, project_id, kind, call_id).await?;
                    let next = match Execution::apply(current.as_ref(), report, event.at) {
                        Ok(Applied::Changed(next)) => next,
                        Ok(Applied::Replayed(now)) => return Ok(Executed::Replayed(now)),
                        Err(refused) => return Ok(Executed::Refused(refused)),
                    };
                    sqlx::query(
                        "INSERT INTO executions (project_id, kind, call_id, state, started_at, started_by, ended_at, \
                         result_sha256, error, start_token) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                         ON CONFLICT (project_id, kind, call_id) DO UPDATE SET state = excluded.state, \
                         ended_at = excluded.ended_at, result_sha256 = excluded.result_sha256, error = excluded.error",
                    )
                    .bind(project_id)
                    .bind(kind)
                    .bind(call_id)
                    .bind(next.state.as_str())
                    .bind(next.started_at.as_micros())
                    .bind(&next.started_by)
                    .bind(next.ended_at.map(|t| t.as_micros()))
                    .bind(next.result_sha256.as_deref())
                    .bind(next.error.as_deref())
                    .bind(next.start_token.as_deref())
                    .execute(&mut *tx)
                    .await?;
                    let queued = $log_request(&mut tx, event).await?;
                    tx.commit().await?;
                    store.request_event_logged(queued);
                    Ok(Executed::Recorded(next))
            }
        };
    };
}

pub(crate) use impl_executions;
