//! `countersign mcp`: the real binary over stdio, driven by rmcp's client, against a real server.
//! `request_permission` follows Claude Code's `--permission-prompt-tool` contract; `ask_human` asks.
//! The same tools are served over streamable HTTP at `/mcp` of the server, with the API key.

use crate::support::TestServer;
use reqwest::StatusCode;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub type McpClient = RunningService<RoleClient, ()>;

/// Starts `countersign mcp` against `s` with its key.
async fn connect(s: &TestServer) -> McpClient {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
    cmd.args(["mcp", "--server", &format!("http://{}", s.addr), "--key", &s.key, "--run-id", "claude-session"])
        .env("COUNTERSIGN_DATA_DIR", s.dir.path())
        .env_remove("HUMANLAYER_API_BASE")
        .env_remove("HUMANLAYER_API_KEY")
        .env_remove("COUNTERSIGN_API_BASE")
        .env_remove("COUNTERSIGN_API_KEY");
    let (transport, _) = TokioChildProcess::builder(cmd).stderr(std::process::Stdio::null()).spawn().unwrap();
    ().serve(transport).await.expect("MCP handshake with `countersign mcp`")
}

pub fn call(tool: &'static str, arguments: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool).with_arguments(arguments.as_object().unwrap().clone())
}

/// The single text content of a tool result.
pub fn text(result: &CallToolResult) -> String {
    assert_eq!(result.content.len(), 1, "{result:?}");
    result.content[0].as_text().expect("a text content").text.clone()
}

/// Waits until a request of `kind` (`function_calls` or `human_contacts`) is pending; returns it.
pub async fn pending(s: &TestServer, kind: &str) -> Value {
    for _ in 0..200 {
        let (status, page) = s.get(&format!("/agent/{kind}/pending")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        if let Some(item) = page["items"].as_array().and_then(|items| items.first()) {
            return item.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no pending {kind} appeared");
}

/// Calls `request_permission`, decides it as the human with `decision`, and returns the payload.
async fn permission(s: &TestServer, mcp: &McpClient, arguments: Value, decision: Value) -> (Value, Value) {
    let peer = mcp.peer().clone();
    let asked = tokio::spawn(async move { peer.call_tool(call("request_permission", arguments)).await });
    let request = pending(s, "function_calls").await;
    let call_id = request["call_id"].as_str().unwrap();
    let (status, decided) = s.post(&format!("/agent/function_calls/{call_id}/respond"), decision).await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    let result = asked.await.unwrap().expect("tools/call");
    assert_ne!(result.is_error, Some(true), "{result:?}");
    let payload: Value = serde_json::from_str(&text(&result)).expect("the payload is JSON text");
    (request, payload)
}

#[tokio::test]
async fn lists_both_tools_with_input_schemas() {
    let s = TestServer::start().await;
    let mcp = connect(&s).await;
    let tools = mcp.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"request_permission") && names.contains(&"ask_human"), "{names:?}");
    let schema = |name: &str| Value::Object((*tools.iter().find(|t| t.name == name).unwrap().input_schema).clone());
    let permission = schema("request_permission");
    assert_eq!(permission["type"], "object");
    assert_eq!(permission["properties"]["tool_name"]["type"], "string");
    assert_eq!(permission["properties"]["input"]["type"], "object");
    assert!(permission["properties"]["tool_use_id"].is_object(), "{permission}");
    let required: Vec<&str> = permission["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(required.contains(&"tool_name") && required.contains(&"input") && !required.contains(&"tool_use_id"));
    assert_eq!(schema("ask_human")["properties"]["question"]["type"], "string");
    mcp.cancel().await.unwrap();
}

#[tokio::test]
async fn an_approval_allows_the_original_input() {
    let s = TestServer::start().await;
    let mcp = connect(&s).await;
    let input = json!({"command": "rm -rf build", "description": "clean"});
    let (request, payload) =
        permission(&s, &mcp, json!({"tool_name": "Bash", "input": input}), json!({"approved": true})).await;
    assert_eq!(request["spec"]["fn"], "Bash");
    assert_eq!(request["spec"]["kwargs"], input);
    assert_eq!(request["run_id"], "claude-session");
    assert_eq!(payload, json!({"behavior": "allow", "updatedInput": input}));
    mcp.cancel().await.unwrap();
}

#[tokio::test]
async fn an_edited_approval_allows_the_humans_input() {
    let s = TestServer::start().await;
    let mcp = connect(&s).await;
    let edited = json!({"command": "rm -rf build/tmp", "description": "clean less"});
    let (_, payload) = permission(
        &s,
        &mcp,
        json!({"tool_name": "Bash", "input": {"command": "rm -rf build", "description": "clean"}}),
        json!({"approved": true, "updated_kwargs": edited}),
    )
    .await;
    assert_eq!(payload, json!({"behavior": "allow", "updatedInput": edited}));
    mcp.cancel().await.unwrap();
}

#[tokio::test]
async fn a_rejection_denies_with_the_humans_comment() {
    let s = TestServer::start().await;
    let mcp = connect(&s).await;
    let (_, payload) = permission(
        &s,
        &mcp,
        json!({"tool_name": "Write", "input": {"file_path": "/etc/hosts", "content": ""}}),
        json!({"approved": false, "comment": "never touch /etc"}),
    )
    .await;
    assert_eq!(payload, json!({"behavior": "deny", "message": "never touch /etc"}));
    mcp.cancel().await.unwrap();
}

#[tokio::test]
async fn the_tool_use_id_is_the_call_id_so_a_retry_gets_the_same_decision() {
    let s = TestServer::start().await;
    let mcp = connect(&s).await;
    let arguments = json!({"tool_name": "Bash", "input": {"command": "ls"}, "tool_use_id": "toolu_01ABC"});
    let (request, payload) = permission(&s, &mcp, arguments.clone(), json!({"approved": true})).await;
    assert_eq!(request["call_id"], "toolu_01ABC");
    assert_eq!(payload["behavior"], "allow");

    let again = mcp.call_tool(call("request_permission", arguments)).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text(&again)).unwrap(), payload, "the stored decision, at once");
    mcp.cancel().await.unwrap();
}

