//! Waiting: long-polls instead of polling, through restarts, until the deadline; errors that
//! retrying cannot fix come back at once.

use crate::support::{CountingProxy, TestServer};
use countersign_client::{Client, Error, FunctionCallSpec};
use serde_json::json;
use std::time::{Duration, Instant};

fn spec() -> FunctionCallSpec {
    FunctionCallSpec::from_args("send_email", &json!({"to": "a@b.c"})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_arrives_at_once_through_one_long_poll_not_repeated_polls() {
    let server = TestServer::start().await;
    let proxy = CountingProxy::start(server.addr).await;
    let client = Client::builder().base_url(proxy.base()).api_key(&server.key).build().unwrap();
    let waiter = tokio::spawn(async move {
        let approval = client.request_approval_with_id("slow-1", spec()).await;
        (approval, Instant::now())
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!waiter.is_finished());
    let decided_at = Instant::now();
    server.decide("slow-1", json!({"approved": true})).await;
    let (approval, arrived_at) = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    assert!(approval.unwrap().approved);
    let latency = arrived_at - decided_at;
    assert!(latency < Duration::from_millis(250), "the decision took {latency:?} to arrive");
    assert!(proxy.gets() <= 2, "{} GETs in 2 s: the SDK must long-poll, not poll", proxy.gets());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_resumes_after_the_agent_and_the_server_restart() {
    let mut server = TestServer::start().await;
    // The agent asks with its own call_id, then gives up (crashes) before anyone decides.
    let gave_up = server.client().with_deadline(Some(Duration::from_millis(300)));
    let err = gave_up.request_approval_with_id("resume-1", spec()).await.unwrap_err();
    assert!(matches!(err, Error::Deadline { ref call_id, .. } if call_id == "resume-1"), "{err}");

    let port = server.addr.port();
    server.stop().await;
    server.start_again().await;
    assert_eq!(server.addr.port(), port, "the same address");
    server.decide("resume-1", json!({"approved": false, "comment": "decided while the agent was down"})).await;

    // The restarted agent waits again on the same id and gets the decision.
    let approval = server.client().wait_function_call("resume-1").await.unwrap();
    assert!(!approval.approved);
    assert_eq!(approval.denial_message(), "User denied send_email with message: decided while the agent was down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_in_progress_keeps_waiting_while_the_server_restarts() {
    let mut server = TestServer::start().await;
    let client = server.client();
    client.create_function_call("restart-2", &spec()).await.unwrap();
    let waiter = tokio::spawn(async move { client.wait_function_call("restart-2").await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished(), "connection errors are retried, not returned");
    server.start_again().await;
    server.decide("restart-2", json!({"approved": true, "comment": "after the restart"})).await;

    let approval = tokio::time::timeout(Duration::from_secs(10), waiter).await.unwrap().unwrap().unwrap();
    assert!(approval.approved);
    assert_eq!(approval.comment.as_deref(), Some("after the restart"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_in_progress_keeps_waiting_while_the_server_restarts() {
    let mut server = TestServer::start().await;
    let client = server.client();
    let waiter = tokio::spawn(async move { client.ask_human_with_id("q-restart", "still there?").await });
    server.next_pending("human_contacts").await;
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.start_again().await;
    server.answer("q-restart", json!({"response": "yes"})).await;
    let answer = tokio::time::timeout(Duration::from_secs(10), waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(answer.response, "yes");
}

#[tokio::test]
async fn without_a_decision_the_deadline_ends_the_wait() {
    let server = TestServer::start().await;
    let client = server.client_builder().deadline(Duration::from_millis(1500)).build().unwrap();
    let started = Instant::now();
    let err = client.request_approval_with_id("late-1", spec()).await.unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, Error::Deadline { after, .. } if after == Duration::from_millis(1500)), "{err}");
    assert!(waited >= Duration::from_millis(1400) && waited < Duration::from_secs(3), "waited {waited:?}");
    assert!(err.to_string().contains("still pending"), "{err}");
    let call = server.client().get_function_call("late-1").await.unwrap();
    assert_eq!(call.approved(), None, "the request stays pending on the server");
}

#[tokio::test]
async fn the_deadline_holds_while_the_server_is_unreachable() {
    let mut server = TestServer::start().await;
    server.client().create_function_call("down-1", &spec()).await.unwrap();
    let client = server.client().with_deadline(Some(Duration::from_secs(1)));
    server.stop().await;
    let started = Instant::now();
    let err = client.wait_function_call("down-1").await.unwrap_err();
    assert!(matches!(err, Error::Deadline { .. }), "{err}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(3), "waited {waited:?}");
}

#[tokio::test]
async fn a_bad_key_is_refused_at_once() {
    let server = TestServer::start().await;
    let client = Client::new(server.base(), "cs_not_a_key").unwrap();
    let started = Instant::now();
    let err = client.request_approval(spec()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "401 is not retried");
    assert_eq!(err.status(), Some(401), "{err}");
    let Error::Api { code, .. } = &err else { panic!("{err}") };
    assert_eq!(code, "unauthorized", "{err}");
}

#[tokio::test]
async fn an_unknown_call_id_is_refused_at_once() {
    let server = TestServer::start().await;
    let started = Instant::now();
    let err = server.client().wait_function_call("never-created").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "404 is not retried");
    assert_eq!(err.status(), Some(404), "{err}");
    let err = server.client().wait_human_contact("never-created").await.unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
}

#[tokio::test]
async fn a_call_id_with_spaces_and_percent_signs_is_encoded() {
    let server = TestServer::start().await;
    let client = server.client();
    let id = "tool call:ä+1 %2F";
    let created = client.create_function_call(id, &spec()).await.unwrap();
    assert_eq!(created.call_id, id);
    let fetched = client.get_function_call(id).await.unwrap();
    assert_eq!(fetched.call_id, id);
    assert_eq!(fetched.approved(), None);
}
