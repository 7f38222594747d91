//! The admin pages: who may open them (admins, for their own projects only), forged forms, and
//! every admin action landing in the project's audit chain with who did it; then an admin runs a
//! project entirely from a real headless Chromium (keys, people and groups, a webhook with its
//! delivery log and a redelivery, channel tests to a real SMTP sink and the fake Slack, the
//! policy editor's line errors and test form, the audit log and its verify button).
//! Screenshots go to `target/screenshots/admin-*.png`.

use crate::browser::{js, screenshot, start_browser, wait_for};
use crate::email::SmtpSink;
use crate::support::{TestServer, approval};
use crate::web::{Browser, PASSWORD};
use crate::webhooks::Receiver;
use countersign_core::Role;
use fantoccini::{Client, Locator};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ADMIN: &str = "root@example.com";

/// The audit chain of a project as `(type, by)` of its project events, oldest first.
async fn admin_events(s: &TestServer, project: &str) -> Vec<(String, String, Value)> {
    let project = s.store.project_by_name(project).await.unwrap().unwrap();
    // PostgreSQL seals events shortly after the commit.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let chain = s.store.chains(Some(&project.id)).await.unwrap().into_iter().next();
        if chain.as_ref().is_none_or(|c| c.unsealed == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "events still unsealed after 10 s: {chain:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = s.store.audit_events(&project.id, 0, 10_000).await.unwrap();
    events
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.body).unwrap())
        .filter(|e| e.get("by").is_some())
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["by"].as_str().unwrap().to_owned(), e))
        .collect()
}

async fn admin_session(s: &TestServer) -> Browser {
    s.person_as(Role::Admin, ADMIN, PASSWORD, &["alpha"]).await;
    let mut admin = Browser::new(s);
    assert_eq!(admin.login(ADMIN, PASSWORD).await.status, StatusCode::SEE_OTHER);
    // The session's CSRF token, from a page's forms.
    assert_eq!(admin.get("/admin").await.status, StatusCode::OK);
    admin
}

/// The stored record of alpha's key whose secret is `secret`.
async fn stored_key(s: &TestServer, secret: &str) -> countersign_store::ApiKeyRecord {
    let keys = s.store.api_keys(Some("alpha")).await.unwrap();
    keys.into_iter().find(|k| secret.starts_with(&k.display_prefix)).expect("the key is stored")
}

/// The value of the input with this id.
fn input_value(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let rest = &html[at..];
    let v = rest.find("value=\"")? + 7;
    Some(rest[v..v + rest[v..].find('"')?].to_owned())
}

