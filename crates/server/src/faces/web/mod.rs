//! The web inbox: sign-in pages, the live inbox at `/`, a request's detail and decision forms,
//! the history, the SSE stream that keeps every open inbox current, and the static assets
//! (htmx and its SSE extension are served from the binary).
//!
//! Sessions are an HttpOnly, SameSite=Lax cookie (Secure behind https); every state-changing
//! form carries the session's CSRF token (the login form a cookie-bound one). Everything shown is
//! scoped to the person's projects.

mod admin;
mod session;
mod views;

use crate::error::ApiError;
use crate::html::detail::{Detail, OutcomeView, href, kind_label, quorum_progress};
use crate::html::extract::{PageForm, PagePath, PageQuery};
use crate::html::{PageError, render, segment, sentence};
use crate::services::people::{self, ClientAddr, Person};
use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::CookieJar;
use countersign_core::Intent;
use countersign_core::session::{SessionKind, random_text, same_secret};
use countersign_core::{DecisionChannel, RequestKind, RequestRecord, Vote};
use countersign_store::{DecidedStatus, RequestFilter};
use serde::Deserialize;
use session::{LOGIN_CSRF_COOKIE, WebSession};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use views::{
    Chrome, DetailFragment, HistoryPage, HistoryQuery, HistoryRow, InboxPage, Item, ListFragment, LoginPage,
    SetPasswordPage,
};

/// Requests shown in the inbox list.
const INBOX_LIMIT: u32 = 200;
/// Rows per history page.
const HISTORY_PAGE: u32 = 25;

/// The web routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(inbox))
        .route("/inbox/list", get(inbox_list))
        .route("/r/{project}/{kind}/{call_id}", get(detail))
        .route("/r/{project}/{kind}/{call_id}/{action}", post(decide))
        .route("/history", get(history))
        .route("/events", get(events))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/set-password", get(set_password_form).post(set_password))
        .route("/assets/{file}", get(asset))
        .merge(admin::routes())
}

/// A page, or an HTML error page with its status.
type PageResult = Result<Response, PageError>;

/// The error page of a form that failed its CSRF check.
fn csrf_failed() -> PageError {
    PageError::new(
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form did not come from this Countersign session (the CSRF check failed). Reload the page and try again.",
    )
}

fn is_htmx(headers: &HeaderMap) -> bool {
    headers.get("hx-request").is_some_and(|v| v == "true")
}

fn person(who: &WebSession) -> Person<'_> {
    Person { session: &who.session, channel: DecisionChannel::Web }
}

fn chrome(who: &WebSession, nav: &'static str, search: &str) -> Chrome {
    Chrome {
        email: who.session.user.email.clone(),
        csrf: who.session.csrf_token.clone(),
        nav,
        admin: who.session.user.role == countersign_core::Role::Admin,
        search: search.to_owned(),
    }
}

async fn pending_items(state: &AppState, person: &Person<'_>) -> Result<(Vec<Item>, u64), PageError> {
    let page = person.inbox(state.store.as_ref(), INBOX_LIMIT).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for record in &page.items {
        let mut item = Item::new(person.project_name(&record.project_id), record);
        // Only requests under a quorum have votes to read.
        if quorum_progress(record, &[]).is_some() {
            let votes = votes_of(state, record).await?;
            item.show_votes(record, &votes, &person.session.user.email);
        }
        items.push(item);
    }
    Ok((items, page.total))
}

async fn votes_of(state: &AppState, record: &RequestRecord) -> Result<Vec<Vote>, PageError> {
    Ok(state.store.votes(&record.project_id, record.kind, &record.call_id).await.map_err(ApiError::from)?)
}

/// The detail view of `record` for the person signed in: its claim and, under a quorum, its
/// votes while pending.
async fn detail_of(
    state: &AppState,
    who: &WebSession,
    project: &str,
    record: &RequestRecord,
) -> Result<Detail, PageError> {
    let mut detail = Detail::new(project, record, &who.session.csrf_token, state.settings.limits.max_page_render_bytes);
    if record.outcome.is_some() {
        return Ok(detail);
    }
    if let Some(claim) =
        state.store.request_claim(&record.project_id, record.kind, &record.call_id).await.map_err(ApiError::from)?
    {
        detail.claimed = crate::html::detail::claim_text(&claim);
    }
    if quorum_progress(record, &[]).is_some() {
        let votes = votes_of(state, record).await?;
        detail.show_votes(record, &votes, Some(&who.session.user.email));
    }
    Ok(detail)
}

