//! The accept loop: hyper's HTTP/1 connections with the bounds a slow or hostile client meets
//! (`limits.header_read_timeout_secs`, `limits.max_connections`), each request told its peer's
//! address (`ConnectInfo<SocketAddr>`, for the login throttle), and a graceful end.

use crate::limits::Limits;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt};

/// How long open connections get to finish after the shutdown signal before they are cut.
const DRAIN: Duration = Duration::from_secs(30);

#[cfg(target_os = "linux")]
/// File descriptors kept free of client connections: the store, SMTP, webhooks, the log.
const RESERVED_FDS: u64 = 128;

/// Serves `app` on `listener` until `shutdown` completes; `on_shutdown` runs right after it (to
/// end long-polls), then open connections finish their requests (up to 30 s).
pub(crate) async fn serve<S>(
    listener: TcpListener,
    app: S,
    limits: &Limits,
    shutdown: impl Future<Output = ()>,
    on_shutdown: impl FnOnce(),
) -> std::io::Result<()>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper restarts this timer whenever a kept-alive connection goes idle, so it also closes
    // connections that sit idle between requests.
    http.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(limits.header_read_timeout_secs.max(1)));
    let cap = connection_cap(limits.max_connections);
    let slots = Arc::new(Semaphore::new(cap));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::debug!(max_connections = cap, "accepting connections");
    loop {
        // At the cap, new connections wait in the kernel's accept queue until one closes.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and friends: wait for descriptors to free up rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone().map_request(move |req: hyper::Request<Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        });
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::trace!(%peer, error = %err, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    on_shutdown();
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open {} s after shutdown; closing them", DRAIN.as_secs());
    }
    Ok(())
}

/// `max_connections`, lowered to what the process's file limit allows (raising the soft limit
/// to the hard one first, as servers do).
fn connection_cap(max_connections: usize) -> usize {
    let max_connections = max_connections.max(1);
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
            && current < maximum
        {
            limit.current = Some(maximum);
            let _ = setrlimit(Resource::Nofile, limit);
            limit = getrlimit(Resource::Nofile);
        }
        if let Some(files) = limit.current {
            let room = usize::try_from(files.saturating_sub(RESERVED_FDS).max(16)).unwrap_or(usize::MAX);
            if room < max_connections {
                tracing::warn!(
                    max_connections,
                    open_file_limit = files,
                    "limits.max_connections is above what the open-file limit allows; using {room} (raise `ulimit -n`)"
                );
                return room;
            }
        }
    }
    max_connections
}
