//! Hostile input to the sign-in pages (issue 10, points 5, 10, 11 and part of 12): bogus
//! set-password posts cost no argon2, password hashing is capped, logins are throttled per
//! address and per account with the same answer for unknown and known accounts and no lockout
//! beyond the window, `next` only goes to local paths, a terminal token is no cookie (nor a cookie
//! a terminal token), and a bad form is a page or JSON, never axum's plain text.

use crate::binary::{Served, fresh_dir};
use crate::support::{TestServer, client};
use crate::web::{Browser, PASSWORD, Page, signed_in};
use countersign_server::{Limits, Settings};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Most the server's resident memory may grow during a flood (argon2 takes 19 MiB a hash, so the
/// default cap of 2 at once stays well under; 100 at once took 1.9 GB before).
const RSS_GROWTH_BOUND: u64 = 64 * 1024 * 1024;

/// A `countersign serve` process, killed when dropped (also when a test fails).
struct Killed(Served);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

/// A memory figure of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in bytes.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn with_limits(limits: Limits) -> Settings {
    Settings { limits, ..Settings::default() }
}

#[tokio::test]
async fn bogus_set_password_tokens_are_refused_fast_and_cost_no_memory() {
    let dir = fresh_dir().await;
    let server = Killed(Served::start(dir.path()));
    let pid = server.0.child.id();
    let http = client();
    let url = server.0.url("/set-password");
    let post = |token: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let form =
                [("token", token.as_str()), ("password", "a-long-new-password"), ("confirm", "a-long-new-password")];
            let response = http.post(url).form(&form).send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    let (status, body) = post("csp_warm-up".into()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("used, expired or unknown"), "{body}");
    let before = memory(pid, "VmRSS");
    let started = Instant::now();
    let tokens = (0..100).map(|i| if i % 2 == 0 { format!("csp_bogus{i:040}") } else { format!("bogus{i}") });
    let answers = futures::future::join_all(tokens.map(post)).await;
    let took = started.elapsed();
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::NOT_FOUND, "{body}");
    }
    let growth = memory(pid, "VmHWM").saturating_sub(before);
    assert!(took < Duration::from_secs(2), "100 bogus posts took {took:?}: are they hashed?");
    assert!(growth < RSS_GROWTH_BOUND, "the server grew by {} MiB", growth / (1024 * 1024));
}

/// Sends 60 concurrent logins for unknown accounts to `serve`'s terminal login; returns the
/// statuses and how much the server's peak memory grew meanwhile.
async fn login_flood(server: &Served) -> (Vec<StatusCode>, u64) {
    let pid = server.child.id();
    let http = client();
    let url = server.url("/api/v1/login");
    let before = memory(pid, "VmRSS");
    let answers = futures::future::join_all((0..60).map(|i| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let body = json!({"email": format!("nobody{i}@example.com"), "password": "a-guessed-password"});
            http.post(url).json(&body).send().await.unwrap().status()
        }
    }))
    .await;
    (answers, memory(pid, "VmHWM").saturating_sub(before))
}

