//! Channels: the ways a request reaches a human and the human's answer comes back. Each owns its
//! outbound side (how one delivery of an event is rendered and sent, as an [`Outbound`] the one
//! delivery worker drives) and its inbound side (verifying what comes back and turning it into a
//! typed decision through `services::requests`). Which events each channel gets is decided in
//! `countersign_core::route`, where the store routes every event into the one delivery queue in
//! the transaction that writes (SQLite) or seals (PostgreSQL) it.

pub mod email;
pub mod http;
pub mod slack;
pub mod sms;
pub mod webhook;

use countersign_core::route::Channel;
use countersign_store::{AttemptOutcome, Claimed};
use std::future::Future;
use std::time::Duration;

/// The outbound side of a channel: one attempt at one claimed delivery. The worker
/// (`workers::delivery`) claims, leases, schedules retries from the outcome's `retry_at`, and
/// records the outcomes; the channel only sends.
pub trait Outbound: Send + Sync + 'static {
    /// The channel whose deliveries this sends.
    const CHANNEL: Channel;
    /// How long a claim lasts: longer than an attempt can take, plus a margin to record it. A
    /// delivery whose worker died mid-attempt (a crash) is taken up by any instance once it passed.
    const LEASE: Duration;
    /// Most attempts in flight at once (a slow one holds one slot, not the others).
    const IN_FLIGHT: usize;

    /// Attempts one delivery; never fails: a failure is an outcome (with its retry, or none).
    fn attempt(&self, claimed: &Claimed) -> impl Future<Output = AttemptOutcome> + Send;
}
