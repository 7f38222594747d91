//! Behaviour against a scripted HumanLayer API, for what the real server cannot be made to do on
//! demand: 503 answers, a server that ignores `wait`, a decision by a signed-in person.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use countersign_client::{Client, Error};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the fake answers, and what it saw.
#[derive(Default)]
struct Script {
    /// How many creates answer 503 before one succeeds.
    unavailable_creates: usize,
    /// The status the GETs answer with (`null` approved: pending, immediately, ignoring `wait`).
    status: Value,
    created: Option<Value>,
    posts: usize,
    gets: Vec<Instant>,
}

type Shared = Arc<Mutex<Script>>;

async fn create(State(script): State<Shared>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let mut script = script.lock().unwrap();
    script.posts += 1;
    if script.unavailable_creates > 0 {
        script.unavailable_creates -= 1;
        let error = json!({"error": {"code": "unavailable", "message": "the database is unavailable"}});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(error));
    }
    let mut call = body.clone();
    call["status"] = json!({"requested_at": "2025-06-01T12:00:00Z", "approved": null});
    script.created = Some(call.clone());
    (StatusCode::OK, Json(call))
}

async fn fetch(State(script): State<Shared>, Path(call_id): Path<String>) -> (StatusCode, Json<Value>) {
    let mut script = script.lock().unwrap();
    script.gets.push(Instant::now());
    let Some(mut call) = script.created.clone() else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "not_found", "message": call_id}})));
    };
    call["status"] = script.status.clone();
    (StatusCode::OK, Json(call))
}

async fn fake_api(script: Script) -> (SocketAddr, Shared) {
    let shared = Arc::new(Mutex::new(script));
    let app = axum::Router::new()
        .route("/humanlayer/v1/function_calls", post(create))
        .route("/humanlayer/v1/function_calls/{call_id}", get(fetch))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, shared)
}

/// A client of the scripted server, which (like a HumanLayer server) sends no receipts and has no
/// execution records.
fn client(addr: SocketAddr) -> Client {
    Client::builder()
        .base_url(format!("http://{addr}/humanlayer/v1"))
        .api_key("k")
        .verify_receipts(false)
        .track_execution(false)
        .build()
        .unwrap()
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Email {
    to: String,
    body: String,
}

#[tokio::test]
async fn a_human_edit_of_the_arguments_is_what_the_function_runs_with() {
    let status = json!({
        "approved": true, "comment": "sending to the CFO instead", "responded_at": "2025-06-01T12:01:00Z",
        "user_info": {"channel": "web", "email": "boss@example.com"},
        "updated_kwargs": {"to": "cfo@example.com", "body": "Q3 numbers"}
    });
    let (addr, _) = fake_api(Script { status, ..Script::default() }).await;
    let email = Email { to: "ceo@example.com".into(), body: "Q3 numbers".into() };
    let sent =
        client(addr).require_approval("send_email", email, |email: Email| async move { email.to }).await.unwrap();
    assert_eq!(sent, Ok("cfo@example.com".to_owned()));

    let approval = client(addr).wait_function_call("any").await.unwrap();
    assert!(approval.kwargs_edited());
    assert_eq!(approval.kwargs["to"], "cfo@example.com");
    assert_eq!(approval.call.spec.kwargs["to"], "ceo@example.com");
    assert_eq!(approval.user_info.unwrap().email.as_deref(), Some("boss@example.com"));
}

#[tokio::test]
async fn edited_arguments_that_do_not_fit_the_function_are_an_error_not_a_run() {
    let status = json!({"approved": true, "updated_kwargs": {"to": 42}});
    let (addr, _) = fake_api(Script { status, ..Script::default() }).await;
    let email = Email { to: "ceo@example.com".into(), body: "hi".into() };
    let err = client(addr).require_approval("send_email", email, |_: Email| async { panic!("ran") }).await.unwrap_err();
    assert!(matches!(err, Error::Arguments(_)), "{err}");
    assert!(err.to_string().contains("approved arguments of send_email"), "{err}");
}

#[tokio::test]
async fn database_unavailable_answers_are_retried() {
    let status = json!({"approved": true});
    let (addr, script) = fake_api(Script { unavailable_creates: 3, status, ..Script::default() }).await;
    let started = Instant::now();
    let approval = client(addr)
        .request_approval_with_id("c-503", countersign_client::FunctionCallSpec::new("f", Default::default()))
        .await
        .unwrap();
    assert!(approval.approved);
    assert_eq!(script.lock().unwrap().posts, 4, "three 503s, then the create");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(150) && waited < Duration::from_secs(2), "backed off {waited:?}");
}

#[tokio::test]
async fn a_server_that_ignores_wait_is_not_polled_in_a_tight_loop() {
    let (addr, script) = fake_api(Script { status: json!({"approved": null}), ..Script::default() }).await;
    let client = Client::builder()
        .base_url(format!("http://{addr}/humanlayer/v1"))
        .api_key("k")
        .deadline(Duration::from_secs(3))
        .build()
        .unwrap();
    let err =
        client.request_approval(countersign_client::FunctionCallSpec::new("f", Default::default())).await.unwrap_err();
    assert!(matches!(err, Error::Deadline { .. }), "{err}");
    let gets = script.lock().unwrap().gets.clone();
    // Back-off from 100 ms doubling to 5 s: about 6 requests in 3 s, not hundreds.
    assert!(gets.len() <= 8, "{} GETs in 3 s", gets.len());
    let gaps: Vec<Duration> = gets.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.last().unwrap() > &Duration::from_millis(300), "the pauses grow: {gaps:?}");
}
