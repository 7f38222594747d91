//! WAL checkpoints off the commit path. SQLite normally checkpoints inside whichever commit
//! crosses 1,000 WAL pages, which stalls that commit and every request sharing it; here the writer
//! never checkpoints and a background task copies the WAL back into the database file instead
//! (PASSIVE: it never blocks the writer or readers).

use sqlx::SqlitePool;
use std::time::Duration;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

/// How often the WAL is copied back into the database file.
const EVERY: Duration = Duration::from_millis(250);

/// Handle to the checkpoint task.
pub(super) struct Checkpointer {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts checkpointing through `pool`.
    pub(super) fn start(pool: SqlitePool) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(EVERY) => {}
                    _ = stopped.wait_for(|s| *s) => break,
                }
                if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                    tracing::warn!(%err, "WAL checkpoint failed; will retry");
                }
            }
            // Last one after the writer has stopped: leave a small WAL behind.
            if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await {
                tracing::warn!(%err, "final WAL checkpoint failed");
            }
        });
        Self { stop, task: Mutex::new(Some(task)) }
    }

    /// Stops the task after a final checkpoint.
    pub(super) async fn stop(&self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}
