//! Progress notifications: while a human thinks (and while a gated tool runs), clients that asked
//! for progress hear every [`PROGRESS_EVERY`] that the call is alive, so that clients whose request
//! timeouts reset on progress keep waiting.

use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use std::future::Future;
use std::time::Duration;

/// How often a waiting tool call tells the MCP client it is still alive (when the client asked for
/// progress), so that clients with request timeouts that reset on progress keep waiting.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// Progress notifications for one request, counting up across several waits (the MCP spec wants
/// the progress value to increase), so that clients whose timeouts reset on progress keep waiting.
pub struct Progress {
    token: Option<ProgressToken>,
    every: Duration,
    sent: u32,
    started: tokio::time::Instant,
}

impl Progress {
    /// Progress for the request of `ctx`; silent when the client gave no progress token.
    pub fn new(ctx: &RequestContext<RoleServer>, every: Duration) -> Self {
        Self { token: ctx.meta.get_progress_token(), every, sent: 0, started: tokio::time::Instant::now() }
    }

    /// Runs `work`, notifying `label (N s)` every `every` until it ends.
    pub async fn during<T>(
        &mut self,
        ctx: &RequestContext<RoleServer>,
        label: &str,
        work: impl Future<Output = T>,
    ) -> T {
        let Some(token) = self.token.clone() else {
            return work.await;
        };
        let mut work = std::pin::pin!(work);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = ticks.tick() => {
                    self.sent += 1;
                    let seconds = self.started.elapsed().as_secs();
                    let note = ProgressNotificationParam::new(token.clone(), f64::from(self.sent))
                        .with_message(format!("{label} ({seconds} s)"));
                    if let Err(e) = ctx.peer.notify_progress(note).await {
                        tracing::debug!(error = %e, "cannot send a progress notification");
                    }
                }
            }
        }
    }
}
