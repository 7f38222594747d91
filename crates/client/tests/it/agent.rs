//! The tool-calling agent (the logic of `examples/tool_agent.rs`) against a fake OpenAI-compatible
//! model and a real Countersign: a risky tool runs only when approved, and the model sees the
//! tool's result or the human's denial.

use crate::support::TestServer;
use axum::Json;
use axum::extract::State;
use axum::routing::post;
use countersign_client::agent::{Agent, ChatModel, Tool};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A model that asks for `send_email` first, then answers with text.
async fn fake_model() -> (SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let requests = Arc::new(Mutex::new(Vec::<Value>::new()));
    async fn complete(State(requests): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>) -> Json<Value> {
        let mut requests = requests.lock().unwrap();
        requests.push(body);
        let message = if requests.len() == 1 {
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_abc", "type": "function",
                "function": {"name": "send_email", "arguments": "{\"to\":\"bob@example.com\",\"body\":\"build is green\"}"}
            }]})
        } else {
            json!({"role": "assistant", "content": "Done."})
        };
        Json(json!({"id": "chatcmpl-1", "object": "chat.completion",
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}))
    }
    let app = axum::Router::new().route("/v1/chat/completions", post(complete)).with_state(requests.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, requests)
}

/// An agent with a risky `send_email` that counts its runs.
fn agent(model: SocketAddr, server: &TestServer, runs: Arc<AtomicUsize>) -> Agent {
    let model = ChatModel::new(format!("http://{model}/v1"), Some("sk-test".into()), "fake-model").unwrap();
    let send_email = Tool::new(
        "send_email",
        "Send an email",
        json!({"type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"}}}),
        move |args: Value| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                format!("email sent to {}", args["to"].as_str().unwrap())
            }
        },
    )
    .requires_approval();
    Agent::new(model, server.client()).system("You are careful.").tool(send_email)
}

/// The `role: "tool"` message of the second model request.
fn tool_message(requests: &[Value]) -> Value {
    assert_eq!(requests.len(), 2, "one turn with the tool call, one with its result");
    let messages = requests[1]["messages"].as_array().unwrap();
    messages.iter().find(|m| m["role"] == "tool").cloned().expect("a tool message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_tool_runs_and_the_model_gets_its_result() {
    let server = Arc::new(TestServer::start().await);
    let (model, requests) = fake_model().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let human = {
        let server = server.clone();
        tokio::spawn(async move {
            let pending = server.next_pending("function_calls").await;
            assert_eq!(pending["spec"]["fn"], "send_email");
            assert_eq!(pending["spec"]["kwargs"], json!({"to": "bob@example.com", "body": "build is green"}));
            server.decide(pending["call_id"].as_str().unwrap(), json!({"approved": true})).await;
        })
    };
    let answer = agent(model, &server, runs.clone()).run("Tell Bob the build is green.").await.unwrap();
    human.await.unwrap();

    assert_eq!(answer.text, "Done.");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let requests = requests.lock().unwrap();
    assert_eq!(requests[0]["model"], "fake-model");
    assert_eq!(requests[0]["tools"][0]["function"]["name"], "send_email");
    assert_eq!(requests[0]["messages"][0], json!({"role": "system", "content": "You are careful."}));
    let tool = tool_message(&requests);
    assert_eq!(tool, json!({"role": "tool", "tool_call_id": "call_abc", "content": "email sent to bob@example.com"}));
    assert_eq!(requests[1]["messages"][2]["tool_calls"][0]["id"], "call_abc", "the assistant turn is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_tool_does_not_run_and_the_model_gets_the_denial() {
    let server = Arc::new(TestServer::start().await);
    let (model, requests) = fake_model().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let human = {
        let server = server.clone();
        tokio::spawn(async move {
            let pending = server.next_pending("function_calls").await;
            let decision = json!({"approved": false, "comment": "Bob is on leave, email Alice"});
            server.decide(pending["call_id"].as_str().unwrap(), decision).await;
        })
    };
    let answer = agent(model, &server, runs.clone()).run("Tell Bob the build is green.").await.unwrap();
    human.await.unwrap();

    assert_eq!(answer.text, "Done.");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "a denied tool must not run");
    let tool = tool_message(&requests.lock().unwrap());
    assert_eq!(tool["tool_call_id"], "call_abc");
    assert_eq!(tool["content"], "User denied send_email with message: Bob is on leave, email Alice");
}
