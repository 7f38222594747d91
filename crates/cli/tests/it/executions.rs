//! At-most-once execution: `POST /function_calls/{call_id}/execution` starts an approved call
//! once (of 16 concurrent starts exactly one wins; the others hear when and by whom), then ends
//! it once, and every report is an event of the audit log. Only approved calls run, and only the
//! project's own keys see them.

use crate::support::{TestServer, assert_error};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn call(id: &str) -> Value {
    json!({"run_id": "run-x", "call_id": id, "spec": {"fn": "wire", "kwargs": {"usd": 900}}})
}

/// The project's audit events of one call, once at least `n` of them are sealed.
async fn audit_types(s: &TestServer, call_id: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, audit) = s.get("/audit?limit=1000").await;
        assert_eq!(status, StatusCode::OK, "{audit}");
        let events: Vec<Value> = audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| serde_json::from_str::<Value>(e["event"].as_str().unwrap()).unwrap())
            .filter(|e| e["call_id"] == call_id)
            .collect();
        if events.len() >= n || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_call_starts_once_under_concurrent_starts_and_ends_once() {
    let s = TestServer::start().await;
    assert_eq!(s.post("/function_calls", call("w1")).await.0, StatusCode::OK);
    let start = json!({"state": "started"});

    // Not approved yet: nothing may run.
    let got = s.post("/function_calls/w1/execution", start.clone()).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict", "is pending, not approved");
    s.post("/agent/function_calls/w1/respond", json!({"approved": true})).await;
    assert_error(&s.get("/function_calls/w1/execution").await, StatusCode::NOT_FOUND, "not_found", "not started");

    // 16 agents (or one agent retried 16 times) start it at once: exactly one runs.
    let tries = (0..16).map(|_| {
        let (http, url, key, start) =
            (s.http.clone(), s.api("/function_calls/w1/execution"), s.key.clone(), start.clone());
        tokio::spawn(async move {
            let answer = http.post(url).bearer_auth(key).json(&start).send().await.unwrap();
            (answer.status(), answer.json::<Value>().await.unwrap())
        })
    });
    let answers: Vec<(StatusCode, Value)> =
        futures::future::join_all(tries).await.into_iter().map(Result::unwrap).collect();
    let won: Vec<&Value> = answers.iter().filter(|(s, _)| *s == StatusCode::OK).map(|(_, b)| b).collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    let first = won[0].clone();
    assert_eq!(first["state"], "started");
    assert!(first["started_by"].as_str().unwrap().starts_with("key "), "{first}");
    for got in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_error(got, StatusCode::CONFLICT, "conflict", "must not run again");
        assert!(got.1["error"]["message"].as_str().unwrap().contains("already started at"), "{}", got.1);
        assert_eq!(got.1["error"]["execution"], first, "the loser hears when and by whom");
    }
    assert_eq!(s.get("/function_calls/w1/execution").await.1, first);

    // Bad reports change nothing.
    for bad in [
        json!({"state": "done"}),
        json!({"state": "finished", "result_sha256": "not-a-hash"}),
        json!({"state": "failed", "error": "x".repeat(2001)}),
        json!({"state": "started", "by": "me"}),
    ] {
        assert_error(
            &s.post("/function_calls/w1/execution", bad).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "",
        );
    }

    let hash = "ab".repeat(32);
    let (status, finished) =
        s.post("/function_calls/w1/execution", json!({"state": "finished", "result_sha256": hash})).await;
    assert_eq!(status, StatusCode::OK, "{finished}");
    assert_eq!(
        (finished["state"].as_str(), finished["result_sha256"].as_str(), &finished["started_at"]),
        (Some("finished"), Some(hash.as_str()), &first["started_at"])
    );
    assert!(finished["ended_at"].is_string());
    for again in [json!({"state": "failed"}), json!({"state": "finished"}), json!({"state": "started"})] {
        let got = s.post("/function_calls/w1/execution", again).await;
        assert_error(&got, StatusCode::CONFLICT, "conflict", "finished at");
        assert_eq!(got.1["error"]["execution"], finished);
    }

    // In the audit log: created, decided, started, finished; the losers left nothing.
    let events = audit_types(&s, "w1", 4).await;
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e["type"].as_str().unwrap() {
            "executed" => format!("executed:{}", e["execution"]["state"].as_str().unwrap()),
            other => other.to_owned(),
        })
        .collect();
    assert_eq!(kinds, ["created", "decided", "executed:started", "executed:finished"], "{events:?}");
    assert_eq!(events[3]["execution"]["result_sha256"], hash.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_approved_calls_of_the_project_run_and_failures_are_recorded() {
    let s = TestServer::start().await;
    for id in ["r1", "f1", "c1"] {
        assert_eq!(s.post("/function_calls", call(id)).await.0, StatusCode::OK);
    }
    s.post("/agent/function_calls/r1/respond", json!({"approved": false, "comment": "no"})).await;
    s.post("/function_calls/c1/cancel", json!({})).await;
    s.post("/agent/function_calls/f1/respond", json!({"approved": true})).await;
    let start = json!({"state": "started"});
    for (id, what) in [("r1", "is rejected"), ("c1", "is cancelled")] {
        assert_error(
            &s.post(&format!("/function_calls/{id}/execution"), start.clone()).await,
            StatusCode::CONFLICT,
            "conflict",
            what,
        );
    }
    assert_error(
        &s.post("/function_calls/nope/execution", start.clone()).await,
        StatusCode::NOT_FOUND,
        "not_found",
        "nope",
    );
    // Another project's key does not see the call (and cannot start it).
    let got = s.post_as(&s.other_key, "/function_calls/f1/execution", start.clone()).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", "f1");
    // Ending before starting is refused; then start, fail once.
    let got = s.post("/function_calls/f1/execution", json!({"state": "failed"})).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict", "was not started");
    // A start sent again with its token (a retry whose answer was lost) is answered again.
    let (status, first) = s.post("/function_calls/f1/execution", json!({"state": "started", "token": "t-1"})).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        s.post("/function_calls/f1/execution", json!({"state": "started", "token": "t-1"})).await,
        (StatusCode::OK, first)
    );
    let got = s.post("/function_calls/f1/execution", json!({"state": "started", "token": "t-2"})).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict", "already started");
    assert!(!got.1.to_string().contains("t-1"), "the token is never shown: {}", got.1);
    let (status, failed) =
        s.post("/function_calls/f1/execution", json!({"state": "failed", "error": "the bank said no"})).await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    assert_eq!((failed["state"].as_str(), failed["error"].as_str()), (Some("failed"), Some("the bank said no")));
    assert_error(&s.post("/function_calls/f1/execution", start).await, StatusCode::CONFLICT, "conflict", "failed at");
    let events = audit_types(&s, "f1", 4).await;
    assert_eq!(events.len(), 4, "created, decided, one start, failed: {events:?}");
    assert_eq!(events.last().unwrap()["execution"]["error"], "the bank said no", "{events:?}");
    assert!(!serde_json::to_string(&events).unwrap().contains("t-1"), "tokens stay out of the audit log");
}
