//! What people see of a request's policy where they decide: a quorum's progress (who approved so
//! far, what it needs, its deadline) in the web inbox, on the email link page, in Slack and in the
//! terminal; someone who voted is offered no second vote; and expired, cancelled and
//! policy-decided requests read as such in the history, which filters them.

use crate::slack::{click, interact, recorded, slack_server};
use crate::support::{TestServer, approval, json};
use crate::web::{PASSWORD, Page, signed_in};
use countersign_core::event::{ProjectEvent, ProjectEventBody};
use countersign_core::{RequestKind, Timestamp};
use countersign_fakes::slack::{Call, FakeSlack};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// Two approvals from the finance group, within an hour.
const QUORUM: &str = r#"
[[rule]]
name = "large refunds"
match = { fn = "refund" }
action = "ask"
approvers = { group = "finance", count = 2 }
expire_after = "1h"
"#;

/// Sets the project `alpha`'s policy.
async fn put_policy(s: &TestServer, text: &str) {
    let response = s.http.put(s.api("/policy")).bearer_auth(&s.key).body(text.to_owned()).send().await.unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Creates the group `finance` of `alpha` with these members.
async fn finance(s: &TestServer, members: &[&str]) {
    let project_id = s.store.project_by_name("alpha").await.unwrap().unwrap().id;
    let event = ProjectEvent {
        project_id,
        at: Timestamp::now(),
        by: "test".into(),
        body: ProjectEventBody::GroupChanged {
            group: "finance".into(),
            members: vec![],
            added: vec![],
            removed: vec![],
        },
    };
    let members: Vec<String> = members.iter().map(|m| (*m).to_owned()).collect();
    s.store.create_group("finance", &members, &event).await.unwrap();
}

/// A refund of `amount` asked by the agent of `alpha`, with `channel` if given.
async fn refund(s: &TestServer, call_id: &str, channel: Option<Value>) {
    let mut spec = json!({"fn": "refund", "kwargs": {"amount": 20000}});
    if let Some(channel) = channel {
        spec["channel"] = channel;
    }
    let (status, body) = s.post("/function_calls", json!({"run_id": "r", "call_id": call_id, "spec": spec})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The page's text with the entities askama writes for quotes turned back into quotes.
fn text(page: &Page) -> String {
    page.body.replace("&#34;", "\"").replace("&quot;", "\"").replace("&#39;", "'")
}

/// The count line of the history page.
fn history_count(page: &Page) -> String {
    let at = page.body.find("id=\"history-count\">").unwrap();
    page.body[at + 19..].split('<').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_inbox_shows_who_approved_so_far_and_offers_no_second_vote() {
    let s = TestServer::start().await;
    let mut ada = signed_in(&s, "ada@example.com", &["alpha"]).await;
    let mut bob = signed_in(&s, "bob@example.com", &["alpha"]).await;
    finance(&s, &["ada@example.com", "bob@example.com"]).await;
    put_policy(&s, QUORUM).await;
    refund(&s, "big", None).await;
    let detail = "/r/alpha/approval/big";

    let before = text(&ada.get(detail).await);
    assert!(before.contains(r#"<dd id="policy-rule">rule “large refunds”</dd>"#), "{before}");
    assert!(before.contains(r#"<dd id="quorum-needs">2 approvals from group "finance"</dd>"#), "{before}");
    assert!(before.contains(r#"<dd id="quorum">0 of 2 approvals</dd>"#), "{before}");
    assert!(before.contains("; then denied</dd>") && before.contains(r#"<dd id="deadline">expires at "#), "{before}");
    assert!(before.contains(r#"id="approve""#) && before.contains(r#"id="reject""#));

    let voted = ada.submit(&format!("{detail}/approve"), &[("comment", "ok by me")]).await;
    assert_eq!(voted.status, StatusCode::SEE_OTHER, "{}", voted.body);
    let (_, fc) = s.get("/function_calls/big").await;
    assert_eq!(fc["status"]["approved"], Value::Null, "one of two approvals: still pending");

    // Ada sees the progress and her vote, and no buttons: each person votes once.
    let after = text(&ada.get(detail).await);
    assert!(after.contains(r#"<dd id="quorum">1 of 2 approvals: ada@example.com</dd>"#), "{after}");
    assert!(after.contains(r#"<p class="notice" role="status" id="voted">You approved at "#), "{after}");
    assert!(after.contains("it waits for 1 more approval from other people."), "{after}");
    assert!(after.contains("Approved by ada@example.com") && after.contains("<q>ok by me</q>"), "{after}");
    assert!(!after.contains(r#"id="approve""#) && !after.contains(r#"id="reject""#), "{after}");
    // Bob sees the same progress, and both buttons.
    let for_bob = text(&bob.get(detail).await);
    assert!(for_bob.contains(r#"<dd id="quorum">1 of 2 approvals: ada@example.com</dd>"#), "{for_bob}");
    assert!(for_bob.contains(r#"id="approve""#) && for_bob.contains(r#"id="reject""#), "{for_bob}");
    assert!(!for_bob.contains(r#"id="voted""#));
    // The lists show the progress too.
    assert!(bob.get("/inbox/list").await.body.contains(">1/2 approvals</span>"));
    assert!(ada.get("/inbox/list").await.body.contains(">1/2 approvals, yours included</span>"));

    // A second vote from a stale page is refused with the reason, not "someone else decided".
    let again = ada.submit(&format!("{detail}/approve"), &[]).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let again = text(&again);
    assert!(again.contains("ada@example.com already voted on function call \"big\""), "{again}");
    assert!(!again.contains("Someone else decided"), "{again}");

    // Bob's approval completes it; the outcome lists both votes.
    assert_eq!(bob.submit(&format!("{detail}/approve"), &[]).await.status, StatusCode::SEE_OTHER);
    let done = text(&bob.get(detail).await);
    assert!(done.contains("<h3>Approved by bob@example.com</h3>"), "{done}");
    assert!(done.contains(r#"<ul class="votes" id="outcome-votes">"#), "{done}");
    assert!(done.contains("Approved by ada@example.com") && !done.contains(r#"id="quorum""#), "{done}");
    assert_eq!(s.get("/function_calls/big").await.1["status"]["approved"], true);
}

#[tokio::test]
async fn the_history_shows_and_filters_expired_cancelled_and_policy_decisions() {
    let s = TestServer::start().await;
    let mut ada = signed_in(&s, "ada@example.com", &["alpha"]).await;
    let policy = r#"
[[rule]]
name = "short"
match = { fn = "slow_*" }
action = "ask"
expire_after = "1s"

[[rule]]
name = "never"
match = { fn = "drop_*" }
action = "deny"
message = "never from an agent"
"#;
    put_policy(&s, policy).await;
    let ask = |call_id: &str, function: &str| json!({"run_id": "r", "call_id": call_id, "spec": {"fn": function, "kwargs": {}}});
    for (call_id, function) in [("e1", "slow_report"), ("d1", "drop_table"), ("r1", "send_email"), ("c1", "send_email")]
    {
        assert_eq!(s.post("/function_calls", ask(call_id, function)).await.0, StatusCode::OK);
    }
    ada.get("/").await;
    assert_eq!(
        ada.submit("/r/alpha/approval/r1/reject", &[("comment", "not today")]).await.status,
        StatusCode::SEE_OTHER
    );
    let (status, _) = s.post("/function_calls/c1/cancel", json!({"reason": "the user closed the ticket"})).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let deadline = Instant::now() + WAIT;
    while s.get("/function_calls/e1").await.1["status"]["approved"].is_null() {
        assert!(Instant::now() < deadline, "e1 never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let all = ada.get("/history").await;
    assert_eq!(history_count(&all), "1–4 of 4");
    let all = text(&all);
    for option in ["expired", "cancelled"] {
        assert!(all.contains(&format!(r#"<option value="{option}">{option}</option>"#)), "{all}");
    }
    assert!(all.contains(r#"<span class="status status-expired">Expired</span>"#), "{all}");
    assert!(all.contains(r#"<span class="status status-cancelled">Cancelled</span>"#), "{all}");
    assert!(all.contains("<td>expired after 1s without a decision</td>"), "{all}");
    assert!(all.contains("<td>the user closed the ticket</td>"), "{all}");
    assert!(all.contains(r#"policy rule "never" <span class="meta">(policy)</span>"#), "{all}");

    let expired = ada.get("/history?status=expired").await;
    assert_eq!(history_count(&expired), "1–1 of 1");
    assert!(expired.body.contains("/r/alpha/approval/e1") && expired.body.contains(r#"value="expired" selected"#));
    let rejected = ada.get("/history?status=rejected").await;
    assert_eq!(history_count(&rejected), "1–2 of 2", "ada's rejection and the rule's denial, not the endings");
    assert!(rejected.body.contains("/r/alpha/approval/r1") && rejected.body.contains("/r/alpha/approval/d1"));
    assert!(!rejected.body.contains("/r/alpha/approval/e1") && !rejected.body.contains("/r/alpha/approval/c1"));
    let cancelled = ada.get("/history?status=cancelled").await;
    assert_eq!(history_count(&cancelled), "1–1 of 1");
    assert!(cancelled.body.contains("/r/alpha/approval/c1"));
    assert_eq!(history_count(&ada.get("/history?status=approved").await), "No decided requests match.");

    // The detail says how each ended.
    let e1 = text(&ada.get("/r/alpha/approval/e1").await);
    assert!(e1.contains(r#"<h3>Expired under policy rule "short"</h3>"#), "{e1}");
    let c1 = text(&ada.get("/r/alpha/approval/c1").await);
    assert!(c1.contains("<h3>Cancelled by the agent (API key "), "{c1}");
    let d1 = text(&ada.get("/r/alpha/approval/d1").await);
    assert!(d1.contains(r#"<h3>Rejected by policy rule "never"</h3>"#), "{d1}");
}

#[tokio::test]
async fn the_email_link_page_shows_the_progress_and_refuses_a_second_vote() {
    let s = TestServer::start().await;
    s.person("ada@example.com", PASSWORD, &["alpha"]).await;
    s.person("bob@example.com", PASSWORD, &["alpha"]).await;
    finance(&s, &["ada@example.com", "bob@example.com"]).await;
    put_policy(&s, QUORUM).await;
    refund(&s, "mailed", Some(json!({"email": {"address": "ada@example.com"}}))).await;
    // The link the email carries (no SMTP here: the page is what is tested).
    let key = s.store.server_key("email_links", "unused").await.unwrap();
    let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
    let token = countersign_server::channels::email::links::LinkSigner::new(key.as_bytes()).token(
        &project.id,
        RequestKind::FunctionCall,
        "mailed",
        countersign_server::channels::email::links::LinkAction::Approve,
        Timestamp::now().plus(Duration::from_secs(3600)),
    );
    let link = s.root(&format!("/email/{token}"));
    let page = |response: reqwest::Response| async move {
        let status = response.status();
        (status, response.text().await.unwrap().replace("&#34;", "\""))
    };

    let (status, shown) = page(s.http.get(&link).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(shown.contains(r#"<dd id="quorum">0 of 2 approvals</dd>"#), "{shown}");
    assert!(shown.contains(r#"2 approvals from group "finance""#) && shown.contains(r#"id="decide""#), "{shown}");

    let (status, voted) = page(s.http.post(&link).form(&[("comment", "fine")]).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{voted}");
    assert!(voted.contains("Done: your approval is counted; the request needs more."), "{voted}");
    assert!(voted.contains(r#"<dd id="quorum">1 of 2 approvals: ada@example.com</dd>"#), "{voted}");
    assert!(voted.contains(r#"id="voted">You approved at "#) && !voted.contains(r#"id="decide""#), "{voted}");

    // Following the link again: the 409's own words, not "already decided".
    let (status, again) = page(s.http.post(&link).form(&[("comment", "again")]).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(again.contains("ada@example.com already voted on function call \"mailed\""), "{again}");
    assert!(again.contains("each person votes once."), "{again}");
    assert!(!again.contains("already decided"), "{again}");
    assert_eq!(s.get("/function_calls/mailed").await.1["status"]["approved"], Value::Null);
}

/// The chat.update calls of the message `posted`.
fn updates_of(fake: &FakeSlack, posted: &Call) -> Vec<Call> {
    fake.calls_to("chat.update")
        .into_iter()
        .filter(|c| c.body["ts"] == posted.answered["ts"] && c.body["channel"] == posted.answered["channel"])
        .collect()
}

/// Waits for an update of `posted` whose blocks (as JSON text) satisfy `check`.
async fn wait_update(fake: &FakeSlack, posted: &Call, check: impl Fn(&str) -> bool) -> Call {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(c) = updates_of(fake, posted).into_iter().rev().find(|c| check(&c.body["blocks"].to_string())) {
            return c;
        }
        assert!(Instant::now() < deadline, "no such update of {}: {:?}", posted.answered, updates_of(fake, posted));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `action_id`s of a message's buttons.
fn buttons(blocks: &Value) -> Vec<String> {
    blocks
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["action_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_message_shows_each_vote_and_stays_actionable_until_the_quorum_is_met() {
    let (s, fake) = slack_server(Some("C0AGENTS")).await;
    fake.add_user("UADA", "T0FAKE", Some("ada@example.com"));
    s.person("ada@example.com", PASSWORD, &["alpha"]).await;
    let mut bob = signed_in(&s, "bob@example.com", &["alpha"]).await;
    finance(&s, &["ada@example.com", "bob@example.com"]).await;
    put_policy(&s, QUORUM).await;
    refund(&s, "slacked", None).await;

    let posted = fake.wait_for("chat.postMessage", 1, WAIT).await.remove(0);
    let first = posted.body["blocks"].to_string();
    assert!(first.contains(":ballot_box_with_check: 0 of 2 approvals · from group “finance”"), "{first}");
    assert!(first.contains("Policy rule “large refunds” · :hourglass_flowing_sand: expires <!date^"), "{first}");
    recorded(&s, &posted).await;

    // Ada approves in Slack: a vote. The message shows it and keeps its buttons.
    let (status, _) = interact(&s, &click(&posted, "cs_approve", "UADA")).await;
    assert_eq!(status, StatusCode::OK);
    let updated = wait_update(&fake, &posted, |b| b.contains("1 of 2 approvals: ada@example.com")).await;
    assert!(buttons(&updated.body["blocks"]).iter().any(|b| b == "cs_approve"), "{}", updated.body["blocks"]);
    assert!(buttons(&updated.body["blocks"]).iter().any(|b| b == "cs_reject"));
    assert!(updated.body["text"].as_str().unwrap().starts_with("Approval requested"), "{}", updated.body["text"]);
    assert_eq!(s.get("/function_calls/slacked").await.1["status"]["approved"], Value::Null);
    let (status, _) = interact(&s, &click(&posted, "cs_approve", "UADA")).await;
    assert_eq!(status, StatusCode::OK);
    let told = fake.wait_for("chat.postEphemeral", 1, WAIT).await;
    let told = told[0].body["text"].as_str().unwrap().to_owned();
    assert!(told.contains("ada@example.com already voted"), "{told}");

    // Bob's vote in the web inbox completes it: the message shows the outcome and both votes.
    bob.get("/").await;
    assert_eq!(bob.submit("/r/alpha/approval/slacked/approve", &[]).await.status, StatusCode::SEE_OTHER);
    let done = wait_update(&fake, &posted, |b| b.contains("*Approved* by bob@example.com via web")).await;
    let blocks = done.body["blocks"].to_string();
    assert!(blocks.contains("Approvals: ada@example.com (slack), bob@example.com (web)"), "{blocks}");
    assert!(buttons(&done.body["blocks"]).is_empty(), "{blocks}");
    assert!(!blocks.contains("of 2 approvals"), "{blocks}");
}

/// Runs `countersign ARGS` against `s` with `token`, in a home of its own.
async fn terminal(s: &TestServer, token: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let home = tempfile::tempdir().unwrap();
    let server = s.root("");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .args(["--server", &server])
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("COUNTERSIGN_TOKEN", token)
        .env("NO_COLOR", "1")
        .env_remove("COUNTERSIGN_SERVER")
        .output()
        .await
        .unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// A terminal login's token for `email`.
async fn cli_token(s: &TestServer, email: &str) -> String {
    s.person(email, PASSWORD, &["alpha"]).await;
    let response =
        s.http.post(s.root("/api/v1/login")).json(&json!({"email": email, "password": PASSWORD})).send().await.unwrap();
    json(response).await.1["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_terminal_inbox_shows_the_progress_and_its_json_carries_it() {
    let s = TestServer::start().await;
    let ada = cli_token(&s, "ada@example.com").await;
    let bob = cli_token(&s, "bob@example.com").await;
    finance(&s, &["ada@example.com", "bob@example.com"]).await;
    put_policy(&s, QUORUM).await;
    refund(&s, "big", None).await;
    assert_eq!(s.post("/function_calls", approval("plain")).await.0, StatusCode::OK);

    let (code, out, err) = terminal(&s, &ada, &["approve", "big"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out.trim(),
        "Counted your approval of refund (call big) in project alpha; approvals so far: 1/2 ada@example.com."
    );
    let (code, out, err) = terminal(&s, &bob, &["inbox"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let header = out.lines().next().unwrap();
    assert!(header.ends_with("APPROVALS"), "{out}");
    let big = out.lines().find(|l| l.starts_with("big ")).unwrap();
    assert!(big.trim_end().ends_with("1/2 ada@example.com"), "{out}");

    let (_, out, _) = terminal(&s, &bob, &["inbox", "--json"]).await;
    let items: Value = serde_json::from_str(&out).unwrap();
    let big = items.as_array().unwrap().iter().find(|i| i["call_id"] == "big").unwrap();
    assert_eq!(big["needed"], 2);
    assert_eq!(big["votes"].as_array().unwrap().len(), 1);
    assert_eq!(
        (big["votes"][0]["voter"].as_str(), big["votes"][0]["channel"].as_str()),
        (Some("ada@example.com"), Some("cli"))
    );
    let plain = items.as_array().unwrap().iter().find(|i| i["call_id"] == "plain").unwrap();
    assert!(plain.get("needed").is_none() && plain.get("votes").is_none(), "{plain}");

    // A second vote is refused with the reason (exit 5, as for a conflict).
    let (code, _, err) = terminal(&s, &ada, &["approve", "big"]).await;
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("ada@example.com already voted"), "{err}");
}
