//! WAL checkpoints off the commit path. SQLite normally checkpoints inside whichever commit
//! crosses 1,000 WAL pages, which stalls that commit and every request sharing it; here the writer
//! never checkpoints on its own and a background task copies the WAL back into the database file
//! instead (PASSIVE: it never blocks the writer or readers).
//!
//! A checkpoint running beside a busy writer never catches up with it: the writer appends frames
//! while the copy runs, so the WAL is never wholly copied and SQLite never starts it over. The WAL
//! then grows for as long as the load lasts (hundreds of MB a minute; the file keeps that size
//! afterwards), and every commit appends to it, so each fsync also has the file's new size to
//! write. So once the background copy has nearly caught up,
//! it asks the writer (see [`Checkpoints`]) to copy the last few frames itself between two
//! batches, when no frame can be added meanwhile; the writer's next transaction then starts the
//! WAL over from its beginning, and the file is rewritten in place instead of growing.

use sqlx::SqlitePool;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

/// How often the WAL is copied back into the database file.
const EVERY: Duration = Duration::from_millis(250);
/// A WAL of fewer frames than this is left to grow until the next round.
const RESTART_AT_FRAMES: i64 = 1000;
/// The writer is asked to finish a checkpoint only when at most this many frames are left to copy
/// (4 KiB pages: about 1 MiB, a millisecond or two of copying).
const TAIL_FRAMES: i64 = 256;
/// Background passes per round to bring the uncopied tail under [`TAIL_FRAMES`].
const PASSES: usize = 4;

/// What the background checkpointer tells the writer: that it should finish the checkpoint.
#[derive(Clone, Default)]
pub(super) struct Checkpoints(Arc<AtomicBool>);

impl Checkpoints {
    /// Whether the writer should checkpoint now (true once per request).
    pub(super) fn take_request(&self) -> bool {
        self.0.load(Ordering::Relaxed) && self.0.swap(false, Ordering::AcqRel)
    }

    fn request(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Handle to the checkpoint task.
pub(super) struct Checkpointer {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts checkpointing through `pool`, asking the writer through `writer` to finish.
    pub(super) fn start(pool: SqlitePool, writer: Checkpoints) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(EVERY) => {}
                    _ = stopped.wait_for(|s| *s) => break,
                }
                // Passes until the tail is short; if the writer outruns them all, it is asked
                // anyway: a longer pause of the writer beats a WAL that grows without end.
                for pass in 1..=PASSES {
                    match passive(&pool).await {
                        Ok((log, copied)) if log >= RESTART_AT_FRAMES => {
                            if log - copied <= TAIL_FRAMES || pass == PASSES {
                                writer.request();
                                break;
                            }
                        }
                        Ok(_) => break,
                        Err(err) => {
                            tracing::warn!(%err, "WAL checkpoint failed; will retry");
                            break;
                        }
                    }
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

/// One PASSIVE checkpoint: the WAL's frames, and how many of them are now in the database file.
pub(super) async fn passive<'e>(db: impl sqlx::SqliteExecutor<'e>) -> sqlx::Result<(i64, i64)> {
    let (_busy, log, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(db).await?;
    Ok((log, copied))
}
