//! The sealer: events are committed unsealed, with the change they record, by any instance; one
//! instance at a time (the holder of an advisory lock, on a connection of its own) gives them their
//! chain positions and hashes in batches shortly after, as transparency logs' sequencers do. Writes
//! never wait for it, so several instances create at full speed; if the leader dies its session
//! ends, the lock is freed and another instance takes over within a second.

use crate::Feed;
use crate::events::Heads;
use countersign_core::Timestamp;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Row};
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
pub(super) async fn run(options: PgConnectOptions, wake: Arc<Notify>, mut feed: broadcast::Receiver<Feed>) {
    loop {
        let mut conn = match PgConnection::connect_with(&options).await {
            Ok(conn) => conn,
            Err(err) => {
                tracing::warn!(%err, "the event sealer cannot connect to PostgreSQL; retrying");
                tokio::time::sleep(CANDIDATE).await;
                continue;
            }
        };
        match lead(&mut conn, &wake, &mut feed).await {
            Ok(()) => return,
            Err(err) => tracing::warn!(%err, "the event sealer lost its connection; reconnecting"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lead(conn: &mut PgConnection, wake: &Notify, feed: &mut broadcast::Receiver<Feed>) -> sqlx::Result<()> {
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
        if seal(conn).await? == BATCH as usize {
            continue;
        }
        tokio::select! {
            () = wake.notified() => {}
            _ = feed.recv() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Seals one batch of unsealed events, oldest first; returns how many.
async fn seal(conn: &mut PgConnection) -> sqlx::Result<usize> {
    let mut tx = conn.begin().await?;
    let rows = sqlx::query("SELECT id, project_id, body FROM events WHERE seq IS NULL ORDER BY id LIMIT $1 FOR UPDATE")
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(0);
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
    sqlx::query(
        "UPDATE events SET seq = u.seq, prev_hash = u.prev, hash = u.hash, sealed_at = $5 \
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
    Ok(rows.len())
}
