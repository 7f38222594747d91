//! People signing in and deciding: password checks (argon2 behind a per-server cap, logins
//! throttled per client address and per account, never locked beyond the throttle's window),
//! sessions for browsers and the terminal (each accepted only where it was opened), set-password
//! links, and decisions made by a person (never outside their projects). The web pages and the
//! terminal API are thin over this.

use crate::error::{ApiError, ApiResult};
use crate::limits::Limits;
use crate::services::live::RequestKey;
use crate::services::requests::Requests;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::RETRY_AFTER;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use countersign_core::api_key::KeyHash;
use countersign_core::session::{PASSWORD_LINK_TTL, PASSWORD_TOKEN_PREFIX, SESSION_PREFIX, Secret, SessionKind};
use countersign_core::{
    Actor, DecisionChannel, Email, Fields, Intent, Project, RequestKind, RequestRecord, Timestamp, user,
};
use countersign_store::{NewSession, RequestFilter, Session, Store, StoreError};
use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// A new session: the token to hand out once (cookie or terminal) and what it grants.
pub struct SignedIn {
    pub token: String,
    pub session: Session,
}

/// How long a password check waits for a free hashing slot before answering 503.
pub const HASH_WAIT: Duration = Duration::from_secs(5);
/// Most addresses and most accounts the login throttle tracks (each, about 40 bytes an entry);
/// beyond that, new keys share one bucket until old windows expire.
pub const THROTTLE_MAX_KEYS: usize = 100_000;

/// The client address of a request, as the accept loop (`listen.rs`) records it; `None` when a
/// request reaches the router another way (then every such client shares one login-throttle
/// bucket).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Self(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())))
    }
}

/// A refused login or password change: the error, and for 429 and 503 how long to wait (sent
/// as `Retry-After`).
#[derive(Debug)]
pub struct Refused {
    pub error: ApiError,
    pub retry_after: Option<Duration>,
}

impl Refused {
    fn now(error: ApiError) -> Self {
        Self { error, retry_after: None }
    }

    /// The `Retry-After` header value, in whole seconds (at least 1).
    pub fn retry_after_header(&self) -> Option<HeaderValue> {
        self.retry_after.map(|wait| HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64))
    }
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Self::now(error)
    }
}

impl From<StoreError> for Refused {
    #[track_caller]
    fn from(error: StoreError) -> Self {
        Self::now(error.into())
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let header = self.retry_after_header();
        let mut response = self.error.into_response();
        if let Some(value) = header {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
        response
    }
}

/// What guards passwords on one server: argon2 runs at most `max_concurrent_password_hashes` at
/// a time (on the blocking pool), and failed logins are throttled per client address and per
/// account over a one-minute window. Nothing here locks an account beyond that window.
pub struct Gate {
    hashes: Arc<Semaphore>,
    throttle: Throttle,
}

impl Gate {
    /// A gate sized by the limits.
    pub fn new(limits: &Limits) -> Self {
        let window = Duration::from_secs(limits.login_throttle_window_secs.max(1));
        Self {
            hashes: Arc::new(Semaphore::new(limits.max_concurrent_password_hashes.max(1))),
            throttle: Throttle::new(
                window,
                limits.login_attempts_per_address_per_minute.max(1),
                limits.login_attempts_per_account_per_minute.max(1),
            ),
        }
    }

