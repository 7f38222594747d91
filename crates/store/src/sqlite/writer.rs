//! Group commit: every hot-path write is queued to one task that applies everything waiting in a
//! single transaction, commits once (one fsync), and only then answers each caller.
//!
//! One commit per request caps SQLite near 3,000 durable writes/s on this class of disk; sharing
//! the fsync among all waiting requests lifts that ceiling by the batch size, without ever
//! acknowledging a write that is not on disk.

use crate::row::{RequestRow, outcome_columns, request_columns};
use crate::{Change, Created, StoreError, StoreResult};
use countersign_core::{Escalation, Outcome, RequestKind, RequestRecord};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row};
use std::collections::HashSet;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 1024;
/// Rows per multi-row INSERT (6 bound parameters each, far below SQLite's limit).
const INSERT_CHUNK: usize = 500;

type Reply<T> = oneshot::Sender<StoreResult<T>>;

enum Op {
    Create { row: NewRow, reply: Reply<Created> },
    Decide { key: Key, outcome: Outcome, reply: Reply<Change> },
    Escalate { key: Key, record: String, reply: Reply<Change> },
    Stop(oneshot::Sender<()>),
}

/// The columns of a new request, prepared outside the writer task.
struct NewRow {
    key: Key,
    run_id: String,
    spec: String,
    requested_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    project_id: String,
    kind: RequestKind,
    call_id: String,
}

/// Handle to the writer task.
pub(super) struct Writer {
    ops: mpsc::Sender<Op>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Opens the writer's own connection and starts its task.
    pub(super) async fn start(options: SqliteConnectOptions) -> StoreResult<Self> {
        let conn = SqliteConnection::connect_with(&options).await?;
        let (ops, rx) = mpsc::channel(4 * MAX_BATCH);
        let task = tokio::spawn(run(conn, rx));
        Ok(Self { ops, task: Mutex::new(Some(task)) })
    }

