//! Signed webhooks end to end: a receiver on loopback gets each event, signed the Standard
//! Webhooks way, in both body formats; a receiver that is down gets it later; a server killed
//! between the decision and the delivery delivers after restart; several instances on one
//! PostgreSQL never send the same attempt twice.

use crate::support::{TestServer, approval, assert_error, json as read_json, on_postgres};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use countersign_core::webhook;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    /// The signature checks out with `secret`.
    pub fn verified(&self, secret: &str) -> bool {
        let now = chrono::Utc::now().timestamp();
        webhook::verify(secret, &self.id, self.timestamp, self.body.as_bytes(), &self.signature, now)
    }
}

/// A webhook receiver on loopback that answers 500 to its first `failures` requests.
#[derive(Clone, Default)]
pub(crate) struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    failures: Arc<AtomicUsize>,
}

impl Receiver {
    /// Serves on `listener` until the test ends.
    pub fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new().route("/hook", axum::routing::post(receive)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    pub async fn start() -> (Self, String) {
        let receiver = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        receiver.serve(listener);
        (receiver, url)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.arrived.notified();
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "expected {n} webhook requests, got {}: {got:?}", got.len());
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    r.got.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp").parse().unwrap_or(0),
        signature: header("webhook-signature"),
        body: String::from_utf8(body.to_vec()).unwrap(),
    });
    r.arrived.notify_waiters();
    let fail = r.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    if fail { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
}

/// The newest delivery of an endpoint once `ready` holds for it (attempts are recorded just after
/// the receiver answers).
async fn latest_delivery(s: &TestServer, endpoint_id: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, log) = s.get(&format!("/webhooks/{endpoint_id}/deliveries")).await;
        if ready(&log["items"][0]) {
            return log["items"][0].clone();
        }
        assert!(Instant::now() < deadline, "the delivery log never got there: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn add_endpoint(s: &TestServer, body: Value) -> Value {
    let (status, endpoint) = s.post("/webhooks", body).await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    endpoint
}