#[tokio::test]
async fn approvers_other_projects_and_forged_forms_get_nothing_and_each_change_is_audited() {
    let s = TestServer::start().await;
    let mut admin = admin_session(&s).await;
    let mut ada = crate::web::signed_in(&s, "ada@example.com", &["alpha"]).await;

    // The header offers the admin pages to admins only.
    assert!(admin.get("/").await.body.contains("href=\"/admin\""));
    assert!(!ada.get("/").await.body.contains("href=\"/admin\""));

    // An approver is refused every page and every form, with 403.
    for path in [
        "/admin",
        "/admin/p/alpha/keys",
        "/admin/p/alpha/people",
        "/admin/p/alpha/webhooks",
        "/admin/p/alpha/channels",
        "/admin/p/alpha/policy",
        "/admin/p/alpha/audit",
    ] {
        let page = ada.get(path).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}");
        assert!(page.body.contains("Admins only"), "{path}: {}", page.body);
    }
    let keys_before = s.store.api_keys(Some("alpha")).await.unwrap().len();
    let page = ada.submit("/admin/p/alpha/keys", &[("name", "mine"), ("scope_agent", "on")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    let page = ada.submit("/admin/p/alpha/people", &[("email", "eve@example.com"), ("role", "admin")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(s.store.api_keys(Some("alpha")).await.unwrap().len(), keys_before);
    assert!(s.store.users(None).await.unwrap().iter().all(|u| u.email != "eve@example.com"));
    // Without a session: the login page.
    let page = Browser::new(&s).get("/admin/p/alpha/keys").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location.unwrap().starts_with("/login?next="));

    // An admin sees only their own projects: another project is not found, read or written.
    assert!(!admin.get("/admin").await.body.contains(">beta<"));
    for path in ["/admin/p/beta/keys", "/admin/p/beta/audit", "/admin/p/beta/policy"] {
        assert_eq!(admin.get(path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    let beta_keys = s.store.api_keys(Some("beta")).await.unwrap();
    let page = admin.submit("/admin/p/beta/keys", &[("scope_agent", "on")]).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let path = format!("/admin/p/alpha/keys/{}/revoke", beta_keys[0].id);
    assert_eq!(admin.submit(&path, &[]).await.status, StatusCode::NOT_FOUND, "beta's key through alpha");
    assert_eq!(s.store.api_keys(Some("beta")).await.unwrap(), beta_keys);

    // A form without this session's CSRF token changes nothing.
    let page = admin.post("/admin/p/alpha/keys", &[("_csrf", "forged"), ("scope_agent", "on")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert_eq!(s.store.api_keys(Some("alpha")).await.unwrap().len(), keys_before);

    // A key made here works once, at once, and is shown only in that answer.
    let page = admin.submit("/admin/p/alpha/keys", &[("name", "ops bot"), ("scope_agent", "on")]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let secret = input_value(&page.body, "secret-value").expect("the new key is shown");
    assert!(secret.starts_with("cs_"), "{secret}");
    let created = s.post_as(&secret, "/function_calls", approval("from-admin-key")).await;
    assert_eq!(created.0, StatusCode::OK, "{created:?}");
    let listed = admin.get("/admin/p/alpha/keys").await;
    assert!(!listed.body.contains(&secret), "a key is shown once");
    let key = stored_key(&s, &secret).await;
    assert_eq!(key.name.as_deref(), Some("ops bot"));
    assert_eq!(key.scopes.to_text(), "agent");
    // No scope, or a bad owner: a clear error, no key.
    let page = admin.submit("/admin/p/alpha/keys", &[("name", "nothing")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("Choose at least one scope"), "{}", page.body);
    let page = admin.submit("/admin/p/alpha/keys", &[("owner", "not an email"), ("scope_agent", "on")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert_eq!(s.store.api_keys(Some("alpha")).await.unwrap().len(), keys_before + 1);

    // Revoked: refused by the API within a second or so (key cache).
    let page = admin.submit(&format!("/admin/p/alpha/keys/{}/revoke", key.id), &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Revoked key"), "{}", page.body);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = s.post_as(&secret, "/function_calls", approval("after-revoke")).await;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(Instant::now() < deadline, "the revoked key still works: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = admin.submit(&format!("/admin/p/alpha/keys/{}/revoke", key.id), &[]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "twice");

    // People: a new person gets a one-time link that sets their password.
    let page = admin.submit("/admin/p/alpha/people", &[("email", "Bob@Example.com"), ("role", "approver")]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let link = input_value(&page.body, "link-value").expect("a set-password link");
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let mut bob = Browser::new(&s);
    let set = bob
        .post(
            "/set-password",
            &[("token", &token), ("password", "bobs-long-password"), ("confirm", "bobs-long-password")],
        )
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(bob.login("bob@example.com", "bobs-long-password").await.status, StatusCode::SEE_OTHER);
    let page = admin.submit("/admin/p/alpha/people", &[("email", "bob@example.com")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "already in");
    let page = admin.submit("/admin/p/alpha/people", &[("email", "nope")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    // The admin cannot lock themselves out here.
    let me = format!("/admin/p/alpha/people/{ADMIN}/disable");
    assert_eq!(admin.submit(&me, &[]).await.status, StatusCode::BAD_REQUEST);
    // A group, then its members change; someone outside the project cannot join it.
    let page = admin
        .submit("/admin/p/alpha/groups", &[("name", "finance"), ("members", "bob@example.com, ada@example.com")])
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let page = admin.submit("/admin/p/alpha/groups/finance/remove", &[("member", "ada@example.com")]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let page = admin.submit("/admin/p/alpha/groups/finance/add", &[("member", "stranger@example.com")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
    assert_eq!(s.store.group(&project.id, "finance").await.unwrap().unwrap().members, ["bob@example.com"]);
    // Disabled: bob's session ends.
    assert_eq!(admin.submit("/admin/p/alpha/people/bob@example.com/disable", &[]).await.status, StatusCode::OK);
    assert_eq!(bob.get("/").await.status, StatusCode::SEE_OTHER, "a disabled person is signed out");

    // A policy with an error is refused at its line, and nothing is stored.
    let bad = "[[rule]]\nname = \"x\"\nmatch = { fn = \"refund\" }\naction = \"maybe\"\n";
    let page = admin.submit("/admin/p/alpha/policy", &[("text", bad)]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page.body.contains("Line 4"), "{}", page.body);
    assert!(s.store.policy(&project.id).await.unwrap().is_none());

    // Every change above is in alpha's audit chain, by the admin, in order; nothing in beta's.
    let events = admin_events(&s, "alpha").await;
    let kinds: Vec<(&str, &str)> = events.iter().map(|(k, by, _)| (k.as_str(), by.as_str())).collect();
    assert_eq!(
        kinds,
        [
            ("key_created", "test"),
            ("person_added", "test"),
            ("person_added", "test"),
            ("key_created", ADMIN),
            ("key_revoked", ADMIN),
            ("person_added", ADMIN),
            ("group_changed", ADMIN),
            ("group_changed", ADMIN),
            ("person_removed", ADMIN),
        ],
        "{events:#?}"
    );
    let created = &events[3].2["key"];
    assert_eq!(created["key"], json!(key.display_prefix));
    assert_eq!(created["scopes"], json!(["agent"]));
    assert!(!events.iter().any(|(_, _, e)| e.to_string().contains(&secret)), "no secret in the log");
    assert_eq!(events[8].2["person"], json!({"email": "bob@example.com", "disabled": true}));
    assert!(admin_events(&s, "beta").await.iter().all(|(_, by, _)| by != ADMIN));
    // And the chain still verifies.
    let chain = s.store.chains(Some(&project.id)).await.unwrap().remove(0);
    let verified = countersign_server::services::audit::verify(s.store.as_ref(), &chain, None).await.unwrap();
    assert!(verified.is_ok(), "{verified:?}");

    // Every form refuses a missing or forged CSRF token, and changes nothing.
    let before = admin_events(&s, "alpha").await.len();
    let key_id = s.store.api_keys(Some("alpha")).await.unwrap()[0].id.clone();
    let posts = [
        "/admin".to_owned(),
        "/admin/p/alpha/keys".to_owned(),
        format!("/admin/p/alpha/keys/{key_id}/revoke"),
        "/admin/p/alpha/people".to_owned(),
        "/admin/p/alpha/people/ada@example.com/remove".to_owned(),
        "/admin/p/alpha/people/ada@example.com/disable".to_owned(),
        "/admin/p/alpha/people/ada@example.com/phone".to_owned(),
        "/admin/p/alpha/groups".to_owned(),
        "/admin/p/alpha/groups/finance/add".to_owned(),
        "/admin/p/alpha/webhooks".to_owned(),
        "/admin/p/alpha/channels/email/test".to_owned(),
        "/admin/p/alpha/channels/email/connect".to_owned(),
        "/admin/p/alpha/channels/slack/disconnect".to_owned(),
        "/admin/p/alpha/policy".to_owned(),
        "/admin/p/alpha/policy/test".to_owned(),
        "/admin/p/alpha/audit/verify".to_owned(),
    ];
    let fields = [
        ("name", "x"),
        ("email", "x@example.com"),
        ("member", "ada@example.com"),
        ("text", ""),
        ("phone", "+15550000000"),
    ];
    for path in &posts {
        for csrf in [None, Some("forged")] {
            let mut form: Vec<(&str, &str)> = fields.to_vec();
            if let Some(token) = csrf {
                form.push(("_csrf", token));
            }
            let page = admin.post(path, &form).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{path} with {csrf:?}");
        }
    }
    assert_eq!(admin_events(&s, "alpha").await.len(), before, "nothing changed");
    assert_eq!(s.store.api_keys(Some("alpha")).await.unwrap()[0].revoked_at, None);

    // Nothing of another project is reachable through its name.
    for path in ["/admin/p/beta/people", "/admin/p/beta/webhooks", "/admin/p/beta/channels", "/admin/p/beta/policy"] {
        assert_eq!(admin.get(path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    for path in [
        "/admin/p/beta/people",
        "/admin/p/beta/groups",
        "/admin/p/beta/webhooks",
        "/admin/p/beta/channels/email/connect",
        "/admin/p/beta/policy",
        "/admin/p/beta/audit/verify",
    ] {
        assert_eq!(admin.submit(path, &fields).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    // A delivery of beta's, named through alpha, is not found.
    let beta = s.store.project_by_name("beta").await.unwrap().unwrap();
    let (_, hook) = s
        .post_as(
            &s.other_key,
            "/webhooks",
            json!({"url": "http://127.0.0.1:9/hook", "events": ["function_call.completed"]}),
        )
        .await;
    let hook_id = hook["id"].as_str().expect("a beta webhook").to_owned();
    assert_eq!(admin.get(&format!("/admin/p/alpha/webhooks/{hook_id}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        admin.submit(&format!("/admin/p/alpha/webhooks/{hook_id}/remove"), &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(s.store.webhooks(Some(&beta.id)).await.unwrap().len(), 1);

    // Accounts that reach into projects the admin does not hold: not joined, not disabled, no
    // phone set; only removed from this project.
    s.person("eve@example.com", PASSWORD, &["beta"]).await;
    let page = admin.submit("/admin/p/alpha/people", &[("email", "eve@example.com")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("projects you do not administer"), "{}", page.body);
    s.person("fay@example.com", PASSWORD, &["alpha", "beta"]).await;
    for action in ["disable", "phone"] {
        let page = admin
            .submit(&format!("/admin/p/alpha/people/fay@example.com/{action}"), &[("phone", "+15551230077")])
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{action}");
    }
    let fay = s.store.users(None).await.unwrap().into_iter().find(|u| u.email == "fay@example.com").unwrap();
    assert_eq!((fay.disabled_at, fay.projects.clone()), (None, vec!["alpha".to_owned(), "beta".to_owned()]));
    assert_eq!(s.store.user_phone("fay@example.com").await.unwrap(), None);
    let eve = s.store.users(None).await.unwrap().into_iter().find(|u| u.email == "eve@example.com").unwrap();
    assert_eq!(eve.projects, ["beta"]);
    assert_eq!(admin.submit("/admin/p/alpha/people/fay@example.com/remove", &[]).await.status, StatusCode::OK);
    assert_eq!(s.store.user_phone("fay@example.com").await.unwrap(), None);

    // An address with a slash stays one path segment in every form.
    let page = admin.submit("/admin/p/alpha/people", &[("email", "ops/oncall@example.com")]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("/people/ops%2Foncall%40example.com/remove"), "{}", page.body);
    assert!(!page.body.contains("/people/ops/oncall"), "{}", page.body);
    let page = admin.submit("/admin/p/alpha/people/ops%2Foncall%40example.com/remove", &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let ops = s.store.users(None).await.unwrap().into_iter().find(|u| u.email == "ops/oncall@example.com").unwrap();
    assert!(ops.projects.is_empty());

    // A new password link: for someone only in the admin's projects, shown once, and it works.
    let page = admin.submit("/admin/p/alpha/people/ada@example.com/password-link", &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let link = input_value(&page.body, "link-value").expect("a new link");
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let mut ada_again = Browser::new(&s);
    let form =
        [("token", token.as_str()), ("password", "adas-new-long-password"), ("confirm", "adas-new-long-password")];
    assert_eq!(ada_again.post("/set-password", &form).await.status, StatusCode::OK);
    assert_eq!(ada_again.login("ada@example.com", "adas-new-long-password").await.status, StatusCode::SEE_OTHER);
    s.person("gil@example.com", PASSWORD, &["alpha", "beta"]).await;
    let page = admin.submit("/admin/p/alpha/people/gil@example.com/password-link", &[]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "gil is in beta too");
    assert!(input_value(&page.body, "link-value").is_none());
    let last = admin_events(&s, "alpha").await;
    let issued: Vec<&Value> = last.iter().filter(|(k, _, _)| k == "password_link_issued").map(|(_, _, e)| e).collect();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0]["person"], json!({"email": "ada@example.com"}));
    assert!(!issued[0].to_string().contains(&token), "never the link");
}

async fn click(browser: &Client, css: &str) {
    browser.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
}

/// Clicks a link or a form's button and waits until the next page has loaded.
async fn submit(browser: &Client, css: &str) {
    js(browser, "window.__before = true; return null;").await;
    click(browser, css).await;
    wait_for(browser, "the next page", "!window.__before && document.readyState === 'complete'").await;
}

async fn fill(browser: &Client, css: &str, text: &str) {
    let field = browser.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn text_of(browser: &Client, css: &str) -> String {
    browser.wait().for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
}

/// Checks that every control of the page has a label, and keeps a screenshot.
async fn page_ok(browser: &Client, name: &str) {
    let unlabelled = js(
        browser,
        "return [...document.querySelectorAll('input:not([type=hidden]), textarea, select')] \
         .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') \
         && !e.closest('label')).map(e => e.id || e.name);",
    )
    .await;
    assert_eq!(unlabelled, json!([]), "{name}: every control has a label");
    screenshot(browser, &format!("admin-{name}.png")).await;
}

#[tokio::test]
async fn an_admin_runs_a_project_from_chromium() {
    let (sink, smtp_url) = SmtpSink::start().await;
    let fake = countersign_fakes::slack::FakeSlack::start().await;
    let mut settings = crate::slack::settings(&fake);
    settings.limits.allow_private_webhook_targets = true;
    settings.email.smtp_url = Some(smtp_url);
    settings.email.from = Some("Countersign <approvals@example.com>".into());
    let s = TestServer::start_with(settings).await;
    s.person_as(Role::Admin, ADMIN, PASSWORD, &["alpha"]).await;
    s.person("ada@example.com", PASSWORD, &["alpha"]).await;
    let (receiver, hook_url) = Receiver::start().await;
    let (_driver, browser) = start_browser().await;
    let base = s.root("");

    browser.goto(&format!("{base}/login")).await.unwrap();
    fill(&browser, "#email", ADMIN).await;
    fill(&browser, "#password", PASSWORD).await;
    submit(&browser, "#sign-in").await;
    browser.wait().for_element(Locator::Css("#pending")).await.unwrap();
    submit(&browser, "header nav a[href='/admin']").await;
    wait_for(&browser, "the projects", "document.querySelector('#projects')").await;
    assert!(text_of(&browser, "#projects").await.contains("alpha"));
    page_ok(&browser, "projects").await;

    // A new project: the admin is in it, and lands on its keys.
    fill(&browser, "#project-name", "gamma").await;
    submit(&browser, "#new-project button").await;
    wait_for(&browser, "gamma's keys", "location.pathname === '/admin/p/gamma/keys'").await;
    browser.goto(&format!("{base}/admin/p/alpha/keys")).await.unwrap();

    // Keys: create one with two scopes and an owner; it is shown once and works.
    fill(&browser, "#key-name", "billing agent").await;
    click(&browser, "input[name=scope_decide]").await;
    fill(&browser, "#key-owner", "ada@example.com").await;
    submit(&browser, "#new-key button").await;
    let secret =
        browser.wait().for_element(Locator::Css("#secret-value")).await.unwrap().prop("value").await.unwrap().unwrap();
    assert!(secret.starts_with("cs_"));
    assert!(text_of(&browser, "#notice").await.contains("shown only this once"));
    page_ok(&browser, "keys").await;
    assert_eq!(s.post_as(&secret, "/function_calls", approval("by-new-key")).await.0, StatusCode::OK);
    let stored = stored_key(&s, &secret).await;
    assert_eq!(stored.scopes.to_text(), "agent,decide");
    assert_eq!(stored.owner.as_deref(), Some("ada@example.com"));
    let prefix = stored.display_prefix.clone();
    submit(&browser, &format!("#key-{prefix} button")).await;
    wait_for(&browser, "revoked", &format!("document.querySelector('#key-{prefix}')?.textContent.includes('revoked')"))
        .await;

    // People and groups.
    submit(&browser, "nav.tabs a[href$='/people']").await;
    fill(&browser, "#person-email", "carol@example.com").await;
    submit(&browser, "#add-person button").await;
    let link =
        browser.wait().for_element(Locator::Css("#link-value")).await.unwrap().prop("value").await.unwrap().unwrap();
    assert!(link.starts_with(&format!("{base}/set-password?token=")), "{link}");
    fill(&browser, "#group-name", "finance").await;
    fill(&browser, "#group-members", "carol@example.com, ada@example.com").await;
    submit(&browser, "#new-group button").await;
    wait_for(
        &browser,
        "the group",
        "document.querySelector('#group-finance')?.textContent.includes('carol@example.com')",
    )
    .await;
    page_ok(&browser, "people").await;

    // Webhooks: add one; a decision is delivered; the log shows it; redeliver sends it again.
    submit(&browser, "nav.tabs a[href$='/webhooks']").await;
    fill(&browser, "#webhook-url", &hook_url).await;
    submit(&browser, "#add-webhook button").await;
    let hook_secret =
        browser.wait().for_element(Locator::Css("#secret-value")).await.unwrap().prop("value").await.unwrap().unwrap();
    assert!(hook_secret.starts_with("whsec_"), "{hook_secret}");
    assert_eq!(s.post("/function_calls", approval("hooked")).await.0, StatusCode::OK);
    let (status, _) = s.post("/agent/function_calls/hooked/respond", json!({"approved": true})).await;
    assert!(status.is_success(), "{status}");
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert!(got[0].verified(&hook_secret), "signed with the secret shown");
    submit(&browser, "#webhooks a[href*='/webhooks/wh_']").await;
    wait_for(&browser, "the delivery log", "document.querySelector('#deliveries tbody tr.delivery-delivered')").await;
    page_ok(&browser, "webhook-log").await;
    submit(&browser, "#deliveries tbody tr button").await;
    assert!(text_of(&browser, "#notice").await.contains("queued again"));
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[0].id, got[1].id, "the same delivery again");

    // Channels: Slack is connected here, its token checked with Slack first.
    submit(&browser, "nav.tabs a[href$='/channels']").await;
    fill(&browser, "#slack-token", "xoxp-a-user-token").await;
    submit(&browser, "#slack-connect button").await;
    assert!(text_of(&browser, "#error").await.contains("starts with xoxb-"));
    fake.revoke_token("xoxb-revoked");
    fill(&browser, "#slack-token", "xoxb-revoked").await;
    submit(&browser, "#slack-connect button").await;
    assert!(text_of(&browser, "#error").await.contains("Slack refused the bot token"));
    let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
    assert!(s.store.slack_connection(&project.id).await.unwrap().is_none());
    fill(&browser, "#slack-token", crate::slack::TOKEN).await;
    fill(&browser, "#slack-secret", crate::slack::SECRET).await;
    fill(&browser, "#slack-channel", "#approvals").await;
    submit(&browser, "#slack-connect button").await;
    assert!(text_of(&browser, "#notice").await.contains("Connected to the Slack workspace"));
    let connected = s.store.slack_connection(&project.id).await.unwrap().expect("connected");
    assert_eq!(
        (connected.bot_token.as_str(), connected.signing_secret.as_deref()),
        (crate::slack::TOKEN, Some(crate::slack::SECRET))
    );
    // A test email through the real SMTP path, a test post to the fake Slack.
    submit(&browser, "#email-test button").await;
    assert!(text_of(&browser, "#notice").await.contains(&format!("Sent a test email to {ADMIN}")));
    let mails = sink.wait_for(1).await;
    assert_eq!(mails[0].rcpt, [ADMIN]);
    assert!(mails[0].raw.contains("Countersign test message for project alpha"), "{}", mails[0].raw);
    submit(&browser, "#slack-test button").await;
    assert!(text_of(&browser, "#notice").await.contains("Posted a test message to #approvals"));
    let posts = fake.calls_to("chat.postMessage");
    let test =
        posts.iter().find(|c| c.body["text"].as_str().is_some_and(|t| t.contains("test message"))).expect("posted");
    assert_eq!(test.body["channel"], "#approvals");
    assert_eq!(test.token.as_deref(), Some(crate::slack::TOKEN));
    page_ok(&browser, "channels").await;

    // Policy: an error is shown at its line; a valid one is saved; the test form runs it.
    submit(&browser, "nav.tabs a[href$='/policy']").await;
    let bad = "[[rule]]\nname = \"small refunds\"\nmatch = { fn = \"refund*\" }\nwhen = \"args.amount <\"\naction = \"approve\"\n";
    fill(&browser, "#policy-text", bad).await;
    submit(&browser, "#policy-form button").await;
    let error = text_of(&browser, "#error").await;
    assert!(error.contains("Line 4"), "{error}");
    assert!(text_of(&browser, "#bad-line").await.contains("args.amount <"));
    page_ok(&browser, "policy-error").await;
    let good = "[[rule]]\nname = \"small refunds\"\nmatch = { fn = \"refund*\" }\nwhen = \"args.amount < 100\"\naction = \"approve\"\n";
    fill(&browser, "#policy-text", good).await;
    submit(&browser, "#policy-form button").await;
    assert!(text_of(&browser, "#notice").await.contains("Saved version 1"));
    fill(&browser, "#test-fn", "refund").await;
    fill(&browser, "#test-args", "{\"amount\": 20}").await;
    submit(&browser, "#policy-test button").await;
    let result = text_of(&browser, "#test-result").await;
    assert!(result.contains("small refunds") && result.contains("approve"), "{result}");
    page_ok(&browser, "policy").await;
    // The saved policy is the one requests meet.
    let (_, auto) = s
        .post(
            "/function_calls",
            json!({"run_id": "r", "call_id": "small", "spec": {"fn": "refund", "kwargs": {"amount": 5}}}),
        )
        .await;
    assert_eq!(auto["status"]["approved"], true, "{auto}");

    // The audit log: everything above, by the admin; a filter; and the verify button.
    submit(&browser, "nav.tabs a[href$='/audit']").await;
    let table = text_of(&browser, "#audit").await;
    for kind in [
        "key_created",
        "key_revoked",
        "person_added",
        "group_changed",
        "webhook_added",
        "webhook_redelivered",
        "connection_tested",
        "policy_set",
        "decided",
        "created",
    ] {
        assert!(table.contains(kind), "{kind} in the log: {table}");
    }
    assert!(table.contains(ADMIN));
    submit(&browser, "#verify button").await;
    let verified = text_of(&browser, "#notice").await;
    assert!(verified.starts_with("Verified: all "), "{verified}");
    page_ok(&browser, "audit").await;
    browser.goto(&format!("{base}/admin/p/alpha/audit?type=connection_tested")).await.unwrap();
    let rows = js(&browser, "return [...document.querySelectorAll('#audit tbody tr')].map(r => r.className);").await;
    assert_eq!(rows, json!(["event-connection_tested", "event-connection_tested"]));

    // An approver in the same browser is refused.
    submit(&browser, ".logout button").await;
    browser.wait().for_element(Locator::Css("#email")).await.unwrap();
    fill(&browser, "#email", "ada@example.com").await;
    fill(&browser, "#password", PASSWORD).await;
    submit(&browser, "#sign-in").await;
    browser.wait().for_element(Locator::Css("#pending")).await.unwrap();
    assert_eq!(js(&browser, "return document.querySelectorAll('a[href=\"/admin\"]').length;").await, json!(0));
    browser.goto(&format!("{base}/admin/p/alpha/keys")).await.unwrap();
    let body = text_of(&browser, "main, body").await;
    assert!(body.contains("Admins only"), "{body}");
    browser.close().await.unwrap();
}

#[tokio::test]
async fn channels_are_connected_tested_and_disconnected_from_the_admin_pages() {
    use countersign_fakes::twilio::FakeTwilio;
    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const TOKEN: &str = "twilio-admin-token";
    let fake = FakeTwilio::start().await;
    let mut settings = crate::support::loopback_webhooks();
    settings.twilio.api_base = fake.base();
    let s = TestServer::start_with(settings).await;
    let mut admin = admin_session(&s).await;
    let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
    let connect = |sid: &'static str, token: &'static str, from: &'static str| {
        [("account_sid", sid), ("auth_token", token), ("from", from), ("whatsapp_from", "")]
    };

    // Bad input, then credentials Twilio refuses: nothing stored.
    let page = admin.submit("/admin/p/alpha/channels/twilio/connect", &connect("AC123", TOKEN, "+15550001111")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("account SID is AC followed by 32"), "{}", page.body);
    let page = admin.submit("/admin/p/alpha/channels/twilio/connect", &connect(SID, TOKEN, "5550001111")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    fake.only_accept(SID, "another-token");
    let page = admin.submit("/admin/p/alpha/channels/twilio/connect", &connect(SID, TOKEN, "+15550001111")).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    assert!(page.body.contains("Twilio refused the account SID and auth token"), "{}", page.body);
    assert!(s.store.twilio_connection(&project.id).await.unwrap().is_none());
    // Accepted: stored, and the token is never shown back.
    fake.only_accept(SID, TOKEN);
    let page = admin.submit("/admin/p/alpha/channels/twilio/connect", &connect(SID, TOKEN, "+1 555 000 1111")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(!page.body.contains(TOKEN));
    let stored = s.store.twilio_connection(&project.id).await.unwrap().expect("connected");
    assert_eq!(
        (stored.account_sid.as_str(), stored.auth_token.as_str(), stored.from.as_str()),
        (SID, TOKEN, "+15550001111")
    );

    // The admin's own phone, then a test SMS to it.
    let page = admin.submit(&format!("/admin/p/alpha/people/{ADMIN}/phone"), &[("phone", "not a number")]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    let page = admin.submit(&format!("/admin/p/alpha/people/{ADMIN}/phone"), &[("phone", "+15551230009")]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(s.store.user_phone(ADMIN).await.unwrap().as_deref(), Some("+15551230009"));
    let page = admin.submit("/admin/p/alpha/channels/twilio/test", &[("to", "")]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Sent a test SMS to +15551230009"), "{}", page.body);
    let sent = fake.wait_for_sent(1, Duration::from_secs(10)).await;
    assert_eq!((sent[0].to.as_str(), sent[0].from.as_str()), ("+15551230009", "+15550001111"));
    assert_eq!(sent[0].auth_token.as_deref(), Some(TOKEN));
    assert!(sent[0].body.contains("Countersign test message for project alpha"), "{}", sent[0].body);
    // An over-long recipient is refused before anything is sent or logged.
    let long = format!("+1{}", "5".repeat(300));
    let page = admin.submit("/admin/p/alpha/channels/twilio/test", &[("to", &long)]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("longer than 254 characters"), "{}", page.body);
    let page = admin.submit("/admin/p/alpha/channels/slack/connect", &[("bot_token", &"x".repeat(300))]).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("longer than 256 characters"), "{}", page.body);
    // Email is off here: the test says so, and the failure is logged too.
    let page = admin.submit("/admin/p/alpha/channels/email/test", &[("to", "")]).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    assert!(page.body.contains("no SMTP server is configured"), "{}", page.body);
    // The project's default email address.
    let page = admin.submit("/admin/p/alpha/channels/email/connect", &[("address", "team@example.com")]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(s.store.default_email(&project.id).await.unwrap().as_deref(), Some("team@example.com"));
    // Disconnected: the credentials are gone; twice is an error.
    assert_eq!(admin.submit("/admin/p/alpha/channels/twilio/disconnect", &[]).await.status, StatusCode::OK);
    assert!(s.store.twilio_connection(&project.id).await.unwrap().is_none());
    assert_eq!(admin.submit("/admin/p/alpha/channels/twilio/disconnect", &[]).await.status, StatusCode::BAD_REQUEST);
    let page = admin.submit("/admin/p/alpha/channels/twilio/test", &[("to", "+15551230009")]).await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);

    let events = admin_events(&s, "alpha").await;
    let mine: Vec<(&str, Value)> =
        events.iter().filter(|(_, by, _)| by == ADMIN).map(|(k, _, e)| (k.as_str(), e["connection"].clone())).collect();
    let kinds: Vec<&str> = mine.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [
            "connection_set",
            "person_phone_set",
            "connection_tested",
            "connection_tested",
            "connection_set",
            "connection_removed",
            "connection_tested"
        ]
    );
    assert_eq!(
        mine[0].1,
        json!({"channel": "twilio", "detail": "account AC0123456789abcdef0123456789abcdef, from +15550001111"})
    );
    assert_eq!(mine[2].1["outcome"], "sent");
    assert!(mine[3].1["outcome"].as_str().unwrap().starts_with("failed: no SMTP server"), "{:?}", mine[3]);
    assert_eq!(mine[4].1, json!({"channel": "email", "detail": "default address team@example.com"}));
    assert!(!events.iter().any(|(_, _, e)| e.to_string().contains(TOKEN)), "no secret in the log");
}
