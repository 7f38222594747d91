//! The timer worker: fires the durable timers policies set (escalation steps, deadlines) when they
//! fall due. It asks the store for due timers every [`TICK`] (so a timer fires within about that
//! of its due time, whoever created it); the store fires each once, also across instances.

use crate::state::AppState;
use countersign_core::Timestamp;
use std::time::Duration;
use tokio::sync::watch;

/// How often due timers are looked for.
pub const TICK: Duration = Duration::from_millis(200);
/// Most timers fired in one round (one transaction on PostgreSQL; on SQLite they share the
/// writer's group commits).
pub const BATCH: u32 = 4096;

/// Fires due timers until `closing` turns true. While a burst drains, each round's in-memory
/// side (views, wake-ups) is applied while the next round is fired, in round order.
pub async fn run(state: AppState, mut closing: watch::Receiver<bool>) {
    let mut failing = false;
    let mut applying: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        match state.store.fire_timers(Timestamp::now(), BATCH).await {
            Ok(fired) => {
                if failing {
                    tracing::info!("timers fire again");
                    failing = false;
                }
                let full = fired.len() == BATCH as usize;
                let (previous, state) = (applying.take(), state.clone());
                applying = Some(tokio::spawn(async move {
                    if let Some(previous) = previous {
                        let _ = previous.await;
                    }
                    state.requests.timers_fired(&fired).await;
                }));
                if full {
                    continue;
                }
            }
            Err(err) => {
                if !failing {
                    tracing::warn!(%err, "cannot fire due timers; retrying");
                }
                failing = true;
            }
        }
        if let Some(last) = applying.take() {
            let _ = last.await;
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = closing.wait_for(|c| *c) => return,
        }
    }
}
