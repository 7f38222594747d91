//! Durability: what was acknowledged is there after a restart, pending requests still wake.

use crate::support::{TestServer, approval, question};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_decisions_survive_a_restart() {
    let s = TestServer::start().await;
    let mut body = approval("kept");
    body["spec"]["state"] = json!({"resume_at": "step-7", "memory": [1, 2, {"x": null}]});
    let (_, created) = s.post("/function_calls", body).await;
    let (_, decided) = {
        s.post("/function_calls", approval("decided")).await;
        s.post("/agent/function_calls/decided/respond", json!({"approved": false, "comment": "not today"})).await
    };
    s.post("/contact_requests", question("asked")).await;
    s.post(
        "/agent/function_calls/kept/escalate_email",
        json!({"escalation_msg": "m", "channel": {"email": {"address": "a@b.c"}}}),
    )
    .await;

    let s = Arc::new(s.restart().await);
    let (status, kept) = s.get("/function_calls/kept").await;
    assert_eq!(status, StatusCode::OK, "the key and the request survived");
    assert_eq!(kept["spec"], created["spec"]);
    assert_eq!(kept["status"]["requested_at"], created["status"]["requested_at"]);
    assert_eq!(kept["escalations"][0]["escalation_msg"], "m");
    assert_eq!(s.get("/function_calls/decided").await.1, decided);
    let (_, pending) = s.get("/agent/human_contacts/pending").await;
    assert_eq!(pending["items"][0]["call_id"], "asked");

    // A request left pending before the restart can still be waited on and decided.
    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.get("/contact_requests/asked?wait=30").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.post("/agent/human_contacts/asked/respond", json!({"response": "after restart"})).await;
    let (_, answered) = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    assert_eq!(answered["status"]["response"], "after restart");
    let conflict = s.post("/agent/function_calls/decided/respond", json!({"approved": true})).await;
    assert_eq!(conflict.0, StatusCode::CONFLICT, "a decision made before the restart still wins");
    assert_eq!(s.get("/function_calls/kept").await.1["status"]["approved"], Value::Null);
}
