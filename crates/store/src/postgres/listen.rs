//! LISTEN for the changes other instances commit, and pass them on as a [`Feed`]. When the
//! listening connection drops it is re-established, and a [`Feed::Resync`] tells the server to
//! re-check what it holds, since notifications sent meanwhile are lost.

use crate::Feed;
use countersign_core::RequestKind;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;
use tokio::sync::broadcast;

/// The channel the statements in `super` notify on.
pub(super) const CHANNEL: &str = "countersign_requests";

/// Listens until the pool closes.
pub(super) async fn run(pool: PgPool, feed: broadcast::Sender<Feed>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(err) if pool.is_closed() => return tracing::debug!(%err, "listener stopped"),
            Err(err) => {
                tracing::warn!(%err, "cannot listen for changes from other instances; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(err) = listener.listen(CHANNEL).await {
            tracing::warn!(%err, "LISTEN failed; retrying");
            tokio::time::sleep(backoff).await;
            continue;
        }
        tracing::debug!("listening for changes from other instances");
        let _ = feed.send(Feed::Resync);
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    backoff = Duration::from_millis(100);
                    if let Some(change) = parse(notification.payload()) {
                        let _ = feed.send(change);
                    }
                }
                Ok(None) => {
                    // The connection dropped; the next try_recv reconnects and LISTENs again.
                    tracing::warn!("lost the PostgreSQL listening connection; reconnecting");
                    let _ = feed.send(Feed::Resync);
                }
                Err(err) if pool.is_closed() => return tracing::debug!(%err, "listener stopped"),
                Err(err) => {
                    tracing::warn!(%err, "listening for changes failed; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    break;
                }
            }
        }
    }
}

/// Parses `project_id|kind|call_id` (the call id may itself contain `|`), prefixed with `+` for
/// a new request.
fn parse(payload: &str) -> Option<Feed> {
    let (created, payload) = match payload.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, payload),
    };
    let mut parts = payload.splitn(3, '|');
    let project_id = parts.next()?.to_owned();
    let kind = RequestKind::parse(parts.next()?)?;
    let call_id = parts.next()?.to_owned();
    Some(if created {
        Feed::Created { project_id, kind, call_id }
    } else {
        Feed::Changed { project_id, kind, call_id }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_with_bars_in_call_ids() {
        assert_eq!(
            parse("p1|function_call|a|b"),
            Some(Feed::Changed { project_id: "p1".into(), kind: RequestKind::FunctionCall, call_id: "a|b".into() })
        );
        assert_eq!(parse("p1|nonsense|x"), None);
        assert_eq!(
            parse("+p1|human_contact|x"),
            Some(Feed::Created { project_id: "p1".into(), kind: RequestKind::HumanContact, call_id: "x".into() })
        );
    }
}