async fn inbox(State(state): State<AppState>, who: WebSession) -> PageResult {
    let (items, total) = pending_items(&state, &person(&who)).await?;
    Ok(render(&InboxPage { chrome: chrome(&who, "inbox", ""), items, total, detail: None }))
}

async fn inbox_list(State(state): State<AppState>, who: WebSession) -> PageResult {
    let (items, total) = pending_items(&state, &person(&who)).await?;
    Ok(render(&ListFragment { items, total }))
}

fn kind_of(segment: &str) -> Result<RequestKind, PageError> {
    match segment {
        "approval" => Ok(RequestKind::FunctionCall),
        "question" => Ok(RequestKind::HumanContact),
        _ => Err(PageError::new(StatusCode::NOT_FOUND, "Not found", "no such page")),
    }
}

async fn detail(
    State(state): State<AppState>,
    who: WebSession,
    headers: HeaderMap,
    PagePath((project, kind, call_id)): PagePath<(String, String, String)>,
) -> PageResult {
    let person = person(&who);
    let record = person.request(state.store.as_ref(), &project, kind_of(&kind)?, &call_id).await?;
    let detail = detail_of(&state, &who, &project, &record).await?;
    if is_htmx(&headers) {
        return Ok(render(&DetailFragment { d: detail }));
    }
    let (items, total) = pending_items(&state, &person).await?;
    Ok(render(&InboxPage { chrome: chrome(&who, "inbox", ""), items, total, detail: Some(detail) }))
}

/// A decision form.
#[derive(Deserialize)]
struct DecisionForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    comment: Option<String>,
    option: Option<String>,
    text: Option<String>,
    /// The arguments' edit box of an approval.
    kwargs: Option<String>,
}

/// The edited arguments of an approval form: `None` when the box is absent or unchanged.
fn edited_kwargs(
    record: &countersign_core::RequestRecord,
    text: Option<&str>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, String> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
    let edited: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("The edited arguments are not valid JSON: {e}."))?;
    let serde_json::Value::Object(edited) = edited else {
        return Err("The edited arguments must be a JSON object, like the original.".into());
    };
    let original = record
        .spec_field("kwargs")
        .and_then(|raw| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw.get()).ok());
    Ok((original.as_ref() != Some(&edited)).then_some(edited))
}

async fn decide(
    State(state): State<AppState>,
    who: WebSession,
    headers: HeaderMap,
    PagePath((project, kind, call_id, action)): PagePath<(String, String, String, String)>,
    PageForm(form): PageForm<DecisionForm>,
) -> PageResult {
    if !who.csrf_ok(&form.csrf, &headers) {
        return Err(csrf_failed());
    }
    let person = person(&who);
    let store = state.store.as_ref();
    let record = person.request(store, &project, kind_of(&kind)?, &call_id).await?;
    let option = form.option.filter(|o| !o.is_empty());
    // A non-interactive option's prompt_fill is sent as is, whatever the text box holds.
    let fixed = option.as_ref().and_then(|name| record.options().into_iter().find(|o| &o.name == name));
    let fixed = fixed.is_some_and(|o| !o.interactive.unwrap_or(false) && o.prompt_fill.is_some());
    let comment = if fixed { None } else { form.comment };
    let edited = if action == "approve" { edited_kwargs(&record, form.kwargs.as_deref()) } else { Ok(None) };
    let updated_kwargs = match edited {
        Ok(edited) => edited,
        Err(message) => {
            let mut detail = detail_of(&state, &who, &project, &record).await?;
            detail.error = message;
            return Ok((StatusCode::BAD_REQUEST, render(&DetailFragment { d: detail })).into_response());
        }
    };
    let action = match action.as_str() {
        "approve" => Intent::Approve { comment, updated_kwargs },
        "reject" => Intent::Reject { comment, option },
        "answer" => Intent::Answer { response: if fixed { None } else { form.text }, option },
        _ => return Err(PageError::new(StatusCode::NOT_FOUND, "Not found", "no such action")),
    };
    let (status, notice, error) = match person.decide(&state.requests, &record, action).await {
        Ok(_) => (StatusCode::OK, String::new(), String::new()),
        Err(err) if err.status() == StatusCode::CONFLICT => {
            (StatusCode::CONFLICT, err.message().to_owned(), String::new())
        }
        // A policy's refusal (separation of duties, not in the group) is said where the form was.
        Err(err) if err.status() == StatusCode::BAD_REQUEST || err.status() == StatusCode::FORBIDDEN => {
            (err.status(), String::new(), err.message().to_owned())
        }
        Err(err) => return Err(err.into()),
    };
    if status == StatusCode::OK && !is_htmx(&headers) {
        let href = href(&project, &record);
        return Ok(Redirect::to(&href).into_response());
    }
    let fresh = person.request(store, &project, record.kind, &call_id).await?;
    let mut detail = detail_of(&state, &who, &project, &fresh).await?;
    // Still pending after a 409: this person's vote was counted before (the message says when).
    let notice = match (status, fresh.outcome.is_some()) {
        (StatusCode::CONFLICT, true) => "Someone else decided this first; nothing was changed.".to_owned(),
        (StatusCode::CONFLICT, false) => format!("{}.", notice.trim_end_matches('.')),
        _ => notice,
    };
    detail.notice = notice;
    detail.error = error;
    if is_htmx(&headers) {
        return Ok((status, render(&DetailFragment { d: detail })).into_response());
    }
    let (items, total) = pending_items(&state, &person).await?;
    let page = InboxPage { chrome: chrome(&who, "inbox", ""), items, total, detail: Some(detail) };
    Ok((status, render(&page)).into_response())
}

