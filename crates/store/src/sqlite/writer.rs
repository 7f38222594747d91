//! Group commit: every hot-path write is queued to one task that applies everything waiting in a
//! single transaction, commits once (one fsync), and only then answers each caller.
//!
//! One commit per request caps SQLite near 3,000 durable writes/s on this class of disk; sharing
//! the fsync among all waiting requests lifts that ceiling by the batch size, without ever
//! acknowledging a write that is not on disk.
//!
//! The fsync is also taken off the writer's path (see [`Syncer`]): the writer commits with
//! `synchronous=NORMAL` (the WAL frames written, not synced) and goes on with the next batch while
//! another thread syncs the WAL file; a batch's callers are answered only once a sync that began
//! after its commit has returned.

use super::checkpoint::Checkpoints;
use crate::events::Heads;
use crate::row::OutcomeColumns as Columns;
use crate::row::{OutcomeColumns, RequestRow, outcome_columns, request_columns};
use crate::timers::{Change as TimerChange, Planned};
use crate::{Change, Created, Feed, StoreError, StoreResult};
use countersign_core::event::RequestEvent;
use countersign_core::route::{ProjectChannels, Route, SpecChannels, routes};
use countersign_core::{Escalation, Outcome, RequestKind, RequestRecord, Timestamp};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteSynchronous};
use sqlx::{Connection, Row};
use std::collections::{HashMap, HashSet};
use tokio::sync::{Mutex, broadcast, mpsc, oneshot};

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 1024;
/// Rows per multi-row INSERT (6 bound parameters each, far below SQLite's limit of 32,766).
const INSERT_CHUNK: usize = 500;

/// Prepared batch statements kept. A batch's statement text depends only on its shape (how many
/// creates, the order of its decisions and escalations, how many projects; the values are all
/// bound), so the common shapes stay prepared and the rest come and go through the LRU. Each
/// prepared multi-row statement holds tens of KB: the cache is bounded (it was 2,048, which let
/// a mixed load grow the writer's memory for many minutes, see the soak in the README).
const STATEMENT_CACHE: usize = 256;

type Reply<T> = oneshot::Sender<StoreResult<T>>;

enum Op {
    Create {
        row: NewRow,
        reply: Reply<Created>,
    },
    Decide {
        key: Key,
        outcome: Outcome,
        event: Event,
        reply: Reply<Change>,
    },
    Escalate {
        key: Key,
        record: String,
        event: Event,
        reply: Reply<Change>,
    },
    /// Due timers fired together, in a transaction of their own: a few set-based statements
    /// instead of one operation each. Answers whether each planned timer changed its request.
    Fire {
        fire: Fire,
        reply: Reply<Vec<bool>>,
    },
    Stop(oneshot::Sender<()>),
}

/// The columns of a new request, prepared outside the writer task.
struct NewRow {
    key: Key,
    run_id: String,
    spec: String,
    requested_at: i64,
    /// The governing rule's terms (JSON), if any.
    policy: Option<String>,
    event: Event,
    /// A request a policy rule decided at creation: stored decided, with its decision's event.
    decided: Option<Box<(OutcomeColumns, Event)>>,
    /// Timers its terms schedule: (due, action JSON).
    timers: Vec<(i64, String)>,
}

/// The event an operation records if it changes something, serialized (and, for a creation, its
/// spec read for routing) outside the writer task.
struct Event {
    event: RequestEvent,
    body: String,
    spec_channels: SpecChannels,
}

