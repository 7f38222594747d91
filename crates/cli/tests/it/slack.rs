//! The Slack channel against a fake Slack Web API on loopback (`countersign_fakes::slack`, which
//! speaks the documented API; the server only has its `slack_api_base` changed). The tests post
//! interactions and events signed as Slack signs them, read what Countersign posted, and run
//! agents on the released Python SDK.

use crate::support::{TestServer, agent_output, approval, loopback_webhooks, python_agent, run_cli};
use countersign_core::Timestamp;
use countersign_core::route::DeliveryStatus;
use countersign_fakes::slack::{Call, Failure, FakeSlack, sign};
use countersign_server::Settings;
use countersign_server::channels::slack::SlackSettings;
use countersign_store::SlackConnection;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub(crate) const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub(crate) const TOKEN: &str = "xoxb-alpha-token";
const WAIT: Duration = Duration::from_secs(10);

/// The settings of a server whose Slack is `fake`.
pub(crate) fn settings(fake: &FakeSlack) -> Settings {
    Settings { slack: SlackSettings { api_base: fake.base() }, ..loopback_webhooks() }
}

/// A server and a fake Slack; project `alpha` is connected (signing secret [`SECRET`], bot token
/// [`TOKEN`]), with `default_channel`.
pub(crate) async fn slack_server(default_channel: Option<&str>) -> (TestServer, FakeSlack) {
    let fake = FakeSlack::start().await;
    let s = TestServer::start_with(settings(&fake)).await;
    connect(&s, "alpha", default_channel, false).await;
    (s, fake)
}

pub(crate) async fn connect(s: &TestServer, project: &str, default_channel: Option<&str>, require_known_users: bool) {
    let project = s.store.project_by_name(project).await.unwrap().unwrap();
    s.store
        .set_slack_connection(
            &SlackConnection {
                project_id: project.id,
                bot_token: TOKEN.into(),
                signing_secret: Some(SECRET.into()),
                default_channel: default_channel.map(str::to_owned),
                team_id: Some("T0FAKE".into()),
                team_name: Some("Fake Workspace".into()),
                bot_user_id: Some("UBOT".into()),
                require_known_users,
                connected_at: Timestamp::now(),
            },
            &countersign_core::event::Stamp::now("test"),
        )
        .await
        .unwrap();
}

/// A function call addressed to a Slack channel.
pub(crate) fn slacked(call_id: &str, slack: Value) -> Value {
    json!({"run_id": "run-7", "call_id": call_id, "spec": {
        "fn": "refund", "kwargs": {"customer": "acme", "amount": 120},
        "channel": {"slack": slack},
        "reject_options": [{"name": "later", "title": "Not now", "prompt_fill": "try again tomorrow"}]
    }})
}

fn now_secs() -> i64 {
    Timestamp::now().as_micros() / 1_000_000
}

