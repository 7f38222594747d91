//! Countersign's HTTP face: the HumanLayer-compatible API served with axum, over any [`Store`].

pub mod app;
pub mod channels;
pub mod error;
pub mod faces;
pub mod guard;
pub mod html;
pub mod limits;
mod listen;
pub mod metrics;
pub mod services;
pub mod state;
pub mod workers;

use axum::Router;
use axum::extract::Request;
use axum::http::Uri;
use countersign_store::Store;
pub use limits::Limits;
use state::AppState;
pub use state::Settings;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tower::Layer;
use workers::delivery::DeliveryWorker;

/// A bound, warmed-up server, ready to run.
pub struct Server {
    listener: TcpListener,
    /// `settings.metrics.listen`, bound.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    /// Routes the binary adds (see [`Server::mount`]).
    mounted: Router,
}

impl Server {
    /// Binds `addr` and loads the pending requests into memory.
    pub async fn bind(addr: SocketAddr, store: Arc<dyn Store>, settings: Settings) -> Result<Self, StartError> {
        let listener = TcpListener::bind(addr).await.map_err(|e| StartError::Bind(addr, e))?;
        let bound = listener.local_addr().map_err(|e| StartError::Bind(addr, e))?;
        let metrics_listener = match settings.metrics.listen {
            Some(at) => Some(TcpListener::bind(at).await.map_err(|e| StartError::Bind(at, e))?),
            None => None,
        };
        if settings.metrics.enabled() {
            metrics::install(settings.commit);
        }
        let public_base = settings.public_url.clone().unwrap_or_else(|| {
            let host = if bound.ip().is_unspecified() { "127.0.0.1".to_owned() } else { bound.ip().to_string() };
            let host = if bound.is_ipv6() && !bound.ip().is_unspecified() { format!("[{host}]") } else { host };
            format!("http://{host}:{}", bound.port())
        });
        let public_base = public_base.trim_end_matches('/').to_owned();
        let fresh = countersign_core::session::random_text(43);
        let link_key = store.server_key("email_links", &fresh).await.map_err(|e| StartError::Store(e.to_string()))?;
        let links = Arc::new(channels::email::links::LinkSigner::new(link_key.as_bytes()));
        let signer =
            services::receipts::Signer::start(store.clone()).await.map_err(|e| StartError::Store(e.to_string()))?;
        let state = AppState::new(store, settings, links, public_base, signer);
        let pending = state.requests.warm().await.map_err(|e| StartError::Store(format!("{e:?}")))?;
        tracing::info!(pending, "pending requests loaded");
        Ok(Self { listener, metrics_listener, state, mounted: Router::new() })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The address `/metrics` is served on without a token, if configured (`metrics_listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|l| l.local_addr().expect("a bound listener has an address"))
    }

    /// Adds the routes `routes` builds from the server's state (the binary mounts `/mcp` this way,
    /// so the server needs no MCP of its own). They sit behind the same body limit, deadlines,
    /// tracing and panic guard as the built-in routes, and must not overlap them.
    pub fn mount(mut self, routes: impl FnOnce(AppState) -> Router) -> Self {
        self.mounted = self.mounted.merge(routes(self.state.clone()));
        self
    }

    /// Serves until `shutdown` completes, then ends long-polls, lets in-flight requests finish,
    /// and closes the store (every acknowledged write is already durable).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let state = self.state.clone();
        let following = self.state.clone();
        tokio::spawn(async move { following.requests.follow_changes().await });
        let s = &self.state;
        let closing = s.requests.closing();
        let webhooks = channels::webhook::outbound::WebhookChannel::new(
            s.store.clone(),
            s.signer.clone(),
            s.settings.limits.allow_private_webhook_targets,
        );
        let webhooks = DeliveryWorker::new(s.store.clone(), webhooks, s.requests.written());
        let email = channels::email::EmailChannel::new(
            s.store.clone(),
            s.links.clone(),
            s.public_base.clone(),
            &s.settings.email,
            &s.settings.limits,
        )
        .map_err(std::io::Error::other)?;
        let email = DeliveryWorker::new(s.store.clone(), email, s.requests.written());
        let slack = channels::slack::SlackChannel::new(s.store.clone(), s.slack.clone(), s.public_base.clone());
        let slack = DeliveryWorker::new(s.store.clone(), slack, s.requests.written());
        let sms = channels::sms::SmsChannel::new(s.store.clone(), s.twilio.clone(), s.public_base.clone());
        let sms = DeliveryWorker::new(s.store.clone(), sms, s.requests.written());
        let workers = [
            tokio::spawn(webhooks.run(closing.clone())),
            tokio::spawn(email.run(closing.clone())),
            tokio::spawn(slack.run(closing.clone())),
            tokio::spawn(sms.run(closing.clone())),
            tokio::spawn(workers::timers::run(self.state.clone(), closing)),
        ];
        if let Some(listener) = self.metrics_listener {
            let metrics = Router::new()
                .route("/metrics", axum::routing::get(metrics::scrape_open))
                .with_state(self.state.clone());
            let mut closing = self.state.requests.closing();
            tokio::spawn(async move {
                let stop = async move {
                    let _ = closing.wait_for(|c| *c).await;
                };
                if let Err(err) = axum::serve(listener, metrics).with_graceful_shutdown(stop).await {
                    tracing::warn!(%err, "the metrics listener failed");
                }
            });
        }
        let routes = app::router(self.state.clone(), self.mounted);
        let app = tower::util::MapRequestLayer::new(collapse_slashes).layer(routes);
        let closing = state.clone();
        listen::serve(self.listener, app, &state.settings.limits, shutdown, move || {
            tracing::info!("shutting down: finishing in-flight requests");
            closing.requests.close_waiters();
        })
        .await?;
        for worker in workers {
            let _ = worker.await;
        }
        state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("cannot load pending requests: {0}")]
    Store(String),
}

/// Turns `//function_calls` into `/function_calls`: SDK users often set a base URL ending in `/`,
/// and the SDKs join paths by plain concatenation.
fn collapse_slashes(mut req: Request) -> Request {
    if req.uri().path().contains("//") {
        let mut path = String::with_capacity(req.uri().path().len());
        for c in req.uri().path().chars() {
            if !(c == '/' && path.ends_with('/')) {
                path.push(c);
            }
        }
        if let Some(query) = req.uri().query() {
            path.push('?');
            path.push_str(query);
        }
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = path.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}
