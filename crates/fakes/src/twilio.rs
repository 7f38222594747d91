//! A fake of Twilio's REST API on `127.0.0.1`.
//!
//! [`FakeTwilio::start`] binds a free loopback port and answers the part of the REST API that
//! sends SMS the way Twilio does: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` with
//! HTTP basic auth (`AccountSid:AuthToken`) and the form fields `To`, `From` and `Body`,
//! answered `201 Created` with the new message's JSON, or with Twilio's JSON error
//! (`{"code": 21604, "message": "...", "more_info": "...", "status": 400}`); and
//! `GET /2010-04-01/Accounts/{AccountSid}.json`, which tells whether credentials are good.
//! Every message post is recorded as a [`Message`], so a test can check what the production
//! code sent, and [`FakeTwilio::fail_next`] makes the next post fail the way Twilio can fail
//! (rate limits, refused numbers, server errors).
//!
//! The production code needs only its base URL changed, from `https://api.twilio.com` to
//! [`FakeTwilio::base`]. [`sign`] signs a webhook the way Twilio does, so a test can post to
//! the production code's inbound endpoint as Twilio would, with [`form`] encoding its body.

mod params;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The largest request body the fake reads; a larger one is answered `413 Payload Too Large`
/// (and, for a message post, not recorded).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The REST API version in every path.
const API_VERSION: &str = "2010-04-01";

/// A running fake Twilio REST API. Cloning it gives another handle on the same server and the
/// same recorded messages; the server stops when the last handle is dropped.
#[derive(Clone)]
pub struct FakeTwilio {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _server: Arc<ServerTask>,
}

/// One `POST .../Messages.json` the fake received, and what it answered.
#[derive(Debug, Clone)]
pub struct Message {
    /// The account SID in the request's path.
    pub account_sid: String,
    /// The basic-auth user, when the request carried a basic-auth header that decodes.
    pub auth_user: Option<String>,
    /// The basic-auth password (the auth token), when the request carried a basic-auth header
    /// that decodes.
    pub auth_token: Option<String>,
    /// The `To` field; empty when it was not sent.
    pub to: String,
    /// The `From` field; empty when it was not sent.
    pub from: String,
    /// The `Body` field; empty when it was not sent.
    pub body: String,
    /// Every form field as sent, in order (`To`, `From` and `Body` included), e.g. to check a
    /// `StatusCallback`.
    pub params: Vec<(String, String)>,
    /// The message SID (`SM` and 32 hex digits) the fake handed out, when it accepted the
    /// message.
    pub sid: Option<String>,
    /// When the request arrived.
    pub at: Instant,
    /// The HTTP status the fake answered: 201 when it accepted the message.
    pub status: u16,
}

/// A failure queued with [`FakeTwilio::fail_next`] for the next message post.
#[derive(Debug, Clone)]
pub enum Failure {
    /// HTTP 429 with the header `Retry-After: N` and Twilio's error 20429 (`Too Many
    /// Requests`) as the body.
    RateLimited {
        /// The seconds sent in the `Retry-After` header.
        retry_after_secs: u64,
    },
    /// This HTTP status with Twilio's JSON error body: e.g. 400 / 21211 `The 'To' number +1555
    /// is not a valid phone number.`, or 400 / 21610 `Attempt to send to unsubscribed
    /// recipient`. A number that is not an HTTP status is answered as 500.
    Error {
        /// The HTTP status.
        status: u16,
        /// Twilio's error code.
        code: i64,
        /// Twilio's error message.
        message: String,
    },
    /// This HTTP status with an empty body, e.g. 500 or 503. A number that is not an HTTP
    /// status is answered as 500.
    Status(u16),
}