async fn history(
    State(state): State<AppState>,
    who: WebSession,
    PageQuery(filters): PageQuery<HistoryQuery>,
) -> PageResult {
    let person = person(&who);
    let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let filter = RequestFilter {
        pending: false,
        status: DecidedStatus::parse(&filters.status),
        run_id: text(&filters.run),
        function: text(&filters.function),
        decided_by: text(&filters.by),
        text: text(&filters.q),
    };
    let page_no = filters.page.unwrap_or(1).max(1);
    let offset = (page_no - 1).saturating_mul(HISTORY_PAGE);
    let page = state
        .store
        .list_requests(&person.project_ids(), &filter, HISTORY_PAGE, offset)
        .await
        .map_err(ApiError::from)?;
    let rows: Vec<HistoryRow> = page
        .items
        .iter()
        .filter_map(|r| {
            let project = person.project_name(&r.project_id).to_owned();
            Some(HistoryRow {
                href: href(&project, r),
                kind_label: kind_label(r.kind),
                summary: r.summary(),
                run_id: r.run_id.clone(),
                outcome: OutcomeView::of(r, state.settings.limits.max_page_render_bytes / (2 * HISTORY_PAGE as usize))?,
                project,
            })
        })
        .collect();
    let link = |page: u32| {
        let mut query = form_urlencoded(&[
            ("status", &filters.status),
            ("run", &filters.run),
            ("fn", &filters.function),
            ("by", &filters.by),
            ("q", &filters.q),
        ]);
        query.push_str(&format!("page={page}"));
        format!("/history?{query}")
    };
    let shown = rows.len() as u64;
    let first = if shown == 0 { 0 } else { u64::from(offset) + 1 };
    let last = u64::from(offset) + shown;
    let prev_href = if page_no > 1 { link(page_no - 1) } else { String::new() };
    let next_href = if last < page.total { link(page_no + 1) } else { String::new() };
    let search = filters.q.clone();
    Ok(render(&HistoryPage {
        chrome: chrome(&who, "history", &search),
        filters,
        rows,
        total: page.total,
        first,
        last,
        prev_href,
        next_href,
    }))
}

/// `a=1&b=2&` of the non-empty pairs.
fn form_urlencoded(pairs: &[(&str, &String)]) -> String {
    let mut out = String::new();
    for (name, value) in pairs {
        if !value.is_empty() {
            out.push_str(&format!("{name}={}&", segment(value)));
        }
    }
    out
}

