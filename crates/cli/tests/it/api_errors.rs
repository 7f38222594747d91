//! The error contract: every answer is JSON, statuses are right, messages name the field.

use crate::support::{TestServer, approval, assert_error, json};
use countersign_server::Settings;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn missing_wrong_and_unknown_keys_get_401() {
    let s = TestServer::start().await;
    let url = s.api("/function_calls/x");
    let none = s.http.get(&url).send().await.unwrap();
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    assert_error(&json(none).await, StatusCode::UNAUTHORIZED, "unauthorized", "Authorization");
    let basic = s.http.get(&url).header("authorization", "Basic dTpw").send().await.unwrap();
    assert_error(&json(basic).await, StatusCode::UNAUTHORIZED, "unauthorized", "Bearer");
    let unknown = s.http.get(&url).bearer_auth("cs_not-a-real-key").send().await.unwrap();
    assert_error(&json(unknown).await, StatusCode::UNAUTHORIZED, "unauthorized", "unknown or revoked");
    let create = s.http.post(s.api("/function_calls")).json(&approval("c")).send().await.unwrap();
    assert_eq!(create.status(), StatusCode::UNAUTHORIZED, "auth is checked before the body");
}

#[tokio::test]
async fn unknown_ids_get_404() {
    let s = TestServer::start().await;
    assert_error(&s.get("/function_calls/nope").await, StatusCode::NOT_FOUND, "not_found", "nope");
    assert_error(&s.get("/contact_requests/nope").await, StatusCode::NOT_FOUND, "not_found", "nope");
    let got = s.post("/agent/human_contacts/nope/respond", serde_json::json!({"response": "x"})).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", "nope");
}

#[tokio::test]
async fn malformed_bodies_get_400_naming_the_problem() {
    let s = TestServer::start().await;
    let raw = |body: &'static str| s.http.post(s.api("/function_calls")).bearer_auth(&s.key).body(body).send();
    assert_error(
        &json(raw("{not json").await.unwrap()).await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "not valid JSON",
    );
    assert_error(&json(raw("[1,2]").await.unwrap()).await, StatusCode::BAD_REQUEST, "invalid_request", "JSON object");
    let cases = [
        (serde_json::json!({"run_id": "r", "call_id": "c", "spec": {"fn": "f", "kwargs": null}}), "spec.kwargs"),
        (serde_json::json!({"run_id": "r", "call_id": "c", "spec": {"kwargs": {}}}), "fn"),
        (serde_json::json!({"run_id": 5, "call_id": "c", "spec": {"fn": "f", "kwargs": {}}}), "run_id"),
        (serde_json::json!({"run_id": "r", "call_id": "a/b", "spec": {"fn": "f", "kwargs": {}}}), "call_id"),
        (
            serde_json::json!({"run_id": "r", "call_id": "c", "spec": {"fn": "f", "kwargs": {}, "channel": {"email": {"context_about_user": "x"}}}}),
            "spec.channel.email",
        ),
    ];
    for (body, field) in cases {
        let got = s.post("/function_calls", body.clone()).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request", field);
    }
    let (_, list) = s.get("/agent/function_calls/pending").await;
    assert_eq!(list["total"], 0, "nothing was stored by bad requests");
    let bad_wait = s.get("/function_calls/x?wait=soon").await;
    assert_error(&bad_wait, StatusCode::BAD_REQUEST, "invalid_request", "query");
}

#[tokio::test]
async fn bodies_over_the_limit_get_a_json_413() {
    let s = TestServer::start_with(Settings { max_body_bytes: 64 * 1024, ..Settings::default() }).await;
    let mut body = approval("big");
    body["spec"]["state"] = serde_json::json!({"blob": "x".repeat(100 * 1024)});
    let got = s.post("/function_calls", body).await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "max_body_bytes");
    assert_eq!(s.get("/function_calls/big").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn large_state_round_trips_under_the_spec_limit_and_over_it_is_a_413() {
    let s = TestServer::start().await;
    let mut body = approval("large");
    let numbers: Vec<u64> = (0..100_000).collect();
    // About 4.6 MB of spec (the HumanLayer examples send several MB), under the default
    // max_spec_bytes of 8 MiB.
    body["spec"]["state"] = serde_json::json!({"numbers": numbers, "text": "y".repeat(4_000_000)});
    let (status, created) = s.post("/function_calls", body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(created["spec"], body["spec"]);
    let (_, fetched) = s.get("/function_calls/large").await;
    assert_eq!(fetched["spec"]["state"], body["spec"]["state"]);
    let mut over = approval("over");
    over["spec"]["state"] = serde_json::json!({"text": "y".repeat(8 * 1024 * 1024)});
    let got = s.post("/function_calls", over).await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "max_spec_bytes");
    assert_eq!(s.get("/function_calls/over").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_base_url_with_a_trailing_slash_works() {
    let s = TestServer::start().await;
    let url = format!("http://{}/humanlayer/v1//function_calls", s.addr);
    let created = json(s.http.post(url).bearer_auth(&s.key).json(&approval("slash")).send().await.unwrap()).await;
    assert_eq!(created.0, StatusCode::OK);
    let url = format!("http://{}/humanlayer/v1//function_calls/slash?wait=0", s.addr);
    let fetched = json(s.http.get(url).bearer_auth(&s.key).send().await.unwrap()).await;
    assert_eq!(fetched.0, StatusCode::OK);
    assert_eq!(fetched.1["call_id"], "slash");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let s = TestServer::start().await;
    let missing = json(s.http.get(s.root("/nope")).send().await.unwrap()).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found", "/humanlayer/v1");
    let method = json(s.http.delete(s.api("/function_calls")).bearer_auth(&s.key).send().await.unwrap()).await;
    assert_error(&method, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "DELETE");
}

#[tokio::test]
async fn health_and_openapi_are_served() {
    let s = TestServer::start().await;
    let (status, health) = json(s.http.get(s.root("/healthz")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    let (status, doc) = json(s.http.get(s.root("/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/humanlayer/v1/function_calls",
        "/humanlayer/v1/function_calls/{call_id}",
        "/humanlayer/v1/agent/function_calls/{call_id}/respond",
        "/humanlayer/v1/agent/function_calls/{call_id}/escalate_email",
        "/humanlayer/v1/agent/function_calls/pending",
        "/humanlayer/v1/contact_requests",
        "/humanlayer/v1/human_contacts",
        "/humanlayer/v1/contact_requests/{call_id}",
        "/humanlayer/v1/agent/human_contacts/{call_id}/respond",
        "/humanlayer/v1/agent/human_contacts/{call_id}/escalate_email",
        "/humanlayer/v1/agent/human_contacts/pending",
        "/humanlayer/v1/project",
        "/healthz",
    ] {
        assert!(paths.contains_key(path), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"]["FunctionCallSpec"].is_object());
    assert_ne!(doc["components"]["securitySchemes"]["bearer"], Value::Null);
}

/// `/readyz` answers 200 while the database does, and 503 (JSON, no detail) once it does not.
#[tokio::test]
async fn readiness_follows_the_database() {
    let s = crate::support::TestServer::start().await;
    let ready = s.http.get(format!("http://{}/readyz", s.addr)).send().await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
    s.store.close().await;
    let down = s.http.get(format!("http://{}/readyz", s.addr)).send().await.unwrap();
    assert_eq!(down.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = down.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let live = s.http.get(format!("http://{}/healthz", s.addr)).send().await.unwrap();
    assert_eq!(live.status(), reqwest::StatusCode::OK, "liveness does not depend on the database");
}
