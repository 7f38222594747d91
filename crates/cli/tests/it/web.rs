//! The web inbox over HTTP: sessions, CSRF, login throttling, escaping, project isolation in
//! pages and in the live stream, decisions that record the person, and the history's filters.
//! (The real browser test is in `browser.rs`; hostile input to these pages is in
//! `hostile_web.rs`.)

use crate::support::{TestServer, approval, question};
use countersign_core::session::{PASSWORD_TOKEN_PREFIX, Secret};
use countersign_core::{Email, Role, Timestamp};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use std::time::Duration;

pub(crate) const PASSWORD: &str = "correct-horse-battery";

/// A browser-like client: keeps the session cookie by hand, never follows redirects.
pub(crate) struct Browser {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) cookies: Vec<(String, String)>,
    pub(crate) csrf: String,
}

pub(crate) struct Page {
    pub(crate) status: StatusCode,
    pub(crate) location: Option<String>,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: String,
}

impl Browser {
    pub(crate) fn new(server: &TestServer) -> Self {
        let http = crate::support::client_builder().redirect(Policy::none()).build().unwrap();
        Self { http, base: server.root(""), cookies: Vec::new(), csrf: String::new() }
    }

    pub(crate) fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    pub(crate) async fn read(&mut self, response: reqwest::Response) -> Page {
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(k, _)| k != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        let status = response.status();
        let location = response.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        if let Some(token) = hidden(&body, "_csrf") {
            self.csrf = token;
        }
        Page { status, location, headers, body }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Page {
        let response =
            self.http.get(format!("{}{path}", self.base)).header("cookie", self.cookie_header()).send().await.unwrap();
        self.read(response).await
    }

    pub(crate) async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.read(response).await
    }

    /// Posts a form with this session's CSRF token.
    pub(crate) async fn submit(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let csrf = self.csrf.clone();
        let mut fields = vec![("_csrf", csrf.as_str())];
        fields.extend_from_slice(form);
        self.post(path, &fields).await
    }

    pub(crate) async fn login(&mut self, email: &str, password: &str) -> Page {
        self.get("/login").await;
        let csrf = self.csrf.clone();
        self.post("/login", &[("_csrf", &csrf), ("email", email), ("password", password), ("next", "/")]).await
    }
}

/// The value of a hidden input.
pub(crate) fn hidden(html: &str, name: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &html[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_owned())
}

pub(crate) async fn signed_in(server: &TestServer, email: &str, projects: &[&str]) -> Browser {
    server.person(email, PASSWORD, projects).await;
    let mut browser = Browser::new(server);
    let page = browser.login(email, PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some("/"));
    browser
}