    /// Runs argon2 work on the blocking pool once a hashing slot is free; 503 when none frees up
    /// within [`HASH_WAIT`]. The slot is held until the work ends, even if the request is gone.
    async fn hashing<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Refused> {
        let busy = || Refused {
            error: ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the server is busy checking passwords; retry in a few seconds",
            ),
            retry_after: Some(Duration::from_secs(2)),
        };
        let permit = match tokio::time::timeout(HASH_WAIT, self.hashes.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                tracing::warn!("password hashing is saturated; a request was told to retry");
                return Err(busy());
            }
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| Refused::now(ApiError::internal(e)))
    }

    /// Checks an email and password and opens a session. Wrong email and wrong password are the
    /// same 401 and cost the same argon2 verification; too many attempts from the client's
    /// address or for the email (known or not) within the window are a 429 with the seconds to
    /// wait, before any hashing.
    pub async fn login(
        &self,
        store: &dyn Store,
        email: &str,
        password: &str,
        kind: SessionKind,
        client: Option<IpAddr>,
    ) -> Result<SignedIn, Refused> {
        let ticket = self.throttle.begin(client, email, Instant::now()).map_err(|wait| {
            tracing::info!(client = ?client, "login throttled");
            Refused {
                error: ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    format!(
                        "too many sign-in attempts; try again in {} seconds",
                        wait.as_secs_f64().ceil().max(1.0) as u64
                    ),
                ),
                retry_after: Some(wait),
            }
        })?;
        let credentials = match Email::parse(email) {
            Ok(email) => store.credentials(&email).await?,
            Err(_) => None,
        };
        let hash = credentials.as_ref().and_then(|c| c.password_hash.clone());
        let password = password.to_owned();
        let matches = self
            .hashing(move || match hash {
                Some(hash) => user::verify_password(&password, &hash),
                None => {
                    // Same work for unknown people and people without a password.
                    let _ = user::verify_password(&password, dummy_hash());
                    false
                }
            })
            .await?;
        let Some(credentials) = credentials.filter(|_| matches) else {
            tracing::info!(client = ?client, "failed login");
            return Err(Refused::now(ApiError::unauthorized("wrong email or password")));
        };
        self.throttle.succeeded(ticket);
        let now = Timestamp::now();
        let secret = Secret::generate(SESSION_PREFIX);
        let new = NewSession {
            hash: secret.hash,
            user_id: credentials.user_id.clone(),
            kind,
            csrf_token: countersign_core::session::random_text(32),
            created_at: now,
            expires_at: now.plus(kind.ttl()),
        };
        store.create_session(&new).await?;
        let session = store
            .session(&secret.hash, now)
            .await?
            .ok_or_else(|| ApiError::internal("a session just stored cannot be read back"))?;
        tracing::info!(user_id = %credentials.user_id, kind = kind.as_str(), "signed in");
        Ok(SignedIn { token: secret.text, session })
    }

    /// Sets a password with a one-time token. The token is looked up first, so a used, expired
    /// or unknown one is a 404 without any hashing; then 400 for a weak password.
    pub async fn set_password(
        &self,
        store: &dyn Store,
        token: &str,
        password: &str,
    ) -> Result<countersign_core::User, Refused> {
        let dead = || {
            Refused::now(ApiError::not_found(
                "this link is used, expired or unknown; ask an admin for a new one (countersign users reset-password)",
            ))
        };
        if !password_link_usable(store, token).await? {
            return Err(dead());
        }
        let password = password.to_owned();
        let hash = self.hashing(move || user::hash_password(&password)).await?.map_err(ApiError::from)?;
        store.set_password_with_token(&KeyHash::of(token), &hash, Timestamp::now()).await?.ok_or_else(dead)
    }
}

fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| user::hash_password("no-such-person-password").expect("a long password hashes"))
}

/// The live terminal (`countersign login`) session a bearer token opens; browser sessions are
/// refused here.
pub async fn session(store: &dyn Store, token: &str) -> ApiResult<Option<Session>> {
    session_of_kind(store, token, SessionKind::Cli).await
}

/// The live browser session a cookie opens; terminal tokens are refused here.
pub async fn web_session(store: &dyn Store, token: &str) -> ApiResult<Option<Session>> {
    session_of_kind(store, token, SessionKind::Web).await
}

/// The live session of `kind` a token opens.
pub async fn session_of_kind(store: &dyn Store, token: &str, kind: SessionKind) -> ApiResult<Option<Session>> {
    if !token.starts_with(SESSION_PREFIX) {
        return Ok(None);
    }
    let session = store.session(&KeyHash::of(token), Timestamp::now()).await?;
    Ok(session.filter(|s| s.kind == kind))
}