/// Twilio's signature of a webhook it sends to `url` with the POST parameters `params`: the
/// value of the `X-Twilio-Signature` header, `base64(HMAC-SHA1(auth_token, url + name1 +
/// value1 + name2 + value2 + ...))` with the parameters sorted by name (then by value, for a
/// repeated name). `url` is the full URL Twilio called, query string included.
pub fn sign(auth_token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort_unstable();
    let mut mac = Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// `params` encoded as an `application/x-www-form-urlencoded` body, the way Twilio posts its
/// webhooks: `name=value` pairs joined by `&`, a space as `+`, ASCII letters, digits and
/// `*-._` as they are, every other byte of the UTF-8 as `%XX`.
pub fn form(params: &[(&str, &str)]) -> String {
    params::encode(params)
}

impl FakeTwilio {
    /// Binds `127.0.0.1` on a free port and starts serving the fake API on the current tokio
    /// runtime. Until [`FakeTwilio::only_accept`] is called, any basic-auth credentials whose
    /// user is the path's account SID are accepted.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start() -> FakeTwilio {
        let listener =
            TcpListener::bind("127.0.0.1:0").await.expect("the fake Twilio could not bind a port on 127.0.0.1");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let shared = Arc::new(Shared::default());
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            // The server runs until the task is aborted; an error here means the listener died.
            let _ = axum::serve(listener, app).await;
        });
        FakeTwilio { shared, addr, _server: Arc::new(ServerTask(task)) }
    }

    /// The base URL to give the production code in place of `https://api.twilio.com`:
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every message post received so far, accepted or refused, in the order they arrived.
    pub fn messages(&self) -> Vec<Message> {
        self.shared.lock().messages.clone()
    }

    /// The messages accepted so far (answered 201), in the order they arrived.
    pub fn sent(&self) -> Vec<Message> {
        accepted(&self.shared.lock().messages)
    }

    /// Waits until at least `n` messages have been accepted, and returns every accepted message
    /// (as [`FakeTwilio::sent`]).
    ///
    /// # Panics
    /// When fewer than `n` were accepted within `timeout`; the message lists every post that
    /// did arrive, refused ones included.
    pub async fn wait_for_sent(&self, n: usize, timeout: Duration) -> Vec<Message> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            // Registers interest before looking, so a message landing in between still wakes us.
            arrived.as_mut().enable();
            let sent = self.sent();
            if sent.len() >= n {
                return sent;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("{}", self.shortfall(n, timeout));
            }
        }
    }

    /// Makes the next message post get `failure` instead of its usual answer (the post is still
    /// recorded, with the failure's status and no SID). Several failures queue up and are used
    /// one post at a time, first in first out; a queued failure wins over every other check,
    /// authentication included.
    pub fn fail_next(&self, failure: Failure) {
        self.shared.lock().failures.push_back(failure);
    }

    /// From now on, accepts only these credentials: a request with any other basic-auth pair
    /// is answered `401` with Twilio's error 20003. A later call replaces the pair (as rotating
    /// an auth token does).
    pub fn only_accept(&self, account_sid: &str, auth_token: &str) {
        self.shared.lock().only = Some((account_sid.to_owned(), auth_token.to_owned()));
    }

    /// The panic message of a [`FakeTwilio::wait_for_sent`] that timed out.
    fn shortfall(&self, n: usize, timeout: Duration) -> String {
        let messages = self.messages();
        let got = accepted(&messages).len();
        let mut text = format!(
            "the fake Twilio expected {n} accepted message(s) within {timeout:?} but got {got}; \
             the {} message post(s) that arrived:",
            messages.len()
        );
        for message in &messages {
            text.push_str(&format!(
                "\n  {} account {} from {:?} to {:?}: {:?} (auth user {:?})",
                message.status, message.account_sid, message.from, message.to, message.body, message.auth_user
            ));
        }
        text
    }
}

impl fmt::Debug for FakeTwilio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeTwilio").field("base", &self.base()).finish_non_exhaustive()
    }
}

/// The accepted messages, in order.
fn accepted(messages: &[Message]) -> Vec<Message> {
    messages.iter().filter(|message| message.status == 201).cloned().collect()
}

/// The server task, aborted when the last [`FakeTwilio`] handle is dropped.
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
    /// Woken whenever a message post is recorded.
    arrived: Notify,
}

impl Shared {
    /// The state, even if a panicking test poisoned the lock (the data stays consistent: every
    /// change is a single push, pop or assignment).
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The fake's state.
#[derive(Default)]
struct Inner {
    messages: Vec<Message>,
    failures: VecDeque<Failure>,
    /// The only credentials accepted, once [`FakeTwilio::only_accept`] was called.
    only: Option<(String, String)>,
}

impl Inner {
    /// Whether a request for `account_sid` with these basic-auth credentials is let in: it must
    /// carry credentials, their user must be the account in the path, and they must be the
    /// pair given to [`FakeTwilio::only_accept`], if any.
    fn authenticates(&self, account_sid: &str, auth: Option<&(String, String)>) -> bool {
        let Some((user, token)) = auth else { return false };
        user == account_sid && self.only.as_ref().is_none_or(|(sid, only_token)| sid == user && only_token == token)
    }
}

/// A fresh message SID, unique in the process: `SM` and 32 hex digits.
fn next_message_sid() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let n = LAST.fetch_add(1, Ordering::Relaxed) + 1;
    format!("SM{n:032x}")
}

/// What the fake answers one request.
enum Answer {
    /// 200 or 201 with this JSON.
    Json(StatusCode, Value),
    /// Twilio's JSON error.
    Error { status: StatusCode, code: i64, message: String },
    /// A queued failure.
    Failed(Failure),
}

impl Answer {
    /// Twilio's error `code` with this status and message.
    fn error(status: StatusCode, code: i64, message: impl Into<String>) -> Answer {
        Answer::Error { status, code, message: message.into() }
    }

    /// `401`, error 20003: no credentials, or not accepted ones.
    fn unauthenticated() -> Answer {
        Answer::error(StatusCode::UNAUTHORIZED, 20003, "Authenticate")
    }

    /// `404`, error 20404.
    fn not_found() -> Answer {
        Answer::error(StatusCode::NOT_FOUND, 20404, "The requested resource was not found")
    }

    /// `405`, error 20004.
    fn method_not_allowed() -> Answer {
        Answer::error(StatusCode::METHOD_NOT_ALLOWED, 20004, "Method not allowed")
    }

