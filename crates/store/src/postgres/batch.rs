//! Group commit for creates on PostgreSQL: concurrent creates are gathered and inserted, with
//! their `created` events, by one statement (one transaction, one WAL flush) instead of one each.
//!
//! A few workers take turns gathering: while one batch is in flight, the next gathers the creates
//! that arrive meanwhile, so a busy server sends bigger batches and an idle one sends each create
//! at once. Each create is answered only after its batch's statement has committed.

use crate::{StoreError, StoreResult};
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Most creates in one statement.
const MAX_BATCH: usize = 256;
/// Batches in flight at once (each holds one pooled connection while it runs).
const WORKERS: usize = 4;

/// The columns of a new request and its `created` event.
pub(super) struct NewRow {
    pub project_id: String,
    pub kind: &'static str,
    pub call_id: String,
    pub run_id: String,
    pub spec: String,
    pub requested_at: i64,
    pub event: String,
}

struct Pending {
    row: NewRow,
    /// Whether this create inserted the request (false: its `call_id` was taken).
    reply: oneshot::Sender<StoreResult<bool>>,
}

/// Handle to the gathering workers.
pub(super) struct Creates {
    queue: mpsc::Sender<Pending>,
    workers: Vec<JoinHandle<()>>,
}

impl Creates {
    pub(super) fn start(pool: PgPool) -> Self {
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..WORKERS).map(|_| tokio::spawn(work(pool.clone(), rx.clone()))).collect();
        Self { queue, workers }
    }

    /// Inserts the request and its event; true if it was new.
    pub(super) async fn insert(&self, row: NewRow) -> StoreResult<bool> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the database is closing (shutting down)".into());
        self.queue.send(Pending { row, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub(super) fn abort(&self) {
        for worker in &self.workers {
            worker.abort();
        }
    }
}

async fn work(pool: PgPool, rx: Arc<Mutex<mpsc::Receiver<Pending>>>) {
    loop {
        let Some(batch) = crate::gather(&mut *rx.lock().await, MAX_BATCH).await else { return };
        apply(&pool, batch).await;
    }
}

/// Inserts a batch, in key order (so that two instances' batches lock the same keys in the same
/// order and never deadlock); a key that comes twice goes in the next round, after the first
/// has committed. If the statement fails, each create is tried alone, so that only a create that
/// fails by itself is refused.
async fn apply(pool: &PgPool, mut batch: Vec<Pending>) {
    batch.sort_by(|a, b| key(&a.row).cmp(&key(&b.row)));
    while !batch.is_empty() {
        let mut seen = HashSet::new();
        let (round, later): (Vec<Pending>, Vec<Pending>) =
            batch.into_iter().partition(|p| seen.insert((p.row.project_id.clone(), p.row.kind, p.row.call_id.clone())));
        batch = later;
        metrics::histogram!(crate::metrics::COMMIT_BATCH).record(round.len() as f64);
        match insert(pool, &round).await {
            Ok(inserted) => {
                for (p, inserted) in round.into_iter().zip(inserted) {
                    let _ = p.reply.send(Ok(inserted));
                }
            }
            Err(err) if round.len() == 1 => {
                if let Some(p) = round.into_iter().next() {
                    let _ = p.reply.send(Err(err));
                }
            }
            Err(err) => {
                tracing::warn!(%err, size = round.len(), "batched create failed; inserting its creates one by one");
                for p in round {
                    let one = std::slice::from_ref(&p);
                    let answer = insert(pool, one).await.map(|inserted| inserted == [true]);
                    let _ = p.reply.send(answer);
                }
            }
        }
    }
}

fn key(row: &NewRow) -> (&str, &str, &str) {
    (&row.project_id, row.kind, &row.call_id)
}

/// One statement: the requests (skipping `call_id`s already taken) and the `created` events of
/// those inserted. Answers, row by row, whether it was inserted.
async fn insert(pool: &PgPool, rows: &[Pending]) -> StoreResult<Vec<bool>> {
    let column = |f: fn(&NewRow) -> &str| rows.iter().map(|p| f(&p.row)).collect::<Vec<&str>>();
    let at: Vec<i64> = rows.iter().map(|p| p.row.requested_at).collect();
    let inserted: Vec<(String, String, String)> = sqlx::query_as(
        "WITH input AS (SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
         $6::BIGINT[], $7::TEXT[]) WITH ORDINALITY AS u(project_id, kind, call_id, run_id, spec, requested_at, body, o)), \
         inserted AS (INSERT INTO requests (project_id, kind, call_id, run_id, spec, requested_at) \
         SELECT project_id, kind, call_id, run_id, spec, requested_at FROM input ORDER BY o \
         ON CONFLICT (project_id, kind, call_id) DO NOTHING RETURNING project_id, kind, call_id), \
         logged AS (INSERT INTO events (project_id, request_kind, call_id, type, at, escalations, body) \
         SELECT i.project_id, i.kind, i.call_id, 'created', i.requested_at, 0, i.body \
         FROM input i JOIN inserted n ON n.project_id = i.project_id AND n.kind = i.kind AND n.call_id = i.call_id \
         ORDER BY i.o RETURNING 1) \
         SELECT project_id, kind, call_id FROM inserted",
    )
    .bind(column(|r| &r.project_id))
    .bind(column(|r| r.kind))
    .bind(column(|r| &r.call_id))
    .bind(column(|r| &r.run_id))
    .bind(column(|r| &r.spec))
    .bind(at)
    .bind(column(|r| &r.event))
    .fetch_all(pool)
    .await?;
    let inserted: HashSet<(&str, &str, &str)> =
        inserted.iter().map(|(p, k, c)| (p.as_str(), k.as_str(), c.as_str())).collect();
    Ok(rows.iter().map(|p| inserted.contains(&key(&p.row))).collect())
}