/// Ends the session of a token.
pub async fn logout(store: &dyn Store, token: &str) -> ApiResult<()> {
    Ok(store.delete_session(&KeyHash::of(token)).await?)
}

/// Issues a one-time link token to set a person's password; returns the token text.
pub async fn password_link_token(store: &dyn Store, user_id: &str) -> ApiResult<String> {
    let secret = Secret::generate(PASSWORD_TOKEN_PREFIX);
    store.create_password_token(user_id, &secret.hash, Timestamp::now().plus(PASSWORD_LINK_TTL)).await?;
    Ok(secret.text)
}

/// True when a set-password token is unused and unexpired (it is not used up by asking).
pub async fn password_link_usable(store: &dyn Store, token: &str) -> ApiResult<bool> {
    if !token.starts_with(PASSWORD_TOKEN_PREFIX) {
        return Ok(false);
    }
    Ok(store.password_token_usable(&KeyHash::of(token), Timestamp::now()).await?)
}

/// Counts login attempts in fixed windows, per client address (IPv6 by /64) and per account
/// (the normalised email, known or not). An attempt is counted when it starts, so concurrent
/// guesses cannot slip past the limit; a successful one gives its count back and clears the
/// account's window.
struct Throttle {
    window: Duration,
    per_address: u32,
    per_account: u32,
    state: Mutex<ThrottleState>,
}

struct ThrottleState {
    addresses: Windows<u128>,
    accounts: Windows<u64>,
    hasher: RandomState,
}

/// What a started attempt counted, to give back if it succeeds.
#[derive(Debug)]
struct Ticket {
    address: Option<u128>,
    account: Option<u64>,
}

/// The bucket of clients without a known address.
const NO_ADDRESS: u128 = u128::MAX;

impl Throttle {
    fn new(window: Duration, per_address: u32, per_account: u32) -> Self {
        Self {
            window,
            per_address,
            per_account,
            state: Mutex::new(ThrottleState {
                addresses: Windows::default(),
                accounts: Windows::default(),
                hasher: RandomState::new(),
            }),
        }
    }

    /// Counts an attempt, or says how long to wait when the address or the account is at its
    /// limit (then nothing is counted).
    fn begin(&self, client: Option<IpAddr>, email: &str, now: Instant) -> Result<Ticket, Duration> {
        let address = client.map_or(NO_ADDRESS, address_key);
        let mut state = self.state.lock().expect("throttle lock");
        let account = state.hasher.hash_one(account_key(email));
        let state = &mut *state;
        let a = state.addresses.slot(address, now, self.window);
        let b = state.accounts.slot(account, now, self.window);
        let wait_a = state.addresses.over(&a, self.per_address, now, self.window);
        let wait_b = state.accounts.over(&b, self.per_account, now, self.window);
        if wait_a.is_some() || wait_b.is_some() {
            return Err(wait_a.unwrap_or_default().max(wait_b.unwrap_or_default()));
        }
        state.addresses.count(&a);
        state.accounts.count(&b);
        Ok(Ticket { address: a, account: b })
    }

    fn succeeded(&self, ticket: Ticket) {
        let mut state = self.state.lock().expect("throttle lock");
        state.addresses.give_back(&ticket.address);
        state.accounts.clear(&ticket.account);
    }
}

/// One key's window: when it started and the attempts counted in it.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

/// Windows by key, at most [`THROTTLE_MAX_KEYS`] of them; new keys past that share `overflow`.
struct Windows<K> {
    map: HashMap<K, Window>,
    overflow: Window,
    pruned: Option<Instant>,
}

impl<K> Default for Windows<K> {
    fn default() -> Self {
        Self { map: HashMap::new(), overflow: Window { start: Instant::now(), count: 0 }, pruned: None }
    }
}

