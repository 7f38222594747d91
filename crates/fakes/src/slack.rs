//! A fake of the Slack Web API on `127.0.0.1`.
//!
//! [`FakeSlack::start`] binds a free loopback port and answers `POST` (and `GET`) requests to
//! `/api/{method}` the way Slack does: arguments as JSON, as form fields or as query
//! parameters, the bot token as `Authorization: Bearer xoxb-...` or as a `token` argument, and
//! an HTTP 200 JSON answer with `"ok": true` or `"ok": false, "error": "..."`. Every call is
//! recorded as a [`Call`], so a test can check what the production code sent, and
//! [`FakeSlack::fail_next`] makes the next call of a method fail the way Slack can fail
//! (rate limits, API errors, server errors).
//!
//! The production code needs only its base URL changed, from `https://slack.com/api` to
//! [`FakeSlack::base`].

mod args;
mod methods;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The largest request body the fake reads; a larger one is answered `413 Payload Too Large`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A running fake Slack Web API. Cloning it gives another handle on the same server and the
/// same recorded calls; the server stops when the last handle is dropped.
#[derive(Clone)]
pub struct FakeSlack {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _server: Arc<ServerTask>,
}

/// One request the fake received, and what it answered.
#[derive(Debug, Clone)]
pub struct Call {
    /// The Web API method, e.g. `"chat.postMessage"`.
    pub method: String,
    /// The token sent: the bearer token of the `Authorization` header, else the `token`
    /// argument.
    pub token: Option<String>,
    /// The arguments as one JSON object: the JSON body's values as they were sent, form fields
    /// and query parameters as strings. A body that could not be read is kept as a string.
    pub body: Value,
    /// When the request arrived.
    pub at: Instant,
    /// What the fake answered: the JSON body, or `{"http_status": N}` when it answered with a
    /// bare HTTP status (a 429 rate limit or a [`Failure::Status`]).
    pub answered: Value,
}

/// A failure queued with [`FakeSlack::fail_next`] for the next call of a method.
#[derive(Debug, Clone)]
pub enum Failure {
    /// HTTP 429 with the header `Retry-After: N` and the body
    /// `{"ok": false, "error": "ratelimited"}`.
    RateLimited {
        /// The seconds sent in the `Retry-After` header.
        retry_after_secs: u64,
    },
    /// HTTP 200 with `{"ok": false, "error": "<this>"}`, e.g. `channel_not_found`,
    /// `not_in_channel` or `invalid_auth`.
    Error(String),
    /// This HTTP status with an empty body, e.g. 500 or 503. A number that is not an HTTP
    /// status is answered as 500.
    Status(u16),
}

/// Slack's request signature of a body sent at `timestamp` (Unix seconds):
/// `"v0=" + hex(HMAC-SHA256(signing_secret, "v0:" + timestamp + ":" + body))`, the value of the
/// `X-Slack-Signature` header Slack sends with interactivity payloads.
pub fn sign(signing_secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(signing_secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

impl FakeSlack {
    /// Binds `127.0.0.1` on a free port and starts serving the fake API on the current tokio
    /// runtime.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start() -> FakeSlack {
        let listener =
            TcpListener::bind("127.0.0.1:0").await.expect("the fake Slack could not bind a port on 127.0.0.1");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let shared = Arc::new(Shared::default());
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            // The server runs until the task is aborted; an error here means the listener died.
            let _ = axum::serve(listener, app).await;
        });
        FakeSlack { shared, addr, _server: Arc::new(ServerTask(task)) }
    }

    /// The base URL to give the production code in place of `https://slack.com/api`:
    /// `http://127.0.0.1:PORT/api`, without a trailing slash.
    pub fn base(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// Every call received so far, in the order they arrived.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// The calls received so far of one method, e.g. `"chat.postMessage"`, in arrival order.
    pub fn calls_to(&self, method: &str) -> Vec<Call> {
        calls_of(&self.shared.lock().calls, method)
    }

    /// Waits until at least `n` calls of `method` have arrived, and returns all calls of that
    /// method (as [`FakeSlack::calls_to`]).
    ///
    /// # Panics
    /// When fewer than `n` arrived within `timeout`; the message lists every call that did
    /// arrive.
    pub async fn wait_for(&self, method: &str, n: usize, timeout: Duration) -> Vec<Call> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            // Registers interest before looking, so a call landing in between still wakes us.
            arrived.as_mut().enable();
            let calls = self.calls_to(method);
            if calls.len() >= n {
                return calls;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("{}", self.shortfall(method, n, timeout));
            }
        }
    }

    /// Makes the next call of `method` get `failure` instead of its usual answer (the call is
    /// still recorded). Several failures queue up and are used one call at a time, first in
    /// first out; a queued failure wins over every other check, authentication included.
    pub fn fail_next(&self, method: &str, failure: Failure) {
        self.shared.lock().failures.entry(method.to_owned()).or_default().push_back(failure);
    }

    /// Adds a user that `users.info` knows, in team `team_id`, with an email in its profile
    /// when one is given.
    pub fn add_user(&self, user_id: &str, team_id: &str, email: Option<&str>) {
        let user = FakeUser { team_id: team_id.to_owned(), email: email.map(str::to_owned) };
        self.shared.lock().users.insert(user_id.to_owned(), user);
    }

    /// Revokes a token: from now on every call made with it is answered
    /// `{"ok": false, "error": "invalid_auth"}`.
    pub fn revoke_token(&self, token: &str) {
        self.shared.lock().revoked.insert(token.to_owned());
    }

    /// The panic message of a [`FakeSlack::wait_for`] that timed out.
    fn shortfall(&self, method: &str, n: usize, timeout: Duration) -> String {
        let calls = self.calls();
        let got = calls_of(&calls, method).len();
        let mut message = format!(
            "the fake Slack expected {n} call(s) of {method} within {timeout:?} but got {got}; \
             the {} call(s) that arrived:",
            calls.len()
        );
        for call in &calls {
            message.push_str(&format!("\n  {} {} -> {}", call.method, call.body, call.answered));
        }
        message
    }
}

