//! Several instances on one PostgreSQL database behave as one server. These run only when the
//! suite runs on PostgreSQL (SQLite serves a single process).

use crate::support::{TestServer, approval, on_postgres, question};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn two_instances() -> Option<(Arc<TestServer>, Arc<TestServer>)> {
    if !on_postgres() {
        eprintln!("skipped: several instances need PostgreSQL (set COUNTERSIGN_TEST_DATABASE_URL)");
        return None;
    }
    let a = TestServer::start().await;
    let b = a.another_instance().await;
    Some((Arc::new(a), Arc::new(b)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_one_instance_wakes_a_long_poll_on_another() {
    let Some((a, b)) = two_instances().await else { return };
    for round in 0..5 {
        let id = format!("x{round}");
        a.post("/function_calls", approval(&id)).await;
        let waiter = {
            let (b, id) = (b.clone(), id.clone());
            tokio::spawn(async move {
                let (status, body) = b.get(&format!("/function_calls/{id}?wait=30")).await;
                (status, body, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(!waiter.is_finished(), "B holds the long-poll while pending");
        let decided = Instant::now();
        let (status, _) = a.post(&format!("/agent/function_calls/{id}/respond"), json!({"approved": true})).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body, woke) = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"]["approved"], true, "B's waiter sees A's decision");
        assert!(woke - decided < Duration::from_secs(1), "woken by NOTIFY, not by the end of the wait");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_on_another_instance_see_the_decision_at_once() {
    let Some((a, b)) = two_instances().await else { return };
    a.post("/contact_requests", question("q")).await;
    // B holds the pending question in memory once it has waited on it.
    let (_, pending) = b.get("/contact_requests/q?wait=0.1").await;
    assert_eq!(pending["status"]["response"], Value::Null);
    a.post("/agent/human_contacts/q/respond", json!({"response": "from A"})).await;
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let (_, seen) = b.get("/contact_requests/q").await;
        if seen["status"]["response"] == "from A" {
            break;
        }
        assert!(Instant::now() < deadline, "B still reports the question pending: {seen}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Escalations made on A reach B's view too.
    a.post("/contact_requests", question("e")).await;
    b.get("/contact_requests/e?wait=0.05").await;
    a.post(
        "/agent/human_contacts/e/escalate_email",
        json!({"escalation_msg": "m", "channel": {"email": {"address": "a@b.c"}}}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(1);
    while b.get("/contact_requests/e").await.1["escalations"].as_array().is_none_or(Vec::is_empty) {
        assert!(Instant::now() < deadline, "B never saw A's escalation");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_response_wins_across_instances() {
    let Some((a, b)) = two_instances().await else { return };
    for round in 0..5 {
        let id = format!("race{round}");
        a.post("/function_calls", approval(&id)).await;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let server = if i % 2 == 0 { a.clone() } else { b.clone() };
                let id = id.clone();
                tokio::spawn(async move {
                    server
                        .post(
                            &format!("/agent/function_calls/{id}/respond"),
                            json!({"approved": i % 3 == 0, "comment": format!("r{i}")}),
                        )
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.unwrap().0 {
                StatusCode::OK => winners += 1,
                StatusCode::CONFLICT => {}
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(winners, 1, "exactly one decision across both instances");
        assert_eq!(a.get(&format!("/function_calls/{id}")).await.1, b.get(&format!("/function_calls/{id}")).await.1);
    }
}

#[tokio::test]
async fn keys_and_requests_are_shared() {
    let Some((a, b)) = two_instances().await else { return };
    let (_, created) = a.post("/function_calls", approval("shared")).await;
    let (status, seen) = b.get("/function_calls/shared").await;
    assert_eq!(status, StatusCode::OK, "B knows the key and the request made through A");
    assert_eq!(seen, created);
    let (_, page) = b.get("/agent/function_calls/pending").await;
    assert_eq!(page["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbox_on_one_instance_hears_of_requests_made_on_another() {
    let Some((a, b)) = two_instances().await else { return };
    let ada = crate::web::signed_in(&b, "ada@example.com", &["alpha"]).await;
    let mut stream = crate::web::open_events(&b, &ada).await;
    assert_eq!(stream.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.post_as(&a.other_key, "/function_calls", approval("theirs")).await;
    let quiet = crate::web::events_within(&mut stream, Duration::from_millis(500)).await;
    assert!(quiet.is_empty(), "another project's request is not announced: {quiet:?}");
    a.post("/function_calls", approval("on-a")).await;
    assert_eq!(crate::web::events_within(&mut stream, Duration::from_secs(2)).await, vec!["changed"]);
    a.post("/agent/function_calls/on-a/respond", json!({"approved": true})).await;
    assert_eq!(crate::web::events_within(&mut stream, Duration::from_secs(2)).await, vec!["changed"]);
}