impl<K: Hash + Eq + Copy> Windows<K> {
    /// The key's slot (`None`: the shared overflow), its window restarted if it has expired.
    fn slot(&mut self, key: K, now: Instant, window: Duration) -> Option<K> {
        let fresh = Window { start: now, count: 0 };
        if let Some(w) = self.map.get_mut(&key) {
            if now.duration_since(w.start) >= window {
                *w = fresh;
            }
            return Some(key);
        }
        // Drop expired windows once a window (or, when full, once a second).
        let full = self.map.len() >= THROTTLE_MAX_KEYS;
        let due = self.pruned.is_none_or(|at| {
            let since = now.duration_since(at);
            since >= window || (full && since >= Duration::from_secs(1))
        });
        if due {
            self.map.retain(|_, w| now.duration_since(w.start) < window);
            self.pruned = Some(now);
        }
        if self.map.len() >= THROTTLE_MAX_KEYS {
            if now.duration_since(self.overflow.start) >= window {
                self.overflow = fresh;
            }
            return None;
        }
        self.map.insert(key, fresh);
        Some(key)
    }

    fn get(&mut self, slot: &Option<K>) -> Option<&mut Window> {
        match slot {
            Some(key) => self.map.get_mut(key),
            None => Some(&mut self.overflow),
        }
    }

    /// How long until the slot's window ends, when it is at `limit`.
    fn over(&mut self, slot: &Option<K>, limit: u32, now: Instant, window: Duration) -> Option<Duration> {
        let w = self.get(slot)?;
        (w.count >= limit).then(|| window.saturating_sub(now.duration_since(w.start)))
    }

    fn count(&mut self, slot: &Option<K>) {
        if let Some(w) = self.get(slot) {
            w.count = w.count.saturating_add(1);
        }
    }

    fn give_back(&mut self, slot: &Option<K>) {
        if let Some(w) = self.get(slot) {
            w.count = w.count.saturating_sub(1);
        }
    }

    fn clear(&mut self, slot: &Option<K>) {
        match slot {
            Some(key) => {
                self.map.remove(key);
            }
            None => self.overflow.count = self.overflow.count.saturating_sub(1),
        }
    }
}

/// An address as a throttle key: IPv4 as is, IPv6 by its /64 (one host usually holds a whole one).
fn address_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 64) - 1),
    }
}

/// The account an email names, known or not: normalised like stored emails.
fn account_key(email: &str) -> String {
    match Email::parse(email) {
        Ok(email) => email.as_str().to_owned(),
        Err(_) => email.trim().to_lowercase(),
    }
}

/// A signed-in person's view of requests: only their projects, ever.
pub struct Person<'a> {
    pub session: &'a Session,
    pub channel: DecisionChannel,
}