#[tokio::test]
async fn ask_human_returns_the_answer() {
    let s = TestServer::start().await;
    let mcp = connect(&s).await;
    let peer = mcp.peer().clone();
    let asked =
        tokio::spawn(async move { peer.call_tool(call("ask_human", json!({"question": "Which region?"}))).await });
    let question = pending(&s, "human_contacts").await;
    assert_eq!(question["spec"]["msg"], "Which region?");
    let call_id = question["call_id"].as_str().unwrap();
    let (status, _) =
        s.post(&format!("/agent/human_contacts/{call_id}/respond"), json!({"response": "eu-west-1"})).await;
    assert_eq!(status, StatusCode::OK);
    let result = asked.await.unwrap().unwrap();
    assert_eq!(text(&result), "eu-west-1");
    mcp.cancel().await.unwrap();
}

#[tokio::test]
async fn a_wrong_key_is_a_tool_error_that_says_so() {
    let s = TestServer::start().await;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
    cmd.args(["mcp", "--server", &format!("http://{}", s.addr), "--key", "cs_not_a_key"])
        .env("COUNTERSIGN_DATA_DIR", s.dir.path());
    let (transport, _) = TokioChildProcess::builder(cmd).stderr(std::process::Stdio::null()).spawn().unwrap();
    let mcp = ().serve(transport).await.unwrap();
    let result = mcp.call_tool(call("ask_human", json!({"question": "hello?"}))).await.unwrap();
    assert_eq!(result.is_error, Some(true));
    assert!(text(&result).contains("401"), "{}", text(&result));
    mcp.cancel().await.unwrap();
}

/// Connects rmcp's streamable HTTP client to `/mcp` of `s` with `key`.
async fn connect_http(s: &TestServer, key: &str) -> McpClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = StreamableHttpClientTransportConfig::with_uri(s.root("/mcp")).auth_header(key);
    ().serve(StreamableHttpClientTransport::from_config(config)).await.expect("MCP handshake over HTTP")
}