impl fmt::Debug for FakeSlack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeSlack").field("base", &self.base()).finish_non_exhaustive()
    }
}

/// The calls of one method, in order.
fn calls_of(calls: &[Call], method: &str) -> Vec<Call> {
    calls.iter().filter(|call| call.method == method).cloned().collect()
}

/// The server task, aborted when the last [`FakeSlack`] handle is dropped.
struct ServerTask(JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the server task and every handle share.
#[derive(Default)]
struct Shared {
    state: Mutex<Inner>,
    /// Woken whenever a call is recorded.
    arrived: Notify,
}

impl Shared {
    /// The state, even if a panicking test poisoned the lock (the data stays consistent: every
    /// change is a single push or insert).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The fake workspace's state.
#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    failures: HashMap<String, VecDeque<Failure>>,
    users: HashMap<String, FakeUser>,
    revoked: HashSet<String>,
    /// Every (channel, ts) the fake handed out for a posted message.
    posted: HashSet<(String, String)>,
    /// The number of message timestamps handed out so far.
    last_ts: u64,
    /// The number of view ids handed out so far.
    last_view: u64,
}

impl Inner {
    /// A fresh Slack-style message timestamp, strictly greater than every earlier one:
    /// `"1700000000.000001"`, `"1700000000.000002"`, ...
    fn next_ts(&mut self) -> String {
        self.last_ts += 1;
        let seconds = 1_700_000_000 + self.last_ts / 1_000_000;
        format!("{seconds}.{:06}", self.last_ts % 1_000_000)
    }

    /// A fresh view id, `"V0000000001"`, `"V0000000002"`, ...
    fn next_view_id(&mut self) -> String {
        self.last_view += 1;
        format!("V{:010}", self.last_view)
    }
}

/// A user that `users.info` knows.
struct FakeUser {
    team_id: String,
    email: Option<String>,
}

/// What the fake answers one call.
enum Answer {
    /// HTTP 200 with this JSON.
    Json(Value),
    /// A queued failure.
    Failed(Failure),
}

impl Answer {
    /// `{"ok": false, "error": error}`.
    fn error(error: &str) -> Answer {
        Answer::Json(json!({ "ok": false, "error": error }))
    }

    /// What [`Call::answered`] records for this answer.
    fn recorded(&self) -> Value {
        match self {
            Answer::Json(body) => body.clone(),
            Answer::Failed(Failure::RateLimited { .. }) => json!({ "http_status": 429 }),
            Answer::Failed(Failure::Error(error)) => json!({ "ok": false, "error": error }),
            Answer::Failed(Failure::Status(status)) => json!({ "http_status": status }),
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Json(body) => axum::Json(body).into_response(),
            Answer::Failed(failure) => failure_response(failure),
        }
    }
}

/// The HTTP response of a queued failure.
fn failure_response(failure: Failure) -> Response {
    match failure {
        Failure::RateLimited { retry_after_secs } => {
            let body = json!({ "ok": false, "error": "ratelimited" });
            let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        Failure::Error(error) => Answer::error(&error).into_response(),
        Failure::Status(status) => {
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response()
        }
    }
}

/// The fake's routes: `/api/{method}` by `POST` or `GET`.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/{method}", get(handle).post(handle))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

/// Answers one Web API call and records it.
async fn handle(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let at = Instant::now();
    let request = args::Request::read(&headers, query.as_deref(), &body);
    let answer = {
        let mut state = shared.lock();
        let answer = answer(&mut state, &method, &request);
        state.calls.push(Call {
            method,
            token: request.token,
            body: request.recorded_body,
            at,
            answered: answer.recorded(),
        });
        answer
    };
    shared.arrived.notify_waiters();
    answer
}

/// The answer to a call, in Slack's order of checks, after any queued failure.
fn answer(state: &mut Inner, method: &str, request: &args::Request) -> Answer {
    if let Some(failure) = queued_failure(state, method) {
        return Answer::Failed(failure);
    }
    if !methods::is_known(method) {
        return Answer::error("unknown_method");
    }
    let args = match &request.args {
        Ok(args) => args,
        Err(error) => return Answer::error(error),
    };
    if let Err(error) = authenticate(state, request.token.as_deref()) {
        return Answer::error(error);
    }
    Answer::Json(methods::call(state, method, args))
}

/// Takes the next failure queued for `method`, if any.
fn queued_failure(state: &mut Inner, method: &str) -> Option<Failure> {
    state.failures.get_mut(method)?.pop_front()
}

/// Checks the token: `not_authed` when none was sent, `invalid_auth` when it is not a bot token
/// (`xoxb-...`) or was revoked.
fn authenticate(state: &Inner, token: Option<&str>) -> Result<(), &'static str> {
    let token = token.ok_or("not_authed")?;
    if !token.starts_with("xoxb-") || state.revoked.contains(token) {
        return Err("invalid_auth");
    }
    Ok(())
}