#[tokio::test]
async fn a_login_flood_is_throttled_before_hashing() {
    let dir = fresh_dir().await;
    let server = Killed(Served::start(dir.path()));
    let (answers, _) = login_flood(&server.0).await;
    let count = |status: StatusCode| answers.iter().filter(|s| **s == status).count();
    let (wrong, throttled, busy) =
        (count(StatusCode::UNAUTHORIZED), count(StatusCode::TOO_MANY_REQUESTS), count(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(wrong + throttled + busy, answers.len(), "{answers:?}");
    // One client may try 20 times a minute (the default); the rest wait, without any hashing.
    assert!(wrong <= 20 && throttled >= 40, "{wrong} wrong, {throttled} throttled, {busy} busy");
}

/// Hashing runs at most `max_concurrent_password_hashes` (2) at once, over working memory that
/// is reused rather than freed (freed 19 MiB buffers stayed resident in glibc's thread arenas:
/// +19 MiB a login, up to ~300 MiB, before).
#[tokio::test]
async fn a_login_flood_stays_under_the_memory_bound() {
    let dir = fresh_dir().await;
    let server = Killed(Served::start(dir.path()));
    let (_, growth) = login_flood(&server.0).await;
    assert!(growth < RSS_GROWTH_BOUND, "the server grew by {} MiB", growth / (1024 * 1024));
}

/// The page with what differs between any two forms blanked out: the email typed (echoed in the
/// form), the form's CSRF token, and digits (the seconds to wait).
fn normalized(page: &Page, email: &str) -> String {
    let mut body = page.body.replace(email, "EMAIL");
    if let Some(csrf) = crate::web::hidden(&body, "_csrf") {
        body = body.replace(&csrf, "CSRF");
    }
    body.chars().filter(|c| !c.is_ascii_digit()).collect()
}

fn retry_after(page: &Page) -> u64 {
    let value = page.headers.get("retry-after").expect("a 429 says when to retry");
    value.to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn one_address_is_throttled_alike_for_known_and_unknown_accounts() {
    let limits = Limits { login_attempts_per_address_per_minute: 3, ..Limits::default() };
    let s = TestServer::start_with(with_limits(limits)).await;
    s.person("ada@example.com", PASSWORD, &["alpha"]).await;
    let mut browser = Browser::new(&s);
    for i in 0..3 {
        let page = browser.login(&format!("guess{i}@example.com"), "a-guessed-password").await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    }
    let known = browser.login("ada@example.com", "a-guessed-password").await;
    let unknown = browser.login("nobody@example.com", "a-guessed-password").await;
    for page in [&known, &unknown] {
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
        assert!(page.body.contains("Too many sign-in attempts; try again in"), "{}", page.body);
        assert!((1..=60).contains(&retry_after(page)));
    }
    assert_eq!(normalized(&known, "ada@example.com"), normalized(&unknown, "nobody@example.com"));
    // Even the right password waits for the window (the address is throttled, not the account).
    assert_eq!(browser.login("ada@example.com", PASSWORD).await.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn an_account_is_throttled_like_an_unknown_one_and_never_locked_beyond_the_window() {
    let limits =
        Limits { login_attempts_per_account_per_minute: 3, login_throttle_window_secs: 2, ..Limits::default() };
    let s = TestServer::start_with(with_limits(limits)).await;
    s.person("ada@example.com", PASSWORD, &["alpha"]).await;
    let mut attacker = Browser::new(&s);
    let mut last = Vec::new();
    for email in ["ada@example.com", "nobody@example.com"] {
        for _ in 0..3 {
            assert_eq!(attacker.login(email, "a-guessed-password").await.status, StatusCode::UNAUTHORIZED);
        }
        let page = attacker.login(email, "a-guessed-password").await;
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{email}: {}", page.body);
        assert!(retry_after(&page) <= 2);
        last.push(normalized(&page, email));
    }
    assert_eq!(last[0], last[1], "a known and an unknown account get the same answer");
    let mut ada = Browser::new(&s);
    let waiting = ada.login("ada@example.com", PASSWORD).await;
    assert_eq!(waiting.status, StatusCode::TOO_MANY_REQUESTS, "within the window even the right password waits");
    tokio::time::sleep(Duration::from_secs(retry_after(&waiting)) + Duration::from_millis(200)).await;
    let page = ada.login("ada@example.com", PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "after the window the account is not locked: {}", page.body);
    // A success clears the account's count: the attacker's failures do not carry over.
    for _ in 0..2 {
        assert_eq!(attacker.login("ada@example.com", "a-guessed-password").await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(Browser::new(&s).login("ada@example.com", PASSWORD).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn after_signing_in_next_only_goes_to_local_paths() {
    let s = TestServer::start().await;
    s.person("ada@example.com", PASSWORD, &["alpha"]).await;
    let cases = [
        ("/\t/evil.example", "/"),
        ("/\n/x", "/"),
        ("/\r\n/x", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/a\\b", "/"),
        ("/ /evil.example", "/"),
        ("https://evil.example/", "/"),
        ("evil.example", "/"),
        ("", "/"),
        ("/\u{7f}/x", "/"),
        ("/r/alpha/approval/c1", "/r/alpha/approval/c1"),
        ("/history?q=a%20b&page=2", "/history?q=a%20b&page=2"),
        ("/", "/"),
    ];
    for (next, expected) in cases {
        let mut browser = Browser::new(&s);
        let form = browser.get(&format!("/login?next={}", urlencoded(next))).await;
        assert_eq!(form.status, StatusCode::OK, "{next:?}: {}", form.body);
        let csrf = browser.csrf.clone();
        let page = browser
            .post("/login", &[("_csrf", &csrf), ("email", "ada@example.com"), ("password", PASSWORD), ("next", next)])
            .await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{next:?}: {}", page.body);
        assert_eq!(page.location.as_deref(), Some(expected), "{next:?}");
    }
}

fn urlencoded(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[tokio::test]
async fn a_terminal_token_is_no_cookie_and_a_cookie_no_terminal_token() {
    let s = TestServer::start().await;
    let browser = signed_in(&s, "ada@example.com", &["alpha"]).await;
    let login = s.http.post(s.root("/api/v1/login")).json(&json!({"email": "ada@example.com", "password": PASSWORD}));
    let login: Value = login.send().await.unwrap().json().await.unwrap();
    let terminal_token = login["token"].as_str().unwrap().to_owned();
    assert!(terminal_token.starts_with("cst_"));
    let me = s.http.get(s.root("/api/v1/me")).bearer_auth(&terminal_token).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK, "the terminal token works where it was issued");

    let no_redirects = crate::support::client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let as_cookie = no_redirects
        .get(s.root("/"))
        .header("cookie", format!("countersign_session={terminal_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(as_cookie.status(), StatusCode::SEE_OTHER, "a terminal token is not a browser session");
    assert!(as_cookie.headers()["location"].to_str().unwrap().starts_with("/login"));

    let cookie = browser.cookies.iter().find(|(k, _)| k == "countersign_session").unwrap().1.clone();
    let inbox = no_redirects.get(s.root("/")).header("cookie", browser.cookie_header()).send().await.unwrap();
    assert_eq!(inbox.status(), StatusCode::OK, "the cookie works where it was issued");
    let as_bearer = s.http.get(s.root("/api/v1/me")).bearer_auth(&cookie).send().await.unwrap();
    assert_eq!(as_bearer.status(), StatusCode::UNAUTHORIZED, "a browser session is not a terminal login");
}

#[tokio::test]
async fn bad_forms_queries_and_paths_are_pages_or_json_never_plain_text() {
    let s = TestServer::start().await;
    let browser = signed_in(&s, "ada@example.com", &["alpha"]).await;
    let http = &browser.http;
    let cookie = browser.cookie_header();
    let html = |response: &reqwest::Response| {
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/html"), "{} is {content_type}", response.url());
    };
    // A login posted as JSON or plain text: the wrong content type.
    for content_type in ["application/json", "text/plain"] {
        let response =
            http.post(s.root("/login")).header("content-type", content_type).body("{}").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        html(&response);
        let body = response.text().await.unwrap();
        assert!(body.contains("application/x-www-form-urlencoded"), "{body}");
    }
    // The same, from a client that asks for JSON.
    let response = http
        .post(s.root("/set-password"))
        .header("accept", "application/json")
        .header("content-type", "text/plain")
        .body("token=x")
        .send()
        .await
        .unwrap();
    let (status, body) = crate::support::json(response).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["error"]["code"], "unsupported_media_type", "{body}");
    // A field twice, a number that is not one, a path segment that is not UTF-8.
    let form = http
        .post(s.root("/logout"))
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("_csrf=a&_csrf=b")
        .send()
        .await
        .unwrap();
    assert!(form.status().is_client_error(), "{}", form.status());
    html(&form);
    let query = http.get(s.root("/history?page=many")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(query.status(), StatusCode::BAD_REQUEST);
    html(&query);
    let path = http.get(s.root("/r/%FF%FE/approval/c1")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(path.status(), StatusCode::BAD_REQUEST);
    html(&path);
    let body = path.text().await.unwrap();
    assert!(body.contains("The address is not valid"), "{body}");
    // Invalid UTF-8 inside a form's fields is read (lossily), never a plain-text failure.
    let form = http
        .post(s.root("/set-password"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=csp_%FF%FE&password=%FF%FF%FF%FF%FF%FF%FF%FF%FF%FF&confirm=%FF")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::NOT_FOUND);
    html(&form);
}

#[tokio::test]
async fn a_flood_from_one_address_leaves_other_addresses_alone() {
    let limits = Limits { login_attempts_per_address_per_minute: 3, ..Limits::default() };
    let s = TestServer::start_with(with_limits(limits)).await;
    s.person("ada@example.com", PASSWORD, &["alpha"]).await;
    // The attacker connects from 127.0.0.2 (all of 127/8 is loopback on Linux).
    let mut attacker = Browser::new(&s);
    attacker.http = crate::support::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    for i in 0..3 {
        assert_eq!(attacker.login(&format!("guess{i}@example.com"), "a-guess").await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(attacker.login("guess@example.com", "a-guess").await.status, StatusCode::TOO_MANY_REQUESTS);
    let mut ada = Browser::new(&s);
    let page = ada.login("ada@example.com", PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "another address is not throttled: {}", page.body);
}