/// Percent-encodes a form value.
fn form_value(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Posts `body` to `path` signed with `secret` at `timestamp`, as Slack does.
pub(crate) async fn signed(
    s: &TestServer,
    path: &str,
    body: &str,
    content_type: &str,
    secret: &str,
    timestamp: i64,
) -> (StatusCode, String) {
    let response = s
        .http
        .post(s.root(path))
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", timestamp.to_string())
        .header("x-slack-signature", sign(secret, timestamp, body))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Posts an interaction payload, signed with [`SECRET`] now.
pub(crate) async fn interact(s: &TestServer, payload: &Value) -> (StatusCode, String) {
    let body = format!("payload={}", form_value(&payload.to_string()));
    signed(s, "/slack/interactions", &body, "application/x-www-form-urlencoded", SECRET, now_secs()).await
}

/// Every interactive element of posted blocks.
fn elements(blocks: &Value) -> Vec<Value> {
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// A click on the element whose action_id starts with `action` on the message `posted` (a
/// recorded chat.postMessage), by `user`.
pub(crate) fn click(posted: &Call, action: &str, user: &str) -> Value {
    let channel = posted.answered["channel"].as_str().unwrap();
    let ts = posted.answered["ts"].as_str().unwrap();
    let element = elements(&posted.body["blocks"])
        .into_iter()
        .find(|e| e["action_id"].as_str().is_some_and(|a| a.starts_with(action)))
        .unwrap_or_else(|| panic!("no {action} element in {}", posted.body["blocks"]));
    static CLICKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CLICKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut act = json!({"action_id": element["action_id"], "block_id": "cs_actions", "type": element["type"],
        "action_ts": format!("1700000000.{n:06}")});
    if let Some(value) = element.get("value") {
        act["value"] = value.clone();
    }
    json!({"type": "block_actions", "user": {"id": user, "team_id": "T0FAKE", "username": "someone"},
        "team": {"id": "T0FAKE", "domain": "fake"}, "api_app_id": "A0FAKE",
        "trigger_id": format!("trigger-{user}-{n}"),
        "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": false},
        "channel": {"id": channel, "name": "agents"}, "message": {"ts": ts, "blocks": posted.body["blocks"]},
        "actions": [act]})
}

/// Waits until the posted message is recorded (a click on it finds its request from then on;
/// Slack users cannot click before Slack has answered the post).
pub(crate) async fn recorded(s: &TestServer, posted: &Call) {
    let deadline = Instant::now() + WAIT;
    let (channel, ts) = (posted.answered["channel"].as_str().unwrap(), posted.answered["ts"].as_str().unwrap());
    while s.store.slack_message_at(channel, ts).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the message {ts} was never recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A select's choice of option `index` on the message `posted`.
fn select(posted: &Call, index: usize, user: &str) -> Value {
    let mut payload = click(posted, "cs_option_select", user);
    payload["actions"][0]["selected_option"] =
        json!({"text": {"type": "plain_text", "text": "x"}, "value": index.to_string()});
    payload
}

/// The submission of the modal opened by `opened` (a recorded views.open) with `text`.
pub(crate) fn submission(opened: &Call, text: &str, user: &str) -> Value {
    let view = &opened.body["view"];
    json!({"type": "view_submission", "user": {"id": user, "team_id": "T0FAKE"}, "team": {"id": "T0FAKE"},
        "view": {"id": "V1", "type": "modal", "callback_id": view["callback_id"],
            "private_metadata": view["private_metadata"],
            "state": {"values": {"cs_input": {"text": {"type": "plain_text_input", "value": text}}}}}})
}

/// Waits until `check` holds for the request `call_id` (GET as the agent sees it).
pub(crate) async fn wait_until(s: &TestServer, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, got) = s.get(path).await;
        if check(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{path} never got there: {got}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The chat.update calls of the message `posted`.
fn updates_of(fake: &FakeSlack, posted: &Call) -> Vec<Call> {
    fake.calls_to("chat.update")
        .into_iter()
        .filter(|c| c.body["ts"] == posted.answered["ts"] && c.body["channel"] == posted.answered["channel"])
        .collect()
}

/// Waits for an update of `posted` whose blocks satisfy `check`.
async fn wait_update(fake: &FakeSlack, posted: &Call, check: impl Fn(&Value) -> bool) -> Call {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(c) = updates_of(fake, posted).into_iter().rev().find(|c| check(&c.body["blocks"])) {
            return c;
        }
        assert!(Instant::now() < deadline, "no such update of {}: {:?}", posted.answered, updates_of(fake, posted));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for an ephemeral message to `user` and returns its text.
async fn ephemeral_to(fake: &FakeSlack, user: &str, n: usize) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let to: Vec<Call> =
            fake.calls_to("chat.postEphemeral").into_iter().filter(|c| c.body["user"] == user).collect();
        if to.len() >= n {
            return to[n - 1].body["text"].as_str().unwrap_or_default().to_owned();
        }
        assert!(Instant::now() < deadline, "no ephemeral message to {user}: {:?}", fake.calls());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text_of(blocks: &Value) -> String {
    blocks.to_string()
}

/// The blocks of a message or a view pass the released `slack_sdk` Block Kit models.
pub(crate) fn assert_valid_block_kit(doc: &Value) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var_os("COUNTERSIGN_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("compat/python/.venv/bin/python"));
    assert!(python.exists(), "no Python with slack_sdk at {}: run scripts/compat-venv", python.display());
    let mut child = std::process::Command::new(python)
        .arg(root.join("compat/python/validate_blocks.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(doc.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "slack_sdk refuses {doc}: {}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test]
async fn an_approval_is_posted_decided_by_a_click_and_the_message_shows_the_outcome() {
    let (s, fake) = slack_server(None).await;
    fake.add_user("UADA", "T0FAKE", Some("ada@example.com"));
    let ada = s.person("ada@example.com", "correct horse battery", &["alpha"]).await;
    s.post("/function_calls", slacked("c1", json!({"channel_or_user_id": "C0AGENTS"}))).await;
    let posted = fake.wait_for("chat.postMessage", 1, WAIT).await.remove(0);
    assert_eq!(posted.token.as_deref(), Some(TOKEN));
    assert_eq!(posted.body["channel"], "C0AGENTS");
    let shown = text_of(&posted.body["blocks"]);
    assert!(shown.contains("refund") && shown.contains("run-7") && shown.contains("\\\"amount\\\": 120"), "{shown}");
    assert_valid_block_kit(&json!({"blocks": posted.body["blocks"]}));
    let ids: Vec<String> =
        elements(&posted.body["blocks"]).iter().map(|e| e["action_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, ["cs_approve", "cs_reject", "cs_reject_option:0", "cs_claim"]);
    // The message is recorded with the request.
    recorded(&s, &posted).await;
    let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
    let messages =
        s.store.slack_messages_of(&project.id, countersign_core::RequestKind::FunctionCall, "c1").await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].ts, posted.answered["ts"].as_str().unwrap());

    let (status, _) = interact(&s, &click(&posted, "cs_approve", "UADA")).await;
    assert_eq!(status, StatusCode::OK);
    let fc = wait_until(&s, "/function_calls/c1", |fc| fc["status"]["approved"] == true).await;
    assert_eq!(
        fc["status"]["user_info"],
        json!({"channel": "slack", "user_id": ada, "email": "ada@example.com", "slack_user_id": "UADA", "slack_team_id": "T0FAKE"})
    );
    let updated = wait_update(&fake, &posted, |b| elements(b).is_empty()).await;
    let shown = text_of(&updated.body["blocks"]);
    assert!(shown.contains("Approved") && shown.contains("<@UADA>"), "{shown}");
    assert_valid_block_kit(&json!({"blocks": updated.body["blocks"]}));

    // A later click changes nothing and says who decided.
    interact(&s, &click(&posted, "cs_reject", "UBOB")).await;
    let told = ephemeral_to(&fake, "UBOB", 1).await;
    assert!(told.contains("already approved by <@UADA>"), "{told}");
    assert!(fake.calls_to("views.open").is_empty(), "no modal for a decided request");
    assert_eq!(s.get("/function_calls/c1").await.1["status"]["approved"], true);
}

#[tokio::test]
async fn reject_opens_a_modal_prefilled_with_the_options_text_and_the_submission_decides() {
    let (s, fake) = slack_server(Some("C0DEFAULT")).await;
    // No channel named: the project's default channel.
    let mut body = approval("c2");
    body["spec"]["reject_options"] =
        json!([{"name": "later", "title": "Not now", "prompt_fill": "try again tomorrow"}]);
    s.post("/function_calls", body).await;
    let posted = fake.wait_for("chat.postMessage", 1, WAIT).await.remove(0);
    assert_eq!(posted.body["channel"], "C0DEFAULT");
    interact(&s, &click(&posted, "cs_reject_option", "UADA")).await;
    let opened = fake.wait_for("views.open", 1, WAIT).await.remove(0);
    assert!(opened.body["trigger_id"].as_str().unwrap().starts_with("trigger-UADA"));
    assert_valid_block_kit(&json!({"view": opened.body["view"]}));
    assert!(opened.body["view"].to_string().contains("try again tomorrow"), "{}", opened.body["view"]);
    // An empty rejection without an option is refused inside the modal.
    interact(&s, &click(&posted, "cs_reject", "UADA")).await;
    let plain = fake.wait_for("views.open", 2, WAIT).await.remove(1);
    let (status, answer) = interact(&s, &submission(&plain, "  ", "UADA")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(answer.contains("\"response_action\":\"errors\""), "{answer}");
    assert_eq!(s.get("/function_calls/c2").await.1["status"]["approved"], Value::Null);
    // The option's modal, edited.
    let (status, answer) = interact(&s, &submission(&opened, "try again on Monday", "UADA")).await;
    assert_eq!((status, answer.as_str()), (StatusCode::OK, ""));
    let (_, fc) = s.get("/function_calls/c2").await;
    assert_eq!(fc["status"]["approved"], false);
    assert_eq!(fc["status"]["comment"], "try again on Monday");
    assert_eq!(fc["status"]["reject_option_name"], "later");
    let updated = wait_update(&fake, &posted, |b| elements(b).is_empty()).await;
    assert!(text_of(&updated.body["blocks"]).contains("try again on Monday"));
    // The modal submitted again (a second tab) shows the decision instead.
    let (_, answer) = interact(&s, &submission(&plain, "no", "UADA")).await;
    assert!(answer.contains("already rejected"), "{answer}");
}

#[tokio::test]
async fn questions_are_answered_by_option_modal_or_thread_reply() {
    let (s, fake) = slack_server(None).await;
    let ask = |call_id: &str, options: Value| {
        json!({"run_id": "run-q", "call_id": call_id, "spec": {"msg": "Which color for the logo?",
            "channel": {"slack": {"channel_or_user_id": "C0Q"}}, "response_options": options}})
    };
    let options = json!([{"name": "blue", "title": "Blue", "prompt_fill": "blue, like the sky"},
        {"name": "other", "title": "Something else", "interactive": true, "prompt_fill": "I'd like "}]);
    s.post("/human_contacts", ask("q1", options.clone())).await;
    s.post("/human_contacts", ask("q2", options)).await;
    s.post("/human_contacts", ask("q3", json!([]))).await;
    let posted = fake.wait_for("chat.postMessage", 3, WAIT).await;
    let of = |call_id: &str| {
        posted
            .iter()
            .find(|p| p.body["blocks"].to_string().contains(call_id))
            .cloned()
            .unwrap_or_else(|| panic!("{call_id} not posted"))
    };
    let (q1, q2, q3) = (of("q1"), of("q2"), of("q3"));
    recorded(&s, &q3).await;
    assert_valid_block_kit(&json!({"blocks": q1.body["blocks"]}));
    // A plain option answers at once.
    interact(&s, &click(&q1, "cs_respond_option:0", "UADA")).await;
    let hc = wait_until(&s, "/contact_requests/q1", |hc| !hc["status"]["response"].is_null()).await;
    assert_eq!(hc["status"]["response"], "blue, like the sky");
    assert_eq!(hc["status"]["response_option_name"], "blue");
    // An interactive option opens a modal pre-filled with its text.
    interact(&s, &click(&q2, "cs_respond_option:1", "UADA")).await;
    let opened = fake.wait_for("views.open", 1, WAIT).await.remove(0);
    assert!(opened.body["view"].to_string().contains("I'd like "));
    assert_valid_block_kit(&json!({"view": opened.body["view"]}));
    interact(&s, &submission(&opened, "I'd like green", "UADA")).await;
    let (_, hc) = s.get("/contact_requests/q2").await;
    assert_eq!(hc["status"]["response"], "I'd like green");
    assert_eq!(hc["status"]["response_option_name"], "other");
    // A reply in the thread answers; the bot's own messages and other threads do not.
    let event = |user: &str, text: &str, thread: &Value, extra: Value| {
        let mut e = json!({"type": "message", "channel": q3.answered["channel"], "user": user, "text": text,
            "ts": "1700000099.000001", "thread_ts": thread, "team": "T0FAKE"});
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        json!({"token": "x", "team_id": "T0FAKE", "api_app_id": "A0FAKE", "type": "event_callback",
            "event_id": format!("Ev{user}{}", text.len()), "event_time": now_secs(), "event": e})
    };
    let server = &s;
    let send = |payload: Value| {
        let body = payload.to_string();
        async move { signed(server, "/slack/events", &body, "application/json", SECRET, now_secs()).await }
    };
    assert_eq!(
        send(event("UBOT", "I am the bot", &q3.answered["ts"], json!({"bot_id": "B0FAKE"}))).await.0,
        StatusCode::OK
    );
    assert_eq!(send(event("UADA", "elsewhere", &json!("1600000000.000001"), json!({}))).await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.get("/contact_requests/q3").await.1["status"]["response"], Value::Null);
    assert_eq!(send(event("UADA", "green, obviously", &q3.answered["ts"], json!({}))).await.0, StatusCode::OK);
    let hc = wait_until(&s, "/contact_requests/q3", |hc| !hc["status"]["response"].is_null()).await;
    assert_eq!(hc["status"]["response"], "green, obviously");
    assert_eq!(hc["status"]["user_info"]["slack_user_id"], "UADA");
    wait_update(&fake, &q3, |b| elements(b).is_empty() && b.to_string().contains("green, obviously")).await;
}

#[tokio::test]
async fn a_decision_in_the_web_inbox_updates_the_slack_message() {
    let (s, fake) = slack_server(None).await;
    s.post("/function_calls", slacked("c3", json!({"channel_or_user_id": "UADA"}))).await;
    let posted = fake.wait_for("chat.postMessage", 1, WAIT).await.remove(0);
    assert_eq!(posted.answered["channel"], "DADA", "a user id is a DM");
    let mut browser = crate::web::signed_in(&s, "bob@example.com", &["alpha"]).await;
    browser.get("/r/alpha/approval/c3").await;
    let page = browser.submit("/r/alpha/approval/c3/reject", &[("comment", "not this week")]).await;
    assert!(page.status.is_success() || page.status.is_redirection(), "{}", page.body);
    assert_eq!(s.get("/function_calls/c3").await.1["status"]["approved"], false);
    let updated = wait_update(&fake, &posted, |b| elements(b).is_empty()).await;
    assert_eq!(updated.body["channel"], "DADA");
    let shown = text_of(&updated.body["blocks"]);
    assert!(
        shown.contains("Rejected") && shown.contains("bob@example.com") && shown.contains("not this week"),
        "{shown}"
    );
}

#[tokio::test]
async fn only_allowed_responders_and_known_people_decide() {
    let (s, fake) = slack_server(None).await;
    fake.add_user("UEVE", "T0FAKE", Some("eve@example.com"));
    fake.add_user("UADA", "T0FAKE", Some("ada@example.com"));
    s.post("/function_calls", slacked("c4", json!({"channel_or_user_id": "C1", "allowed_responder_ids": ["UADA"]})))
        .await;
    let posted = fake.wait_for("chat.postMessage", 1, WAIT).await.remove(0);
    interact(&s, &click(&posted, "cs_approve", "UEVE")).await;
    let told = ephemeral_to(&fake, "UEVE", 1).await;
    assert!(told.contains("not allowed to decide"), "{told}");
    interact(&s, &click(&posted, "cs_reject", "UEVE")).await;
    ephemeral_to(&fake, "UEVE", 2).await;
    assert!(fake.calls_to("views.open").is_empty());
    assert_eq!(s.get("/function_calls/c4").await.1["status"]["approved"], Value::Null);
    // With --require-known-users, an allowed Slack user who is no Countersign person is refused too.
    connect(&s, "alpha", None, true).await;
    interact(&s, &click(&posted, "cs_approve", "UADA")).await;
    let told = ephemeral_to(&fake, "UADA", 1).await;
    assert!(told.contains("ada@example.com") && told.contains("countersign users create"), "{told}");
    assert_eq!(s.get("/function_calls/c4").await.1["status"]["approved"], Value::Null);
    s.person("ada@example.com", "correct horse battery", &["alpha"]).await;
    interact(&s, &click(&posted, "cs_approve", "UADA")).await;
    let fc = wait_until(&s, "/function_calls/c4", |fc| fc["status"]["approved"] == true).await;
    assert!(fc["status"]["user_info"]["user_id"].is_string());
}

#[tokio::test]
async fn forged_stale_replayed_and_unsigned_requests_change_nothing() {
    let (s, fake) = slack_server(None).await;
    s.post("/function_calls", slacked("c5", json!({"channel_or_user_id": "C1"}))).await;
    let posted = fake.wait_for("chat.postMessage", 1, WAIT).await.remove(0);
    let body = format!("payload={}", form_value(&click(&posted, "cs_approve", "UADA").to_string()));
    let form = "application/x-www-form-urlencoded";
    let (forged, _) = signed(&s, "/slack/interactions", &body, form, "not the secret", now_secs()).await;
    let (stale, why) = signed(&s, "/slack/interactions", &body, form, SECRET, now_secs() - 301).await;
    let (future, _) = signed(&s, "/slack/interactions", &body, form, SECRET, now_secs() + 301).await;
    // A timestamp at the end of i64 is stale too, not an arithmetic overflow (found by fuzzing).
    let (extreme, _) = signed(&s, "/slack/interactions", &body, form, SECRET, i64::MIN).await;
    assert_eq!([forged, stale, future, extreme], [StatusCode::UNAUTHORIZED; 4]);
    assert!(why.contains("5 minutes"), "{why}");
    let unsigned = s
        .http
        .post(s.root("/slack/interactions"))
        .header("content-type", form)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let garbage = signed(&s, "/slack/interactions", "payload=%7Bnot json", form, SECRET, now_secs()).await;
    assert_eq!(garbage.0, StatusCode::UNAUTHORIZED);
    // A payload nested deeper than max_json_depth is refused before any parser recurses into it.
    let deep = format!("payload={}", form_value(&format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))));
    let (status, why) = signed(&s, "/slack/interactions", &deep, form, SECRET, now_secs()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{why}");
    assert!(why.contains("max_json_depth"), "{why}");
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let (status, _) = signed(&s, "/slack/events", &deep, "application/json", SECRET, now_secs()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let huge = format!("payload={}", "x".repeat(2 << 20));
    let (status, _) = signed(&s, "/slack/interactions", &huge, form, SECRET, now_secs()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "inbound Slack bodies are capped at 1 MiB");
    let events = signed(
        &s,
        "/slack/events",
        r#"{"type":"url_verification","challenge":"abc"}"#,
        "application/json",
        "nope",
        now_secs(),
    )
    .await;
    assert_eq!(events.0, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.get("/function_calls/c5").await.1["status"]["approved"], Value::Null);
    assert!(fake.calls_to("chat.postEphemeral").is_empty() && fake.calls_to("users.info").is_empty());
    // The genuine request works once; the same bytes again (a replay) are refused.
    let ts = now_secs();
    assert_eq!(signed(&s, "/slack/interactions", &body, form, SECRET, ts).await.0, StatusCode::OK);
    assert_eq!(signed(&s, "/slack/interactions", &body, form, SECRET, ts).await.0, StatusCode::UNAUTHORIZED);
    wait_until(&s, "/function_calls/c5", |fc| fc["status"]["approved"] == true).await;
    // The URL verification challenge.
    let (status, answer) = signed(
        &s,
        "/slack/events",
        r#"{"token":"t","type":"url_verification","challenge":"3eZbrw1a"}"#,
        "application/json",
        SECRET,
        now_secs(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&answer).unwrap()["challenge"], "3eZbrw1a");
}

#[tokio::test]
async fn rate_limits_are_waited_out_and_permanent_errors_fail_the_delivery_only() {
    let (s, fake) = slack_server(None).await;
    fake.fail_next("chat.postMessage", Failure::RateLimited { retry_after_secs: 1 });
    let started = Instant::now();
    s.post("/function_calls", slacked("c6", json!({"channel_or_user_id": "C1"}))).await;
    let calls = fake.wait_for("chat.postMessage", 2, WAIT).await;
    assert!(calls[1].at - calls[0].at >= Duration::from_millis(900), "Retry-After is honoured");
    assert!(started.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posts = fake.calls_to("chat.postMessage");
    assert_eq!(posts.iter().filter(|c| c.answered["ok"] == true).count(), 1, "posted once: {posts:?}");
    // channel_not_found: failed for good, with Slack's error; the request is still decidable.
    fake.fail_next("chat.postMessage", Failure::Error("channel_not_found".into()));
    s.post("/function_calls", slacked("c7", json!({"channel_or_user_id": "CGONE"}))).await;
    let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
    let deadline = Instant::now() + WAIT;
    let failed = loop {
        let deliveries = s
            .store
            .deliveries_of(
                countersign_core::route::Channel::Slack,
                &project.id,
                countersign_core::RequestKind::FunctionCall,
                "c7",
            )
            .await
            .unwrap();
        if let Some(d) = deliveries.into_iter().find(|d| d.status == DeliveryStatus::Failed) {
            break d;
        }
        assert!(Instant::now() < deadline, "the delivery did not fail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(failed.last_error.as_deref().unwrap().contains("channel_not_found"), "{failed:?}");
    assert_eq!(failed.attempts, 1, "no retries of a permanent error");
    let (status, _) = s.post("/agent/function_calls/c7/respond", json!({"approved": true})).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn posts_to_one_channel_are_paced_to_one_per_second() {
    let (s, fake) = slack_server(None).await;
    for i in 0..3 {
        s.post("/function_calls", slacked(&format!("p{i}"), json!({"channel_or_user_id": "CBUSY"}))).await;
    }
    s.post("/function_calls", slacked("other", json!({"channel_or_user_id": "COTHER"}))).await;
    let calls = fake.wait_for("chat.postMessage", 4, WAIT).await;
    let busy: Vec<Instant> = calls.iter().filter(|c| c.body["channel"] == "CBUSY").map(|c| c.at).collect();
    assert_eq!(busy.len(), 3);
    for pair in busy.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(950), "{:?}", pair[1] - pair[0]);
    }
    let other = calls.iter().find(|c| c.body["channel"] == "COTHER").unwrap().at;
    assert!(other < busy[2], "another channel does not wait for a busy one");
}

#[tokio::test]
async fn claims_show_on_the_message_and_escalations_post_in_the_thread_and_to_the_new_target() {
    let (s, fake) = slack_server(None).await;
    s.post("/function_calls", slacked("c8", json!({"channel_or_user_id": "C1", "thread_ts": "1690000000.000100"})))
        .await;
    let posted = fake.wait_for("chat.postMessage", 1, WAIT).await.remove(0);
    assert_eq!(posted.body["thread_ts"], "1690000000.000100");
    // The claim updates the message, which it finds once recorded (seen in CI under load: a
    // click that came first left nothing to update).
    recorded(&s, &posted).await;
    interact(&s, &click(&posted, "cs_claim", "UADA")).await;
    let claimed = wait_update(&fake, &posted, |b| b.to_string().contains("<@UADA> is looking")).await;
    assert!(!elements(&claimed.body["blocks"]).is_empty(), "still decidable after a claim");
    let mut browser = crate::web::signed_in(&s, "bob@example.com", &["alpha"]).await;
    let page = browser.get("/r/alpha/approval/c8").await;
    assert!(page.body.contains("Looking at it") && page.body.contains("Slack user UADA via slack"), "{}", page.body);
    let escalation = json!({"escalation_msg": "still waiting", "channel": {"slack": {"channel_or_user_id": "C0LEAD"}}});
    let (status, _) = s.post("/agent/function_calls/c8/escalate_email", escalation).await;
    assert_eq!(status, StatusCode::OK);
    let calls = fake.wait_for("chat.postMessage", 3, WAIT).await;
    let reply = calls
        .iter()
        .find(|c| c.body["channel"] == "C1" && c.body.to_string().contains("still waiting"))
        .expect("a thread reply");
    assert_eq!(reply.body["thread_ts"], "1690000000.000100", "in the original thread");
    let lead = calls.iter().find(|c| c.body["channel"] == "C0LEAD").expect("posted to the escalation's target");
    assert_eq!(elements(&lead.body["blocks"]).len(), 4, "with its buttons");
    // A click on the new message decides; both messages show it.
    recorded(&s, lead).await;
    interact(&s, &click(lead, "cs_approve", "ULEAD")).await;
    wait_until(&s, "/function_calls/c8", |fc| fc["status"]["approved"] == true).await;
    wait_update(&fake, &posted, |b| elements(b).is_empty()).await;
    wait_update(&fake, lead, |b| elements(b).is_empty()).await;
}

#[tokio::test]
async fn many_reject_options_become_a_select() {
    let (s, fake) = slack_server(None).await;
    let options: Vec<Value> = (0..8)
        .map(
            |i| json!({"name": format!("o{i}"), "title": format!("Reason {i}"), "prompt_fill": format!("because {i}")}),
        )
        .collect();
    let mut body = slacked("c9", json!({"channel_or_user_id": "C1"}));
    body["spec"]["reject_options"] = json!(options);
    body["spec"]["kwargs"] = json!({"blob": "x".repeat(20_000)});
    s.post("/function_calls", body).await;
    let posted = fake.wait_for("chat.postMessage", 1, WAIT).await.remove(0);
    assert_valid_block_kit(&json!({"blocks": posted.body["blocks"]}));
    assert!(posted.body["blocks"].to_string().contains("/r/alpha/approval/c9"), "a link to the full request");
    recorded(&s, &posted).await;
    interact(&s, &select(&posted, 6, "UADA")).await;
    let opened = fake.wait_for("views.open", 1, WAIT).await.remove(0);
    assert!(opened.body["view"].to_string().contains("because 6"));
    interact(&s, &submission(&opened, "because 6", "UADA")).await;
    let (_, fc) = s.get("/function_calls/c9").await;
    assert_eq!(fc["status"]["reject_option_name"], "o6");
}

const AGENT: &str = r#"
import sys
from humanlayer import HumanLayer, ContactChannel, SlackContactChannel, ResponseOption
hl = HumanLayer(verbose=False)
ops = ContactChannel(slack=SlackContactChannel(channel_or_user_id="C0OPS", context_about_channel_or_user="the ops channel"))
@hl.require_approval(contact_channel=ops, reject_options=[ResponseOption(name="later", title="Not now", prompt_fill="try again tomorrow")])
def refund(customer: str, amount: int) -> str:
    return f"refunded {amount} to {customer}"
print(refund(customer=sys.argv[1], amount=120), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_on_the_python_sdk_run_when_approved_in_slack_and_hear_the_rejection() {
    let (s, fake) = slack_server(None).await;
    let agent = python_agent(&s, AGENT, "acme");
    let posted = fake.wait_for("chat.postMessage", 1, Duration::from_secs(30)).await.remove(0);
    assert_eq!(posted.body["channel"], "C0OPS");
    interact(&s, &click(&posted, "cs_approve", "UADA")).await;
    assert_eq!(agent_output(agent).await, "refunded 120 to acme");

    let agent = python_agent(&s, AGENT, "globex");
    let posted = fake.wait_for("chat.postMessage", 2, Duration::from_secs(30)).await.remove(1);
    interact(&s, &click(&posted, "cs_reject_option", "UADA")).await;
    let opened = fake.wait_for("views.open", 1, WAIT).await.remove(0);
    interact(&s, &submission(&opened, "try again tomorrow, after the audit", "UADA")).await;
    assert_eq!(
        agent_output(agent).await,
        "User in the ops channel denied refund with message: try again tomorrow, after the audit"
    );
}

const ASKING_AGENT: &str = r#"
import sys
from humanlayer import HumanLayer, ContactChannel, SlackContactChannel
hl = HumanLayer(verbose=False)
ops = ContactChannel(slack=SlackContactChannel(channel_or_user_id="C0OPS", context_about_channel_or_user="the ops channel"))
ask = hl.human_as_tool(contact_channel=ops)
print(ask(sys.argv[1]), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_the_python_sdk_gets_the_answer_given_in_the_thread() {
    let (s, fake) = slack_server(None).await;
    let agent = python_agent(&s, ASKING_AGENT, "Which region should I deploy to?");
    let posted = fake.wait_for("chat.postMessage", 1, Duration::from_secs(30)).await.remove(0);
    assert!(posted.body["blocks"].to_string().contains("Which region"));
    recorded(&s, &posted).await; // a thread reply finds its request by the recorded message
    let event = json!({"type": "event_callback", "team_id": "T0FAKE", "event": {"type": "message",
        "channel": posted.answered["channel"], "user": "UADA", "text": "eu-west-1, please",
        "ts": "1700000123.000001", "thread_ts": posted.answered["ts"]}});
    let (status, _) = signed(&s, "/slack/events", &event.to_string(), "application/json", SECRET, now_secs()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(agent_output(agent).await, "eu-west-1, please");
}

/// Two instances on one PostgreSQL: the message is posted once, and a click reaching either
/// decides.
#[tokio::test]
async fn with_two_instances_a_click_on_either_decides_and_the_post_goes_out_once() {
    if !crate::support::on_postgres() {
        return;
    }
    let fake = FakeSlack::start().await;
    let a = TestServer::start_with(settings(&fake)).await;
    connect(&a, "alpha", None, false).await;
    let b = a.another_instance_with(settings(&fake)).await;
    a.post("/function_calls", slacked("m1", json!({"channel_or_user_id": "C1"}))).await;
    b.post("/function_calls", slacked("m2", json!({"channel_or_user_id": "C1"}))).await;
    let posted = fake.wait_for("chat.postMessage", 2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.calls_to("chat.postMessage").len(), 2, "each request posted once");
    let of = |id: &str| posted.iter().find(|p| p.body["blocks"].to_string().contains(id)).unwrap().clone();
    interact(&b, &click(&of("m1"), "cs_approve", "UADA")).await;
    interact(&a, &click(&of("m2"), "cs_approve", "UADA")).await;
    wait_until(&a, "/function_calls/m1", |fc| fc["status"]["approved"] == true).await;
    wait_until(&b, "/function_calls/m2", |fc| fc["status"]["approved"] == true).await;
    wait_update(&fake, &of("m1"), |b| elements(b).is_empty()).await;
    wait_update(&fake, &of("m2"), |b| elements(b).is_empty()).await;
}

/// Runs the binary on the data directory `dir` with these environment variables and standard input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_connect_status_disconnect_and_manifest_from_the_cli() {
    let fake = FakeSlack::start().await;
    let base = fake.base();
    let env = [("COUNTERSIGN_SLACK_API_BASE", base.as_str())];
    let dir = crate::binary::fresh_dir().await;
    let dir = dir.path();
    let both = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    assert!(run_cli(dir, &["keys", "create", "--project", "ops"], &[], "").status.success());
    // The token and secret from standard input; the token is checked with auth.test.
    let out = run_cli(
        dir,
        &[
            "slack",
            "connect",
            "--project",
            "ops",
            "--bot-token-stdin",
            "--signing-secret-stdin",
            "--default-channel",
            "C0OPS",
        ],
        &env,
        "xoxb-from-stdin\nsigning-from-stdin\n",
    );
    assert!(out.status.success(), "{}", both(&out));
    let text = both(&out);
    assert!(
        text.contains("Fake Workspace") && text.contains("C0OPS") && text.contains("Signing secret:  set"),
        "{text}"
    );
    assert!(
        !text.contains("xoxb-from-stdin") && !text.contains("signing-from-stdin"),
        "secrets are never shown: {text}"
    );
    assert_eq!(fake.calls_to("auth.test").last().unwrap().token.as_deref(), Some("xoxb-from-stdin"));
    // From the environment too.
    let out = run_cli(
        dir,
        &["slack", "connect", "--project", "ops", "--json"],
        &[env[0], ("COUNTERSIGN_SLACK_BOT_TOKEN", "xoxb-from-env"), ("COUNTERSIGN_SLACK_SIGNING_SECRET", "from-env")],
        "",
    );
    assert!(out.status.success(), "{}", both(&out));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["team_id"], "T0FAKE");
    assert_eq!(shown["default_channel"], Value::Null, "connecting again replaces the connection");
    assert!(!both(&out).contains("xoxb-from-env") && !both(&out).contains("from-env\""));
    let status = run_cli(dir, &["slack", "status", "--project", "ops", "--json"], &env, "");
    assert!(status.status.success(), "{}", both(&status));
    let shown: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!((shown["team"].as_str(), shown["bot_user_id"].as_str()), (Some("Fake Workspace"), Some("UBOT")));
    assert_eq!((shown["signing_secret_set"].as_bool(), shown["token_ok"].as_bool()), (Some(true), Some(true)));
    assert!(!both(&status).contains("xoxb-from-env"));
    // A token Slack refuses: status says so and exits 1; connect refuses it (nothing stored changes).
    fake.revoke_token("xoxb-from-env");
    let status = run_cli(dir, &["slack", "status", "--project", "ops"], &env, "");
    assert_eq!(status.status.code(), Some(1));
    assert!(both(&status).contains("invalid_auth"), "{}", both(&status));
    let refused = run_cli(dir, &["slack", "connect", "--project", "ops", "--bot-token", "xoxb-from-env"], &env, "");
    assert_eq!(refused.status.code(), Some(1));
    assert!(both(&refused).contains("Slack refused the bot token"), "{}", both(&refused));
    let not_bot = run_cli(dir, &["slack", "connect", "--project", "ops", "--bot-token", "xoxp-user"], &env, "");
    assert_eq!(not_bot.status.code(), Some(2), "{}", both(&not_bot));
    let missing = run_cli(dir, &["slack", "connect", "--project", "ops"], &env, "");
    assert_eq!(missing.status.code(), Some(2), "{}", both(&missing));
    let unknown = run_cli(dir, &["slack", "status", "--project", "nope"], &env, "");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(both(&unknown).contains("keys create --project"));
    // Disconnect.
    let out = run_cli(dir, &["slack", "disconnect", "--project", "ops"], &env, "");
    assert!(out.status.success() && both(&out).contains("disconnected"), "{}", both(&out));
    let status = run_cli(dir, &["slack", "status", "--project", "ops"], &env, "");
    assert_eq!(status.status.code(), Some(1));
    assert!(both(&status).contains("not connected"), "{}", both(&status));
    // The manifest: valid JSON with both request URLs and the scopes.
    let out = run_cli(dir, &["slack", "manifest", "--public-url", "https://cs.example.com/"], &[], "");
    assert!(out.status.success());
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["settings"]["interactivity"]["request_url"], "https://cs.example.com/slack/interactions");
    assert_eq!(manifest["settings"]["event_subscriptions"]["request_url"], "https://cs.example.com/slack/events");
    let scopes = manifest["oauth_config"]["scopes"]["bot"].to_string();
    for scope in ["chat:write", "users:read.email", "channels:history"] {
        assert!(scopes.contains(scope), "{scopes}");
    }
    let help = run_cli(dir, &["slack", "--help"], &[], "");
    assert!(both(&help).contains("manifest") && both(&help).contains("api.slack.com/apps"), "{}", both(&help));
}

/// A server killed right after a request addressed to Slack was acknowledged posts it after the
/// restart, once: the post was queued in the create's own transaction (while Slack was
/// unreachable, so nothing could have been posted before the kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_after_the_create_posts_to_slack_after_restart() {
    use crate::binary::{Served, fresh_dir};
    let fake = FakeSlack::start().await;
    let dir = fresh_dir().await;
    let base = fake.base();
    let key =
        String::from_utf8(run_cli(dir.path(), &["keys", "create", "--project", "crash"], &[], "").stdout).unwrap();
    let key = key.lines().last().unwrap().to_owned();
    let connect = ["slack", "connect", "--project", "crash", "--bot-token", TOKEN, "--signing-secret", SECRET];
    assert!(run_cli(dir.path(), &connect, &[("COUNTERSIGN_SLACK_API_BASE", base.as_str())], "").status.success());
    let dead = format!(
        "http://127.0.0.1:{}/api",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let mut server = Served::start_with(
        dir.path(),
        &[("COUNTERSIGN_SLACK_API_BASE", dead.as_str())],
        std::process::Stdio::inherit(),
    );
    let http = crate::support::client();
    let create = http
        .post(server.url("/humanlayer/v1/function_calls"))
        .bearer_auth(&key)
        .json(&slacked("k1", json!({"channel_or_user_id": "C0CRASH"})));
    assert_eq!(create.send().await.unwrap().status(), StatusCode::OK);
    server.child.kill().unwrap(); // SIGKILL right after the create was acknowledged
    server.child.wait().unwrap();
    assert!(fake.calls_to("chat.postMessage").is_empty());

    let server = Served::start_with(
        dir.path(),
        &[("COUNTERSIGN_SLACK_API_BASE", base.as_str())],
        std::process::Stdio::inherit(),
    );
    // A first attempt the killed server made (refused: nothing listened) is retried about 5 s
    // later; one it was in the middle of when killed waits for its claim (60 s) to lapse.
    let posted = fake.wait_for("chat.postMessage", 1, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.calls_to("chat.postMessage").len(), 1, "posted once: {posted:?}");
    assert_eq!(posted[0].body["channel"], "C0CRASH");
    assert!(server.terminate().success());
}

/// One Slack app for two projects, each with its own signing secret: a click is verified with the
/// secret of the project whose request it names, and the other project's secret does not pass.
#[tokio::test]
async fn each_project_verifies_clicks_on_its_requests_with_its_own_secret() {
    let (s, fake) = slack_server(None).await;
    let beta = s.store.project_by_name("beta").await.unwrap().unwrap();
    s.store
        .set_slack_connection(
            &SlackConnection {
                project_id: beta.id,
                bot_token: "xoxb-beta".into(),
                signing_secret: Some("beta-secret".into()),
                default_channel: None,
                team_id: Some("T0FAKE".into()),
                team_name: None,
                bot_user_id: None,
                require_known_users: false,
                connected_at: Timestamp::now(),
            },
            &countersign_core::event::Stamp::now("test"),
        )
        .await
        .unwrap();
    s.post_as(&s.other_key, "/function_calls", slacked("b1", json!({"channel_or_user_id": "C0BETA"}))).await;
    let posted = fake.wait_for("chat.postMessage", 1, WAIT).await.remove(0);
    assert_eq!(posted.token.as_deref(), Some("xoxb-beta"), "posted with beta's own token");
    let body = format!("payload={}", form_value(&click(&posted, "cs_approve", "UADA").to_string()));
    let form = "application/x-www-form-urlencoded";
    let (status, _) = signed(&s, "/slack/interactions", &body, form, SECRET, now_secs()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "alpha's secret does not pass for beta's request");
    let (status, _) = signed(&s, "/slack/interactions", &body, form, "beta-secret", now_secs()).await;
    assert_eq!(status, StatusCode::OK);
    let deadline = Instant::now() + WAIT;
    loop {
        let got = s.http.get(s.api("/function_calls/b1")).bearer_auth(&s.other_key).send().await.unwrap();
        let fc: Value = got.json().await.unwrap();
        if fc["status"]["approved"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "beta's request was not approved: {fc}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.get("/function_calls/b1").await.0, StatusCode::NOT_FOUND, "alpha never sees beta's request");
}

/// An escalation without a channel of a request in Slack is answered in its thread; without a
/// Slack connection there is nobody to reach and it is refused, as before Slack existed.
#[tokio::test]
async fn a_plain_escalation_of_a_slack_request_goes_to_its_thread_when_the_project_is_connected() {
    let (s, fake) = slack_server(Some("C0DEF")).await;
    s.post("/function_calls", approval("e1")).await; // no channel: the default channel
    let posted = fake.wait_for("chat.postMessage", 1, WAIT).await.remove(0);
    recorded(&s, &posted).await;
    let (status, _) = s.post("/agent/function_calls/e1/escalate_email", json!({"escalation_msg": "ping"})).await;
    assert_eq!(status, StatusCode::OK);
    let calls = fake.wait_for("chat.postMessage", 2, WAIT).await;
    assert_eq!(calls[1].body["thread_ts"], posted.answered["ts"]);
    assert!(calls[1].body.to_string().contains("ping"));
    let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
    let emails = s.store.emails_of(&project.id, countersign_core::RequestKind::FunctionCall, "e1").await.unwrap();
    assert!(emails.iter().all(|e| e.status != DeliveryStatus::Failed), "no failed email for it: {emails:?}");
    // beta is not connected: its Slack request cannot be escalated without an address.
    s.post_as(&s.other_key, "/function_calls", slacked("e2", json!({"channel_or_user_id": "C1"}))).await;
    let (status, body) =
        s.post_as(&s.other_key, "/agent/function_calls/e2/escalate_email", json!({"escalation_msg": "ping"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("countersign slack connect"), "{body}");
}