#[tokio::test]
async fn the_server_serves_the_same_tools_over_streamable_http_at_mcp() {
    let s = TestServer::start().await;
    let mcp = connect_http(&s, &s.key).await;
    let tools = mcp.list_all_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(names, ["ask_human", "request_permission"]);

    let edited = json!({"command": "git push --dry-run"});
    let arguments = json!({"tool_name": "Bash", "input": {"command": "git push"}, "tool_use_id": "toolu_http"});
    let decision = json!({"approved": true, "updated_kwargs": edited});
    let (request, payload) = permission(&s, &mcp, arguments, decision).await;
    assert_eq!(request["call_id"], "toolu_http");
    assert_eq!(request["run_id"], "mcp", "the default run id over HTTP");
    assert_eq!(payload, json!({"behavior": "allow", "updatedInput": edited}));

    let arguments = json!({"tool_name": "Bash", "input": {"command": "git push -f"}});
    let (_, payload) = permission(&s, &mcp, arguments, json!({"approved": false, "comment": "no force pushes"})).await;
    assert_eq!(payload, json!({"behavior": "deny", "message": "no force pushes"}));

    let peer = mcp.peer().clone();
    let asked = tokio::spawn(async move { peer.call_tool(call("ask_human", json!({"question": "Tag it?"}))).await });
    let question = pending(&s, "human_contacts").await;
    let call_id = question["call_id"].as_str().unwrap();
    let (status, _) = s.post(&format!("/agent/human_contacts/{call_id}/respond"), json!({"response": "v1.2"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(&asked.await.unwrap().unwrap()), "v1.2");
    mcp.cancel().await.unwrap();
}

#[tokio::test]
async fn mcp_over_http_takes_the_run_id_from_the_url_or_a_header() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let s = TestServer::start().await;
    let config = StreamableHttpClientTransportConfig::with_uri(s.root("/mcp?run_id=desktop")).auth_header(&s.key);
    let mcp = ().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    let arguments = json!({"tool_name": "Bash", "input": {"command": "ls"}});
    let (request, _) = permission(&s, &mcp, arguments, json!({"approved": true})).await;
    assert_eq!(request["run_id"], "desktop");
    mcp.cancel().await.unwrap();

    let mut headers = std::collections::HashMap::new();
    headers.insert(
        reqwest::header::HeaderName::from_static("x-countersign-run-id"),
        reqwest::header::HeaderValue::from_static("cursor"),
    );
    let config = StreamableHttpClientTransportConfig::with_uri(s.root("/mcp?run_id=ignored"))
        .auth_header(&s.key)
        .custom_headers(headers);
    let mcp = ().serve(StreamableHttpClientTransport::from_config(config)).await.unwrap();
    let arguments = json!({"tool_name": "Bash", "input": {"command": "pwd"}});
    let (request, _) = permission(&s, &mcp, arguments, json!({"approved": true})).await;
    assert_eq!(request["run_id"], "cursor", "the header wins over the query");
    mcp.cancel().await.unwrap();
}

#[tokio::test]
async fn mcp_over_http_needs_an_api_key() {
    let s = TestServer::start().await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}});
    let post = || s.http.post(s.root("/mcp")).header("Accept", "application/json, text/event-stream").json(&initialize);
    let (status, body) = crate::support::json(post().send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = crate::support::json(post().bearer_auth("cs_not_a_key").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let response = post().bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// An MCP client that counts the progress notifications it receives.
#[derive(Clone, Default)]
pub struct CountsProgress(pub Arc<AtomicUsize>);

impl rmcp::ClientHandler for CountsProgress {
    async fn on_progress(
        &self,
        _params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_long_wait_sends_progress_notifications_so_clients_do_not_time_out() {
    use countersign_mcp::tools::{Desk, HumanTools};
    let s = TestServer::start().await;
    let client = countersign_client::Client::builder().base_url(s.api("")).api_key(&s.key).build().unwrap();
    let tools = HumanTools::new(Desk::Remote(client)).progress_every(Duration::from_millis(50));
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move { tools.serve(server_io).await.unwrap().waiting().await });
    let counter = CountsProgress::default();
    let mcp = counter.clone().serve(client_io).await.unwrap();

    let peer = mcp.peer().clone();
    let asked =
        tokio::spawn(async move { peer.call_tool(call("ask_human", json!({"question": "Still there?"}))).await });
    let question = pending(&s, "human_contacts").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let call_id = question["call_id"].as_str().unwrap();
    let (status, _) = s.post(&format!("/agent/human_contacts/{call_id}/respond"), json!({"response": "yes"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text(&asked.await.unwrap().unwrap()), "yes");
    assert!(
        counter.0.load(Ordering::SeqCst) >= 3,
        "progress while the human thought: {counter:?}",
        counter = counter.0
    );
    mcp.cancel().await.unwrap();
}
