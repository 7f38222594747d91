//! Prometheus metrics: what the server records (the [`METRICS`] table), the recorder installed
//! once per process when metrics are on, and the scrape, which also reads the store's gauges
//! (pending requests, delivery queues) at that moment.
//!
//! Off by default: with neither `metrics_listen` nor `metrics_token` configured no recorder is
//! installed, and every `metrics::counter!` the code passes is a no-op. On, `/metrics` is served
//! on its own listen address (no key: keep it private) and/or on the main address behind a
//! bearer token.

use crate::error::ApiError;
use crate::state::AppState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use countersign_store::Gauges;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Where `/metrics` is served.
#[derive(Debug, Clone, Default)]
pub struct MetricsSettings {
    /// Serve `/metrics` (and only it, without a key) on this address, e.g. `127.0.0.1:9464`.
    pub listen: Option<SocketAddr>,
    /// Serve `/metrics` on the main address to requests with `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
}

impl MetricsSettings {
    /// Whether metrics are recorded at all.
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || self.token.is_some()
    }
}

/// The shortest metrics token accepted (it guards the server's activity figures).
pub const MIN_TOKEN_LEN: usize = 16;

/// Requests by route, method and status (`route` is the matched pattern, e.g.
/// `/humanlayer/v1/function_calls/{call_id}`; `unmatched` for unknown paths).
pub const HTTP_REQUESTS: &str = "countersign_http_requests_total";
/// Time to the response's head by route and method (long-polls and streams excluded).
pub const HTTP_DURATION: &str = "countersign_http_request_duration_seconds";
/// Pending requests by project and kind, read from the store at each scrape.
pub const PENDING: &str = "countersign_pending_requests";
/// Decisions by channel and decision.
pub const DECISIONS: &str = "countersign_decisions_total";
/// Long-polls waiting now.
pub const LONG_POLLS: &str = "countersign_long_polls_open";
/// Inbox event streams open now.
pub const SSE_STREAMS: &str = "countersign_sse_streams_open";
/// Deliveries waiting by channel, read from the store at each scrape.
pub const QUEUE_DEPTH: &str = "countersign_delivery_queue_depth";
/// Age of the oldest waiting delivery by channel (0 when none), at each scrape.
pub const QUEUE_AGE: &str = "countersign_delivery_queue_oldest_age_seconds";
/// Delivery attempts by channel and outcome (`delivered`, `retry`, `failed`).
pub const DELIVERY_ATTEMPTS: &str = "countersign_delivery_attempts_total";
/// How late each timer fired (expiries and escalations), in seconds.
pub const TIMER_LATENESS: &str = "countersign_timer_lateness_seconds";
/// Store operations that failed (the database down, full, or refusing).
pub const STORE_ERRORS: &str = "countersign_store_errors_total";
/// Writes per group commit (SQLite's writer; PostgreSQL's create batches).
pub const COMMIT_BATCH: &str = countersign_store::metrics::COMMIT_BATCH;
/// Always 1, with the version as a label.
pub const BUILD_INFO: &str = "countersign_build_info";

/// Every metric: name, type and help (the `# HELP` line). The Grafana dashboard may name only these.
pub const METRICS: &[(&str, &str, &str)] = &[
    (HTTP_REQUESTS, "counter", "HTTP requests by matched route, method and status."),
    (HTTP_DURATION, "histogram", "Time to the response head by route and method, long-polls and streams excluded."),
    (PENDING, "gauge", "Pending requests by project and kind (read from the store at the scrape)."),
    (DECISIONS, "counter", "Decisions by channel and decision."),
    (LONG_POLLS, "gauge", "Long-polls waiting now."),
    (SSE_STREAMS, "gauge", "Inbox event streams open now."),
    (QUEUE_DEPTH, "gauge", "Deliveries waiting by channel (read from the store at the scrape)."),
    (QUEUE_AGE, "gauge", "Age in seconds of the oldest waiting delivery by channel (0 when none)."),
    (DELIVERY_ATTEMPTS, "counter", "Delivery attempts by channel and outcome (delivered, retry, failed)."),
    (TIMER_LATENESS, "histogram", "How late each timer fired, in seconds."),
    (STORE_ERRORS, "counter", "Store operations that failed."),
    (
        COMMIT_BATCH,
        "histogram",
        "Writes committed together per transaction (group commit: every request write on SQLite, creates on PostgreSQL).",
    ),
    (BUILD_INFO, "gauge", "Always 1; the version is a label."),
];

