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

/// Announces new requests to the other instances: each batch of creates (those committed within
/// [`ANNOUNCE_DELAY`] of each other) becomes one NOTIFY per project, `+project_id`, sent in its
/// own statement after the creates committed. Best effort: a crash in between only delays other
/// inboxes until their next change.
pub(super) async fn announce_creates(pool: PgPool, mut queue: tokio::sync::mpsc::UnboundedReceiver<String>) {
    while let Some(first) = queue.recv().await {
        tokio::time::sleep(ANNOUNCE_DELAY).await;
        let mut projects = std::collections::BTreeSet::from([first]);
        while let Ok(more) = queue.try_recv() {
            projects.insert(more);
        }
        let projects: Vec<String> = projects.into_iter().collect();
        let sent = sqlx::query("SELECT pg_notify($1, '+' || p) FROM unnest($2::text[]) AS p")
            .bind(CHANNEL)
            .bind(&projects)
            .execute(&pool)
            .await;
        if let Err(err) = sent {
            tracing::debug!(%err, "cannot announce new requests to other instances");
        }
    }
}

/// How long creates are gathered into one announcement.
const ANNOUNCE_DELAY: Duration = Duration::from_millis(20);

/// Parses `project_id|kind|call_id` (the call id may itself contain `|`), or `+project_id` for
/// new requests.
fn parse(payload: &str) -> Option<Feed> {
    if let Some(project_id) = payload.strip_prefix('+') {
        return Some(Feed::Created { project_id: project_id.to_owned() });
    }
    let mut parts = payload.splitn(3, '|');
    let project_id = parts.next()?.to_owned();
    let kind = RequestKind::parse(parts.next()?)?;
    let call_id = parts.next()?.to_owned();
    Some(Feed::Changed { project_id, kind, call_id })
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
        assert_eq!(parse("+p1"), Some(Feed::Created { project_id: "p1".into() }));
    }
}
