//! Policies: rules that approve or deny at once, tested end to end with the released Python SDK;
//! policy files validated with their line, set over the API and the CLI, logged in the audit
//! chain, and tested without creating anything; groups of approvers.

use crate::audit::sealed_log;
use crate::support::{TestServer, agent_output, approval, assert_error, json, python_agent, run_cli};
use reqwest::StatusCode;
use serde_json::{Value, json};

const POLICY: &str = r#"
[[rule]]
name  = "small refunds"
match = { fn = "refund*" }
when  = "args.amount < 100 && args.currency == 'USD'"
action = "approve"

[[rule]]
name = "never"
match = { fn = "drop_*" }
action = "deny"
message = "dropping tables is never allowed from an agent"
"#;

/// Sets the key's project's policy over the API.
async fn put_policy(s: &TestServer, key: &str, text: &str) -> (StatusCode, Value) {
    json(s.http.put(s.api("/policy")).bearer_auth(key).body(text.to_owned()).send().await.unwrap()).await
}

const AGENT: &str = r#"
import sys, json
from humanlayer import HumanLayer
hl = HumanLayer(verbose=False)
@hl.require_approval()
def refund(amount: int, currency: str) -> str:
    return f"refunded {amount} {currency}"
@hl.require_approval()
def drop_table(name: str) -> str:
    return f"dropped {name}"
