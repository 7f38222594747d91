//! The audit log: every create, decision and escalation is an event in its project's hash chain,
//! served at `/audit` and verified by `countersign audit verify`, which names the first event an
//! operator (or an attacker with the database) changed, removed or inserted.

use crate::support::{
    TestServer, approval, assert_error, create_scoped_key, database_url, json, on_postgres, question,
};
use countersign_core::api_key::{Scope, Scopes};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `countersign ARGS` on the test server's database.
async fn cli(s: &TestServer, args: &[&str]) -> Output {
    let url = database_url(s.dir.path()).await;
    Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .arg("--data-dir")
        .arg(s.dir.path())
        .args(["--database-url", &url])
        .env_remove("COUNTERSIGN_DATABASE_URL")
        .env_remove("COUNTERSIGN_DATA_DIR")
        .output()
        .unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Runs one statement on the test's database, as someone with the database could.
async fn sql(s: &TestServer, statement: &str) {
    use sqlx::Connection;
    let url = database_url(s.dir.path()).await;
    if on_postgres() {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(statement.to_owned())).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(statement.to_owned())).execute(&mut conn).await.unwrap();
    }
}

/// The key's audit log once every event is sealed (PostgreSQL seals shortly after commit).
pub(crate) async fn sealed_log(s: &TestServer, key: &str, count: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, log) = json(s.http.get(s.api("/audit?limit=1000")).bearer_auth(key).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{log}");
        if log["unsealed"] == 0 && log["events"].as_array().unwrap().len() >= count {
            return log;
        }
        assert!(Instant::now() < deadline, "events still unsealed after 10 s: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The documented chain hash, computed here independently of Countersign's code.
fn chain_hash(seq: u64, prev_hex: &str, event: &str) -> String {
    let prev = hex::decode(prev_hex).unwrap();
    let digest =
        Sha256::new().chain_update(b"countersign.event.v1\0").chain_update(seq.to_be_bytes()).chain_update(&prev);
    hex::encode(digest.chain_update(event.as_bytes()).finalize())
}

/// Creates, escalates and decides in project alpha: five events, in this order.
async fn five_events(s: &TestServer) {
    assert_eq!(s.post("/function_calls", approval("a1")).await.0, StatusCode::OK);
    let escalation = json!({"escalation_msg": "louder", "additional_recipients": [{"address": "lead@example.com"}]});
    let (status, body) = s.post("/agent/function_calls/a1/escalate_email", escalation).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let decision = json!({"approved": false, "comment": "not today"});
    assert_eq!(s.post("/agent/function_calls/a1/respond", decision).await.0, StatusCode::OK);
    assert_eq!(s.post("/contact_requests", question("q1")).await.0, StatusCode::OK);
    assert_eq!(s.post("/agent/human_contacts/q1/respond", json!({"response": "blue"})).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_a_chained_event_that_anyone_can_re_verify() {
    let s = TestServer::start().await;
    // Keys are logged in their project's chain: the server's own, then this agent-only one.
    let agent = create_scoped_key(s.store.as_ref(), "alpha", Scopes::of(&[Scope::Agent])).await;
    five_events(&s).await;
    let log = sealed_log(&s, &s.key, 7).await;
    let events = log["events"].as_array().unwrap();
    assert_eq!(events.len(), 7, "{log}");
    let mut prev = "0".repeat(64);
    let mut seen = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let seq = e["seq"].as_u64().unwrap();
        assert_eq!(seq, i as u64 + 1);
        assert_eq!(e["prev_hash"], prev.as_str());
        let body = e["event"].as_str().unwrap();
        assert_eq!(e["hash"], chain_hash(seq, &prev, body).as_str(), "event {seq}: {body}");
        prev = e["hash"].as_str().unwrap().to_owned();
        let event: Value = serde_json::from_str(body).unwrap();
        seen.push(format!("{} {}", event["type"].as_str().unwrap(), event["call_id"].as_str().unwrap_or("-")));
    }
    assert_eq!(
        seen,
        ["key_created -", "key_created -", "created a1", "escalated a1", "decided a1", "created q1", "decided q1"]
    );
    let key: Value = serde_json::from_str(events[1]["event"].as_str().unwrap()).unwrap();
    assert_eq!(key["key"]["scopes"], json!(["agent"]));
    assert_eq!(key["key"]["key"], json!(&agent[..9]), "the prefix, never the secret");
    let decided: Value = serde_json::from_str(events[4]["event"].as_str().unwrap()).unwrap();
    assert_eq!(decided["decision"], json!({"outcome": "rejected", "comment": "not today"}));
    assert_eq!(decided["actor"]["channel"], "api");
    let created: Value = serde_json::from_str(events[2]["event"].as_str().unwrap()).unwrap();
    assert_eq!(created["spec"], approval("a1")["spec"], "the spec as the agent sent it");
    assert_eq!(log["head"], json!({"count": 7, "hash": prev}));
    assert_eq!(log["project"], "alpha");

    // Paging: after=2&limit=2 is events 3 and 4.
    let (_, page) = json(s.http.get(s.api("/audit?after=2&limit=2")).bearer_auth(&s.key).send().await.unwrap()).await;
    let seqs: Vec<u64> = page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!((seqs, page["next_after"].clone()), (vec![3, 4], json!(4)));
    let bad = json(s.http.get(s.api("/audit?limit=5000")).bearer_auth(&s.key).send().await.unwrap()).await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "invalid_request", "limit");

    // A key of project beta sees only beta's chain; an agent-only key is refused.
    let theirs = sealed_log(&s, &s.other_key, 1).await;
    assert_eq!(theirs["head"]["count"], 1, "beta's chain holds its own key only: {theirs}");
    assert_eq!(s.post_as(&s.other_key, "/function_calls", approval("b1")).await.0, StatusCode::OK);
    let theirs = sealed_log(&s, &s.other_key, 2).await;
    let bodies: Vec<&str> = theirs["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(bodies.len(), 2);
    assert!(bodies[0].contains(r#""type":"key_created""#), "{bodies:?}");
    assert!(bodies[1].contains(r#""call_id":"b1""#) && !bodies[1].contains(r#""call_id":"a1""#), "{bodies:?}");
    let refused = json(s.http.get(s.api("/audit")).bearer_auth(&agent).send().await.unwrap()).await;
    assert_eq!(refused.0, StatusCode::FORBIDDEN, "{}", refused.1);

    // The CLI agrees: verify, export in order, and a checkpoint line.
    let out = cli(&s, &["audit", "verify"]).await;
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("alpha: 7 events verified, head {prev}")), "{stdout}");
    assert!(stdout.contains("beta: 2 events verified"), "{stdout}");
    let out = cli(&s, &["audit", "export", "--project", "alpha", "--since", "1", "--jsonl"]).await;
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["seq"], 2);
    assert_eq!(lines[5]["hash"], prev.as_str());
    assert_eq!(lines[0]["project"], "alpha");
    // Re-verified outside Countersign, with the README's few lines of Python.
    let out = cli(&s, &["audit", "export", "--project", "alpha", "--jsonl"]).await;
    let export = s.dir.path().join("alpha.jsonl");
    std::fs::write(&export, &out.stdout).unwrap();
    let script = r#"
import hashlib, json, sys
def chain_hash(seq, prev_hex, event_text):
    return hashlib.sha256(b"countersign.event.v1\0" + seq.to_bytes(8, "big")
                          + bytes.fromhex(prev_hex) + event_text.encode()).hexdigest()
prev = "0" * 64
for n, line in enumerate(open(sys.argv[1]), 1):
    e = json.loads(line)
    assert e["seq"] == n and e["prev_hash"] == prev, n
    assert chain_hash(e["seq"], prev, e["event"]) == e["hash"], n
    prev = e["hash"]
print(n, prev)
"#;
    let python = Command::new("python3").arg("-c").arg(script).arg(&export).output().unwrap();
    assert!(python.status.success(), "{python:?}");
    assert_eq!(text(&python.stdout).trim(), format!("7 {prev}"));
    let out = cli(&s, &["audit", "export", "--project", "beta"]).await;
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let out = cli(&s, &["audit", "head", "--project", "alpha"]).await;
    assert!(text(&out.stdout).lines().any(|l| l == format!("alpha 7 {prev}")), "{out:?}");
    let out = cli(&s, &["audit", "verify", "--project", "nosuch"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no project \"nosuch\""), "{out:?}");
}

/// `audit verify` on alpha: its exit code and what it said.
async fn verify(s: &TestServer, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["audit", "verify", "--project", "alpha"];
    args.extend_from_slice(extra);
    let out = cli(s, &args).await;
    (out.status.code(), format!("{}{}", text(&out.stdout), text(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_removed_or_inserted_event_is_named_by_its_position() {
    let s = TestServer::start().await;
    five_events(&s).await;
    // Event 1 is the key's creation; then the five.
    let log = sealed_log(&s, &s.key, 6).await;
    let alpha = s.store.project_by_name("alpha").await.unwrap().unwrap().id;
    let head = cli(&s, &["audit", "head", "--project", "alpha"]).await;
    let checkpoint = s.dir.path().join("alpha.checkpoint");
    std::fs::write(&checkpoint, &head.stdout).unwrap();
    let checkpoint = checkpoint.to_str().unwrap().to_owned();
    assert_eq!(verify(&s, &["--checkpoint", &checkpoint]).await.0, Some(0));
    let event = |seq: usize| log["events"][seq - 1].clone();

    // Changed: event 4's comment rewritten.
    let original = event(4)["event"].as_str().unwrap().replace('\'', "''");
    let forged = original.replace("not today", "fine");
    sql(&s, &format!("UPDATE events SET body = '{forged}' WHERE project_id = '{alpha}' AND seq = 4")).await;
    let (code, said) = verify(&s, &[]).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("event 4 was changed"), "{said}");
    sql(&s, &format!("UPDATE events SET body = '{original}' WHERE project_id = '{alpha}' AND seq = 4")).await;
    assert_eq!(verify(&s, &[]).await.0, Some(0), "restored");

    // Removed: event 2 deleted, then the last one.
    sql(&s, &format!("UPDATE events SET project_id = 'gone' WHERE project_id = '{alpha}' AND seq = 2")).await;
    let (code, said) = verify(&s, &[]).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("event 2 is missing"), "{said}");
    sql(&s, &format!("UPDATE events SET project_id = '{alpha}' WHERE project_id = 'gone'")).await;
    sql(&s, &format!("UPDATE events SET project_id = 'gone' WHERE project_id = '{alpha}' AND seq = 6")).await;
    let (code, said) = verify(&s, &[]).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("event 6 is missing"), "{said}");
    sql(&s, &format!("UPDATE events SET project_id = '{alpha}' WHERE project_id = 'gone'")).await;
    assert_eq!(verify(&s, &[]).await.0, Some(0), "restored");

    // Inserted: a seventh event forged with a correct hash (the algorithm is public) is still
    // found: the head recorded when the chain was sealed is event 6.
    let prev = event(6)["hash"].as_str().unwrap().to_owned();
    let body = r#"{"type":"decided","request_kind":"function_call","project_id":"x","call_id":"a9","at_us":1}"#;
    let hash = chain_hash(7, &prev, body);
    sql(
        &s,
        &format!(
            "INSERT INTO events (project_id, request_kind, call_id, type, at, escalations, body, seq, prev_hash, hash, \
             sealed_at, routed_at) VALUES ('{alpha}', 'function_call', 'a9', 'decided', 1, 0, '{body}', 7, '{prev}', \
             '{hash}', 1, 1)"
        ),
    )
    .await;
    let (code, said) = verify(&s, &[]).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("event 7"), "{said}");
    sql(&s, &format!("DELETE FROM events WHERE project_id = '{alpha}' AND seq = 7")).await;

    // Cut short consistently (the last event and the recorded head both rewound): only the
    // checkpoint kept elsewhere notices.
    let five = event(5)["hash"].as_str().unwrap().to_owned();
    sql(&s, &format!("UPDATE events SET project_id = 'gone' WHERE project_id = '{alpha}' AND seq = 6")).await;
    sql(&s, &format!("UPDATE chain_heads SET seq = 5, hash = '{five}' WHERE project_id = '{alpha}'")).await;
    assert_eq!(verify(&s, &[]).await.0, Some(0), "consistent without a checkpoint");
    let (code, said) = verify(&s, &["--checkpoint", &checkpoint]).await;
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("does not contain the checkpoint (6 events"), "{said}");
    let (code, said) = {
        let out = cli(&s, &["audit", "verify", "--project", "alpha", "--json"]).await;
        (out.status.code(), text(&out.stdout))
    };
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(serde_json::from_str::<Value>(&said).unwrap()[0]["count"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_writing_at_once_make_one_gapless_chain_per_project() {
    if !on_postgres() {
        eprintln!("skipped: several instances need PostgreSQL (set COUNTERSIGN_TEST_DATABASE_URL)");
        return;
    }
    let a = std::sync::Arc::new(TestServer::start().await);
    let b = std::sync::Arc::new(a.another_instance().await);
    let c = std::sync::Arc::new(a.another_instance().await);
    let mut tasks = Vec::new();
    // Four writers per instance, so that creates of both projects meet in one batch and decisions
    // commit while the sealer seals.
    for (n, s) in [a.clone(), b.clone(), c.clone()].into_iter().enumerate() {
        for w in 0..4 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in (w..60).step_by(4) {
                    let id = format!("i{n}-{i}");
                    let (alpha, beta) = tokio::join!(
                        s.post("/function_calls", approval(&id)),
                        s.post_as(&s.other_key, "/function_calls", approval(&id))
                    );
                    assert_eq!((alpha.0, beta.0), (StatusCode::OK, StatusCode::OK));
                    if i % 2 == 0 {
                        let path = format!("/agent/function_calls/{id}/respond");
                        assert_eq!(s.post(&path, json!({"approved": true})).await.0, StatusCode::OK);
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The key, 180 creates and 90 decisions in alpha, the key and 180 creates in beta, every one
    // in its chain once.
    for (key, expected) in [(&a.key, 271), (&a.other_key, 181)] {
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = sealed_log(&c, key, 0).await;
            if log["head"]["count"] == expected {
                break;
            }
            assert!(Instant::now() < deadline, "chain not complete: {}", log["head"]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut after = 0;
        loop {
            let (_, page) = json(
                b.http.get(b.api(&format!("/audit?after={after}&limit=100"))).bearer_auth(key).send().await.unwrap(),
            )
            .await;
            let page = page["events"].as_array().unwrap().clone();
            if page.is_empty() {
                break;
            }
            after = page.last().unwrap()["seq"].as_u64().unwrap();
            events.extend(page);
        }
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=expected).collect::<Vec<_>>(), "gapless");
        let mut kinds: Vec<String> = events
            .iter()
            .map(|e| {
                let event: Value = serde_json::from_str(e["event"].as_str().unwrap()).unwrap();
                format!("{} {}", event["type"].as_str().unwrap(), event["call_id"].as_str().unwrap_or("-"))
            })
            .collect();
        kinds.sort();
        let before = kinds.len();
        kinds.dedup();
        assert_eq!(kinds.len(), before, "no event twice");
    }
    let out = cli(&a, &["audit", "verify"]).await;
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("alpha: 271 events verified") && stdout.contains("beta: 181 events verified"), "{stdout}");
}
