//! The event log: every change to a request is written with its event, in the change's own
//! transaction, by the backend's write path. After commit, two steps read the log:
//!
//! - **sealing** gives each event its position in its project's hash chain (SQLite seals in the
//!   writer's transaction; on PostgreSQL one instance, the leader, seals shortly after commit);
//! - **routing** turns each event into the deliveries the channels want (webhook POSTs, emails),
//!   by the rules of [`countersign_core::route`]: on SQLite in the writer's transaction, so a
//!   change, its event and its deliveries commit together; on PostgreSQL in the sealer's
//!   transaction, which then wakes the delivery workers.
//!
//! Routing is idempotent: a delivery's id is derived from its event and target, so
//! routing an event again after a lost commit queues the very same delivery (same `webhook-id`,
//! same Message-ID).

use countersign_core::Timestamp;
use countersign_core::event::RequestEvent;
use countersign_core::event::{ChainHash, Checkpoint, chain_hash};
use std::collections::HashMap;

/// One sealed event, as the audit log exports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub project_id: String,
    /// Position in the project's chain (1 = first).
    pub seq: u64,
    pub prev_hash: ChainHash,
    pub hash: ChainHash,
    /// The event's JSON form: exactly the bytes its hash covers.
    pub body: String,
    pub sealed_at: Timestamp,
}

/// A project's chain as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    pub project_id: String,
    /// The last sealed event, as recorded when it was sealed (`None` before the first).
    pub head: Option<Checkpoint>,
    /// Events committed but not sealed yet.
    pub unsealed: u64,
}

/// Where the next event of each project goes: the heads of the chains being extended.
#[derive(Debug, Default)]
pub(crate) struct Heads(HashMap<String, Checkpoint>);

impl Heads {
    /// Takes a stored head (`seq`, hex `hash`).
    pub(crate) fn insert(&mut self, project_id: String, seq: i64, hash: &str) -> crate::StoreResult<()> {
        let head = ChainHash::from_hex(hash)
            .ok_or_else(|| crate::StoreError::Internal(format!("chain head of {project_id} is not a hash")))?;
        self.0.insert(project_id, Checkpoint { count: u64::try_from(seq).unwrap_or(0), head });
        Ok(())
    }

    /// Seals the next event of a project: its position, previous hash and hash, all hex.
    pub(crate) fn seal(&mut self, project_id: &str, body: &str) -> (i64, String, String) {
        let head = self.0.entry(project_id.to_owned()).or_insert(Checkpoint { count: 0, head: ChainHash::GENESIS });
        let seq = head.count + 1;
        let hash = chain_hash(seq, &head.head, body.as_bytes());
        let prev = std::mem::replace(&mut head.head, hash);
        head.count = seq;
        (i64::try_from(seq).expect("chains stay below 2^63 events"), prev.to_hex(), hash.to_hex())
    }

    /// The heads moved, to store: (project, seq, hex hash).
    pub(crate) fn rows(&self) -> impl Iterator<Item = (&str, i64, String)> {
        self.0.iter().map(|(p, h)| (p.as_str(), i64::try_from(h.count).unwrap_or(i64::MAX), h.head.to_hex()))
    }
}

/// The id of the webhook delivery of an event to an endpoint (also its `webhook-id`).
pub(crate) fn delivery_id(salt: &str, event: &RequestEvent, escalations: i64, endpoint_id: &str) -> String {
    format!("msg_{}", countersign_core::route::delivery_key(salt, event, escalations, endpoint_id))
}

/// The Message-ID of the email of an event.
pub(crate) fn message_id(salt: &str, event: &RequestEvent, escalations: i64) -> String {
    format!("<{}@countersign>", countersign_core::route::delivery_key(salt, event, escalations, "email"))
}

/// The name of the server key routing derives delivery ids from.
pub(crate) const ROUTE_SALT: &str = "route_salt";

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct AuditRow {
    project_id: String,
    seq: i64,
    prev_hash: String,
    hash: String,
    body: String,
    sealed_at: i64,
}

impl TryFrom<AuditRow> for AuditEvent {
    type Error = crate::StoreError;

    fn try_from(r: AuditRow) -> Result<Self, Self::Error> {
        // A hash that is not one (changed by hand) is read as zeros: verification then names it.
        let hash = |h: &str| ChainHash::from_hex(h).unwrap_or(ChainHash([0xff; 32]));
        Ok(Self {
            seq: u64::try_from(r.seq).map_err(|_| crate::StoreError::Internal(format!("event at {}", r.seq)))?,
            prev_hash: hash(&r.prev_hash),
            hash: hash(&r.hash),
            project_id: r.project_id,
            body: r.body,
            sealed_at: Timestamp::from_micros(r.sealed_at),
        })
    }
}

/// Queries of the event log both backends share.
macro_rules! event_queries {
    ($pool:ty) => {
        use crate::StoreResult;
        use crate::events::{AuditEvent, AuditRow, ChainState};
        use countersign_core::event::{ChainHash, Checkpoint};

        pub(super) async fn audit(
            pool: &$pool,
            project_id: &str,
            after: u64,
            limit: u32,
        ) -> StoreResult<Vec<AuditEvent>> {
            let rows: Vec<AuditRow> = sqlx::query_as(
                "SELECT project_id, seq, prev_hash, hash, body, sealed_at FROM events \
                 WHERE project_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(project_id)
            .bind(i64::try_from(after).unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(AuditEvent::try_from).collect()
        }

        pub(super) async fn chains(pool: &$pool, project_id: Option<&str>) -> StoreResult<Vec<ChainState>> {
            let rows: Vec<(String, Option<i64>, Option<String>, i64)> = sqlx::query_as(
                "SELECT p.project_id, h.seq, h.hash, \
                        (SELECT count(*) FROM events e WHERE e.project_id = p.project_id AND e.seq IS NULL) \
                 FROM (SELECT project_id FROM chain_heads UNION SELECT DISTINCT project_id FROM events) p \
                 LEFT JOIN chain_heads h ON h.project_id = p.project_id \
                 WHERE $1 IS NULL OR p.project_id = $1 ORDER BY p.project_id",
            )
            .bind(project_id)
            .fetch_all(pool)
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
    };
}
pub(crate) use event_queries;