#[tokio::test]
async fn a_decision_is_delivered_signed_in_the_v1beta2_envelope() {
    let s = TestServer::start().await;
    let (receiver, url) = Receiver::start().await;
    let endpoint = add_endpoint(&s, json!({"url": url})).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(endpoint["events"], json!(["function_call.completed", "human_contact.completed"]));
    assert_eq!(endpoint["format"], "v1beta2");
    let (_, listed) = s.get("/webhooks").await;
    assert_eq!(listed["items"][0]["id"], endpoint["id"]);
    assert!(listed["items"][0].get("secret").is_none(), "the secret is shown only once");

    let body_text = r#"{"run_id": "r", "call_id": "c1", "spec": {"fn": "wire", "kwargs": {"usd": 250}, "state": {"n": 123456789012345678901234567890, "resume": [1, 2.50]}}}"#;
    let created = s.http.post(s.api("/function_calls")).bearer_auth(&s.key).header("content-type", "application/json");
    assert_eq!(created.body(body_text).send().await.unwrap().status(), StatusCode::OK);
    receiver.failures.store(1, Ordering::SeqCst); // the first attempt gets a 500
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received().is_empty(), "creates are not subscribed");
    let decided = Instant::now();
    s.post("/agent/function_calls/c1/respond", json!({"approved": false, "comment": "too much"})).await;
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    let latency = decided.elapsed();
    let hook = &got[0];
    assert!(hook.id.starts_with("msg_"), "{hook:?}");
    assert!(hook.verified(&secret), "the signature verifies: {hook:?}");
    assert!(!hook.verified("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), "and not with another secret");
    let envelope = hook.json();
    assert_eq!(envelope["is_test"], false);
    assert_eq!(envelope["type"], "function_call.completed");
    assert_eq!(envelope["event"]["call_id"], "c1");
    assert_eq!(envelope["event"]["status"]["approved"], false);
    assert_eq!(envelope["event"]["status"]["comment"], "too much");
    // The decision's receipt rides along, and verifies with the published keys.
    let keys = crate::receipts::keys_json(&s).await;
    let receipt = envelope["event"]["status"]["receipt"].as_str().unwrap_or_else(|| panic!("no receipt: {envelope}"));
    let stated = countersign_receipt::verify(receipt, &countersign_receipt::PublicKey::from_jwks(&keys)).unwrap();
    assert_eq!((stated.call_id.as_str(), stated.decision.as_str()), ("c1", "rejected"));
    assert!(
        hook.body.contains(r#""state": {"n": 123456789012345678901234567890, "resume": [1, 2.50]}"#),
        "state round-trips exactly: {}",
        hook.body
    );
    assert!(latency < Duration::from_secs(2), "sent promptly: {latency:?}");

    // The delivery log: the 500 is recorded and a retry is scheduled.
    let id = endpoint["id"].as_str().unwrap();
    let delivery = &latest_delivery(&s, id, |d| d["attempts"] == 1).await;
    assert_eq!(delivery["id"], hook.id.as_str());
    assert_eq!(delivery["status"], "pending");
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["last_status"], 500);
    assert!(delivery["next_attempt_at"].is_string());
    // Redelivery sends the same message (same webhook-id) again, now.
    let (status, again) = s.post(&format!("/webhook_deliveries/{}/redeliver", hook.id), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    let got = receiver.wait_for(2, Duration::from_secs(3)).await;
    assert_eq!(got[1].id, hook.id);
    assert_eq!(got[1].body, hook.body);
    assert!(got[1].verified(&secret));
    latest_delivery(&s, id, |d| d["attempts"] == 2).await;
    let (_, one) = s.get(&format!("/webhook_deliveries/{}", hook.id)).await;
    assert_eq!(one["status"], "delivered");
    assert_eq!(one["attempts"], 2);
    assert_eq!(one["last_status"], 200);
    let log = one["attempts_log"].as_array().unwrap();
    assert_eq!((log[0]["status_code"].clone(), log[1]["status_code"].clone()), (json!(500), json!(200)));
}

#[tokio::test]
async fn legacy_bodies_and_every_event() {
    let s = TestServer::start().await;
    let (receiver, url) = Receiver::start().await;
    let endpoint = add_endpoint(&s, json!({"url": url, "events": ["function_call.created", "function_call.escalated", "function_call.completed", "human_contact.completed"], "format": "legacy"})).await;
    let secret = endpoint["secret"].as_str().unwrap();
    s.post("/function_calls", approval("c1")).await;
    receiver.wait_for(1, Duration::from_secs(5)).await;
    let escalation =
        json!({"escalation_msg": "please look", "additional_recipients": [{"address": "boss@example.com"}]});
    let (status, body) = s.post("/agent/function_calls/c1/escalate_email", escalation).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    receiver.wait_for(2, Duration::from_secs(5)).await;
    s.post("/agent/function_calls/c1/respond", json!({"approved": true})).await;
    let got = receiver.wait_for(3, Duration::from_secs(5)).await;
    assert!(got.iter().all(|h| h.verified(secret)));
    let bodies: Vec<Value> = got.iter().map(Received::json).collect();
    assert!(
        bodies.iter().all(|b| b.get("type").is_none() && b["call_id"] == "c1"),
        "legacy bodies are the bare object"
    );
    assert_eq!(bodies[0]["status"]["approved"], Value::Null, "created: pending");
    assert!(bodies[0].get("escalations").is_none() || bodies[0]["escalations"] == json!([]));
    assert_eq!(bodies[1]["status"]["approved"], Value::Null, "escalated: still pending");
    assert_eq!(bodies[1]["escalations"].as_array().unwrap().len(), 1);
    assert_eq!(bodies[2]["status"]["approved"], true, "completed");
    // Another project's requests never reach this endpoint.
    s.post_as(&s.other_key, "/function_calls", approval("theirs")).await;
    s.post_as(&s.other_key, "/agent/function_calls/theirs/respond", json!({"approved": true})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 3);
}

/// The delivery workers are not woken by every create, only when the store says a write queued
/// deliveries: a subscribed create's webhook must still leave at once, not at the workers' idle
/// check. Each create comes 150 ms after the last webhook, when the workers have just gone to
/// sleep for their 1 s idle check: without the store's word each waited 850 ms or more.
#[tokio::test]
async fn a_created_event_is_delivered_at_once() {
    let s = TestServer::start().await;
    let (receiver, url) = Receiver::start().await;
    add_endpoint(&s, json!({"url": url, "events": ["function_call.created"]})).await;
    let mut waits = Vec::new();
    for i in 0..6 {
        let created = Instant::now();
        let (status, body) = s.post("/function_calls", approval(&format!("at-once-{i}"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let got = receiver.wait_for(i + 1, Duration::from_secs(5)).await;
        waits.push(created.elapsed());
        assert_eq!(got[i].json()["event"]["call_id"], format!("at-once-{i}"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // The mean, so that one slow moment on a busy machine does not fail it.
    let mean = waits.iter().sum::<Duration>() / 6;
    assert!(mean < Duration::from_millis(400), "create → webhook took {mean:?} on average: {waits:?}");
}

/// Decisions and fired timers announce their deliveries as creates do (`Feed::Queued`, once on
/// disk): a decision's webhook and an expiry's leave at once, not at the delivery workers' next
/// idle check. Each round starts 150 ms after the last webhook, when the workers have just gone
/// to sleep for 1 s.
#[tokio::test]
async fn decided_and_expired_events_are_delivered_at_once() {
    let s = TestServer::start().await;
    let policy = "[[rule]]\nname = \"short\"\nmatch = { fn = \"expiring\" }\naction = \"ask\"\n\
                  expire_after = \"1s\"\non_expire = \"deny\"\n";
    let set = read_json(s.http.put(s.api("/policy")).bearer_auth(&s.key).body(policy).send().await.unwrap()).await;
    assert_eq!(set.0, StatusCode::OK, "{}", set.1);
    let (receiver, url) = Receiver::start().await;
    add_endpoint(&s, json!({"url": url, "events": ["function_call.completed"]})).await;
    let mut received = 0;
    let mut decided_waits = Vec::new();
    for i in 0..4 {
        let id = format!("decided-{i}");
        assert_eq!(s.post("/function_calls", approval(&id)).await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let decided = Instant::now();
        let (status, body) = s.post(&format!("/agent/function_calls/{id}/respond"), json!({"approved": true})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        received += 1;
        let got = receiver.wait_for(received, Duration::from_secs(5)).await;
        decided_waits.push(decided.elapsed());
        assert_eq!(got[received - 1].json()["event"]["call_id"], id);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut expired_waits = Vec::new();
    for i in 0..3 {
        let id = format!("expiring-{i}");
        let body = json!({"run_id": "run-1", "call_id": id, "spec": {"fn": "expiring", "kwargs": {}}});
        let created = Instant::now();
        assert_eq!(s.post("/function_calls", body).await.0, StatusCode::OK);
        received += 1;
        let got = receiver.wait_for(received, Duration::from_secs(5)).await;
        // Past the 1 s expiry: the timer's lateness and the delivery together.
        expired_waits.push(created.elapsed().saturating_sub(Duration::from_secs(1)));
        assert_eq!(got[received - 1].json()["event"]["call_id"], id);
        assert_eq!(got[received - 1].json()["event"]["status"]["approved"], false, "denied on expiry");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Means, so that one slow moment on a busy machine does not fail them.
    let decided = decided_waits.iter().sum::<Duration>() / 4;
    assert!(decided < Duration::from_millis(400), "decision → webhook took {decided:?} on average: {decided_waits:?}");
    let expired = expired_waits.iter().sum::<Duration>() / 3;
    assert!(expired < Duration::from_millis(400), "expiry → webhook took {expired:?} on average: {expired_waits:?}");
}

#[tokio::test]
async fn bad_endpoints_are_refused_and_projects_are_isolated() {
    let s = TestServer::start().await;
    let cases = [
        (json!({"url": "ftp://example.com/x"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({"url": "http://example.com/x", "events": ["nope"]}), "events"),
        (json!({"url": "http://example.com/x", "format": "xml"}), "format"),
        (json!({"url": "http://example.com/x", "extra": 1}), "extra"),
    ];
    for (body, field) in cases {
        let got = s.post("/webhooks", body.clone()).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request", field);
    }
    let endpoint = add_endpoint(&s, json!({"url": "http://127.0.0.1:9/hook"})).await;
    let id = endpoint["id"].as_str().unwrap();
    let theirs =
        s.http.get(s.api(&format!("/webhooks/{id}/deliveries"))).bearer_auth(&s.other_key).send().await.unwrap();
    assert_error(&read_json(theirs).await, StatusCode::NOT_FOUND, "not_found", id);
    let remove = s.http.delete(s.api(&format!("/webhooks/{id}"))).bearer_auth(&s.other_key).send().await.unwrap();
    assert_eq!(remove.status(), StatusCode::NOT_FOUND);
    let remove = s.http.delete(s.api(&format!("/webhooks/{id}"))).bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(remove.status(), StatusCode::NO_CONTENT);
    let (_, listed) = s.get("/webhooks").await;
    assert_eq!(listed["items"], json!([]));
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_event_later() {
    let s = TestServer::start().await;
    // Reserve a port, then close it: the receiver is down when the decision happens.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let endpoint = add_endpoint(&s, json!({"url": url})).await;
    let id = endpoint["id"].as_str().unwrap().to_owned();
    s.post("/function_calls", approval("c1")).await;
    s.post("/agent/function_calls/c1/respond", json!({"approved": true})).await;
    let first = latest_delivery(&s, &id, |d| d["attempts"] == 1).await;
    assert_eq!(first["status"], "pending");
    assert_eq!(first["last_error"], "could not deliver: no HTTP response");
    assert_eq!(first["last_latency_ms"], 0, "no timing without an answer");
    assert!(first["next_attempt_at"].is_string());
    // Up again: the scheduled retry (about 5 s later) gets it through.
    let receiver = Receiver::default();
    receiver.serve(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    let got = receiver.wait_for(1, Duration::from_secs(15)).await;
    assert!(got[0].verified(endpoint["secret"].as_str().unwrap()));
    latest_delivery(&s, &id, |d| d["attempts"] == 2).await;
    let (_, one) = s.get(&format!("/webhook_deliveries/{}", got[0].id)).await;
    assert_eq!(one["status"], "delivered");
    assert_eq!(one["attempts"], 2);
    let log: Vec<Value> = one["attempts_log"].as_array().unwrap().clone();
    assert_eq!(log[0]["error"], "could not deliver: no HTTP response");
    assert_eq!(log[1]["status_code"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_after_the_decision_delivers_after_restart() {
    use crate::binary::{Served, countersign, fresh_dir, stdout};
    // Its webhooks target loopback, so private targets are allowed.
    let serve = |dir: &std::path::Path| {
        Served::start_with(
            dir,
            &[("COUNTERSIGN_ALLOW_PRIVATE_WEBHOOK_TARGETS", "true")],
            std::process::Stdio::inherit(),
        )
    };
    let dir = fresh_dir().await;
    let key =
        stdout(&countersign(dir.path(), &["keys", "create", "--project", "crash"])).lines().last().unwrap().to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = serve(dir.path());
    let http = crate::support::client();
    let endpoint: Value = http
        .post(server.url("/humanlayer/v1/webhooks"))
        .bearer_auth(&key)
        .json(&json!({"url": format!("http://127.0.0.1:{port}/hook")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let create = http.post(server.url("/humanlayer/v1/function_calls")).bearer_auth(&key).json(&approval("c1"));
    assert_eq!(create.send().await.unwrap().status(), StatusCode::OK);
    let respond = http
        .post(server.url("/humanlayer/v1/agent/function_calls/c1/respond"))
        .bearer_auth(&key)
        .json(&json!({"approved": true, "comment": "ship it"}));
    assert_eq!(respond.send().await.unwrap().status(), StatusCode::OK);
    server.child.kill().unwrap(); // SIGKILL right after the decision was acknowledged
    server.child.wait().unwrap();

    let receiver = Receiver::default();
    receiver.serve(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    let server = serve(dir.path());
    // If the server died between claiming the delivery and recording its first attempt, the claim
    // (20 s) must lapse first; otherwise the retry is due about 5 s after the decision.
    let got = receiver.wait_for(1, Duration::from_secs(45)).await;
    assert!(got[0].verified(endpoint["secret"].as_str().unwrap()));
    assert_eq!(got[0].json()["event"]["status"]["comment"], "ship it");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1, "delivered once");
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_instances_never_send_the_same_attempt_twice() {
    if !on_postgres() {
        eprintln!("skipped: several instances need PostgreSQL (set COUNTERSIGN_TEST_DATABASE_URL)");
        return;
    }
    let a = TestServer::start().await;
    let b = a.another_instance().await;
    let c = a.another_instance().await;
    let (receiver, url) = Receiver::start().await;
    add_endpoint(&a, json!({"url": url, "events": ["function_call.created", "function_call.completed"]})).await;
    let n = 100;
    for i in 0..n {
        let server = [&a, &b, &c][i % 3];
        server.post("/function_calls", approval(&format!("c{i}"))).await;
        server.post(&format!("/agent/function_calls/c{i}/respond"), json!({"approved": true})).await;
    }
    receiver.wait_for(2 * n, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got_all = receiver.received();
    assert_eq!(got_all.len(), 2 * n, "no extra deliveries");
    let mut ids: Vec<&str> = got_all.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 2 * n, "every event exactly once across three instances");
}
