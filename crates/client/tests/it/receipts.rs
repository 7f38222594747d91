//! What runs is exactly what a human approved, at most once: `require_approval` checks the
//! approval's signed receipt against the server's keys and the arguments it is about to run (a
//! proxy alters the server's answers to show each refusal), and reports the execution so that an
//! agent killed between approval and completion does not run the call again when it resumes.

use crate::support::{TestServer, http};
use axum::http::StatusCode;
use countersign_client::{Client, Error, ExecutionState};
use countersign_fakes::tamper::{Alter, Tamper};
use countersign_receipt::KeyPair;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A client of the server through a proxy that alters its approvals.
async fn tampered_client(server: &TestServer, alter: Alter) -> Client {
    let proxy = Tamper::start(http(), server.addr, alter).await;
    Client::builder().base_url(proxy.base()).api_key(&server.key).run_id("test-run").build().unwrap()
}

/// Approves the next pending call as soon as it appears.
fn approve_next(server: &Arc<TestServer>, decision: Value) -> tokio::task::JoinHandle<String> {
    let server = server.clone();
    tokio::spawn(async move {
        let pending = server.next_pending("function_calls").await;
        let call_id = pending["call_id"].as_str().unwrap().to_owned();
        server.decide(&call_id, decision).await;
        call_id
    })
}

