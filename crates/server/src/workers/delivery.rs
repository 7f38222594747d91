//! The delivery worker: drives one channel's outbound side over the one delivery queue. Due
//! deliveries are claimed with a lease (no other worker of any instance takes them meanwhile; on
//! PostgreSQL the claim skips rows another instance has locked), attempted concurrently by the
//! channel, and their outcomes recorded in batches by one task (one transaction for all that ended
//! meanwhile). Free slots are refilled as soon as attempts end; with nothing due, the worker sleeps
//! until the next delivery is due, a write wakes it, or a second passes (deliveries written or
//! scheduled by another instance).

use crate::channels::Outbound;
use countersign_core::Timestamp;
use countersign_store::{AttemptOutcome, Claimed, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc, watch};

/// Most deliveries claimed at once.
const BATCH: u32 = 64;
/// The longest the worker sleeps without checking the database.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Delivers one channel's queue until told to stop.
pub struct DeliveryWorker<C> {
    store: Arc<dyn Store>,
    channel: Arc<C>,
    wake: Arc<Notify>,
}

impl<C: Outbound> DeliveryWorker<C> {
    /// A worker for `channel` over `store`, woken early through `wake` when something was written.
    pub fn new(store: Arc<dyn Store>, channel: C, wake: Arc<Notify>) -> Self {
        Self { store, channel: Arc::new(channel), wake }
    }

    /// Runs until `closing` turns true; then the attempts in flight finish (each bounded by its
    /// channel's timeout) and are recorded.
    pub async fn run(self, mut closing: watch::Receiver<bool>) {
        let name = C::CHANNEL.as_str();
        let (outcomes, recorded) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record(self.store.clone(), recorded, name));
        let slots = Arc::new(Semaphore::new(C::IN_FLIGHT));
        loop {
            if *closing.borrow() {
                break;
            }
            let free = slots.available_permits();
            if free == 0 {
                tokio::select! {
                    permit = slots.clone().acquire_owned() => drop(permit),
                    _ = closing.wait_for(|c| *c) => break,
                }
                continue;
            }
            let now = Timestamp::now();
            let limit = u32::try_from(free).unwrap_or(BATCH).min(BATCH);
            let claimed = match self.store.claim_deliveries(C::CHANNEL, now, now.plus(C::LEASE), limit).await {
                Ok(claimed) => claimed,
                Err(err) => {
                    metrics::counter!(crate::metrics::STORE_ERRORS).increment(1);
                    tracing::warn!(%err, channel = name, "cannot claim deliveries; retrying");
                    Vec::new()
                }
            };
            if !claimed.is_empty() {
                for c in claimed {
                    let Ok(permit) = slots.clone().acquire_owned().await else { break };
                    let (channel, outcomes) = (self.channel.clone(), outcomes.clone());
                    tokio::spawn(async move {
                        let outcome = channel.attempt(&c).await;
                        if !outcome.deferred {
                            let result = match (outcome.delivered, outcome.retry_at) {
                                (true, _) => "delivered",
                                (false, Some(_)) => "retry",
                                (false, None) => "failed",
                            };
                            metrics::counter!(crate::metrics::DELIVERY_ATTEMPTS, "channel" => name, "outcome" => result)
                                .increment(1);
                        }
                        let _ = outcomes.send((c, outcome));
                        drop(permit);
                    });
                }
                continue;
            }
            let sleep = match self.store.next_delivery_due(C::CHANNEL).await {
                Ok(Some(at)) => Duration::from_micros(u64::try_from(at.as_micros() - now.as_micros()).unwrap_or(0)),
                _ => IDLE_CHECK,
            }
            .min(IDLE_CHECK);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => {}
                _ = closing.wait_for(|c| *c) => break,
            }
        }
        let _ = slots.acquire_many(u32::try_from(C::IN_FLIGHT).unwrap_or(u32::MAX)).await;
        drop(outcomes);
        let _ = recorder.await;
    }
}

/// Records attempt outcomes, batching all that are waiting into one transaction.
async fn record(
    store: Arc<dyn Store>,
    mut outcomes: mpsc::UnboundedReceiver<(Claimed, AttemptOutcome)>,
    name: &'static str,
) {
    while let Some(first) = outcomes.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = outcomes.try_recv() {
            batch.push(more);
        }
        match store.finish_attempts(&batch).await {
            Ok(recorded) => {
                for ((claimed, _), done) in batch.iter().zip(recorded) {
                    if !done {
                        tracing::warn!(id = %claimed.delivery.id, channel = name, "an attempt outlived its lease; another worker retries it");
                    }
                }
            }
            // Unrecorded attempts are retried once their lease ends (at least once).
            Err(err) => {
                metrics::counter!(crate::metrics::STORE_ERRORS).increment(1);
                tracing::warn!(%err, channel = name, attempts = batch.len(), "cannot record attempts; they will be retried")
            }
        }
    }
}
