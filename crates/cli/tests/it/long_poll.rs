//! `?wait=SECONDS`: answer when the request is decided, or with the pending object at the end.

use crate::support::{TestServer, approval, question};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_get_wakes_when_the_decision_lands() {
    let s = Arc::new(TestServer::start().await);
    s.post("/function_calls", approval("w")).await;
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = s.get("/function_calls/w?wait=30").await;
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the waiter holds while the request is pending");
    let decided_at = Instant::now();
    s.post("/agent/function_calls/w/respond", json!({"approved": true, "comment": "ok"})).await;
    let ((status, body), waited) = waiter.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"]["approved"], true);
    assert!(waited < Duration::from_secs(5), "woke promptly, not at the end of the wait");
    assert!(decided_at.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_wait_that_runs_out_answers_with_the_pending_object() {
    let s = TestServer::start().await;
    s.post("/contact_requests", question("q")).await;
    let started = Instant::now();
    let (status, body) = s.get("/contact_requests/q?wait=0.4").await;
    let waited = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"]["response"], Value::Null);
    assert!(waited >= Duration::from_millis(350), "waited {waited:?}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
}

#[tokio::test]
async fn waiting_on_a_decided_request_answers_at_once() {
    let s = TestServer::start().await;
    s.post("/contact_requests", question("q")).await;
    s.post("/agent/human_contacts/q/respond", json!({"response": "blue"})).await;
    let started = Instant::now();
    let (status, body) = s.get("/contact_requests/q?wait=30").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"]["response"], "blue");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(s.get("/contact_requests/none?wait=1").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_waiters_on_one_question_all_wake() {
    let s = Arc::new(TestServer::start().await);
    s.post("/contact_requests", question("q")).await;
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.get("/human_contacts/q?wait=30").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.post("/agent/human_contacts/q/respond", json!({"response": "teal"})).await;
    for waiter in waiters {
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"]["response"], "teal");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_releases_waiters_with_the_current_state() {
    let mut s = TestServer::start().await;
    s.post("/function_calls", approval("w")).await;
    let (http, url, key) = (s.http.clone(), s.api("/function_calls/w?wait=60"), s.key.clone());
    let waiter =
        tokio::spawn(async move { crate::support::json(http.get(url).bearer_auth(key).send().await.unwrap()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    s.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown did not wait for the 60 s poll");
    let (status, body) = waiter.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"]["approved"], Value::Null);
}