async fn execution(server: &TestServer, call_id: &str) -> (StatusCode, Value) {
    let url = format!("{}/function_calls/{call_id}/execution", server.base());
    let answer = server.http.get(url).bearer_auth(&server.key).send().await.unwrap();
    (StatusCode::from_u16(answer.status().as_u16()).unwrap(), answer.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_call_runs_once_with_its_receipt_checked_and_its_execution_recorded() {
    let server = Arc::new(TestServer::start().await);
    let human = approve_next(&server, json!({"approved": true}));
    let client = server.client();
    let out = client
        .require_approval_with_id("pay-1", "pay", json!({"usd": 900, "to": "acme"}), |args: Value| async move {
            format!("paid {}", args["usd"])
        })
        .await
        .unwrap();
    human.await.unwrap();
    assert_eq!(out, Ok("paid 900".to_owned()));
    let recorded = client.get_execution("pay-1").await.unwrap().expect("the run was recorded");
    assert_eq!(recorded.state, ExecutionState::Finished);
    assert!(recorded.started_by.starts_with("key "), "{recorded:?}");

    // Calling it again (a resumed agent) does not run it twice.
    let ran = AtomicBool::new(false);
    let again = client
        .require_approval_with_id("pay-1", "pay", json!({"usd": 900, "to": "acme"}), |_: Value| async {
            ran.store(true, Ordering::SeqCst);
        })
        .await;
    assert!(!ran.load(Ordering::SeqCst));
    match again {
        Err(Error::AlreadyExecuted { call_id, execution }) => {
            assert_eq!(call_id, "pay-1");
            assert_eq!(*execution, recorded);
            assert!(execution.describe().contains("finished at"), "{}", execution.describe());
        }
        other => panic!("expected AlreadyExecuted, got {other:?}"),
    }

    // Edited arguments run, and are what the receipt covers.
    let human = approve_next(&server, json!({"approved": true, "updated_kwargs": {"usd": 100, "to": "acme"}}));
    let out = client
        .require_approval("pay", json!({"usd": 900, "to": "acme"}), |args: Value| async move { args["usd"].clone() })
        .await
        .unwrap();
    human.await.unwrap();
    assert_eq!(out, Ok(json!(100)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_approvals_are_refused_and_nothing_runs() {
    let server = Arc::new(TestServer::start().await);
    // A receipt of another approved call, to swap in.
    let human = approve_next(&server, json!({"approved": true}));
    let other = server
        .client()
        .create_function_call(
            "other",
            &countersign_client::FunctionCallSpec::new(
                "pay",
                json!({"usd": 900, "to": "acme"}).as_object().unwrap().clone(),
            ),
        )
        .await
        .unwrap();
    assert!(other.status.as_ref().is_none_or(|s| s.approved.is_none()));
    human.await.unwrap();
    let other = server.client().get_function_call("other").await.unwrap();
    let other_receipt = other.status.unwrap().receipt.expect("a decided call has a receipt");

    let stranger = KeyPair::from_secret(&[9; 32]);
    let cases: Vec<(&str, Alter, &str)> = vec![
        (
            "a tampered receipt",
            Arc::new(|call: &mut Value| {
                let receipt = call["status"]["receipt"].as_str().unwrap().to_owned();
                let mut parts: Vec<String> = receipt.split('.').map(str::to_owned).collect();
                // Re-encode the payload with another decided_at: the signature no longer matches.
                let mut claims = serde_json::to_value(countersign_receipt::read_unverified(&receipt).unwrap()).unwrap();
                claims["decided_by"] = json!({"channel": "web", "email": "mallory@example.com"});
                parts[1] = base64_encode(&countersign_receipt::canonical(&claims));
                call["status"]["receipt"] = json!(parts.join("."));
            }),
            "signature does not verify",
        ),
        (
            "tampered arguments",
            Arc::new(|call: &mut Value| call["status"]["updated_kwargs"] = json!({"usd": 900000, "to": "mallory"})),
            "arguments differ",
        ),
        (
            "a receipt of another call",
            Arc::new(move |call: &mut Value| call["status"]["receipt"] = json!(other_receipt)),
            "not for function_call",
        ),
        (
            "an unknown key",
            Arc::new(move |call: &mut Value| {
                let claims = countersign_receipt::read_unverified(call["status"]["receipt"].as_str().unwrap()).unwrap();
                call["status"]["receipt"] = json!(stranger.sign(&claims));
            }),
            "not among the published keys",
        ),
        (
            "no receipt",
            Arc::new(|call: &mut Value| {
                call["status"].as_object_mut().unwrap().remove("receipt");
            }),
            "sent no receipt",
        ),
    ];
    for (i, (what, alter, reason)) in cases.into_iter().enumerate() {
        let client = tampered_client(&server, alter).await;
        let call_id = format!("t{i}");
        let human = approve_next(&server, json!({"approved": true}));
        let ran = AtomicBool::new(false);
        let outcome = client
            .require_approval_with_id(&call_id, "pay", json!({"usd": 900, "to": "acme"}), |_: Value| async {
                ran.store(true, Ordering::SeqCst);
            })
            .await;
        human.await.unwrap();
        assert!(!ran.load(Ordering::SeqCst), "{what}: the function ran");
        match outcome {
            Err(Error::Receipt { call_id: refused, fn_name, reason: why }) => {
                assert_eq!((refused.as_str(), fn_name.as_str()), (call_id.as_str(), "pay"));
                assert!(why.contains(reason), "{what}: {why}");
            }
            other => panic!("{what}: expected a refusal, got {other:?}"),
        }
        assert_eq!(execution(&server, &call_id).await.0, StatusCode::NOT_FOUND, "{what}: nothing was started");
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The agent, run as its own process by [`an_agent_killed_between_approval_and_completion_does_not_run_the_call_again`]:
/// guards one call with `require_approval_with_id`; the function appends a line to a file and,
/// if told to, hangs (to be killed). Exits 0 when it ran, 3 when the call was already executed.
#[tokio::test]
#[ignore = "run as a child process by the crash-and-resume test"]
async fn agent_process() {
    let Ok(base) = std::env::var("CS_AGENT_BASE") else { return };
    let env = |name: &str| std::env::var(name).unwrap();
    let (key, call_id, marker) = (env("CS_AGENT_KEY"), env("CS_AGENT_CALL"), env("CS_AGENT_MARKER"));
    let hang = std::env::var_os("CS_AGENT_HANG").is_some();
    let client = Client::builder().base_url(base).api_key(key).run_id("crash-run").build().unwrap();
    let outcome = client
        .require_approval_with_id(&call_id, "transfer", json!({"usd": 900}), |args: Value| async move {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&marker).unwrap();
            writeln!(file, "transferred {}", args["usd"]).unwrap();
            file.sync_all().unwrap();
            if hang {
                tokio::time::sleep(Duration::from_secs(600)).await;
            }
        })
        .await;
    match outcome {
        Ok(Ok(())) => std::process::exit(0),
        Err(Error::AlreadyExecuted { execution, .. }) => {
            println!("NOT RUN AGAIN: {}", execution.describe());
            std::process::exit(3)
        }
        other => {
            eprintln!("unexpected: {other:?}");
            std::process::exit(1)
        }
    }
}

fn spawn_agent(server: &TestServer, call_id: &str, marker: &Path, hang: bool) -> tokio::process::Child {
    let mut command = tokio::process::Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "receipts::agent_process", "--ignored", "--nocapture", "--test-threads", "1"])
        .env("CS_AGENT_BASE", server.base())
        .env("CS_AGENT_KEY", &server.key)
        .env("CS_AGENT_CALL", call_id)
        .env("CS_AGENT_MARKER", marker)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if hang {
        command.env("CS_AGENT_HANG", "1");
    }
    command.spawn().unwrap()
}

fn lines(marker: &Path) -> usize {
    std::fs::read_to_string(marker).map(|t| t.lines().count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_between_approval_and_completion_does_not_run_the_call_again() {
    let server = Arc::new(TestServer::start().await);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("transfers.log");

    // The agent asks, a human approves, the transfer happens, and the agent dies before it can
    // report the end.
    let mut agent = spawn_agent(&server, "transfer-7", &marker, true);
    let human = approve_next(&server, json!({"approved": true}));
    assert_eq!(human.await.unwrap(), "transfer-7");
    let until = Instant::now() + Duration::from_secs(30);
    while lines(&marker) == 0 {
        assert!(Instant::now() < until, "the approved function never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.kill().await.unwrap();
    let (status, started) = execution(&server, "transfer-7").await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(started["state"], "started");

    // Restarted with the same call id: it sees "started, never finished" and does not run it.
    let resumed = tokio::time::timeout(
        Duration::from_secs(60),
        spawn_agent(&server, "transfer-7", &marker, false).wait_with_output(),
    )
    .await
    .expect("the resumed agent finishes")
    .unwrap();
    let said = String::from_utf8_lossy(&resumed.stdout);
    assert_eq!(resumed.status.code(), Some(3), "{said}\n{}", String::from_utf8_lossy(&resumed.stderr));
    assert!(said.contains("NOT RUN AGAIN") && said.contains("never reported finished"), "{said}");
    assert_eq!(lines(&marker), 1, "the transfer ran once");

    // A run that completes reports it; a second agent process with that id does not run it either.
    let human = approve_next(&server, json!({"approved": true}));
    let first = spawn_agent(&server, "transfer-8", &marker, false).wait_with_output().await.unwrap();
    human.await.unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(execution(&server, "transfer-8").await.1["state"], "finished");
    let second = spawn_agent(&server, "transfer-8", &marker, false).wait_with_output().await.unwrap();
    assert_eq!(second.status.code(), Some(3), "{}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(lines(&marker), 2);
}