    async fn submit<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::Unavailable("the database writer has stopped (shutting down)".into());
        self.ops.send(op(reply)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    pub(super) async fn create(&self, request: &RequestRecord) -> StoreResult<Created> {
        let row = NewRow {
            key: Key { project_id: request.project_id.clone(), kind: request.kind, call_id: request.call_id.clone() },
            run_id: request.run_id.clone(),
            spec: request.spec.get().to_owned(),
            requested_at: request.requested_at.as_micros(),
        };
        self.submit(|reply| Op::Create { row, reply }).await
    }

    pub(super) async fn decide(
        &self,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
        outcome: &Outcome,
    ) -> StoreResult<Change> {
        let key = Key { project_id: project_id.to_owned(), kind, call_id: call_id.to_owned() };
        self.submit(|reply| Op::Decide { key, outcome: outcome.clone(), reply }).await
    }

    pub(super) async fn escalate(
        &self,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
        escalation: &Escalation,
    ) -> StoreResult<Change> {
        let key = Key { project_id: project_id.to_owned(), kind, call_id: call_id.to_owned() };
        let record = escalation.record.to_string();
        self.submit(|reply| Op::Escalate { key, record, reply }).await
    }

    /// Applies everything queued so far, then stops; later writes fail as unavailable.
    pub(super) async fn stop(&self) {
        let (done, wait) = oneshot::channel();
        if self.ops.send(Op::Stop(done)).await.is_ok() {
            let _ = wait.await;
        }
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Op>) {
    let mut stop = None;
    while stop.is_none() {
        let Some(first) = rx.recv().await else { break };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if let Some(i) = batch.iter().position(|op| matches!(op, Op::Stop(_)))
            && let Op::Stop(done) = batch.remove(i)
        {
            stop = Some(done);
        }
        if !batch.is_empty() {
            apply_and_answer(&mut conn, batch).await;
        }
    }
    if let Err(err) = conn.close().await {
        tracing::warn!(%err, "closing the SQLite writer connection failed");
    }
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

/// What one operation of a batch produced, before the commit decides whether it stands.
enum Answer {
    Created(Created),
    Change(Change),
}

async fn apply_and_answer(conn: &mut SqliteConnection, batch: Vec<Op>) {
    let size = batch.len();
    let result = apply(conn, &batch).await;
    let result = match result {
        Ok(answers) => match sqlx::query("COMMIT").execute(&mut *conn).await {
            Ok(_) => Ok(answers),
            Err(err) => Err(StoreError::from(err)),
        },
        Err(err) => Err(err),
    };
    if let Err(err) = &result {
        tracing::error!(%err, size, "group commit failed; no write of this batch was acknowledged");
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    let mut answers = result.map(Vec::into_iter);
    for op in batch {
        let answer = match &mut answers {
            Ok(it) => Ok(it.next().expect("one answer per operation")),
            Err(err) => Err(same_error(err)),
        };
        match (op, answer) {
            (Op::Create { reply, .. }, Ok(Answer::Created(c))) => drop(reply.send(Ok(c))),
            (Op::Decide { reply, .. } | Op::Escalate { reply, .. }, Ok(Answer::Change(c))) => drop(reply.send(Ok(c))),
            (Op::Create { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (Op::Decide { reply, .. } | Op::Escalate { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
            (_, Ok(_)) => unreachable!("answers are produced in operation order and kind"),
            (Op::Stop(_), Err(_)) => {}
        }
    }
}

fn same_error(err: &StoreError) -> StoreError {
    match err {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Internal(m) => StoreError::Internal(m.clone()),
    }
}

/// Runs a batch inside one open transaction, returning one answer per operation, in order.
async fn apply(conn: &mut SqliteConnection, batch: &[Op]) -> StoreResult<Vec<Answer>> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let inserted = insert_creates(conn, batch).await?;
    let mut claimed = HashSet::new();
    let mut answers = Vec::with_capacity(batch.len());
    for op in batch {
        answers.push(match op {
            Op::Create { row, .. } => {
                let key = &row.key;
                if inserted.contains(key) && claimed.insert(key) {
                    Answer::Created(Created::New)
                } else {
                    Answer::Created(Created::Existing(Box::new(load(conn, key).await?.ok_or_else(|| {
                        StoreError::Internal(format!("request {} conflicted but is missing", key.call_id))
                    })?)))
                }
            }
            Op::Decide { key, outcome, .. } => {
                let (approved, comment, response, option, by) = outcome_columns(outcome);
                let done = sqlx::query(
                    "UPDATE requests SET responded_at = ?, approved = ?, comment = ?, response = ?, option_name = ?, \
                     decided_by = ? WHERE project_id = ? AND kind = ? AND call_id = ? AND responded_at IS NULL",
                )
                .bind(outcome.responded_at.as_micros())
                .bind(approved)
                .bind(comment)
                .bind(response)
                .bind(option)
                .bind(by)
                .bind(&key.project_id)
                .bind(key.kind.as_str())
                .bind(&key.call_id)
                .execute(&mut *conn)
                .await?;
                Answer::Change(change(conn, key, done.rows_affected()).await?)
            }
            Op::Escalate { key, record, .. } => {
                let done = sqlx::query(
                    "UPDATE requests SET escalations = json_insert(escalations, '$[#]', json(?)) \
                     WHERE project_id = ? AND kind = ? AND call_id = ? AND responded_at IS NULL",
                )
                .bind(record)
                .bind(&key.project_id)
                .bind(key.kind.as_str())
                .bind(&key.call_id)
                .execute(&mut *conn)
                .await?;
                Answer::Change(change(conn, key, done.rows_affected()).await?)
            }
            Op::Stop(_) => unreachable!("stop is taken out of the batch"),
        });
    }
    Ok(answers)
}

/// Inserts every create of the batch with multi-row INSERTs; returns the keys actually inserted.
async fn insert_creates(conn: &mut SqliteConnection, batch: &[Op]) -> StoreResult<HashSet<Key>> {
    let creates: Vec<&NewRow> = batch
        .iter()
        .filter_map(|op| match op {
            Op::Create { row, .. } => Some(row),
            _ => None,
        })
        .collect();
    let mut inserted = HashSet::with_capacity(creates.len());
    for chunk in creates.chunks(INSERT_CHUNK) {
        let mut sql =
            String::from("INSERT INTO requests (project_id, kind, call_id, run_id, spec, requested_at) VALUES ");
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?, ?, ?, ?, ?, ?)" } else { ", (?, ?, ?, ?, ?, ?)" });
        }
        sql.push_str(" ON CONFLICT (project_id, kind, call_id) DO NOTHING RETURNING project_id, kind, call_id");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(chunk.len() == 1);
        for row in chunk {
            query = query
                .bind(&row.key.project_id)
                .bind(row.key.kind.as_str())
                .bind(&row.key.call_id)
                .bind(&row.run_id)
                .bind(row.spec.as_str())
                .bind(row.requested_at);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let kind: String = row.try_get("kind")?;
            inserted.insert(Key {
                project_id: row.try_get("project_id")?,
                kind: RequestKind::parse(&kind).ok_or_else(|| StoreError::Internal(format!("bad kind {kind}")))?,
                call_id: row.try_get("call_id")?,
            });
        }
    }
    Ok(inserted)
}

async fn load(conn: &mut SqliteConnection, key: &Key) -> StoreResult<Option<RequestRecord>> {
    let row: Option<RequestRow> = sqlx::query_as(concat!(
        "SELECT ",
        request_columns!(),
        " FROM requests WHERE project_id = ? AND kind = ? AND call_id = ?"
    ))
    .bind(&key.project_id)
    .bind(key.kind.as_str())
    .bind(&key.call_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(RequestRecord::try_from).transpose()
}

/// Tells a no-op conditional update apart: already decided, or not there at all.
async fn change(conn: &mut SqliteConnection, key: &Key, rows: u64) -> StoreResult<Change> {
    if rows > 0 {
        return Ok(Change::Done);
    }
    let exists = sqlx::query("SELECT 1 FROM requests WHERE project_id = ? AND kind = ? AND call_id = ?")
        .bind(&key.project_id)
        .bind(key.kind.as_str())
        .bind(&key.call_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(if exists.is_some() { Change::AlreadyDecided } else { Change::NotFound })
}