/// Server-sent events for an open inbox: `changed` whenever a request of the person's projects
/// is created, decided or escalated (the page then re-reads its list). Events carry no content,
/// and events of other projects are never sent.
async fn events(State(state): State<AppState>, who: WebSession) -> Response {
    let mut projects = project_ids(&who.session);
    let mut changes = state.requests.watch_inbox();
    let stream = async_stream(move |tx| async move {
        let _open = crate::metrics::Open::new(crate::metrics::SSE_STREAMS);
        let mut next_check = tokio::time::Instant::now() + SESSION_RECHECK;
        // A change not announced because the session could not be re-read (retried shortly).
        let mut unconfirmed: Option<Arc<str>> = None;
        loop {
            // The project that changed (`*`: maybe any); `None` when it is only time to re-check.
            let changed: Option<Arc<str>> = tokio::select! {
                change = changes.recv() => match change {
                    Ok(change) => Some(change.project_id),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some(Arc::from("*")),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                () = tokio::time::sleep_until(next_check) => unconfirmed.take(),
                () = state.requests.closed() => return,
            };
            let concerns = |projects: &[String]| {
                changed.as_deref().is_some_and(|changed| changed == "*" || projects.iter().any(|p| p == changed))
            };
            if changed.is_some() && !concerns(&projects) {
                continue;
            }
            // Before announcing (and now and then), re-read the session: the person may have
            // signed out, been disabled, or been moved between projects since the stream opened.
            match people::web_session(state.store.as_ref(), &who.token).await {
                Ok(Some(session)) => projects = project_ids(&session),
                Ok(None) => return,
                Err(e) => {
                    // Fail safe: without a fresh session announce nothing (the person may have
                    // lost the project); try again shortly.
                    tracing::debug!(error = %e.message(), "cannot re-check an inbox stream's session");
                    unconfirmed = changed.or(unconfirmed);
                    next_check = tokio::time::Instant::now() + Duration::from_secs(1);
                    continue;
                }
            }
            next_check = tokio::time::Instant::now() + SESSION_RECHECK;
            if !concerns(&projects) {
                continue;
            }
            // Let a burst settle into one refresh.
            tokio::time::sleep(Duration::from_millis(30)).await;
            while changes.try_recv().is_ok() {}
            unconfirmed = None;
            if tx.send(Event::default().event("changed").data("refresh")).await.is_err() {
                return;
            }
        }
    });
    let mut response = Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// How often an open inbox stream re-reads its session even when nothing happens.
const SESSION_RECHECK: Duration = Duration::from_secs(30);

fn project_ids(session: &countersign_store::Session) -> Vec<String> {
    session.projects.iter().map(|p| p.id.clone()).collect()
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(produce: F) -> impl futures::Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(produce(tx));
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok)))
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

/// Only local paths, so a crafted link cannot send people elsewhere after signing in: one `/`
/// then anything but `/` or `\\`, and only visible ASCII (browsers drop tabs and newlines, so
/// `/\t/evil.example` would be `//evil.example`); anything else is `/`.
fn safe_next(next: Option<&str>) -> String {
    let local = |n: &str| {
        let mut chars = n.chars();
        chars.next() == Some('/')
            && chars.next().is_none_or(|c| c != '/' && c != '\\')
            && n.chars().all(|c| c.is_ascii_graphic() && c != '\\')
    };
    match next {
        Some(n) if local(n) => n.to_owned(),
        _ => "/".to_owned(),
    }
}