args = json.loads(sys.argv[1])
print(refund(**args) if "amount" in args else drop_table(**args), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_approve_and_deny_at_once_and_the_released_sdk_sees_it() {
    let s = TestServer::start().await;
    let (status, set) = put_policy(&s, &s.key, POLICY).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["version"], 1);
    assert_eq!(set["rules"], json!(["small refunds", "never"]));

    // Approved by the rule: the function runs, nobody was asked.
    let agent = python_agent(&s, AGENT, r#"{"amount": 50, "currency": "USD"}"#);
    assert_eq!(agent_output(agent).await, "refunded 50 USD");
    // Denied by the rule: the agent hears the rule's message.
    let agent = python_agent(&s, AGENT, r#"{"name": "users"}"#);
    assert_eq!(
        agent_output(agent).await,
        "User denied drop_table with message: dropping tables is never allowed from an agent"
    );
    // Not matched (the condition is false): asked as today.
    let (status, big) = s
        .post("/function_calls", json!({"run_id": "r", "call_id": "big", "spec": {"fn": "refund", "kwargs": {"amount": 500, "currency": "USD"}}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(big["status"]["approved"], Value::Null);
    // A condition that cannot be evaluated never approves (fail-safe): asked.
    let (_, odd) = s
        .post(
            "/function_calls",
            json!({"run_id": "r", "call_id": "odd", "spec": {"fn": "refund", "kwargs": {"amount": "lots"}}}),
        )
        .await;
    assert_eq!(odd["status"]["approved"], Value::Null);

    let (_, pending) = s.get("/agent/function_calls/pending").await;
    let ids: Vec<&str> = pending["items"].as_array().unwrap().iter().map(|i| i["call_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["big", "odd"], "decided-by-policy requests are never pending");

    // Who decided: the policy, naming the rule.
    let (_, log) = s.get("/audit?limit=1000").await;
    let decided: Vec<Value> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str::<Value>(e["event"].as_str().unwrap()).unwrap())
        .filter(|e| e["type"] == "decided")
        .collect();
    assert_eq!(decided.len(), 2);
    assert_eq!(decided[0]["actor"], json!({"channel": "policy", "rule": "small refunds"}));
    assert_eq!(decided[1]["actor"], json!({"channel": "policy", "rule": "never"}));
    assert_eq!(decided[1]["decision"]["comment"], "dropping tables is never allowed from an agent");
    let call_id = decided[0]["call_id"].as_str().unwrap();
    let (_, fc) = s.get(&format!("/function_calls/{call_id}")).await;
    assert_eq!(fc["status"]["approved"], true);
    assert_eq!(fc["status"]["user_info"], json!({"channel": "policy", "rule": "small refunds"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_policy_is_refused_with_its_line_and_the_one_in_force_stays() {
    let s = TestServer::start().await;
    assert_eq!(put_policy(&s, &s.key, POLICY).await.0, StatusCode::OK);
    let typo = "[[rule]]\nname = \"x\"\nmatch = { fn = \"a*\" }\nactoin = \"approve\"\n";
    let refused = put_policy(&s, &s.key, typo).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "invalid_policy", "policy.toml:4:");
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("actoin"), "{}", refused.1);
    let bad_cel = "[[rule]]\nname = \"x\"\nwhen = \"args.amount <\"\naction = \"approve\"\n";
    assert_error(&put_policy(&s, &s.key, bad_cel).await, StatusCode::BAD_REQUEST, "invalid_policy", "policy.toml:3:");
    let no_group = "[[rule]]\nname = \"big\"\naction = \"ask\"\napprovers = { group = \"finance\", count = 2 }\n";
    assert_error(&put_policy(&s, &s.key, no_group).await, StatusCode::BAD_REQUEST, "invalid_policy", "groups create");
    let no_slack =
        "[[rule]]\nname = \"ops\"\naction = \"ask\"\nescalate = [ { after = \"1m\", to = { slack = \"C0OPS\" } } ]\n";
    let refused = put_policy(&s, &s.key, no_slack).await;
    assert_error(&refused, StatusCode::BAD_REQUEST, "invalid_policy", "policy.toml:1:");
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("slack connect"), "{}", refused.1);

    let (_, shown) = s.get("/policy").await;
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["policy"], POLICY);
    // And it still decides.
    let (_, fc) = s
        .post("/function_calls", json!({"run_id": "r", "call_id": "d", "spec": {"fn": "drop_users", "kwargs": {}}}))
        .await;
    assert_eq!(fc["status"]["approved"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_are_audit_events_saying_who_and_only_admin_keys_may_make_them() {
    let s = TestServer::start().await;
    let agent_key = crate::support::create_scoped_key(
        s.store.as_ref(),
        "alpha",
        countersign_core::api_key::Scopes::of(&[countersign_core::api_key::Scope::Agent]),
    )
    .await;
    assert_error(&put_policy(&s, &agent_key, POLICY).await, StatusCode::FORBIDDEN, "forbidden", "admin");
    assert_eq!(put_policy(&s, &s.key, POLICY).await.0, StatusCode::OK);
    assert_eq!(s.post("/function_calls", approval("a1")).await.0, StatusCode::OK);
    // (The chain opens with the keys' creation.)
    let log = sealed_log(&s, &s.key, 4).await;
    let events: Vec<Value> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str::<Value>(e["event"].as_str().unwrap()).unwrap())
        .filter(|e| e["type"] != "key_created")
        .collect();
    assert_eq!(events[0]["type"], "policy_set");
    let prefix = &s.key[..9];
    assert_eq!(events[0]["by"], format!("API key {prefix}"));
    assert_eq!(events[0]["policy"]["text"], POLICY);
    assert_eq!(events[0]["policy"]["rules"], json!(["small refunds", "never"]));
    assert_eq!(events[1]["type"], "created", "request events follow in the same chain");
    // Another project's policy is its own.
    let (_, beta) = json(s.http.get(s.api("/policy")).bearer_auth(&s.other_key).send().await.unwrap()).await;
    assert_eq!(beta["policy"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_test_says_which_rule_decides_and_creates_nothing() {
    let s = TestServer::start().await;
    assert_eq!(put_policy(&s, &s.key, POLICY).await.0, StatusCode::OK);
    let test = |spec: Value| {
        let s = &s;
        async move {
            json(
                s.http
                    .post(s.api("/policy/test"))
                    .bearer_auth(&s.key)
                    .json(&json!({"spec": spec}))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let (status, small) = test(json!({"fn": "refund", "kwargs": {"amount": 5, "currency": "USD"}})).await;
    assert_eq!(status, StatusCode::OK, "{small}");
    assert_eq!((small["rule"].as_str(), small["action"].as_str()), (Some("small refunds"), Some("approve")));
    let (_, never) = test(json!({"fn": "drop_x", "kwargs": {}})).await;
    assert_eq!(never["action"], "deny");
    assert!(never["outcome"].as_str().unwrap().contains("User denied drop_x with message: dropping tables"));
    let (_, odd) = test(json!({"fn": "refund", "kwargs": {"amount": "lots", "currency": "USD"}})).await;
    assert_eq!((odd["rule"].clone(), odd["action"].as_str()), (Value::Null, Some("ask")));
    assert_eq!(odd["errors"][0]["rule"], "small refunds", "the failed condition is reported: {odd}");
    let (_, pending) = s.get("/agent/function_calls/pending").await;
    assert_eq!(pending["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sets_shows_and_tests_policies_and_manages_groups() {
    let dir = crate::binary::fresh_dir().await;
    let path = dir.path();
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&run_cli(path, &["keys", "create", "--project", "billing"], &[], ""));
    ok(&run_cli(
        path,
        &[
            "users",
            "create",
            "--email",
            "Ada@example.com",
            "--role",
            "approver",
            "--project",
            "billing",
            "--password-stdin",
        ],
        &[],
        "a long passphrase\n",
    ));
    // A group of strangers is refused, with how to fix it.
    let out =
        run_cli(path, &["groups", "create", "finance", "--project", "billing", "--member", "eve@example.com"], &[], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("users create --email eve@example.com"));
    let created = ok(&run_cli(
        path,
        &["groups", "create", "finance", "--project", "billing", "--member", "ada@example.com"],
        &[],
        "",
    ));
    assert!(created.contains("1 member (ada@example.com)"), "{created}");
    let listed: Value =
        serde_json::from_str(&ok(&run_cli(path, &["groups", "list", "--project", "billing", "--json"], &[], "")))
            .unwrap();
    assert_eq!(
        listed,
        json!([{"project": "billing", "name": "finance", "members": ["ada@example.com"], "created_at": listed[0]["created_at"]}])
    );

    let file = path.join("policy.toml");
    let policy = format!(
        "{POLICY}\n[[rule]]\nname = \"large\"\nmatch = {{ fn = \"refund*\" }}\naction = \"ask\"\napprovers = {{ group = \"finance\", count = 1 }}\n"
    );
    std::fs::write(&file, &policy).unwrap();
    let set = ok(&run_cli(path, &["policy", "set", "--project", "billing", file.to_str().unwrap()], &[], ""));
    assert!(set.contains("version 1): 3 rules: small refunds, never, large"), "{set}");
    let shown = run_cli(path, &["policy", "show", "--project", "billing"], &[], "");
    assert_eq!(ok(&shown), policy);
    assert!(String::from_utf8_lossy(&shown.stderr).contains("set by cli"));

    let tested = ok(&run_cli(
        path,
        &["policy", "test", "--project", "billing", "refund", r#"{"amount": 50, "currency": "USD"}"#],
        &[],
        "",
    ));
    assert!(tested.starts_with("Rule \"small refunds\" decides: approved at once"), "{tested}");
    let tested = ok(&run_cli(
        path,
        &["policy", "test", "--project", "billing", "refund", r#"{"amount": 500}"#, "--json"],
        &[],
        "",
    ));
    let tested: Value = serde_json::from_str(&tested).unwrap();
    assert_eq!((tested["rule"].as_str(), tested["action"].as_str()), (Some("large"), Some("ask")));
    assert!(tested["outcome"].as_str().unwrap().contains("from group \"finance\""), "{tested}");

    // A broken file: refused with the file, the line and what is wrong; version 1 stays.
    std::fs::write(&file, "[[rule]]\nname = \"x\"\naction = \"maybe\"\n").unwrap();
    let out = run_cli(path, &["policy", "set", "--project", "billing", file.to_str().unwrap()], &[], "");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", file.display())) && err.contains("maybe"), "{err}");
    let shown: Value =
        serde_json::from_str(&ok(&run_cli(path, &["policy", "show", "--project", "billing", "--json"], &[], "")))
            .unwrap();
    assert_eq!(shown["version"], 1);
    // The group change and the policy are in the audit chain, and it verifies.
    ok(&run_cli(
        path,
        &["groups", "remove", "finance", "--project", "billing", "--member", "ada@example.com"],
        &[],
        "",
    ));
    // (On PostgreSQL a running server's sealer seals them; with none running, some wait unsealed.)
    let verified = ok(&run_cli(path, &["audit", "verify", "--project", "billing", "--json"], &[], ""));
    let verified: Value = serde_json::from_str(&verified).unwrap();
    let chain = &verified.as_array().unwrap()[0];
    assert_eq!(chain["ok"], true, "{verified}");
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    // (`unsealed` is read before verifying, `count` after: an event sealed meanwhile is in both.)
    let (sealed, unsealed) = (count(&chain["count"]), count(&chain["unsealed"]));
    // The key's creation, Ada joining, the group's creation, the policy, the group's change.
    assert!(sealed == 5 || sealed + unsealed == 5, "{verified}");
}

/// Polls a request until `done` holds (within 10 s).
async fn until(s: &TestServer, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = s.get(path).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if done(&body) {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "not reached within 10 s: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

const LADDER: &str = r#"
[[rule]]
name = "refunds"
match = { fn = "refund*" }
action = "ask"
expire_after = "3s"
on_expire = "deny"
escalate = [ { after = "1s", to = { email = "lead@example.com" } },
             { after = "2s", to = { email = "cfo@example.com" } } ]

[[rule]]
name = "payouts"
match = { fn = "payout" }
action = "ask"
expire_after = "1s"
on_expire = "approve"
"#;

const REFUND_AGENT: &str = r#"
import sys
from humanlayer import HumanLayer
hl = HumanLayer(verbose=False)
@hl.require_approval()
def refund(amount: int) -> str:
    return f"refunded {amount}"
@hl.require_approval()
def payout(amount: int) -> str:
    return f"paid {amount}"
print((refund if sys.argv[1] == "refund" else payout)(amount=7), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ladder_escalates_in_order_then_the_request_expires_as_the_rule_says() {
    let s = TestServer::start().await;
    assert_eq!(put_policy(&s, &s.key, LADDER).await.0, StatusCode::OK);
    let started = std::time::Instant::now();
    let agent = python_agent(&s, REFUND_AGENT, "refund");
    assert_eq!(agent_output(agent).await, "User denied refund with message: expired after 3s without a decision");
    let waited = started.elapsed();
    assert!(waited >= std::time::Duration::from_secs(3), "expired early: {waited:?}");

    let (_, log) = s.get("/audit?limit=1000").await;
    let events: Vec<Value> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str::<Value>(e["event"].as_str().unwrap()).unwrap())
        .filter(|e| e["type"] != "policy_set" && e["type"] != "key_created")
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["created", "escalated", "escalated", "decided"], "each timer fired once, in order");
    let call_id = events[0]["call_id"].as_str().unwrap();
    assert_eq!(events[0]["policy"]["rule"], "refunds", "the terms are logged with the creation");
    let (_, fc) = s.get(&format!("/function_calls/{call_id}")).await;
    let steps: Vec<&Value> = fc["escalations"].as_array().unwrap().iter().collect();
    assert_eq!(steps[0]["channel"]["email"]["address"], "lead@example.com");
    assert_eq!(steps[1]["channel"]["email"]["address"], "cfo@example.com");
    assert_eq!((steps[0]["escalated_by"].as_str(), steps[1]["policy_step"].as_u64()), (Some("policy"), Some(2)));
    assert_eq!(fc["status"]["approved"], false);
    assert_eq!(fc["status"]["user_info"]["channel"], "policy");
    assert_eq!(fc["status"]["user_info"]["rule"], "refunds");
    assert_eq!(events[3]["decision"]["outcome"], "expired", "stored as expired, not as a rejection");
    // Timer lateness: each step fired within a second of its due time.
    let created = events[0]["at_us"].as_i64().unwrap();
    for (event, after_s) in events[1..].iter().zip([1, 2, 3]) {
        let late = event["at_us"].as_i64().unwrap() - created - after_s * 1_000_000;
        assert!((0..1_000_000).contains(&late), "{} fired {late} µs after its due time", event["type"]);
    }
    // A decision after expiry is refused, naming the expiry.
    let late = s.post(&format!("/agent/function_calls/{call_id}/respond"), json!({"approved": true})).await;
    assert_error(&late, StatusCode::CONFLICT, "conflict", "expired by policy rule \"refunds\"");

    // on_expire = "approve": the agent's function runs, and the reason is recorded.
    let agent = python_agent(&s, REFUND_AGENT, "payout");
    assert_eq!(agent_output(agent).await, "paid 7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ladder_survives_a_restart_midway_and_fires_each_step_once() {
    let s = TestServer::start().await;
    let policy = "[[rule]]\nname = \"slow\"\naction = \"ask\"\nescalate = [ { after = \"1s\", to = { email = \"a@example.com\" } }, { after = \"3s\", to = { email = \"b@example.com\" } } ]\n";
    assert_eq!(put_policy(&s, &s.key, policy).await.0, StatusCode::OK);
    assert_eq!(s.post("/function_calls", approval("r1")).await.0, StatusCode::OK);
    until(&s, "/function_calls/r1", |fc| fc["escalations"].as_array().is_some_and(|e| e.len() == 1)).await;
    let s = s.restart().await;
    let fc = until(&s, "/function_calls/r1", |fc| fc["escalations"].as_array().is_some_and(|e| e.len() == 2)).await;
    assert_eq!(fc["escalations"][1]["channel"]["email"]["address"], "b@example.com");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let (_, fc) = s.get("/function_calls/r1").await;
    assert_eq!(fc["escalations"].as_array().unwrap().len(), 2, "no step fires twice");
    assert_eq!(fc["status"]["approved"], Value::Null, "no deadline: still pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_may_set_its_own_deadline_within_the_policys() {
    let s = TestServer::start().await;
    let soon = countersign_core::Timestamp::now().plus(std::time::Duration::from_secs(1)).to_rfc3339();
    let body = json!({"run_id": "r", "call_id": "own", "spec": {"fn": "f", "kwargs": {}, "expires_at": soon}});
    assert_eq!(s.post("/function_calls", body).await.0, StatusCode::OK);
    let fc = until(&s, "/function_calls/own", |fc| !fc["status"]["approved"].is_null()).await;
    assert_eq!(fc["status"]["approved"], false);
    assert!(fc["status"]["comment"].as_str().unwrap().starts_with("expired after 1"), "{fc}");
    // The policy's deadline bounds the agent's.
    let policy = "[[rule]]\nname = \"short\"\naction = \"ask\"\nexpire_after = \"1s\"\n";
    assert_eq!(put_policy(&s, &s.key, policy).await.0, StatusCode::OK);
    let later = countersign_core::Timestamp::now().plus(std::time::Duration::from_secs(3600)).to_rfc3339();
    let body = json!({"run_id": "r", "call_id": "bounded", "spec": {"fn": "f", "kwargs": {}, "expires_at": later}});
    assert_eq!(s.post("/function_calls", body).await.0, StatusCode::OK);
    let fc = until(&s, "/function_calls/bounded", |fc| !fc["status"]["approved"].is_null()).await;
    assert_eq!(fc["status"]["comment"], "expired after 1s without a decision");
    // A deadline in the past or not a time is a 400 naming the field.
    let past =
        json!({"run_id": "r", "call_id": "p", "spec": {"fn": "f", "kwargs": {}, "expires_at": "2020-01-01T00:00:00Z"}});
    assert_error(&s.post("/function_calls", past).await, StatusCode::BAD_REQUEST, "invalid_request", "spec.expires_at");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_cancel_what_they_no_longer_need() {
    let s = TestServer::start().await;
    assert_eq!(s.post("/function_calls", approval("c1")).await.0, StatusCode::OK);
    let (status, cancelled) =
        s.post("/function_calls/c1/cancel", json!({"reason": "the user closed the ticket"})).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"]["approved"], false);
    assert_eq!(cancelled["status"]["comment"], "the user closed the ticket");
    assert_error(&s.post("/function_calls/c1/cancel", json!({})).await, StatusCode::CONFLICT, "conflict", "cancelled");
    let respond = s.post("/agent/function_calls/c1/respond", json!({"approved": true})).await;
    assert_error(&respond, StatusCode::CONFLICT, "conflict", "cancelled");
    let (_, pending) = s.get("/agent/function_calls/pending").await;
    assert_eq!(pending["total"], 0);
    // A question: the SDKs wait for a response, so the reason is given as one.
    assert_eq!(s.post("/contact_requests", crate::support::question("q1")).await.0, StatusCode::OK);
    let (status, q) =
        json(s.http.post(s.api("/contact_requests/q1/cancel")).bearer_auth(&s.key).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert_eq!(q["status"]["response"], "cancelled by the agent");
    // Another project's request is not found; a stranger cannot cancel it.
    assert_eq!(s.post("/function_calls", approval("c2")).await.0, StatusCode::OK);
    let other = s.post_as(&s.other_key, "/function_calls/c2/cancel", json!({})).await;
    assert_eq!(other.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_fire_each_timer_exactly_once() {
    if !crate::support::on_postgres() {
        return; // several instances share one database only on PostgreSQL
    }
    let a = TestServer::start().await;
    let policy = "[[rule]]\nname = \"t\"\naction = \"ask\"\nexpire_after = \"2s\"\nescalate = [ { after = \"1s\", to = { email = \"a@example.com\" } } ]\n";
    assert_eq!(put_policy(&a, &a.key, policy).await.0, StatusCode::OK);
    let (b, c) = (a.another_instance().await, a.another_instance().await);
    for i in 0..40 {
        let target = [&a, &b, &c][i % 3];
        assert_eq!(target.post("/function_calls", approval(&format!("t{i}"))).await.0, StatusCode::OK);
    }
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let log = sealed_log(&a, &a.key, 1 + 40 * 3).await;
    let mut per_call: std::collections::HashMap<String, Vec<String>> = Default::default();
    for e in log["events"].as_array().unwrap() {
        let e: Value = serde_json::from_str(e["event"].as_str().unwrap()).unwrap();
        if let Some(call_id) = e["call_id"].as_str().filter(|c| !c.is_empty()) {
            per_call.entry(call_id.to_owned()).or_default().push(e["type"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(per_call.len(), 40);
    for (call_id, kinds) in per_call {
        assert_eq!(kinds, ["created", "escalated", "decided"], "{call_id}");
    }
    drop((b, c));
}

const QUORUM: &str = r#"
[[rule]]
name = "large refunds"
match = { fn = "refund" }
when = "args.amount >= 10000"
action = "ask"
approvers = { group = "finance", count = 2 }
separation_of_duties = true
"#;

const BIG_REFUND_AGENT: &str = r#"
import sys
from humanlayer import HumanLayer
hl = HumanLayer(verbose=False)
@hl.require_approval()
def refund(amount: int) -> str:
    return f"refunded {amount}"
print(refund(amount=int(sys.argv[1])), flush=True)
"#;

/// A key of `alpha` that acts for `owner`.
async fn owned_key(s: &TestServer, owner: &str) -> String {
    crate::support::create_owned_key(s.store.as_ref(), "alpha", countersign_core::api_key::Scopes::all(), Some(owner))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_of_three_quorum_is_decided_from_two_channels_and_each_person_votes_once() {
    use crate::web::signed_in;
    let s = TestServer::start().await;
    let mut ada = signed_in(&s, "ada@example.com", &["alpha"]).await;
    s.person("bob@example.com", "a long passphrase", &["alpha"]).await;
    s.person("cy@example.com", "a long passphrase", &["alpha"]).await;
    s.person("eve@example.com", "a long passphrase", &["alpha"]).await;
    let group = countersign_core::event::ProjectEvent {
        project_id: s.store.project_by_name("alpha").await.unwrap().unwrap().id,
        at: countersign_core::Timestamp::now(),
        by: "test".into(),
        body: countersign_core::event::ProjectEventBody::GroupChanged {
            group: "finance".into(),
            members: vec![],
            added: vec![],
            removed: vec![],
        },
    };
    let members = ["ada@example.com".to_owned(), "bob@example.com".to_owned(), "cy@example.com".to_owned()];
    s.store.create_group("finance", &members, &group).await.unwrap();
    assert_eq!(put_policy(&s, &s.key, QUORUM).await.0, StatusCode::OK);

    // The agent's key acts for cy: cy may not approve its requests.
    let agent_key = owned_key(&s, "cy@example.com").await;
    let mut agent = std::process::Command::new(
        std::env::var_os("COUNTERSIGN_TEST_PYTHON").map(std::path::PathBuf::from).unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compat/python/.venv/bin/python")
        }),
    );
    let agent = agent
        .arg("-c")
        .arg(BIG_REFUND_AGENT)
        .arg("25000")
        .env("HUMANLAYER_API_KEY", &agent_key)
        .env("HUMANLAYER_API_BASE", s.api(""))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let call_id = loop {
        let (_, pending) = s.get("/agent/function_calls/pending").await;
        if let Some(id) = pending["items"][0]["call_id"].as_str() {
            break id.to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let respond = format!("/agent/function_calls/{call_id}/respond");
    // Separation of duties: cy (the key's owner) is refused, naming the rule.
    let cy = owned_key(&s, "cy@example.com").await;
    let refused = s.post_as(&cy, &respond, json!({"approved": true})).await;
    assert_error(
        &refused,
        StatusCode::FORBIDDEN,
        "forbidden_by_policy",
        "separation of duties (policy rule \"large refunds\")",
    );
    // Outside the group: refused. A key with no person: refused.
    let eve = owned_key(&s, "eve@example.com").await;
    assert_error(
        &s.post_as(&eve, &respond, json!({"approved": true})).await,
        StatusCode::FORBIDDEN,
        "forbidden_by_policy",
        "not in it",
    );
    assert_error(
        &s.post(&respond, json!({"approved": true})).await,
        StatusCode::FORBIDDEN,
        "forbidden_by_policy",
        "2 approvals",
    );

    // First vote in the web inbox: still pending.
    ada.get("/").await;
    let voted = ada.submit(&format!("/r/alpha/approval/{call_id}/approve"), &[("comment", "ok by me")]).await;
    assert_eq!(voted.status, StatusCode::SEE_OTHER, "{}", voted.body);
    let (_, fc) = s.get(&format!("/function_calls/{call_id}")).await;
    assert_eq!(fc["status"]["approved"], Value::Null, "1 of 2 approvals: still pending");
    // Ada cannot vote twice, from any channel.
    let ada_key = owned_key(&s, "ada@example.com").await;
    assert_error(
        &s.post_as(&ada_key, &respond, json!({"approved": true})).await,
        StatusCode::CONFLICT,
        "conflict",
        "ada@example.com already voted",
    );
    // Bob's approval through the API (his own key) completes it; the agent's function runs.
    let bob = owned_key(&s, "bob@example.com").await;
    let (status, done) = s.post_as(&bob, &respond, json!({"approved": true, "comment": "second"})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"]["approved"], true);
    assert_eq!(agent_output(agent).await, "refunded 25000");
    let votes = done["status"]["user_info"]["votes"].as_array().unwrap();
    let voters: Vec<(&str, &str)> =
        votes.iter().map(|v| (v["voter"].as_str().unwrap(), v["channel"].as_str().unwrap())).collect();
    assert_eq!(voters, [("ada@example.com", "web"), ("bob@example.com", "api")]);
    // Each approval is a vote event in the audit log; the last one completes it.
    let (_, log) = s.get("/audit?limit=1000").await;
    let kinds: Vec<String> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e["event"].as_str().unwrap()).unwrap()["type"].as_str().unwrap().to_owned()
        })
        .collect();
    let kinds: Vec<&str> =
        kinds.iter().map(String::as_str).filter(|k| !["key_created", "person_added"].contains(k)).collect();
    assert_eq!(kinds, ["group_changed", "policy_set", "created", "voted", "voted", "decided"]);

    // One allowed rejection rejects at once.
    assert_eq!(
        s.post_as(
            &agent_key,
            "/function_calls",
            json!({"run_id": "r", "call_id": "r2", "spec": {"fn": "refund", "kwargs": {"amount": 20000}}})
        )
        .await
        .0,
        StatusCode::OK
    );
    let (status, rejected) =
        s.post_as(&bob, "/agent/function_calls/r2/respond", json!({"approved": false, "comment": "no"})).await;
    assert_eq!(status, StatusCode::OK, "{rejected}");
    assert_eq!(rejected["status"]["approved"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_suggest_lists_what_people_always_approved_as_rules_ready_to_paste() {
    let s = TestServer::start().await;
    for (i, amount) in [40, 90, 75].into_iter().enumerate() {
        let body = json!({"run_id": "r", "call_id": format!("a{i}"), "spec": {"fn": "refund", "kwargs": {"amount": amount, "currency": "EUR"}}});
        assert_eq!(s.post("/function_calls", body).await.0, StatusCode::OK);
        let (status, _) = s.post(&format!("/agent/function_calls/a{i}/respond"), json!({"approved": true})).await;
        assert_eq!(status, StatusCode::OK);
    }
    for i in 0..3 {
        let body = json!({"run_id": "r", "call_id": format!("d{i}"), "spec": {"fn": "drop_table", "kwargs": {}}});
        s.post("/function_calls", body).await;
        let approved = i != 2;
        s.post(&format!("/agent/function_calls/d{i}/respond"), json!({"approved": approved})).await;
    }
    let out = run_cli(s.dir.path(), &["policy", "suggest", "--project", "alpha", "--min", "3"], &[], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rules = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(rules.contains("name = \"suggested: refund\"") && !rules.contains("drop_table"), "{rules}");
    assert!(rules.contains(r#"when = "args.amount <= 90 && args.currency == 'EUR'""#), "{rules}");
    // Pasted as it is, it is a valid policy that approves the same calls at once.
    assert_eq!(put_policy(&s, &s.key, &rules).await.0, StatusCode::OK);
    let body =
        json!({"run_id": "r", "call_id": "n1", "spec": {"fn": "refund", "kwargs": {"amount": 60, "currency": "EUR"}}});
    assert_eq!(s.post("/function_calls", body).await.1["status"]["approved"], true);
    let json_out = run_cli(s.dir.path(), &["policy", "suggest", "--project", "alpha", "--min", "4", "--json"], &[], "");
    assert_eq!(String::from_utf8_lossy(&json_out.stdout).trim(), "[]", "three approvals are fewer than --min 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ladder_step_to_slack_posts_to_its_channel_and_an_expiry_updates_the_message() {
    let (s, fake) = crate::slack::slack_server(Some("C0OPS")).await;
    let policy = "[[rule]]\nname = \"ops\"\naction = \"ask\"\nexpire_after = \"2s\"\nescalate = [ { after = \"1s\", to = { slack = \"C0FINANCE\" } } ]\n";
    assert_eq!(put_policy(&s, &s.key, policy).await.0, StatusCode::OK);
    assert_eq!(s.post("/function_calls", approval("l1")).await.0, StatusCode::OK);
    let wait = std::time::Duration::from_secs(15);
    // The request, to the default channel; the step, in its thread and to its own channel.
    let posts = fake.wait_for("chat.postMessage", 3, wait).await;
    assert_eq!(posts[0].body["channel"], "C0OPS");
    let thread = posts.iter().find(|p| p.body["channel"] == "C0OPS" && p.body.get("thread_ts").is_some());
    assert!(thread.unwrap().body.to_string().contains("No decision after 1s"), "{posts:?}");
    let finance = posts.iter().find(|p| p.body["channel"] == "C0FINANCE").expect("the step posts to its channel");
    assert!(finance.body.to_string().contains("cs_approve"), "people there can decide: {}", finance.body);
    let updates = fake.wait_for("chat.update", 1, wait).await;
    let text = updates.last().unwrap().body.to_string();
    assert!(text.contains("Expired") && text.contains("expired after 2s without a decision"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_that_is_not_met_in_time_expires_with_its_votes_on_record() {
    let s = TestServer::start().await;
    s.person("ada@example.com", "a long passphrase", &["alpha"]).await;
    let policy = "[[rule]]\nname = \"two people\"\naction = \"ask\"\napprovers = { count = 2 }\nexpire_after = \"2s\"\non_expire = \"deny\"\n";
    assert_eq!(put_policy(&s, &s.key, policy).await.0, StatusCode::OK);
    assert_eq!(s.post("/function_calls", approval("q1")).await.0, StatusCode::OK);
    let ada = owned_key(&s, "ada@example.com").await;
    let respond = "/agent/function_calls/q1/respond";
    let (status, voted) = s.post_as(&ada, respond, json!({"approved": true, "comment": "fine by me"})).await;
    assert_eq!(status, StatusCode::OK, "{voted}");
    assert_eq!(voted["status"]["responded_at"], Value::Null, "one approval of two leaves it pending: {voted}");

    // Nobody else approves: the deadline ends it, as the rule says, not as a rejection.
    let started = std::time::Instant::now();
    let done = loop {
        let (_, fc) = s.get("/function_calls/q1").await;
        if fc["status"]["responded_at"].is_string() {
            break fc;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "never expired: {fc}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(done["status"]["approved"], false, "{done}");
    assert_eq!(done["status"]["comment"], "expired after 2s without a decision", "{done}");
    assert_eq!(done["status"]["user_info"]["channel"], "policy", "{done}");
    assert_eq!(done["status"]["user_info"]["rule"], "two people", "{done}");

    // A vote after the deadline is refused and changes nothing.
    let bob = owned_key(&s, "bob@example.com").await;
    let (late, body) = s.post_as(&bob, respond, json!({"approved": true})).await;
    assert_eq!(late, StatusCode::CONFLICT, "{body}");
    assert_eq!(s.get("/function_calls/q1").await.1["status"], done["status"]);

    // The log keeps the vote between the creation and the expiry.
    let log = sealed_log(&s, &s.key, 4).await;
    let types: Vec<Value> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str::<Value>(e["event"].as_str().unwrap()).unwrap())
        .filter(|e| e["call_id"] == "q1")
        .map(|e| if e["type"] == "voted" { json!(["voted", e["vote"]["voter"]]) } else { e["type"].clone() })
        .collect();
    assert_eq!(types, vec![json!("created"), json!(["voted", "ada@example.com"]), json!("decided")]);
}