#[tokio::test]
async fn pages_without_a_session_go_to_the_login_page() {
    let s = TestServer::start().await;
    let mut anonymous = Browser::new(&s);
    for path in ["/", "/history?q=x", "/r/alpha/approval/c1"] {
        let page = anonymous.get(path).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        assert!(page.location.as_deref().unwrap().starts_with("/login?next=%2F"), "{path}: {:?}", page.location);
    }
    let events = s.http.get(s.root("/events")).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(events.status(), StatusCode::UNAUTHORIZED);
    let login = anonymous.get("/login").await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains(r#"<label for="email">"#) && login.body.contains(r#"<label for="password">"#));
    let cookie = login.headers.get("set-cookie").unwrap().to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && !cookie.contains("Secure"), "{cookie}");
    // A forged login form (no cookie-bound token) is refused.
    let mut forger = Browser::new(&s);
    let forged = forger.post("/login", &[("email", "a@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn sessions_are_secure_behind_https() {
    let settings =
        countersign_server::Settings { public_url: Some("https://approve.example.com".into()), ..Default::default() };
    let s = TestServer::start_with(settings).await;
    s.person("ada@example.com", PASSWORD, &["alpha"]).await;
    let mut browser = Browser::new(&s);
    let page = browser.login("ada@example.com", PASSWORD).await;
    let cookies: Vec<&str> = page.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    let cookie = cookies.iter().find(|c| c.starts_with("countersign_session=cst_")).expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn wrong_passwords_are_refused_and_repeated_attempts_are_throttled() {
    let s = TestServer::start().await;
    s.person("ada@example.com", PASSWORD, &["alpha"]).await;
    let mut browser = Browser::new(&s);
    let page = browser.login("ada@example.com", "not-the-password").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("Wrong email or password."));
    assert!(!browser.cookies.iter().any(|(k, _)| k == "countersign_session"));
    let unknown = browser.login("nobody@example.com", PASSWORD).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(unknown.body.contains("Wrong email or password."), "unknown people get the same answer");
    for _ in 0..4 {
        assert_eq!(browser.login("ada@example.com", "not-the-password").await.status, StatusCode::UNAUTHORIZED);
    }
    // Past five attempts a minute for the account, even the right password must wait (a 429 that
    // says how long, never a lockout beyond the window: see hostile_web.rs).
    let throttled = browser.login("ada@example.com", "not-the-password").await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS, "{}", throttled.body);
    assert!(throttled.body.contains("try again in"), "{}", throttled.body);
    assert!(throttled.headers.get("retry-after").is_some());
    let right = browser.login("ada@example.com", PASSWORD).await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);
    let api = s.http.post(s.root("/api/v1/login")).json(&json!({"email": "ada@example.com", "password": PASSWORD}));
    let api = api.send().await.unwrap();
    assert_eq!(api.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = api.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_attempts");
}

#[tokio::test]
async fn a_one_time_link_sets_the_password_once() {
    let s = TestServer::start().await;
    let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
    let email = Email::parse("new@example.com").unwrap();
    let user = s
        .store
        .create_user(&email, Role::Approver, None, &[project.id], &countersign_core::event::Stamp::now("test"))
        .await
        .unwrap()
        .unwrap();
    let secret = Secret::generate(PASSWORD_TOKEN_PREFIX);
    s.store
        .create_password_token(&user.id, &secret.hash, Timestamp::now().plus(Duration::from_secs(60)))
        .await
        .unwrap();
    let mut browser = Browser::new(&s);
    assert_eq!(browser.login("new@example.com", PASSWORD).await.status, StatusCode::UNAUTHORIZED, "no password yet");
    let form = browser.get(&format!("/set-password?token={}", secret.text)).await;
    assert_eq!(form.status, StatusCode::OK);
    let token = secret.text.as_str();
    let mismatch =
        browser.post("/set-password", &[("token", token), ("password", PASSWORD), ("confirm", "other")]).await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    let short = browser.post("/set-password", &[("token", token), ("password", "short"), ("confirm", "short")]).await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(short.body.contains("at least 10 characters"), "{}", short.body);
    let done = browser.post("/set-password", &[("token", token), ("password", PASSWORD), ("confirm", PASSWORD)]).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Your password is set"));
    let reused = browser
        .post("/set-password", &[("token", token), ("password", "another-password"), ("confirm", "another-password")])
        .await;
    assert_eq!(reused.status, StatusCode::NOT_FOUND);
    assert!(reused.body.contains("used, expired or unknown"));
    assert_eq!(browser.login("new@example.com", PASSWORD).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn decisions_need_the_csrf_token_and_record_the_person() {
    let s = TestServer::start().await;
    let mut ada = signed_in(&s, "ada@example.com", &["alpha"]).await;
    s.post("/function_calls", approval("c1")).await;
    let inbox = ada.get("/").await;
    assert_eq!(inbox.status, StatusCode::OK);
    assert!(inbox.body.contains("send_email") && inbox.body.contains("/r/alpha/approval/c1"));
    for form in [vec![], vec![("_csrf", "forged-token-forged-token-forged-1")]] {
        let refused = ada.post("/r/alpha/approval/c1/approve", &form).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    }
    assert_eq!(s.get("/function_calls/c1").await.1["status"]["approved"], Value::Null, "still pending");
    let done = ada.submit("/r/alpha/approval/c1/approve", &[("comment", "looks right")]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let (_, fc) = s.get("/function_calls/c1").await;
    assert_eq!(fc["status"]["approved"], true);
    assert_eq!(fc["status"]["comment"], "looks right");
    let info = &fc["status"]["user_info"];
    assert_eq!(info["channel"], "web");
    assert_eq!(info["email"], "ada@example.com");
    assert!(info["user_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(info.get("api_key").is_none());
    // htmx submissions get the detail fragment back.
    s.post("/contact_requests", question("q1")).await;
    let answer = ada
        .http
        .post(s.root("/r/alpha/question/q1/answer"))
        .header("cookie", ada.cookie_header())
        .header("hx-request", "true")
        .form(&[("_csrf", ada.csrf.as_str()), ("text", "blue")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let fragment = answer.text().await.unwrap();
    assert!(fragment.starts_with("<article") && fragment.contains("Answered by ada@example.com"), "{fragment}");
    let (_, hc) = s.get("/contact_requests/q1").await;
    assert_eq!(hc["status"]["response"], "blue");
    assert_eq!(hc["status"]["user_info"]["channel"], "web");
}

#[tokio::test]
async fn reject_options_fill_the_comment_unless_interactive_and_edited() {
    let s = TestServer::start().await;
    let mut ada = signed_in(&s, "ada@example.com", &["alpha"]).await;
    let options = json!([
        {"name": "later", "title": "Not now", "prompt_fill": "try again tomorrow"},
        {"name": "edit", "title": "Say why", "prompt_fill": "because", "interactive": true}
    ]);
    for id in ["fixed", "edited"] {
        let body =
            json!({"run_id": "r", "call_id": id, "spec": {"fn": "deploy", "kwargs": {}, "reject_options": options}});
        s.post("/function_calls", body).await;
    }
    ada.get("/").await;
    let page = ada.submit("/r/alpha/approval/fixed/reject", &[("option", "later"), ("comment", "sneaky")]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let (_, fixed) = s.get("/function_calls/fixed").await;
    assert_eq!(fixed["status"]["comment"], "try again tomorrow");
    assert_eq!(fixed["status"]["reject_option_name"], "later");
    ada.submit("/r/alpha/approval/edited/reject", &[("option", "edit"), ("comment", "because it is Friday")]).await;
    let (_, edited) = s.get("/function_calls/edited").await;
    assert_eq!(edited["status"]["comment"], "because it is Friday");
    assert_eq!(edited["status"]["reject_option_name"], "edit");
    let bad = ada.submit("/r/alpha/approval/fixed/reject", &[("option", "nope")]).await;
    assert_eq!(bad.status, StatusCode::CONFLICT, "already decided comes first");
}

#[tokio::test]
async fn the_second_decider_sees_who_decided_first() {
    let s = TestServer::start().await;
    let mut ada = signed_in(&s, "ada@example.com", &["alpha"]).await;
    let mut bob = signed_in(&s, "bob@example.com", &["alpha"]).await;
    s.post("/function_calls", approval("c1")).await;
    bob.get("/r/alpha/approval/c1").await;
    ada.get("/r/alpha/approval/c1").await;
    assert_eq!(ada.submit("/r/alpha/approval/c1/approve", &[]).await.status, StatusCode::SEE_OTHER);
    let late = bob.submit("/r/alpha/approval/c1/reject", &[("comment", "no!")]).await;
    assert_eq!(late.status, StatusCode::CONFLICT);
    assert!(late.body.contains("Someone else decided this first"), "{}", late.body);
    assert!(late.body.contains("Approved by ada@example.com"), "{}", late.body);
    let (_, fc) = s.get("/function_calls/c1").await;
    assert_eq!(fc["status"]["approved"], true, "nothing is decided twice");
    assert_eq!(fc["status"]["user_info"]["email"], "ada@example.com");
}

#[tokio::test]
async fn markup_in_requests_is_shown_as_text() {
    let s = TestServer::start().await;
    let mut ada = signed_in(&s, "ada@example.com", &["alpha"]).await;
    let evil = json!({"run_id": "<i>run", "call_id": "x\"><b onmouseover=alert(1)>", "spec": {
        "fn": "<img src=x onerror=alert(2)>",
        "kwargs": {"body": "<script>alert(3)</script><b>bold</b>", "<key>": "'quoted' & \"double\""},
    }});
    assert_eq!(s.post("/function_calls", evil).await.0, StatusCode::OK);
    let inbox = ada.get("/").await;
    let detail = ada.get("/r/alpha/approval/x%22%3E%3Cb%20onmouseover%3Dalert(1)%3E").await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    for page in [&inbox, &detail] {
        for raw in ["<script>alert", "<img src=x", "<b>bold", "<i>run", "<key>", "<b onmouseover"] {
            assert!(!page.body.contains(raw), "{raw} must be escaped");
        }
        assert!(page.body.contains("img src=x onerror=alert(2)"), "the text itself is shown");
        let csp = page.headers.get("content-security-policy").unwrap().to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
    }
    assert!(detail.body.contains("&lt;script&gt;alert(3)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;"));
}

#[tokio::test]
async fn people_see_nothing_of_other_projects() {
    let s = TestServer::start().await;
    let mut ada = signed_in(&s, "ada@example.com", &["alpha"]).await;
    s.post("/function_calls", approval("mine")).await;
    s.post_as(&s.other_key, "/function_calls", approval("theirs")).await;
    s.post_as(&s.other_key, "/function_calls", approval("theirs-decided")).await;
    s.post_as(&s.other_key, "/agent/function_calls/theirs-decided/respond", json!({"approved": true})).await;
    let inbox = ada.get("/").await;
    assert!(inbox.body.contains("/r/alpha/approval/mine"));
    assert!(!inbox.body.contains("theirs") && !inbox.body.contains("beta"), "{}", inbox.body);
    assert!(inbox.body.contains("1 waiting"));
    assert_eq!(ada.get("/r/beta/approval/theirs").await.status, StatusCode::NOT_FOUND);
    assert_eq!(ada.submit("/r/beta/approval/theirs/approve", &[]).await.status, StatusCode::NOT_FOUND);
    let (_, theirs) = crate::support::json(
        s.http.get(s.api("/function_calls/theirs")).bearer_auth(&s.other_key).send().await.unwrap(),
    )
    .await;
    assert_eq!(theirs["status"]["approved"], Value::Null, "still pending");
    let history = ada.get("/history").await;
    assert!(!history.body.contains("theirs"), "{}", history.body);
    assert!(history.body.contains("No decided requests match."));
}

/// Opens the inbox's event stream of `server` as `browser`'s person.
pub(crate) async fn open_events(server: &TestServer, browser: &Browser) -> reqwest::Response {
    server
        .http
        .get(server.root("/events"))
        .header("cookie", browser.cookie_header())
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap()
}

/// Reads SSE events until `deadline`; returns the event names.
pub(crate) async fn events_within(response: &mut reqwest::Response, deadline: Duration) -> Vec<String> {
    let mut names = Vec::new();
    let mut buffer = String::new();
    let end = tokio::time::Instant::now() + deadline;
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(end, response.chunk()).await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(at) = buffer.find("\n\n") {
            let event: String = buffer.drain(..at + 2).collect();
            if let Some(name) = event.lines().find_map(|l| l.strip_prefix("event: ").or(l.strip_prefix("event:"))) {
                names.push(name.trim().to_owned());
                assert!(!event.contains("call"), "events carry no request content: {event}");
            }
        }
    }
    names
}

#[tokio::test]
async fn the_live_stream_announces_only_the_persons_projects() {
    let s = TestServer::start().await;
    let ada = signed_in(&s, "ada@example.com", &["alpha"]).await;
    let mut stream = open_events(&s, &ada).await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(stream.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    s.post_as(&s.other_key, "/function_calls", approval("theirs")).await;
    s.post_as(&s.other_key, "/agent/function_calls/theirs/respond", json!({"approved": false, "comment": "x"})).await;
    assert_eq!(events_within(&mut stream, Duration::from_millis(600)).await, Vec::<String>::new());
    s.post("/function_calls", approval("mine")).await;
    assert_eq!(events_within(&mut stream, Duration::from_millis(600)).await, vec!["changed"]);
    let decided = s.post("/agent/function_calls/mine/respond", json!({"approved": true})).await;
    assert_eq!(decided.0, StatusCode::OK, "{}", decided.1);
    assert_eq!(events_within(&mut stream, Duration::from_millis(600)).await, vec!["changed"]);
}

#[tokio::test]
async fn an_open_stream_follows_project_changes_and_ends_when_the_person_is_disabled() {
    let s = TestServer::start().await;
    let ada = signed_in(&s, "ada@example.com", &["alpha", "beta"]).await;
    let mut stream = open_events(&s, &ada).await;
    assert_eq!(stream.status(), StatusCode::OK);
    s.post_as(&s.other_key, "/function_calls", approval("beta-1")).await;
    assert_eq!(events_within(&mut stream, Duration::from_millis(600)).await, vec!["changed"]);

    let email = Email::parse("ada@example.com").unwrap();
    let beta = s.store.project_by_name("beta").await.unwrap().unwrap();
    s.store
        .change_user_projects(&email, &[], &[beta.id], &countersign_core::event::Stamp::now("test"))
        .await
        .unwrap()
        .unwrap();
    s.post_as(&s.other_key, "/function_calls", approval("beta-2")).await;
    assert_eq!(
        events_within(&mut stream, Duration::from_millis(600)).await,
        Vec::<String>::new(),
        "taken out of beta: the open stream no longer announces it"
    );
    s.post("/function_calls", approval("alpha-1")).await;
    assert_eq!(events_within(&mut stream, Duration::from_millis(600)).await, vec!["changed"]);

    s.store.disable_user(&email, &countersign_core::event::Stamp::now("test")).await.unwrap();
    s.post("/function_calls", approval("alpha-2")).await;
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(Some(chunk)) = stream.chunk().await {
            assert!(!String::from_utf8_lossy(&chunk).contains("event: changed"), "nothing more for a disabled person");
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream of a disabled person ends");
}

#[tokio::test]
async fn history_filters_search_and_pages() {
    let s = TestServer::start().await;
    let mut ada = signed_in(&s, "ada@example.com", &["alpha"]).await;
    for i in 0..30 {
        let fn_name = if i % 3 == 0 { "refund" } else { "send_email" };
        let run = if i < 10 { "run-a" } else { "run-b" };
        let body = json!({"run_id": run, "call_id": format!("c{i:02}"), "spec": {"fn": fn_name, "kwargs": {"n": i, "note": format!("needle-{i}")}}});
        s.post("/function_calls", body).await;
        if i % 2 == 0 {
            s.post(&format!("/agent/function_calls/c{i:02}/respond"), json!({"approved": true})).await;
        } else {
            ada.get("/").await;
            ada.submit(&format!("/r/alpha/approval/c{i:02}/reject"), &[("comment", "not today")]).await;
        }
    }
    s.post("/contact_requests", question("q1")).await;
    s.post("/agent/human_contacts/q1/respond", json!({"response": "teal"})).await;
    let count = |page: &Page| {
        let at = page.body.find("id=\"history-count\">").unwrap();
        page.body[at + 19..].split('<').next().unwrap().to_owned()
    };
    let all = ada.get("/history").await;
    assert_eq!(count(&all), "1–25 of 31");
    assert!(all.body.contains("rel=\"next\""));
    let next = ada.get("/history?page=2").await;
    assert_eq!(count(&next), "26–31 of 31");
    assert!(!next.body.contains("rel=\"next\"") && next.body.contains("rel=\"prev\""));
    assert_eq!(count(&ada.get("/history?status=rejected").await), "1–15 of 15");
    assert_eq!(count(&ada.get("/history?status=approved").await), "1–15 of 15");
    assert_eq!(count(&ada.get("/history?status=answered").await), "1–1 of 1");
    assert_eq!(count(&ada.get("/history?run=run-a").await), "1–10 of 10");
    assert_eq!(count(&ada.get("/history?fn=refund").await), "1–10 of 10");
    let by_ada = ada.get("/history?by=ada%40").await;
    assert_eq!(count(&by_ada), "1–15 of 15");
    assert!(by_ada.body.contains("ada@example.com"));
    assert_eq!(count(&ada.get("/history?q=needle-17").await), "1–1 of 1");
    assert_eq!(count(&ada.get("/history?q=NOT+TODAY").await), "1–15 of 15", "search ignores case");
    assert_eq!(count(&ada.get("/history?q=100%25").await), "No decided requests match.", "% is literal");
    assert_eq!(count(&ada.get("/history?status=rejected&fn=refund&run=run-b").await), "1–3 of 3");
}

#[tokio::test]
async fn logging_out_ends_the_session() {
    let s = TestServer::start().await;
    let mut ada = signed_in(&s, "ada@example.com", &["alpha"]).await;
    let cookie = ada.cookie_header();
    assert_eq!(ada.get("/").await.status, StatusCode::OK);
    assert_eq!(ada.post("/logout", &[]).await.status, StatusCode::FORBIDDEN, "logout needs the CSRF token too");
    let out = ada.submit("/logout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let stale = s.http.get(s.root("/")).header("cookie", cookie).send().await.unwrap();
    assert_eq!(stale.url().path(), "/login", "the old cookie no longer works");
}

#[tokio::test]
async fn questions_take_an_option_and_disabled_people_are_signed_out() {
    let s = TestServer::start().await;
    let mut ada = signed_in(&s, "ada@example.com", &["alpha"]).await;
    let body = json!({"run_id": "r", "call_id": "q1", "spec": {"msg": "Which region?", "response_options": [
        {"name": "eu", "title": "Europe", "prompt_fill": "deploy to eu-west-1"},
        {"name": "us", "title": "United States"}
    ]}});
    s.post("/contact_requests", body).await;
    let detail = ada.get("/r/alpha/question/q1").await;
    assert!(detail.body.contains("Which region?") && detail.body.contains("Europe"), "{}", detail.body);
    let empty = ada.submit("/r/alpha/question/q1/answer", &[("text", "  ")]).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert!(empty.body.contains("answer: must be a non-empty string"), "{}", empty.body);
    assert_eq!(ada.submit("/r/alpha/question/q1/answer", &[("option", "eu")]).await.status, StatusCode::SEE_OTHER);
    let (_, hc) = s.get("/contact_requests/q1").await;
    assert_eq!(hc["status"]["response"], "deploy to eu-west-1");
    assert_eq!(hc["status"]["response_option_name"], "eu");
    // An approval's actions do not apply to a question, and the other way round.
    s.post("/function_calls", approval("c1")).await;
    assert_eq!(ada.submit("/r/alpha/question/c1/answer", &[("text", "x")]).await.status, StatusCode::NOT_FOUND);
    s.store
        .disable_user(&Email::parse("ada@example.com").unwrap(), &countersign_core::event::Stamp::now("test"))
        .await
        .unwrap();
    let after = ada.get("/").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "a disabled person's session ends at once");
}

#[tokio::test]
async fn approvers_may_edit_the_arguments_as_json() {
    let s = TestServer::start().await;
    let mut ada = signed_in(&s, "ada@example.com", &["alpha"]).await;
    s.post("/function_calls", approval("c1")).await;
    s.post("/function_calls", approval("c2")).await;
    let page = ada.get("/r/alpha/approval/c1").await;
    assert!(page.body.contains(r#"<label for="approve-kwargs">"#) && page.body.contains("a@b.c"), "{}", page.body);
    let bad = ada.submit("/r/alpha/approval/c1/approve", &[("kwargs", "{\"to\": ")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("not valid JSON"), "{}", bad.body);
    let list = ada.submit("/r/alpha/approval/c1/approve", &[("kwargs", "[1]")]).await;
    assert_eq!(list.status, StatusCode::BAD_REQUEST);
    assert_eq!(s.get("/function_calls/c1").await.1["status"]["approved"], Value::Null, "nothing decided");
    let edited = ada.submit("/r/alpha/approval/c1/approve", &[("kwargs", r#"{"to": "boss@b.c"}"#)]).await;
    assert_eq!(edited.status, StatusCode::SEE_OTHER);
    let (_, c1) = s.get("/function_calls/c1").await;
    assert_eq!(c1["status"]["updated_kwargs"], json!({"to": "boss@b.c"}));
    assert_eq!(c1["spec"]["kwargs"], json!({"to": "a@b.c"}));
    let shown = ada.get("/r/alpha/approval/c1").await;
    assert!(shown.body.contains("With edited arguments") && shown.body.contains("boss@b.c"));
    // The box sent back unchanged (reformatted) is no edit.
    ada.submit("/r/alpha/approval/c2/approve", &[("kwargs", "{\n  \"to\":   \"a@b.c\"\n}")]).await;
    let (_, c2) = s.get("/function_calls/c2").await;
    assert_eq!(c2["status"]["approved"], true);
    assert!(c2["status"].get("updated_kwargs").is_none(), "{c2}");
}
