//! The sealer: events are committed unsealed, with the change they record, by any instance; one
//! instance at a time (the holder of an advisory lock, on a connection of its own) gives them their
//! chain positions and hashes in batches shortly after, as transparency logs' sequencers do, and
//! routes them (queues their webhook deliveries and emails) in the same transaction. Writes never
//! wait for it, so several instances create at full speed; if the leader dies its session ends,
//! the lock is freed and another instance takes over within a second.

use crate::Feed;
use crate::events::Heads;
use countersign_core::Timestamp;
use countersign_core::event::RequestEvent;
use countersign_core::route::{ProjectChannels, Route, SpecChannels, routes};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, broadcast};

/// The advisory lock whose holder seals ("countersg" as a number).
const LEADER_LOCK: i64 = 0x636f_756e_7465_7273;
/// Most events sealed in one transaction.
const BATCH: i64 = 2000;
/// How often the leader looks for events of other instances it was not told about.
const POLL: Duration = Duration::from_millis(50);
/// How often the other instances try to become the leader.
const CANDIDATE: Duration = Duration::from_secs(1);

/// Seals until the task is aborted: `wake` is poked after this instance's writes, `feed`
/// carries other instances' changes.
pub(super) async fn run(options: PgConnectOptions, wake: Arc<Notify>, feed: broadcast::Sender<Feed>, salt: String) {
    let mut heard = feed.subscribe();
    loop {
        let mut conn = match PgConnection::connect_with(&options).await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(%err, "the event sealer cannot connect to PostgreSQL; retrying");
                tokio::time::sleep(CANDIDATE).await;
                continue;
            }
        };
        match lead(&mut conn, &wake, &feed, &mut heard, &salt).await {
            Ok(()) => return,
            Err(err) => tracing::warn!(%err, "the event sealer lost its connection; reconnecting"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lead(
    conn: &mut PgConnection,
    wake: &Notify,
    feed: &broadcast::Sender<Feed>,
    heard: &mut broadcast::Receiver<Feed>,
    salt: &str,
) -> sqlx::Result<()> {
    loop {
        let leader: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEADER_LOCK).fetch_one(&mut *conn).await?;
        if leader {
            break;
        }
        tokio::time::sleep(CANDIDATE).await;
    }
    tracing::debug!("this instance seals the event log");
    loop {
        let (sealed, queued) = seal(conn, salt).await?;
        if queued {
            let _ = feed.send(Feed::Queued);
        }
        if sealed == BATCH as usize {
            continue;
        }
        tokio::select! {
            () = wake.notified() => {}
            _ = heard.recv() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Seals and routes one batch of unsealed events, oldest first; returns how many, and whether it
/// queued any delivery.
async fn seal(conn: &mut PgConnection, salt: &str) -> sqlx::Result<(usize, bool)> {
    let mut tx = conn.begin().await?;
    let rows = sqlx::query(
        "SELECT id, project_id, request_kind, escalations, body FROM events WHERE seq IS NULL ORDER BY id LIMIT $1 FOR UPDATE",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok((0, false));
    }
    let mut projects: Vec<String> = Vec::new();
    for row in &rows {
        let project: String = row.try_get("project_id")?;
        if !projects.contains(&project) {
            projects.push(project);
        }
    }
    let mut heads = Heads::default();
    let stored = sqlx::query("SELECT project_id, seq, hash FROM chain_heads WHERE project_id = ANY($1) FOR UPDATE")
        .bind(&projects)
        .fetch_all(&mut *tx)
        .await?;
    for head in stored {
        let hash: String = head.try_get("hash")?;
        heads
            .insert(head.try_get("project_id")?, head.try_get("seq")?, &hash)
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    }
    let (mut ids, mut seqs, mut prevs, mut hashes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for row in &rows {
        let project: &str = row.try_get("project_id")?;
        let body: &str = row.try_get("body")?;
        let (seq, prev, hash) = heads.seal(project, body);
        ids.push(row.try_get::<i64, _>("id")?);
        seqs.push(seq);
        prevs.push(prev);
        hashes.push(hash);
    }
    let queued = route(&mut tx, salt, &rows, &projects).await?;
    sqlx::query(
        "UPDATE events SET seq = u.seq, prev_hash = u.prev, hash = u.hash, sealed_at = $5, routed_at = $5 \
         FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[]) AS u(id, seq, prev, hash) WHERE events.id = u.id",
    )
    .bind(&ids)
    .bind(&seqs)
    .bind(&prevs)
    .bind(&hashes)
    .bind(Timestamp::now().as_micros())
    .execute(&mut *tx)
    .await?;
    let (mut head_projects, mut head_seqs, mut head_hashes) = (Vec::new(), Vec::new(), Vec::new());
    for (project, seq, hash) in heads.rows() {
        head_projects.push(project.to_owned());
        head_seqs.push(seq);
        head_hashes.push(hash);
    }
    sqlx::query(
        "INSERT INTO chain_heads (project_id, seq, hash) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) \
         ON CONFLICT (project_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .bind(&head_projects)
    .bind(&head_seqs)
    .bind(&head_hashes)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((rows.len(), queued))
}

/// Queues the deliveries of `rows` (events of `projects`) by the routing rules; true if any.
async fn route(
    tx: &mut sqlx::PgConnection,
    salt: &str,
    rows: &[sqlx::postgres::PgRow],
    projects: &[String],
) -> sqlx::Result<bool> {
    let endpoints = sqlx::query(
        "SELECT id, project_id, events FROM webhook_endpoints WHERE disabled_at IS NULL AND project_id = ANY($1)",
    )
    .bind(projects)
    .fetch_all(&mut *tx)
    .await?;
    let mut subscribed: HashMap<String, Vec<(String, Vec<String>)>> = HashMap::new();
    for e in endpoints {
        let events: String = e.try_get("events")?;
        subscribed
            .entry(e.try_get("project_id")?)
            .or_default()
            .push((e.try_get("id")?, serde_json::from_str(&events).unwrap_or_default()));
    }
    let channels: HashMap<String, ProjectChannels> = sqlx::query_as::<_, (String, i64)>(
        "SELECT p.id, ((CASE WHEN p.default_email IS NOT NULL THEN 1 ELSE 0 END) \
         + (CASE WHEN s.project_id IS NOT NULL THEN 2 ELSE 0 END) \
         + (CASE WHEN s.default_channel IS NOT NULL THEN 4 ELSE 0 END))::BIGINT \
         FROM projects p LEFT JOIN slack_connections s ON s.project_id = p.id \
         WHERE (p.default_email IS NOT NULL OR s.project_id IS NOT NULL) AND p.id = ANY($1)",
    )
    .bind(projects)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(id, bits)| (id, ProjectChannels::from_bits(bits)))
    .collect();
    let mut queued = Deliveries::default();
    for row in rows {
        let body: &str = row.try_get("body")?;
        let escalations: i64 = row.try_get("escalations")?;
        if row.try_get::<&str, _>("request_kind")? == countersign_core::event::ProjectEvent::REQUEST_KIND {
            continue; // a policy or group change: in the chain, delivered nowhere
        }
        let event = match RequestEvent::from_json(body) {
            Ok(event) => event,
            Err(err) => {
                let id: i64 = row.try_get("id")?;
                tracing::warn!(event = id, %err, "an event in the log cannot be read; nothing is delivered for it");
                continue;
            }
        };
        let endpoints = subscribed.get(&event.project_id).map_or(&[][..], Vec::as_slice);
        let project = channels.get(&event.project_id).copied().unwrap_or_default();
        for route in routes(&event, SpecChannels::of_event(&event), endpoints, project) {
            queued.push(route.delivery_id(salt, &event, escalations), &route, &event, escalations);
        }
    }
    if !queued.ids.is_empty() {
        sqlx::query(
            "INSERT INTO deliveries (id, channel, target, project_id, kind, call_id, event_type, event_seq, \
             created_at, status, next_attempt_at) SELECT id, channel, target, project_id, kind, call_id, what, seq, \
             at, 'pending', at FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::bigint[], $9::bigint[]) AS u(id, channel, target, project_id, kind, call_id, what, seq, at) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&queued.ids)
        .bind(&queued.channels)
        .bind(&queued.targets)
        .bind(&queued.projects)
        .bind(&queued.kinds)
        .bind(&queued.call_ids)
        .bind(&queued.whats)
        .bind(&queued.seqs)
        .bind(&queued.ats)
        .execute(&mut *tx)
        .await?;
    }
    Ok(!queued.ids.is_empty())
}

/// Deliveries to insert, column by column (bound as arrays).
#[derive(Default)]
struct Deliveries {
    ids: Vec<String>,
    channels: Vec<&'static str>,
    targets: Vec<Option<String>>,
    projects: Vec<String>,
    kinds: Vec<String>,
    call_ids: Vec<String>,
    whats: Vec<String>,
    seqs: Vec<i64>,
    ats: Vec<i64>,
}

impl Deliveries {
    fn push(&mut self, id: String, route: &Route<'_>, event: &RequestEvent, seq: i64) {
        self.ids.push(id);
        self.channels.push(route.channel.as_str());
        self.targets.push(route.target.map(str::to_owned));
        self.projects.push(event.project_id.clone());
        self.kinds.push(event.request_kind.as_str().to_owned());
        self.call_ids.push(event.call_id.clone());
        self.whats.push(event.webhook_event().as_str().to_owned());
        self.seqs.push(seq);
        self.ats.push(event.at.as_micros());
    }
}