impl Event {
    fn of(event: RequestEvent) -> Self {
        Self { body: event.to_json(), spec_channels: SpecChannels::of_event(&event), event }
    }
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
    task: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    /// Opens the writer's own connection and starts its task.
    /// `salt` is what delivery ids are derived from (see [`crate::events`]).
    pub(super) async fn start(
        options: SqliteConnectOptions,
        salt: String,
        checkpoints: Checkpoints,
        feed: broadcast::Sender<Feed>,
    ) -> StoreResult<Self> {
        let wal = {
            let mut name = options.get_filename().as_os_str().to_owned();
            name.push("-wal");
            std::path::PathBuf::from(name)
        };
        let options = options.synchronous(SqliteSynchronous::Normal).statement_cache_capacity(STATEMENT_CACHE);
        let conn = SqliteConnection::connect_with(&options).await?;
        // The WAL file exists once a connection has read in WAL mode (the migrations did), and it
        // stays the same file while this connection is open: SQLite deletes it only when the last
        // connection closes.
        let syncer = Syncer::start(&wal, feed)?;
        let (ops, rx) = mpsc::channel(4 * MAX_BATCH);
        // A thread and runtime of its own: woken by SQLite's thread between the round trips of a
        // batch, the writer would otherwise wait behind every HTTP task in the server's queues.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Internal(format!("cannot start the writer's runtime: {e}")))?;
        let task = std::thread::Builder::new()
            .name("countersign-writer".into())
            .spawn(move || runtime.block_on(run(conn, rx, salt, syncer, checkpoints)))
            .map_err(|e| StoreError::Internal(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { ops, task: Mutex::new(Some(task)) })
    }

    async fn submit<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::Unavailable("the database writer has stopped (shutting down)".into());
        self.ops.send(op(reply)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    pub(super) async fn create(&self, request: &RequestRecord) -> StoreResult<Created> {
        let decided = request.outcome.as_ref().map(|outcome| {
            let event = RequestEvent::decided(&request.project_id, request.kind, &request.call_id, outcome);
            Box::new((outcome_columns(request.kind, outcome), Event::of(event)))
        });
        let timers = match (&request.policy, &request.outcome) {
            (Some(policy), None) => policy
                .timers(request.requested_at)
                .into_iter()
                .map(|t| (t.due.as_micros(), t.action.to_json()))
                .collect(),
            _ => Vec::new(),
        };
        let row = NewRow {
            key: Key { project_id: request.project_id.clone(), kind: request.kind, call_id: request.call_id.clone() },
            run_id: request.run_id.clone(),
            spec: request.spec.get().to_owned(),
            requested_at: request.requested_at.as_micros(),
            policy: request.policy.as_ref().map(|p| serde_json::to_string(p).expect("governance serializes")),
            event: Event::of(RequestEvent::created(request)),
            decided,
            timers,
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
        let event = Event::of(RequestEvent::decided(project_id, kind, call_id, outcome));
        self.submit(|reply| Op::Decide { key, outcome: outcome.clone(), event, reply }).await
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
        let event = Event::of(RequestEvent::escalated(project_id, kind, call_id, escalation, Timestamp::now()));
        self.submit(|reply| Op::Escalate { key, record, event, reply }).await
    }

    /// Fires planned timers in one transaction of their own (each marked fired in it); answers,
    /// in order, whether each changed its request (false: it had ended, or nothing to do).
    pub(super) async fn fire(&self, planned: &[Planned], now: Timestamp) -> StoreResult<Vec<bool>> {
        let fire = Fire::of(planned, now);
        self.submit(|reply| Op::Fire { fire, reply }).await
    }

    /// Applies everything queued so far, then stops; later writes fail as unavailable.
    pub(super) async fn stop(&self) {
        let (done, wait) = oneshot::channel();
        if self.ops.send(Op::Stop(done)).await.is_ok() {
            let _ = wait.await;
        }
        if let Some(task) = self.task.lock().await.take() {
            let _ = tokio::task::spawn_blocking(move || task.join()).await;
        }
    }
}

async fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Op>,
    salt: String,
    syncer: Syncer,
    checkpoints: Checkpoints,
) {
    let mut stop = None;
    while stop.is_none() {
        if checkpoints.take_request() {
            // Between two batches nothing else appends, so this copies the last frames and the
            // next transaction starts the WAL over (see `checkpoint`).
            if let Err(err) = super::checkpoint::passive(&mut conn).await {
                tracing::warn!(%err, "finishing a WAL checkpoint failed; the next round retries");
            }
        }
        let Some(mut batch) = crate::gather(&mut rx, MAX_BATCH).await else { break };
        if let Some(i) = batch.iter().position(|op| matches!(op, Op::Stop(_)))
            && let Op::Stop(done) = batch.remove(i)
        {
            stop = Some(done);
        }
        if let Some(why) = syncer.failed() {
            // A failed fsync may have dropped written WAL frames from the page cache: nothing
            // committed after it could be trusted to survive a crash.
            for op in batch {
                op.refuse(StoreError::Unavailable(why.clone()));
            }
            continue;
        }
        let (fires, batch): (Vec<Op>, Vec<Op>) = batch.into_iter().partition(|op| matches!(op, Op::Fire { .. }));
        let mut answers = Vec::with_capacity(batch.len() + fires.len());
        let mut queued = false;
        if !batch.is_empty() {
            let (applied, routed) = apply(&mut conn, batch, &salt).await;
            answers.extend(applied);
            queued = routed;
        }
        for op in fires {
            if let Op::Fire { fire, reply } = op {
                let answer = match commit_fire(&mut conn, &fire, &salt).await {
                    Ok((fired, routed)) => {
                        queued |= routed;
                        Ok(fired)
                    }
                    Err(err) => {
                        let _ = sqlx::query("ROLLBACK").execute(&mut conn).await;
                        Err(err)
                    }
                };
                answers.push(Answered::Fired(reply, answer));
            }
        }
        syncer.answer_when_synced(answers, queued);
    }
    // Every answer given before the connection closes (its close checkpoints nothing: the
    // checkpointer owns that).
    syncer.stop().await;
    if let Err(err) = conn.close().await {
        tracing::warn!(%err, "closing the SQLite writer connection failed");
    }
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

impl Op {
    /// Answers the operation with an error, unapplied.
    fn refuse(self, err: StoreError) {
        match self {
            Op::Create { reply, .. } => drop(reply.send(Err(err))),
            Op::Decide { reply, .. } | Op::Escalate { reply, .. } => drop(reply.send(Err(err))),
            Op::Fire { reply, .. } => drop(reply.send(Err(err))),
            Op::Stop(_) => {}
        }
    }
}

/// Tells the delivery workers that deliveries were queued. One message is enough while the last
/// is unread (it wakes every worker), so a burst of writes cannot make the feed lag, which would
/// make every listener reload all it holds.
pub(super) fn announce_queued(feed: &broadcast::Sender<Feed>) {
    if feed.is_empty() {
        let _ = feed.send(Feed::Queued);
    }
}

/// An answer held until the commit it reports on is on disk.
enum Answered {
    Created(Reply<Created>, StoreResult<Created>),
    Changed(Reply<Change>, StoreResult<Change>),
    Fired(Reply<Vec<bool>>, StoreResult<Vec<bool>>),
}

impl Answered {
    /// Sends the answer, or, if the sync that was to make it durable failed, why not.
    fn send(self, synced: &Result<(), String>) {
        fn durable<T>(answer: StoreResult<T>, synced: &Result<(), String>) -> StoreResult<T> {
            synced.clone().map_err(StoreError::Unavailable).and(answer)
        }
        match self {
            Answered::Created(reply, answer) => drop(reply.send(durable(answer, synced))),
            Answered::Changed(reply, answer) => drop(reply.send(durable(answer, synced))),
            Answered::Fired(reply, answer) => drop(reply.send(durable(answer, synced))),
        }
    }
}

/// Syncs the WAL file on a thread of its own and then sends the answers of the batches committed
/// before the sync began, so that the writer applies the next batch while the disk flushes the
/// last one. Each sync covers every batch handed over since the previous one.
///
/// Once a sync has made a batch that queued deliveries durable, it tells the delivery workers
/// ([`Feed::Queued`]); creates that queue nothing (no channel set up) wake no one.
///
/// A failed sync fails its batches' callers (503) and every write after it: Linux may drop the
/// dirty pages of a failed fsync, so later commits could sit behind a hole in the WAL. A restart
/// recovers from what is on disk (SQLite ignores WAL frames after a bad one), which never loses
/// an answered write.
struct Syncer {
    batches: Option<std::sync::mpsc::Sender<Synced>>,
    failed: std::sync::Arc<std::sync::OnceLock<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One committed batch's answers, and whether it queued deliveries.
struct Synced {
    answers: Vec<Answered>,
    queued: bool,
}

impl Syncer {
    fn start(wal: &std::path::Path, feed: broadcast::Sender<Feed>) -> StoreResult<Self> {
        let file = std::fs::File::open(wal)
            .map_err(|e| StoreError::Unavailable(format!("cannot open the WAL file {}: {e}", wal.display())))?;
        Self::with(move || file.sync_data(), wal.display().to_string(), feed)
    }

    /// Starts the thread with `sync` as what makes `path` durable.
    fn with(
        mut sync: impl FnMut() -> std::io::Result<()> + Send + 'static,
        path: String,
        feed: broadcast::Sender<Feed>,
    ) -> StoreResult<Self> {
        let (batches, rx) = std::sync::mpsc::channel::<Synced>();
        let failed = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
        let fail = failed.clone();
        let thread = std::thread::Builder::new()
            .name("countersign-wal-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    let synced = match fail.get() {
                        Some(why) => Err(why.clone()),
                        None => sync().map_err(|e| {
                            let why = format!(
                                "syncing {path} failed ({e}); writes are refused until Countersign is restarted, \
                                 which recovers every acknowledged write from the disk"
                            );
                            tracing::error!("{why}");
                            fail.get_or_init(|| why).clone()
                        }),
                    };
                    if synced.is_ok() && waiting.iter().any(|b| b.queued) {
                        announce_queued(&feed);
                    }
                    for answer in waiting.into_iter().flat_map(|b| b.answers) {
                        answer.send(&synced);
                    }
                }
            })
            .map_err(|e| StoreError::Internal(format!("cannot start the WAL sync thread: {e}")))?;
        Ok(Self { batches: Some(batches), failed, thread: Some(thread) })
    }

    /// Why writes are refused, once a sync has failed.
    fn failed(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    fn answer_when_synced(&self, answers: Vec<Answered>, queued: bool) {
        if answers.is_empty() {
            return;
        }
        if let Some(batches) = &self.batches
            && let Err(unsent) = batches.send(Synced { answers, queued })
        {
            // The thread is gone (it only ends when told to): nothing can be made durable.
            for answer in unsent.0.answers {
                answer.send(&Err("the WAL sync thread has stopped".into()));
            }
        }
    }

    /// Syncs and answers what is pending, then ends the thread.
    async fn stop(mut self) {
        self.batches.take();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// What one operation of a batch produced.
enum Answer {
    Created(Created),
    Change(Change),
}

/// Applies a batch (see [`commit_batch`]) and pairs each operation's reply with its answer;
/// also says whether what it committed queued deliveries.
async fn apply(conn: &mut SqliteConnection, batch: Vec<Op>, salt: &str) -> (Vec<Answered>, bool) {
    let size = batch.len();
    metrics::histogram!(crate::metrics::COMMIT_BATCH).record(size as f64);
    let mut queued = false;
    let answers = match commit_batch(conn, &batch, salt).await {
        Ok(applied) => {
            queued = applied.queued;
            settle(conn, &batch, &applied).await
        }
        Err(err) if size == 1 => {
            tracing::warn!(%err, "a write failed");
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            vec![Err(err)]
        }
        Err(err) => {
            // One bad operation must not fail its neighbours: apply each alone, so only the
            // operation that fails by itself is refused.
            tracing::warn!(%err, size, "group commit failed; applying its writes one by one");
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            let mut answers = Vec::with_capacity(size);
            for op in &batch {
                let one = std::slice::from_ref(op);
                match commit_batch(conn, one, salt).await {
                    Ok(applied) => {
                        queued |= applied.queued;
                        answers.extend(settle(conn, one, &applied).await);
                    }
                    Err(err) => {
                        tracing::warn!(%err, "a write failed");
                        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                        answers.push(Err(err));
                    }
                }
            }
            answers
        }
    };
    let answered = batch
        .into_iter()
        .zip(answers)
        .filter_map(|(op, answer)| match (op, answer) {
            (Op::Create { reply, .. }, Ok(Answer::Created(c))) => Some(Answered::Created(reply, Ok(c))),
            (Op::Decide { reply, .. } | Op::Escalate { reply, .. }, Ok(Answer::Change(c))) => {
                Some(Answered::Changed(reply, Ok(c)))
            }
            (Op::Create { reply, .. }, Err(e)) => Some(Answered::Created(reply, Err(e))),
            (Op::Decide { reply, .. } | Op::Escalate { reply, .. }, Err(e)) => Some(Answered::Changed(reply, Err(e))),
            (_, Ok(_)) => unreachable!("answers are produced in operation order and kind"),
            (Op::Stop(_) | Op::Fire { .. }, Err(_)) => None,
        })
        .collect();
    (answered, queued)
}

/// What a committed batch changed: the requests inserted, the operations (by index) that
/// updated a pending request, with the escalations it had then, and whether it queued deliveries.
#[derive(Default)]
struct Applied {
    inserted: HashSet<Key>,
    updated: HashMap<usize, i64>,
    queued: bool,
}

/// Marks the rows returned by the INSERTs (the UPDATEs return their operation's index).
const INSERTED: i64 = -1;
/// Marks the chain heads read in the batch's transaction.
const HEAD: i64 = -2;
/// Marks the webhook endpoints of the batch's projects (id in `kind`, events in `call_id`).
const ENDPOINT: i64 = -3;
/// Marks the batch's projects with channel settings (a default email, Slack), as
/// `ProjectChannels::bits` in `n`.
const PROJECT_CHANNELS: i64 = -4;
/// Rows per multi-row INSERT of deliveries (9 bound parameters each).
const DELIVERY_CHUNK: usize = 500;
/// Rows per multi-row INSERT of events (11 bound parameters each).
const EVENT_CHUNK: usize = 500;

/// Applies a whole batch in one transaction with two round trips to SQLite's thread and a single
/// fsync, however many operations wait: `BEGIN IMMEDIATE`, the changes (each returning whether
/// it applied) and the chain heads of the batch's projects; then the events of the changes that
/// applied, sealed in their projects' chains, and `COMMIT`.
async fn commit_batch(conn: &mut SqliteConnection, batch: &[Op], salt: &str) -> StoreResult<Applied> {
    let creates: Vec<&NewRow> = batch
        .iter()
        .filter_map(|op| match op {
            Op::Create { row, .. } if row.decided.is_none() => Some(row),
            _ => None,
        })
        .collect();
    // Requests a policy decided at creation are inserted decided (rare: a statement each).
    let decided: Vec<&NewRow> = batch
        .iter()
        .filter_map(|op| match op {
            Op::Create { row, .. } if row.decided.is_some() => Some(row),
            _ => None,
        })
        .collect();
    let mut sql = String::from("BEGIN IMMEDIATE;");
    for chunk in creates.chunks(INSERT_CHUNK) {
        sql.push_str("INSERT INTO requests (project_id, kind, call_id, run_id, spec, requested_at, policy) VALUES ");
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(?, ?, ?, ?, ?, ?, ?)" } else { ", (?, ?, ?, ?, ?, ?, ?)" });
        }
        sql.push_str(
            " ON CONFLICT (project_id, kind, call_id) DO NOTHING \
             RETURNING -1 AS op, project_id, kind, call_id, 0 AS n, NULL AS hash;",
        );
    }
    for _ in &decided {
        sql.push_str(
            "INSERT INTO requests (project_id, kind, call_id, run_id, spec, requested_at, policy, responded_at, \
             approved, comment, response, option_name, decided_by, updated_kwargs, ended) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (project_id, kind, call_id) DO NOTHING \
             RETURNING -1 AS op, project_id, kind, call_id, 0 AS n, NULL AS hash;",
        );
    }
    for op in batch {
        let set = match op {
            Op::Decide { .. } => {
                "responded_at = ?, approved = ?, comment = ?, response = ?, option_name = ?, decided_by = ?, \
                 updated_kwargs = ?, ended = ?"
            }
            Op::Escalate { .. } => "escalations = json_insert(escalations, '$[#]', json(?))",
            Op::Create { .. } | Op::Stop(_) | Op::Fire { .. } => continue,
        };
        // The operation's index is bound, not written in, so that batches of one shape share a
        // prepared statement.
        sql.push_str(&format!(
            "UPDATE requests SET {set} WHERE project_id = ? AND kind = ? AND call_id = ? AND responded_at IS NULL \
             RETURNING ? AS op, project_id, kind, call_id, json_array_length(escalations) AS n, NULL AS hash;"
        ));
    }
    let mut projects: Vec<&str> = batch
        .iter()
        .filter_map(|op| match op {
            Op::Create { row, .. } => Some(row.key.project_id.as_str()),
            Op::Decide { key, .. } | Op::Escalate { key, .. } => Some(key.project_id.as_str()),
            Op::Stop(_) | Op::Fire { .. } => None,
        })
        .collect();
    projects.sort_unstable();
    projects.dedup();
    sql.push_str(&Context::sql(projects.len()));

    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for row in &creates {
        query = query
            .bind(&row.key.project_id)
            .bind(row.key.kind.as_str())
            .bind(&row.key.call_id)
            .bind(&row.run_id)
            .bind(row.spec.as_str())
            .bind(row.requested_at)
            .bind(row.policy.as_deref());
    }
    for row in &decided {
        let (c, event) = row.decided.as_deref().expect("only decided rows");
        query = query
            .bind(&row.key.project_id)
            .bind(row.key.kind.as_str())
            .bind(&row.key.call_id)
            .bind(&row.run_id)
            .bind(row.spec.as_str())
            .bind(row.requested_at)
            .bind(row.policy.as_deref())
            .bind(event.event.at.as_micros());
        query = bind_outcome(query, c);
    }
    for (i, op) in batch.iter().enumerate() {
        let key = match op {
            Op::Decide { key, outcome, .. } => {
                // Owned columns (made here): bound by value, not through `bind_outcome`.
                let c = outcome_columns(key.kind, outcome);
                query = query
                    .bind(outcome.responded_at.as_micros())
                    .bind(c.approved)
                    .bind(c.comment)
                    .bind(c.response)
                    .bind(c.option)
                    .bind(c.decided_by)
                    .bind(c.updated_kwargs)
                    .bind(c.ended);
                key
            }
            Op::Escalate { key, record, .. } => {
                query = query.bind(record.as_str());
                key
            }
            Op::Create { .. } | Op::Stop(_) | Op::Fire { .. } => continue,
        };
        let op = i64::try_from(i).expect("a batch index fits in i64");
        query = query.bind(&key.project_id).bind(key.kind.as_str()).bind(&key.call_id).bind(op);
    }
    query = Context::bind(query, &projects);

    let mut applied = Applied::default();
    let mut context = Context::default();
    for row in query.fetch_all(&mut *conn).await? {
        let op: i64 = row.try_get("op")?;
        if context.take(op, &row)? {
        } else if op == INSERTED {
            let kind: String = row.try_get("kind")?;
            applied.inserted.insert(Key {
                project_id: row.try_get("project_id")?,
                kind: RequestKind::parse(&kind).ok_or_else(|| StoreError::Internal(format!("bad kind {kind}")))?,
                call_id: row.try_get("call_id")?,
            });
        } else {
            let i = usize::try_from(op).map_err(|e| StoreError::Internal(e.to_string()))?;
            applied.updated.insert(i, row.try_get("n")?);
        }
    }

    // The events of what applied, in the order SQLite applied it: the inserts, then the updates.
    let mut first = HashSet::new();
    let mut events: Vec<(&Key, &Event, i64)> = Vec::new();
    let mut timers: Vec<(&Key, i64, &str)> = Vec::new();
    for row in creates.iter().chain(&decided) {
        if applied.inserted.contains(&row.key) && first.insert(&row.key) {
            events.push((&row.key, &row.event, 0));
            if let Some((_, event)) = row.decided.as_deref() {
                events.push((&row.key, event, 0));
            }
            timers.extend(row.timers.iter().map(|(due, action)| (&row.key, *due, action.as_str())));
        }
    }
    for (i, op) in batch.iter().enumerate() {
        if let (Op::Decide { key, event, .. } | Op::Escalate { key, event, .. }, Some(n)) =
            (op, applied.updated.get(&i))
        {
            events.push((key, event, *n));
        }
    }
    applied.queued = append(conn, &events, &timers, context, salt).await?;
    Ok(applied)
}

/// Rows per multi-row UPDATE of fired timers (11 bound parameters each).
const FIRE_CHUNK: usize = 500;
/// Marks the requests a fired expiry decided, and those a fired step escalated.
const FIRED_DECIDE: i64 = -5;
const FIRED_ESCALATE: i64 = -6;

/// Planned timers, prepared outside the writer task: the columns each writes and its event.
pub(super) struct Fire {
    /// Every planned timer's id (all are marked fired, also those with nothing to do).
    ids: String,
    now: i64,
    /// Per planned timer, in order: its request and what it writes (`None`: nothing).
    rows: Vec<(Key, Option<(FireChange, Event)>)>,
}

enum FireChange {
    Decide { at: i64, columns: Columns },
    Escalate { record: String },
}

impl Fire {
    fn of(planned: &[Planned], now: Timestamp) -> Self {
        let ids: Vec<i64> = planned.iter().map(|p| p.id).collect();
        let rows = planned
            .iter()
            .map(|p| {
                let key = Key { project_id: p.project_id.clone(), kind: p.kind, call_id: p.call_id.clone() };
                let change = match &p.change {
                    TimerChange::Decide(outcome) => Some((
                        FireChange::Decide {
                            at: outcome.responded_at.as_micros(),
                            columns: outcome_columns(p.kind, outcome),
                        },
                        Event::of(RequestEvent::decided(&p.project_id, p.kind, &p.call_id, outcome)),
                    )),
                    TimerChange::Escalate(escalation) => Some((
                        FireChange::Escalate { record: escalation.record.to_string() },
                        Event::of(RequestEvent::escalated(&p.project_id, p.kind, &p.call_id, escalation, now)),
                    )),
                    TimerChange::Nothing => None,
                };
                (key, change)
            })
            .collect();
        Self { ids: serde_json::to_string(&ids).expect("ids serialize"), now: now.as_micros(), rows }
    }
}

/// Fires planned timers in one transaction, set-based: the expiries in multi-row UPDATEs of their
/// requests (each only if still pending), the ladder steps likewise, every timer marked fired in
/// one statement, then the events of what changed sealed and routed as a batch's are. Answers
/// whether each timer changed its request, and whether deliveries were queued.
async fn commit_fire(conn: &mut SqliteConnection, fire: &Fire, salt: &str) -> StoreResult<(Vec<bool>, bool)> {
    let decides: Vec<_> = fire
        .rows
        .iter()
        .filter_map(|(key, change)| match change {
            Some((FireChange::Decide { at, columns }, _)) => Some((key, *at, columns)),
            _ => None,
        })
        .collect();
    let escalates: Vec<_> = fire
        .rows
        .iter()
        .filter_map(|(key, change)| match change {
            Some((FireChange::Escalate { record }, _)) => Some((key, record.as_str())),
            _ => None,
        })
        .collect();
    let mut sql = String::from("BEGIN IMMEDIATE;");
    for chunk in decides.chunks(FIRE_CHUNK) {
        sql.push_str(
            "WITH j (project_id, kind, call_id, at, approved, comment, response, option_name, decided_by, \
             updated_kwargs, ended) AS (VALUES ",
        );
        sql.push_str(&vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", "));
        sql.push_str(&format!(
            ") UPDATE requests SET responded_at = j.at, approved = j.approved, comment = j.comment, \
             response = j.response, option_name = j.option_name, decided_by = j.decided_by, \
             updated_kwargs = j.updated_kwargs, ended = j.ended FROM j \
             WHERE requests.project_id = j.project_id AND requests.kind = j.kind AND requests.call_id = j.call_id \
             AND requests.responded_at IS NULL \
             RETURNING {FIRED_DECIDE} AS op, project_id, kind, call_id, json_array_length(escalations) AS n, NULL AS hash;"
        ));
    }
    for chunk in escalates.chunks(FIRE_CHUNK) {
        sql.push_str("WITH j (project_id, kind, call_id, record) AS (VALUES ");
        sql.push_str(&vec!["(?, ?, ?, ?)"; chunk.len()].join(", "));
        sql.push_str(&format!(
            ") UPDATE requests SET escalations = json_insert(escalations, '$[#]', json(j.record)) FROM j \
             WHERE requests.project_id = j.project_id AND requests.kind = j.kind AND requests.call_id = j.call_id \
             AND requests.responded_at IS NULL \
             RETURNING {FIRED_ESCALATE} AS op, project_id, kind, call_id, json_array_length(escalations) AS n, NULL AS hash;"
        ));
    }
    sql.push_str("UPDATE timers SET fired_at = ? WHERE id IN (SELECT value FROM json_each(?)) AND fired_at IS NULL;");
    let mut projects: Vec<&str> = fire.rows.iter().map(|(key, _)| key.project_id.as_str()).collect();
    projects.sort_unstable();
    projects.dedup();
    sql.push_str(&Context::sql(projects.len()));

    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (key, at, c) in &decides {
        query = query.bind(&key.project_id).bind(key.kind.as_str()).bind(&key.call_id).bind(*at);
        query = bind_outcome(query, c);
    }
    for (key, record) in &escalates {
        query = query.bind(&key.project_id).bind(key.kind.as_str()).bind(&key.call_id).bind(*record);
    }
    query = query.bind(fire.now).bind(fire.ids.as_str());
    query = Context::bind(query, &projects);

    let mut context = Context::default();
    let mut changed: HashMap<Key, i64> = HashMap::new();
    for row in query.fetch_all(&mut *conn).await? {
        let op: i64 = row.try_get("op")?;
        if !context.take(op, &row)? {
            let kind: String = row.try_get("kind")?;
            let key = Key {
                project_id: row.try_get("project_id")?,
                kind: RequestKind::parse(&kind).ok_or_else(|| StoreError::Internal(format!("bad kind {kind}")))?,
                call_id: row.try_get("call_id")?,
            };
            changed.insert(key, row.try_get("n")?);
        }
    }
    let mut events = Vec::with_capacity(changed.len());
    let mut answers = Vec::with_capacity(fire.rows.len());
    for (key, change) in &fire.rows {
        let n = change.as_ref().and_then(|_| changed.get(key));
        if let (Some((_, event)), Some(n)) = (change, n) {
            events.push((key, event, *n));
        }
        answers.push(n.is_some());
    }
    let queued = append(conn, &events, &[], context, salt).await?;
    Ok((answers, queued))
}

/// What a batch's events are sealed and routed with, read in its transaction: the chain heads of
/// its projects, their webhook endpoints and their channel settings.
#[derive(Default)]
struct Context {
    heads: Heads,
    endpoints: HashMap<String, Vec<(String, Vec<String>)>>,
    channels: HashMap<String, ProjectChannels>,
}

impl Context {
    /// The SELECTs of the context of `projects` projects (each bound three times, see [`Self::bind`]),
    /// as rows shaped like the batch's (`op`, `project_id`, `kind`, `call_id`, `n`, `hash`).
    fn sql(projects: usize) -> String {
        let in_projects = format!("({})", vec!["?"; projects].join(", "));
        format!(
            "SELECT -2 AS op, project_id, '' AS kind, '' AS call_id, seq AS n, hash FROM chain_heads \
             WHERE project_id IN {in_projects};\
             SELECT -3 AS op, project_id, id AS kind, events AS call_id, 0 AS n, NULL AS hash FROM webhook_endpoints \
             WHERE disabled_at IS NULL AND project_id IN {in_projects};\
             SELECT -4 AS op, p.id AS project_id, '' AS kind, '' AS call_id, \
             (CASE WHEN p.default_email IS NOT NULL THEN 1 ELSE 0 END) + (CASE WHEN s.project_id IS NOT NULL THEN 2 ELSE 0 END) \
             + (CASE WHEN s.default_channel IS NOT NULL THEN 4 ELSE 0 END) AS n, NULL AS hash \
             FROM projects p LEFT JOIN slack_connections s ON s.project_id = p.id \
             WHERE (p.default_email IS NOT NULL OR s.project_id IS NOT NULL) AND p.id IN {in_projects};"
        )
    }

    fn bind<'q>(mut query: Query<'q>, projects: &[&'q str]) -> Query<'q> {
        for _ in 0..3 {
            for project in projects {
                query = query.bind(*project);
            }
        }
        query
    }

    /// Takes a row of [`Self::sql`]; false for the batch's own rows.
    fn take(&mut self, op: i64, row: &sqlx::sqlite::SqliteRow) -> StoreResult<bool> {
        if op == ENDPOINT {
            let events: String = row.try_get("call_id")?;
            let events: Vec<String> = serde_json::from_str(&events).unwrap_or_default();
            self.endpoints.entry(row.try_get("project_id")?).or_default().push((row.try_get("kind")?, events));
        } else if op == PROJECT_CHANNELS {
            self.channels.insert(row.try_get("project_id")?, ProjectChannels::from_bits(row.try_get("n")?));
        } else if op == HEAD {
            let hash: String = row.try_get("hash")?;
            self.heads.insert(row.try_get("project_id")?, row.try_get("n")?, &hash)?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }
}

/// The second round trip of a transaction: `events` (with the escalations their request had)
/// sealed in their projects' chains and routed to each channel's deliveries, the new `timers`,
/// the chain heads, and `COMMIT`. Returns whether it queued any delivery.
async fn append(
    conn: &mut SqliteConnection,
    events: &[(&Key, &Event, i64)],
    timers: &[(&Key, i64, &str)],
    mut context: Context,
    salt: &str,
) -> StoreResult<bool> {
    let sealed_at = Timestamp::now().as_micros();
    let mut sql = String::new();
    let mut seals = Vec::with_capacity(events.len());
    for chunk in events.chunks(EVENT_CHUNK) {
        sql.push_str(
            "INSERT INTO events (project_id, request_kind, call_id, type, at, escalations, body, seq, prev_hash, hash, \
             sealed_at, routed_at) VALUES ",
        );
        for (i, (key, event, _)) in chunk.iter().enumerate() {
            sql.push_str(if i == 0 {
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            } else {
                ", (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            });
            seals.push(context.heads.seal(&key.project_id, &event.body));
        }
        sql.push(';');
    }
    // Routed in this same transaction: each channel's deliveries of each event.
    let mut routed: Vec<(String, Route<'_>, &Key, &'static str, i64, i64)> = Vec::new();
    for (key, event, n) in events {
        let e = &event.event;
        let subscribed = context.endpoints.get(&key.project_id).map_or(&[][..], Vec::as_slice);
        let project = context.channels.get(&key.project_id).copied().unwrap_or_default();
        for route in routes(e, event.spec_channels, subscribed, project) {
            let id = route.delivery_id(salt, e, *n);
            routed.push((id, route, key, e.webhook_event().as_str(), *n, e.at.as_micros()));
        }
    }
    for chunk in routed.chunks(DELIVERY_CHUNK) {
        sql.push_str(
            "INSERT INTO deliveries (id, channel, target, project_id, kind, call_id, event_type, event_seq, \
             created_at, status, next_attempt_at) VALUES ",
        );
        sql.push_str(&vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)"; chunk.len()].join(", "));
        sql.push_str(" ON CONFLICT (id) DO NOTHING;");
    }
    for chunk in timers.chunks(DELIVERY_CHUNK) {
        sql.push_str("INSERT INTO timers (project_id, kind, call_id, action, due_at) VALUES ");
        sql.push_str(&vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", "));
        sql.push(';');
    }
    let moved: Vec<(&str, i64, String)> = if events.is_empty() { Vec::new() } else { context.heads.rows().collect() };
    if !moved.is_empty() {
        sql.push_str("INSERT INTO chain_heads (project_id, seq, hash) VALUES ");
        for i in 0..moved.len() {
            sql.push_str(if i == 0 { "(?, ?, ?)" } else { ", (?, ?, ?)" });
        }
        sql.push_str(" ON CONFLICT (project_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash;");
    }
    sql.push_str("COMMIT;");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for ((key, event, n), (seq, prev, hash)) in events.iter().zip(seals) {
        query = query
            .bind(&key.project_id)
            .bind(key.kind.as_str())
            .bind(&key.call_id)
            .bind(event.event.kind().as_str())
            .bind(event.event.at.as_micros())
            .bind(*n)
            .bind(event.body.as_str())
            .bind(seq)
            .bind(prev)
            .bind(hash)
            .bind(sealed_at)
            .bind(sealed_at);
    }
    for (id, route, key, what, n, at) in &routed {
        query = query
            .bind(id)
            .bind(route.channel.as_str())
            .bind(route.target)
            .bind(&key.project_id)
            .bind(key.kind.as_str())
            .bind(&key.call_id)
            .bind(*what)
            .bind(*n)
            .bind(*at)
            .bind(*at);
    }
    for (key, due, action) in timers {
        query = query.bind(&key.project_id).bind(key.kind.as_str()).bind(&key.call_id).bind(*action).bind(*due);
    }
    // In the order of the statements: events, deliveries, timers, heads.
    for (project, seq, hash) in moved {
        query = query.bind(project).bind(seq).bind(hash);
    }
    query.execute(&mut *conn).await?;
    Ok(!routed.is_empty())
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Binds an outcome's columns in their order: approved, comment, response, option_name,
/// decided_by, updated_kwargs, ended.
fn bind_outcome<'q>(query: Query<'q>, c: &'q OutcomeColumns) -> Query<'q> {
    query
        .bind(c.approved)
        .bind(c.comment.as_deref())
        .bind(c.response.as_deref())
        .bind(c.option.as_deref())
        .bind(c.decided_by.as_str())
        .bind(c.updated_kwargs.as_deref())
        .bind(c.ended)
}

/// One answer per operation of a committed batch. Operations that changed nothing (a create whose
/// `call_id` exists, a decision on a decided request) learn why with a read after the commit;
/// requests are never deleted, so what they read is still true.
async fn settle(conn: &mut SqliteConnection, batch: &[Op], applied: &Applied) -> Vec<StoreResult<Answer>> {
    let mut claimed = HashSet::new();
    let mut answers = Vec::with_capacity(batch.len());
    for (i, op) in batch.iter().enumerate() {
        answers.push(match op {
            Op::Create { row, .. } if applied.inserted.contains(&row.key) && claimed.insert(&row.key) => {
                Ok(Answer::Created(Created::New))
            }
            Op::Create { row, .. } => match load(conn, &row.key).await {
                Ok(Some(existing)) => Ok(Answer::Created(Created::Existing(Box::new(existing)))),
                Ok(None) => Err(StoreError::Internal(format!("request {} conflicted but is missing", row.key.call_id))),
                Err(e) => Err(e),
            },
            Op::Decide { .. } | Op::Escalate { .. } if applied.updated.contains_key(&i) => {
                Ok(Answer::Change(Change::Done))
            }
            Op::Decide { key, .. } | Op::Escalate { key, .. } => unchanged(conn, key).await.map(Answer::Change),
            Op::Stop(_) | Op::Fire { .. } => unreachable!("stop and fire are taken out of the batch"),
        });
    }
    answers
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

/// Tells a conditional update that changed nothing apart: already decided, or not there at all.
async fn unchanged(conn: &mut SqliteConnection, key: &Key) -> StoreResult<Change> {
    let exists = sqlx::query("SELECT 1 FROM requests WHERE project_id = ? AND kind = ? AND call_id = ?")
        .bind(&key.project_id)
        .bind(key.kind.as_str())
        .bind(&key.call_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(if exists.is_some() { Change::AlreadyDecided } else { Change::NotFound })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create() -> (Answered, oneshot::Receiver<StoreResult<Created>>) {
        let (reply, answer) = oneshot::channel();
        (Answered::Created(reply, Ok(Created::New)), answer)
    }

    #[tokio::test]
    async fn answers_wait_for_the_sync_that_follows_their_commit() {
        let (began, mut syncing) = mpsc::unbounded_channel();
        let (go, gate) = std::sync::mpsc::channel::<()>();
        let (feed, mut heard) = broadcast::channel(16);
        let syncer = Syncer::with(
            move || {
                began.send(()).unwrap();
                gate.recv().unwrap();
                Ok(())
            },
            "test-wal".into(),
            feed,
        )
        .unwrap();
        let (first, mut first_answer) = create();
        syncer.answer_when_synced(vec![first], false);
        syncing.recv().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(first_answer.try_recv().is_err(), "answered before its sync returned");
        // Committed while the first sync runs: it waits for a sync of its own.
        let (second, mut second_answer) = create();
        syncer.answer_when_synced(vec![second], true);
        go.send(()).unwrap();
        assert!(matches!(first_answer.await.unwrap(), Ok(Created::New)));
        syncing.recv().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(second_answer.try_recv().is_err(), "answered by a sync that began before its commit");
        // The workers hear of the second batch's deliveries only once it is durable; the
        // first queued none.
        assert!(heard.try_recv().is_err(), "deliveries announced before their sync, or for a batch that queued none");
        go.send(()).unwrap();
        assert!(matches!(second_answer.await.unwrap(), Ok(Created::New)));
        assert_eq!(heard.recv().await.unwrap(), Feed::Queued);
        syncer.stop().await;
    }

    #[tokio::test]
    async fn a_failed_sync_fails_its_answers_and_every_write_after_it() {
        let (feed, mut heard) = broadcast::channel(16);
        let syncer = Syncer::with(|| Err(std::io::Error::other("disk gone")), "test-wal".into(), feed).unwrap();
        let (one, answer) = create();
        syncer.answer_when_synced(vec![one], true);
        match answer.await.unwrap() {
            Err(StoreError::Unavailable(why)) => assert!(why.contains("disk gone") && why.contains("restart"), "{why}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
        assert!(syncer.failed().is_some_and(|why| why.contains("test-wal")));
        let (later, answer) = create();
        syncer.answer_when_synced(vec![later], true);
        assert!(matches!(answer.await.unwrap(), Err(StoreError::Unavailable(_))));
        syncer.stop().await;
        assert!(heard.try_recv().is_err(), "deliveries of a batch that is not durable were announced");
    }
}
