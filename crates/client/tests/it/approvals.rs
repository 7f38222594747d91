//! Guarding a function: it runs with the approved arguments, or not at all.

use crate::support::TestServer;
use countersign_client::{Error, FunctionCallSpec, ResponseOption};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Email {
    to: String,
    body: String,
}

fn email() -> Email {
    Email { to: "ceo@example.com".into(), body: "Q3 numbers".into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_function_runs_with_the_requested_arguments() {
    let server = Arc::new(TestServer::start().await);
    let human = {
        let server = server.clone();
        tokio::spawn(async move {
            let pending = server.next_pending("function_calls").await;
            assert_eq!(
                pending["spec"],
                json!({"fn": "send_email", "kwargs": {"to": "ceo@example.com", "body": "Q3 numbers"}})
            );
            assert_eq!(pending["run_id"], "test-run");
            server.decide(pending["call_id"].as_str().unwrap(), json!({"approved": true, "comment": "fine"})).await;
        })
    };
    let sent = server
        .client()
        .require_approval("send_email", email(), |email: Email| async move { format!("sent to {}", email.to) })
        .await
        .unwrap();
    human.await.unwrap();
    assert_eq!(sent, Ok("sent to ceo@example.com".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_function_does_not_run_and_the_llm_gets_the_humans_words() {
    let server = Arc::new(TestServer::start().await);
    let human = {
        let server = server.clone();
        tokio::spawn(async move {
            let pending = server.next_pending("function_calls").await;
            let call_id = pending["call_id"].as_str().unwrap();
            server.decide(call_id, json!({"approved": false, "comment": "not to the CEO"})).await;
        })
    };
    let ran = AtomicBool::new(false);
    let outcome = server
        .client()
        .require_approval("send_email", json!({"to": "ceo@example.com"}), |_: Value| async {
            ran.store(true, Ordering::SeqCst);
        })
        .await
        .unwrap();
    human.await.unwrap();
    assert!(!ran.load(Ordering::SeqCst), "the function must not run");
    let denied = outcome.unwrap_err();
    assert_eq!(denied.message(), "User denied send_email with message: not to the CEO");
    assert_eq!(denied.comment, "not to the CEO");
    assert_eq!(denied.fn_name, "send_email");
    let user_info = denied.user_info.expect("the server records who decided");
    assert_eq!(user_info.channel.as_deref(), Some("api"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reject_option_fills_the_comment() {
    let server = Arc::new(TestServer::start().await);
    let human = {
        let server = server.clone();
        tokio::spawn(async move {
            let pending = server.next_pending("function_calls").await;
            assert_eq!(pending["spec"]["reject_options"][0]["name"], "wrong_recipient");
            let decision = json!({"approved": false, "reject_option_name": "wrong_recipient"});
            server.decide(pending["call_id"].as_str().unwrap(), decision).await;
        })
    };
    let spec = FunctionCallSpec::from_args("send_email", &email())
        .unwrap()
        .reject_option(ResponseOption::new("wrong_recipient").title("Wrong recipient").prompt_fill("ask Bob instead"));
    let approval = server.client().request_approval(spec).await.unwrap();
    human.await.unwrap();
    assert!(!approval.approved);
    assert_eq!(approval.reject_option_name.as_deref(), Some("wrong_recipient"));
    assert_eq!(approval.comment.as_deref(), Some("ask Bob instead"));
    assert_eq!(approval.denial_message(), "User denied send_email with message: ask Bob instead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_approval_reports_the_decision_and_the_approved_kwargs() {
    let server = Arc::new(TestServer::start().await);
    let human = {
        let server = server.clone();
        tokio::spawn(async move {
            server.next_pending("function_calls").await;
            server.decide("refund-1", json!({"approved": true})).await;
        })
    };
    let spec = FunctionCallSpec::from_args("refund", &json!({"customer": "acme", "amount": 120}))
        .unwrap()
        .state(json!({"step": 7}));
    let approval = server.client().request_approval_with_id("refund-1", spec.clone()).await.unwrap();
    human.await.unwrap();
    assert!(approval.approved);
    assert_eq!(approval.comment, None);
    assert_eq!(Value::Object(approval.kwargs.clone()), json!({"customer": "acme", "amount": 120}));
    assert_eq!(approval.call.spec, spec, "the spec round-trips, state included");
    assert!(approval.call.status.as_ref().unwrap().responded_at.is_some());

    // Creating again with the same id and spec is a safe retry: it returns the decision at once.
    let again = server.client().request_approval_with_id("refund-1", spec.clone()).await.unwrap();
    assert_eq!(again, approval);

    // A different spec under the same id is refused at once, not retried.
    let other = FunctionCallSpec::from_args("refund", &json!({"customer": "acme", "amount": 9000})).unwrap();
    let err = server.client().request_approval_with_id("refund-1", other).await.unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
}

#[tokio::test]
async fn arguments_that_are_not_an_object_are_refused_before_sending() {
    let server = TestServer::start().await;
    let err = server.client().require_approval("f", vec![1, 2], |_: Vec<i32>| async {}).await.unwrap_err();
    assert!(matches!(err, Error::Arguments(_)), "{err}");
    assert!(err.to_string().contains("must serialize to a JSON object"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_with_edited_arguments_runs_the_function_with_the_edits() {
    let server = Arc::new(TestServer::start().await);
    let human = {
        let server = server.clone();
        tokio::spawn(async move {
            let pending = server.next_pending("function_calls").await;
            let edited = json!({"to": "cfo@example.com", "body": "Q3 numbers, final"});
            let decision = json!({"approved": true, "comment": "to the CFO", "updated_kwargs": edited});
            server.decide(pending["call_id"].as_str().unwrap(), decision).await;
        })
    };
    let sent =
        server.client().require_approval("send_email", email(), |email: Email| async move { email }).await.unwrap();
    human.await.unwrap();
    assert_eq!(sent, Ok(Email { to: "cfo@example.com".into(), body: "Q3 numbers, final".into() }));
}

#[tokio::test]
async fn an_approval_reports_the_edited_arguments_beside_the_requested_ones() {
    let server = TestServer::start().await;
    let client = server.client();
    let spec = FunctionCallSpec::from_args("refund", &json!({"customer": "acme", "amount": 120})).unwrap();
    client.create_function_call("edit-1", &spec).await.unwrap();
    server.decide("edit-1", json!({"approved": true, "updated_kwargs": {"customer": "acme", "amount": 100}})).await;
    let approval = client.wait_function_call("edit-1").await.unwrap();
    assert!(approval.approved && approval.kwargs_edited());
    assert_eq!(Value::Object(approval.kwargs.clone()), json!({"customer": "acme", "amount": 100}));
    assert_eq!(Value::Object(approval.call.spec.kwargs.clone()), json!({"customer": "acme", "amount": 120}));
}