impl Person<'_> {
    /// Ids of the person's projects.
    pub fn project_ids(&self) -> Vec<String> {
        self.session.projects.iter().map(|p| p.id.clone()).collect()
    }

    /// The person's project with this name; 404 (not 403) for others, so names do not leak.
    pub fn project(&self, name: &str) -> ApiResult<&Project> {
        self.session
            .projects
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ApiError::not_found(format!("you have no project named {name:?}")))
    }

    /// One request of the person's projects.
    pub async fn request(
        &self,
        store: &dyn Store,
        project: &str,
        kind: RequestKind,
        call_id: &str,
    ) -> ApiResult<RequestRecord> {
        let project = self.project(project)?;
        store
            .request(&project.id, kind, call_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no {} {call_id:?} in project {}", kind.noun(), project.name)))
    }

    /// Finds a request by call id across the person's projects (or in `project`); 409 with code
    /// `ambiguous` when several projects have one.
    pub async fn find(
        &self,
        store: &dyn Store,
        kind: RequestKind,
        call_id: &str,
        project: Option<&str>,
    ) -> ApiResult<RequestRecord> {
        if let Some(name) = project {
            return self.request(store, name, kind, call_id).await;
        }
        let mut found = Vec::new();
        for p in &self.session.projects {
            if let Some(record) = store.request(&p.id, kind, call_id).await? {
                found.push((p.name.clone(), record));
            }
        }
        match found.len() {
            0 => Err(ApiError::not_found(format!("no {} {call_id:?} in your projects", kind.noun()))),
            1 => Ok(found.pop().expect("one").1),
            _ => {
                let names: Vec<String> = found.into_iter().map(|(name, _)| name).collect();
                Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "ambiguous",
                    format!(
                        "{call_id:?} exists in several of your projects ({}); name one with --project",
                        names.join(", ")
                    ),
                ))
            }
        }
    }

    /// Decides a request as this person; returns the decided request's JSON. A request already
    /// decided is a 409 whose message says who decided it and what; errors name what the person
    /// sees (an action, an option, an answer), never the API's fields.
    pub async fn decide(&self, requests: &Requests, record: &RequestRecord, intent: Intent) -> ApiResult<Bytes> {
        let actor = Actor {
            user_id: Some(self.session.user.id.clone()),
            email: Some(self.session.user.email.clone()),
            ..Actor::new(self.channel)
        };
        requests.decide(&RequestKey::of(record), intent.trimmed(), &Fields::PERSON, actor).await
    }

    /// Pending requests of the person's projects, newest first.
    pub async fn inbox(&self, store: &dyn Store, limit: u32) -> ApiResult<countersign_store::Page> {
        let filter = RequestFilter { pending: true, ..RequestFilter::default() };
        Ok(store.list_requests(&self.project_ids(), &filter, limit, 0).await?)
    }

    /// The project name of one of the person's project ids.
    pub fn project_name(&self, project_id: &str) -> &str {
        self.session.projects.iter().find(|p| p.id == project_id).map_or("?", |p| p.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_counted_per_address_and_account_and_a_success_gives_back() {
        let t = Throttle::new(Duration::from_secs(60), 3, 2);
        let now = Instant::now();
        let ip = |n: u8| Some(IpAddr::from([10, 0, 0, n]));
        assert!(t.begin(ip(1), "Ada@Example.com", now).is_ok());
        let ticket = t.begin(ip(2), "ada@example.com ", now).unwrap();
        // The account (normalised) is at its limit, from any address; unknown ones alike.
        let wait = t.begin(ip(3), "ada@example.com", now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(60));
        assert!(t.begin(ip(3), "nobody@example.com", now).is_ok());
        assert!(t.begin(ip(3), "nobody@example.com", now).is_ok());
        assert!(t.begin(ip(3), "nobody@example.com", now).is_err());
        // A success clears the account's window.
        t.succeeded(ticket);
        assert!(t.begin(ip(4), "ada@example.com", now).is_ok());
        // The window ends: nothing is remembered beyond it.
        let later = now + Duration::from_secs(61);
        assert!(t.begin(ip(3), "nobody@example.com", later).is_ok());
    }

    #[test]
    fn an_address_is_limited_across_accounts_and_ipv6_by_its_64() {
        let t = Throttle::new(Duration::from_secs(60), 2, 100);
        let now = Instant::now();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        assert!(t.begin(Some(a), "x1@example.com", now).is_ok());
        assert!(t.begin(Some(b), "x2@example.com", now).is_ok());
        assert!(
            t.begin(Some(a), "x3@example.com", now + Duration::from_secs(20)).unwrap_err() <= Duration::from_secs(40)
        );
        assert!(t.begin(Some("2001:db8:0:1::1".parse().unwrap()), "x4@example.com", now).is_ok());
        assert!(t.begin(None, "x5@example.com", now).is_ok(), "no address: one shared bucket");
    }

    #[test]
    fn the_throttle_tracks_a_bounded_number_of_keys() {
        let mut w: Windows<u64> = Windows::default();
        let now = Instant::now();
        let window = Duration::from_secs(60);
        for key in 0..THROTTLE_MAX_KEYS as u64 + 10 {
            let slot = w.slot(key, now, window);
            w.count(&slot);
        }
        assert_eq!(w.map.len(), THROTTLE_MAX_KEYS);
        assert_eq!(w.overflow.count, 10, "new keys past the cap share one bucket");
        // Once their windows are over, old keys make room.
        assert_eq!(w.slot(u64::MAX, now + window, window), Some(u64::MAX));
        assert_eq!(w.map.len(), 1);
    }
}