    /// The HTTP status this answer has.
    fn status(&self) -> StatusCode {
        match self {
            Answer::Json(status, _) | Answer::Error { status, .. } => *status,
            Answer::Failed(Failure::RateLimited { .. }) => StatusCode::TOO_MANY_REQUESTS,
            Answer::Failed(Failure::Error { status, .. } | Failure::Status(status)) => http_status(*status),
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            Answer::Json(status, body) => (status, axum::Json(body)).into_response(),
            Answer::Error { status, code, message } => error_response(status, code, &message),
            Answer::Failed(Failure::RateLimited { retry_after_secs }) => {
                let mut response = error_response(status, 20429, "Too Many Requests");
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                response
            }
            Answer::Failed(Failure::Error { code, message, .. }) => error_response(status, code, &message),
            Answer::Failed(Failure::Status(_)) => status.into_response(),
        }
    }
}

/// `status` as an HTTP status, 500 when it is not one.
fn http_status(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Twilio's JSON error: `{"code", "message", "more_info", "status"}`; a 401 also carries the
/// `WWW-Authenticate` header Twilio sends.
fn error_response(status: StatusCode, code: i64, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Twilio API\""));
    }
    response
}

/// The fake's routes: an account (`/2010-04-01/Accounts/{sid}.json`) and its resources
/// (`/2010-04-01/Accounts/{sid}/Messages.json`); anything else is Twilio's 404.
fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(&format!("/{API_VERSION}/Accounts/{{account}}"), any(account))
        .route(&format!("/{API_VERSION}/Accounts/{{account}}/{{resource}}"), any(resource))
        .fallback(|| async { Answer::not_found() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

/// `GET /2010-04-01/Accounts/{sid}.json`: the account, to whoever authenticates as it.
async fn account(
    State(shared): State<Arc<Shared>>,
    Path(account): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Answer {
    let Some(sid) = account.strip_suffix(".json") else { return Answer::not_found() };
    if method != Method::GET {
        return Answer::method_not_allowed();
    }
    if !shared.lock().authenticates(sid, params::basic_auth(&headers).as_ref()) {
        return Answer::unauthenticated();
    }
    Answer::Json(
        StatusCode::OK,
        json!({
            "sid": sid,
            "friendly_name": "Fake account",
            "status": "active",
            "type": "Full",
            "owner_account_sid": sid,
            "uri": format!("/{API_VERSION}/Accounts/{sid}.json"),
        }),
    )
}

/// `POST /2010-04-01/Accounts/{sid}/Messages.json`: sends a message, and records the post.
async fn resource(
    State(shared): State<Arc<Shared>>,
    Path((account_sid, resource)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    if resource != "Messages.json" {
        return Answer::not_found();
    }
    if method != Method::POST {
        return Answer::method_not_allowed();
    }
    let at = Instant::now();
    let auth = params::basic_auth(&headers);
    let fields = params::form_fields(&body);
    let answer = {
        let mut state = shared.lock();
        let (answer, sid) = send(&mut state, &account_sid, auth.as_ref(), &fields);
        let field = |name| params::field(&fields, name).unwrap_or_default().to_owned();
        let (auth_user, auth_token) = auth.map_or((None, None), |(user, token)| (Some(user), Some(token)));
        state.messages.push(Message {
            account_sid,
            auth_user,
            auth_token,
            to: field("To"),
            from: field("From"),
            body: field("Body"),
            params: fields.clone(),
            sid,
            at,
            status: answer.status().as_u16(),
        });
        answer
    };
    shared.arrived.notify_waiters();
    answer
}

/// The answer to a message post, and the new message's SID when it is accepted: a queued
/// failure first, then Twilio's checks (credentials, then `To`, `From` and `Body`).
fn send(
    state: &mut Inner,
    account_sid: &str,
    auth: Option<&(String, String)>,
    fields: &[(String, String)],
) -> (Answer, Option<String>) {
    if let Some(failure) = state.failures.pop_front() {
        return (Answer::Failed(failure), None);
    }
    if !state.authenticates(account_sid, auth) {
        return (Answer::unauthenticated(), None);
    }
    let field = |name| params::field(fields, name);
    let (Some(to), Some(from), Some(body)) = (field("To"), field("From"), field("Body")) else {
        let (code, message) = match (field("To"), field("From")) {
            (None, _) => (21604, "A 'To' phone number is required."),
            (_, None) => (21603, "A 'From' phone number is required."),
            _ => (21602, "Message body is required."),
        };
        return (Answer::error(StatusCode::BAD_REQUEST, code, message), None);
    };
    let sid = next_message_sid();
    let now = rfc2822(SystemTime::now());
    let message = json!({
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": from,
        "messaging_service_sid": null,
        "num_media": "0",
        "num_segments": "1",
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {
            "media": format!("/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}/Media.json"),
        },
        "to": to,
        "uri": format!("/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"),
    });
    (Answer::Json(StatusCode::CREATED, message), Some(sid))
}

/// A time as Twilio writes dates (RFC 2822, in UTC): `Thu, 24 Aug 2023 05:01:45 +0000`.
fn rfc2822(time: SystemTime) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let (days, of_day) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm), shifted so that
    // eras start on 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests;
