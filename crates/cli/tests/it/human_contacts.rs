//! Questions to humans: `/contact_requests`, its `/human_contacts` alias, answers and escalations.

use crate::support::{TestServer, assert_error, question};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn ask_and_answer_through_both_paths() {
    let s = TestServer::start().await;
    let body = json!({"run_id": "run-fixed", "call_id": "q1", "spec": {"msg": "what color?", "subject": "Re: hi",
        "channel": {"slack": null, "sms": null, "whatsapp": null, "email": {"address": "a.b+c@example.com",
        "context_about_user": "the boss", "additional_recipients": [{"address": "x@y.z", "context_about_user": null, "field": "cc"}],
        "subject": "Re: hi", "experimental_subject_line": "Re: hi", "template": null}},
        "response_options": [{"name": "b", "title": "Blue", "description": null, "prompt_fill": null, "interactive": false}],
        "state": {"k": [1, 2, 3]}}, "status": null});
    let (status, created) = s.post("/contact_requests", body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["spec"], body["spec"]);
    assert_eq!(created["status"]["response"], Value::Null);
    let (_, via_alias) = s.get("/human_contacts/q1").await;
    assert_eq!(via_alias, created);

    let (status, answered) = s
        .post(
            "/agent/human_contacts/q1/respond",
            json!({"requested_at": null, "responded_at": null, "response": "green", "response_option_name": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answered}");
    assert_eq!(answered["status"]["response"], "green");
    assert!(answered["status"]["responded_at"].is_string());
    let (_, fetched) = s.get("/contact_requests/q1").await;
    assert_eq!(fetched, answered);

    let (status, _) = s.post("/human_contacts", question("q2")).await;
    assert_eq!(status, StatusCode::OK, "the documented alias creates too");
    let (_, q2) = s.get("/contact_requests/q2").await;
    assert_eq!(q2["spec"]["msg"], "which color?");
}

#[tokio::test]
async fn an_option_answers_and_an_empty_answer_is_refused() {
    let s = TestServer::start().await;
    let mut body = question("q");
    body["spec"]["response_options"] = json!([{"name": "b", "title": "Blue", "prompt_fill": "blue, definitely"}]);
    s.post("/contact_requests", body).await;
    for empty in [json!({"response": ""}), json!({"response": null}), json!({}), json!({"response": "   "})] {
        let got = s.post("/agent/human_contacts/q/respond", empty).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request", "response");
    }
    let got = s.post("/agent/human_contacts/q/respond", json!({"response_option_name": "red"})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request", "response_option_name");
    let (status, r) = s.post("/agent/human_contacts/q/respond", json!({"response_option_name": "b"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(r["status"]["response"], "blue, definitely");
    assert_eq!(r["status"]["response_option_name"], "b");
    let again = s.post("/agent/human_contacts/q/respond", json!({"response": "other"})).await;
    assert_error(&again, StatusCode::CONFLICT, "conflict", "already has a response");
}

#[tokio::test]
async fn questions_are_validated_and_idempotent() {
    let s = TestServer::start().await;
    let got = s.post("/contact_requests", json!({"run_id": "r", "call_id": "x", "spec": {"msg": ""}})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request", "spec.msg");
    let got = s.post("/contact_requests", json!({"run_id": "r", "call_id": "x", "spec": {}})).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request", "msg");
    let (_, first) = s.post("/contact_requests", question("same")).await;
    let (status, again) = s.post("/contact_requests", question("same")).await;
    assert_eq!((status, &again), (StatusCode::OK, &first));
    let mut different = question("same");
    different["spec"]["msg"] = json!("another question");
    assert_error(&s.post("/contact_requests", different).await, StatusCode::CONFLICT, "conflict", "already exists");
    // Function calls and questions have separate call_id spaces.
    assert_eq!(s.post("/function_calls", crate::support::approval("same")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn questions_escalate_like_approvals() {
    let s = TestServer::start().await;
    s.post("/contact_requests", question("q")).await;
    let (status, r) = s.post("/agent/human_contacts/q/escalate_email", json!({"escalation_msg": "m", "additional_recipients": [{"address": "m@x.com", "field": "cc"}], "channel": null})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["escalations"][0]["additional_recipients"][0]["address"], "m@x.com");
    assert_eq!(r["status"]["response"], Value::Null);
}
