//! SQLite under steady writes: idle delivery workers stay out of the group-commit writer's way,
//! and the WAL is started over instead of growing for as long as the load lasts.

use crate::support::{TestServer, on_postgres};
use countersign_core::Timestamp;
use countersign_core::route::Channel;
use serde_json::json;
use sqlx::Connection;
use std::time::{Duration, Instant};

/// A delivery worker with nothing due must not wait for the database's write lock: workers are
/// woken after every write, and a claim that took the lock each time made the writer's
/// transactions wait in SQLite's busy handler (1 to 25 ms per wait).
#[tokio::test]
async fn a_claim_with_nothing_due_does_not_wait_for_the_write_lock() {
    if on_postgres() {
        return;
    }
    let s = TestServer::start().await;
    let db = s.dir.path().join("countersign.db");
    let mut holder = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();

    let now = Timestamp::now();
    let started = Instant::now();
    for channel in [Channel::Webhook, Channel::Email, Channel::Slack, Channel::Sms] {
        let claimed = s.store.claim_deliveries(channel, now, now.plus(Duration::from_secs(60)), 10).await;
        assert!(claimed.expect("an idle claim succeeds while another connection writes").is_empty());
    }
    // The busy timeout is 5 s: a claim that waited for the lock would take that long and fail.
    assert!(started.elapsed() < Duration::from_secs(2), "idle claims took {:?}", started.elapsed());
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    // With the lock free, the API writes as usual.
    let (status, _) = s.post("/function_calls", crate::support::approval("after-the-lock")).await;
    assert_eq!(status, 200);
}

/// 6,000 creates of ~1 KB specs from 16 clients write several times more WAL frames than the
/// bound below (each create adds its request, its event and index pages: the WAL reached 116 MB
/// before the writer finished the checkpoints). The
/// checkpointer copies the WAL back while they run and has the writer finish each round, so the
/// WAL starts over from its beginning and its file stays small.
#[tokio::test]
async fn the_wal_starts_over_under_steady_writes() {
    if on_postgres() {
        return;
    }
    const CREATES: usize = 6_000;
    const CLIENTS: usize = 16;
    const BOUND: u64 = 32 << 20;
    let s = std::sync::Arc::new(TestServer::start().await);
    let wal = s.dir.path().join("countersign.db-wal");
    let padding = "x".repeat(1000);
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (s, wal, padding) = (s.clone(), wal.clone(), padding.clone());
        clients.push(tokio::spawn(async move {
            let mut largest = 0;
            for i in (c..CREATES).step_by(CLIENTS) {
                let body = json!({"run_id": "wal", "call_id": format!("wal-{}-{i}", uuid::Uuid::now_v7().simple()),
                    "spec": {"fn": "f", "kwargs": {"n": i, "pad": padding}}});
                let (status, _) = s.post("/function_calls", body).await;
                assert_eq!(status, 200);
                largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            }
            largest
        }));
    }
    let mut largest = 0;
    for client in clients {
        largest = largest.max(client.await.unwrap());
    }
    let size = std::fs::metadata(&wal).unwrap().len();
    assert!(
        largest < BOUND && size < BOUND,
        "the WAL grew to {largest} bytes ({size} at the end) over {CREATES} creates; it should start over"
    );
}
