//! What the store can say about itself for metrics: the [`Stats`] trait (one SQL text for both
//! backends, [`impl_stats`]) and the names of the metrics the store records itself.

use crate::StoreResult;
use async_trait::async_trait;
use countersign_core::RequestKind;

/// Metric names recorded inside the store (the server's `/metrics` serves them).
pub mod metrics {
    /// Writes committed together per transaction (a histogram).
    pub const COMMIT_BATCH: &str = "countersign_store_commit_batch_size";
}

/// Gauges read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Pending requests per project (by name) and kind; pairs with none are absent.
    pub pending: Vec<PendingCount>,
    /// Waiting deliveries per channel; channels with none are absent.
    pub queues: Vec<QueueGauge>,
}

/// Pending requests of one project and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCount {
    pub project: String,
    pub kind: RequestKind,
    pub count: u64,
}

/// The deliveries of one channel waiting for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueGauge {
    pub channel: String,
    pub depth: u64,
    /// When the oldest of them was queued (µs since the epoch).
    pub oldest_micros: Option<i64>,
}

/// Counts for metrics; each is one indexed query.
#[async_trait]
pub trait Stats: Send + Sync {
    /// Pending requests by project and kind, and delivery queues by channel, now.
    async fn gauges(&self) -> StoreResult<Gauges>;
}

/// Implements [`Stats`] for a backend's store (a struct with a `pool: sqlx::Pool<$db>`).
macro_rules! impl_stats {
    ($store:ty, $db:ty) => {
        const _: () = {
            use $crate::stats::{Gauges, PendingCount, QueueGauge, Stats};
            use $crate::{StoreError, StoreResult};
            use countersign_core::RequestKind;

            #[async_trait::async_trait]
            impl Stats for $store {
                async fn gauges(&self) -> StoreResult<Gauges> {
                    // The partial index `requests_pending (project_id, kind, ...)` covers the count.
                    let pending: Vec<(String, String, i64)> = sqlx::query_as(
                        "SELECT p.name, c.kind, c.n FROM \
                         (SELECT project_id, kind, COUNT(*) AS n FROM requests WHERE responded_at IS NULL \
                          GROUP BY project_id, kind) c JOIN projects p ON p.id = c.project_id ORDER BY p.name, c.kind",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    let queues: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
                        "SELECT channel, COUNT(*), MIN(created_at) FROM deliveries WHERE status = 'pending' \
                         GROUP BY channel ORDER BY channel",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    let pending = pending
                        .into_iter()
                        .map(|(project, kind, n)| {
                            let kind = RequestKind::parse(&kind)
                                .ok_or_else(|| StoreError::Internal(format!("stored request kind {kind:?} is unknown")))?;
                            Ok(PendingCount { project, kind, count: u64::try_from(n).unwrap_or_default() })
                        })
                        .collect::<StoreResult<_>>()?;
                    let queues = queues
                        .into_iter()
                        .map(|(channel, depth, oldest_micros)| QueueGauge {
                            channel,
                            depth: u64::try_from(depth).unwrap_or_default(),
                            oldest_micros,
                        })
                        .collect();
                    Ok(Gauges { pending, queues })
                }
            }
        };
    };
}
pub(crate) use impl_stats;