async fn login_form(
    State(state): State<AppState>,
    jar: CookieJar,
    headers: HeaderMap,
    PageQuery(q): PageQuery<NextQuery>,
) -> Response {
    let token = random_text(32);
    let jar = jar.add(session::cookie(&state, &headers, LOGIN_CSRF_COOKIE, token.clone()));
    let page =
        LoginPage { csrf: token, next: safe_next(q.next.as_deref()), email: String::new(), error: String::new() };
    (jar, render(&page)).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    jar: CookieJar,
    headers: HeaderMap,
    PageForm(form): PageForm<LoginForm>,
) -> Response {
    let expected = jar.get(LOGIN_CSRF_COOKIE).map(|c| c.value().to_owned()).unwrap_or_default();
    if expected.is_empty() || !same_secret(&expected, &form.csrf) {
        return csrf_failed().into_response();
    }
    let next = safe_next(form.next.as_deref());
    match state.people.login(state.store.as_ref(), &form.email, &form.password, SessionKind::Web, client).await {
        Ok(signed_in) => {
            let jar = jar.remove(session::removal(LOGIN_CSRF_COOKIE)).add(session::cookie(
                &state,
                &headers,
                session::SESSION_COOKIE,
                signed_in.token,
            ));
            (jar, Redirect::to(&next)).into_response()
        }
        Err(refused) => {
            let err = &refused.error;
            let message = match err.status() {
                StatusCode::UNAUTHORIZED => "Wrong email or password.".to_owned(),
                _ => sentence(err.message()),
            };
            let page = LoginPage { csrf: expected, next, email: form.email, error: message };
            let mut response = (err.status(), render(&page)).into_response();
            if let Some(wait) = refused.retry_after_header() {
                response.headers_mut().insert(header::RETRY_AFTER, wait);
            }
            response
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default, rename = "_csrf")]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    who: WebSession,
    headers: HeaderMap,
    jar: CookieJar,
    PageForm(form): PageForm<CsrfForm>,
) -> PageResult {
    if !who.csrf_ok(&form.csrf, &headers) {
        return Err(csrf_failed());
    }
    people::logout(state.store.as_ref(), &who.token).await?;
    Ok((jar.remove(session::removal(session::SESSION_COOKIE)), Redirect::to("/login")).into_response())
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// The set-password form; a link that can no longer be used says so at once (asking does not
/// use it up).
async fn set_password_form(State(state): State<AppState>, PageQuery(q): PageQuery<TokenQuery>) -> PageResult {
    if !people::password_link_usable(state.store.as_ref(), &q.token).await? {
        return Err(PageError::new(StatusCode::NOT_FOUND, "Link not usable", DEAD_LINK));
    }
    Ok(render(&SetPasswordPage { token: q.token, error: String::new(), done: false }))
}

const DEAD_LINK: &str =
    "This link is used, expired or unknown; ask an admin for a new one (countersign users reset-password).";

#[derive(Deserialize)]
struct SetPasswordForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// The one-time token in the form is what authorizes this (no session exists yet), so it needs no
/// CSRF token: a forged form would have to know the secret. The token is checked before the
/// password is hashed, so posts with bogus tokens cost one lookup each.
async fn set_password(State(state): State<AppState>, PageForm(form): PageForm<SetPasswordForm>) -> Response {
    let page = |error: String, done: bool| SetPasswordPage { token: form.token.clone(), error, done };
    let store = state.store.as_ref();
    match people::password_link_usable(store, &form.token).await {
        Ok(true) => {}
        Ok(false) => return PageError::new(StatusCode::NOT_FOUND, "Link not usable", DEAD_LINK).into_response(),
        Err(err) => return PageError::from(err).into_response(),
    }
    if form.password != form.confirm {
        return (StatusCode::BAD_REQUEST, render(&page("The two passwords differ.".into(), false))).into_response();
    }
    match state.people.set_password(store, &form.token, &form.password).await {
        Ok(user) => {
            tracing::info!(user_id = %user.id, "password set with a one-time link");
            render(&page(String::new(), true))
        }
        Err(refused) => {
            let wait = refused.retry_after_header();
            let err = refused.error;
            let mut response = (err.status(), render(&page(sentence(err.message()), false))).into_response();
            if let Some(wait) = wait {
                response.headers_mut().insert(header::RETRY_AFTER, wait);
            }
            response
        }
    }
}

async fn asset(PagePath(file): PagePath<String>) -> Response {
    let (body, content_type): (&'static [u8], &str) = match file.as_str() {
        "htmx.min.js" => (include_bytes!("../../../assets/vendor/htmx.min.js"), "text/javascript"),
        "htmx-ext-sse.min.js" => (include_bytes!("../../../assets/vendor/htmx-ext-sse.min.js"), "text/javascript"),
        "inbox.js" => (include_bytes!("../../../assets/inbox.js"), "text/javascript"),
        "style.css" => (include_bytes!("../../../assets/style.css"), "text/css"),
        _ => return PageError::new(StatusCode::NOT_FOUND, "Not found", "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_str(&format!("{content_type}; charset=utf-8")).expect("ascii")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_is_a_local_path_or_the_inbox() {
        for bad in ["/\t/evil.example", "/\n/x", "//evil", "/\\evil", "/a\\b", "/ x", "https://e.x", "x", "", "/\u{e9}"]
        {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
        for good in ["/", "/history?q=a%20b", "/r/alpha/approval/c%2F1"] {
            assert_eq!(safe_next(Some(good)), good);
        }
    }
}