const SECONDS_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle) and starts its upkeep.
pub fn install(commit: &'static str) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH.into()), BATCH_BUCKETS))
                .expect("the buckets are not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed in this process");
            for &(name, kind, help) in METRICS {
                match kind {
                    "counter" => metrics::describe_counter!(name, help),
                    "gauge" => metrics::describe_gauge!(name, help),
                    _ => metrics::describe_histogram!(name, help),
                }
            }
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "commit" => commit).set(1.0);
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("a thread for the metrics upkeep");
            handle
        })
        .clone()
}

/// The label sets of the store gauges set at earlier scrapes, so that one gone (a project with
/// nothing pending any more) is set back to 0 rather than left at its last value.
#[derive(Default)]
pub struct Scraper {
    seen: Mutex<HashSet<Series>>,
}

/// A metric's name and labels.
type Series = (&'static str, Vec<(String, String)>);

impl Scraper {
    fn apply(&self, gauges: &Gauges, now_micros: i64) {
        let mut fresh: Vec<(Series, f64)> = Vec::new();
        for p in &gauges.pending {
            let labels =
                vec![("project".to_owned(), p.project.clone()), ("kind".to_owned(), p.kind.as_str().to_owned())];
            fresh.push(((PENDING, labels), p.count as f64));
        }
        for q in &gauges.queues {
            let labels = vec![("channel".to_owned(), q.channel.clone())];
            let age = q.oldest_micros.map_or(0.0, |t| (now_micros.saturating_sub(t)).max(0) as f64 / 1e6);
            fresh.push(((QUEUE_DEPTH, labels.clone()), q.depth as f64));
            fresh.push(((QUEUE_AGE, labels), age));
        }
        let mut seen = self.seen.lock().expect("metrics scraper lock");
        let now: HashSet<Series> = fresh.iter().map(|(series, _)| series.clone()).collect();
        for (name, labels) in seen.difference(&now) {
            metrics::gauge!(*name, to_labels(labels)).set(0.0);
        }
        for ((name, labels), value) in &fresh {
            metrics::gauge!(*name, to_labels(labels)).set(*value);
        }
        seen.extend(now);
    }
}

fn to_labels(labels: &[(String, String)]) -> Vec<metrics::Label> {
    labels.iter().map(|(k, v)| metrics::Label::new(k.clone(), v.clone())).collect()
}

/// The text exposition: the store's gauges read now, then everything recorded.
pub async fn render(state: &AppState) -> Response {
    let Some(handle) = HANDLE.get() else {
        return ApiError::not_found("metrics are off; set metrics_listen or metrics_token to serve them")
            .into_response();
    };
    match state.store.gauges().await {
        Ok(gauges) => state.scraper.apply(&gauges, countersign_core::Timestamp::now().as_micros()),
        Err(err) => {
            metrics::counter!(STORE_ERRORS).increment(1);
            tracing::warn!(%err, "cannot read the store's gauges for /metrics");
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response()
}

/// `GET /metrics` on the main address: only with the configured token (404 when none is).
pub async fn scrape_with_token(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = state.settings.metrics.token.as_deref() else {
        let hint = if state.settings.metrics.listen.is_some() {
            "metrics are served on metrics_listen, not here"
        } else {
            "metrics are off; set metrics_token (or metrics_listen) to serve them"
        };
        return ApiError::not_found(hint).into_response();
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !countersign_core::session::same_secret(given, token) {
        let mut refused = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "GET /metrics needs `Authorization: Bearer <metrics_token>`",
        )
        .into_response();
        refused.headers_mut().insert(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        return refused;
    }
    render(&state).await
}

/// `GET /metrics` on the metrics address (no token: that address is the protection).
pub async fn scrape_open(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    render(&state).await
}

/// Counts one decision (every way of deciding ends in one of the places that call this).
pub fn decided(channel: &'static str, decision: &'static str) {
    metrics::counter!(DECISIONS, "channel" => channel, "decision" => decision).increment(1);
}

/// A gauge held up by one while this lives (a long-poll waiting, a stream open).
pub struct Open(&'static str);

impl Open {
    pub fn new(gauge: &'static str) -> Self {
        metrics::gauge!(gauge).increment(1.0);
        Self(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_named_once_and_well() {
        let names: HashSet<_> = METRICS.iter().map(|m| m.0).collect();
        assert_eq!(names.len(), METRICS.len());
        for (name, kind, help) in METRICS {
            assert!(name.starts_with("countersign_") && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert!(matches!(*kind, "counter" | "gauge" | "histogram"));
            assert_eq!(*kind == "counter", name.ends_with("_total"), "{name}");
            assert!(!help.is_empty());
        }
    }
}
