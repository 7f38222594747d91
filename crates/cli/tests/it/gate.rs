//! `countersign mcp gate` in front of a real third-party MCP server,
//! `@modelcontextprotocol/server-filesystem` from npm (installed by `scripts/mcp-test-servers`,
//! which `scripts/test` runs; its entry point comes in `COUNTERSIGN_TEST_MCP_FILESYSTEM`), driven by
//! rmcp's client over stdio, with a real Countersign server deciding. Also the URL form, in front
//! of the server's own `/mcp`.

use crate::mcp::{CountsProgress, McpClient, call, pending, text};
use crate::support::TestServer;
use reqwest::StatusCode;
use rmcp::ServiceExt;
use rmcp::model::CallToolResult;
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The filesystem server's command, serving `dir`.
fn filesystem_server(dir: &Path) -> Vec<String> {
    let entry = std::env::var("COUNTERSIGN_TEST_MCP_FILESYSTEM").unwrap_or_else(|_| {
        panic!(
            "COUNTERSIGN_TEST_MCP_FILESYSTEM is not set: run `export COUNTERSIGN_TEST_MCP_FILESYSTEM=$(scripts/mcp-test-servers)` \
             (it installs @modelcontextprotocol/server-filesystem from npm), or run scripts/test"
        )
    });
    assert!(Path::new(&entry).exists(), "{entry} is missing: run scripts/mcp-test-servers");
    vec!["node".into(), entry, dir.display().to_string()]
}

/// A folder for the filesystem server to serve, canonical (the server resolves symlinks).
fn files() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().canonicalize().unwrap();
    (dir, path)
}

/// `countersign mcp gate --rules FILE ... -- node server-filesystem DIR`, connected.
async fn gate(s: &TestServer, rules: &str, dir: &Path) -> McpClient {
    gate_via(s, rules, dir, &format!("http://{}", s.addr)).await
}

/// [`gate`] with the gate talking to Countersign at `server`.
async fn gate_via(s: &TestServer, rules: &str, dir: &Path, server: &str) -> McpClient {
    let rules_file = s.dir.path().join("gate.rules");
    std::fs::write(&rules_file, rules).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
    cmd.args(["mcp", "gate", "--rules"]).arg(&rules_file);
    cmd.args(["--server", server, "--key", &s.key, "--run-id", "gate-test", "--"]);
    cmd.args(filesystem_server(dir));
    connect(cmd).await
}

async fn connect(mut cmd: tokio::process::Command) -> McpClient {
    cmd.env_remove("HUMANLAYER_API_BASE")
        .env_remove("HUMANLAYER_API_KEY")
        .env_remove("COUNTERSIGN_API_BASE")
        .env_remove("COUNTERSIGN_API_KEY");
    let (transport, _) = TokioChildProcess::builder(cmd).stderr(Stdio::null()).spawn().unwrap();
    ().serve(transport).await.expect("MCP handshake with `countersign mcp gate`")
}

fn ok_text(result: &CallToolResult) -> String {
    assert_ne!(result.is_error, Some(true), "{result:?}");
    result.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.clone()).collect::<Vec<_>>().join("\n")
}

/// No approval is pending in the project.
async fn nothing_pending(s: &TestServer) {
    let (status, page) = s.get("/agent/function_calls/pending").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"], json!([]), "nothing should have been asked");
}

#[tokio::test]
async fn the_gate_offers_the_tools_unchanged_and_forwards_unselected_calls_at_once() {
    let s = TestServer::start().await;
    let (_dir, dir) = files();
    std::fs::write(dir.join("notes.txt"), "hello from the notes\n").unwrap();
    std::fs::create_dir(dir.join("scratch")).unwrap();

    let mut direct = tokio::process::Command::new("node");
    direct.args(&filesystem_server(&dir)[1..]);
    let direct = connect(direct).await;
    let rules = "# scratch writes need nobody\n\
                 allow write_file when path ~ \"*/scratch/*\"\n\
                 ask write_file\n\
                 ask edit_file\n\
                 deny move_file\n";
    let mcp = gate(&s, rules, &dir).await;

    let theirs = direct.list_all_tools().await.unwrap();
    let ours = mcp.list_all_tools().await.unwrap();
    assert!(theirs.len() >= 10, "{theirs:?}");
    assert_eq!(serde_json::to_value(&ours).unwrap(), serde_json::to_value(&theirs).unwrap());

    let path = dir.join("notes.txt").display().to_string();
    let read = mcp.call_tool(call("read_text_file", json!({"path": path}))).await.unwrap();
    assert!(ok_text(&read).contains("hello from the notes"), "{read:?}");

    let scratch = dir.join("scratch/free.txt");
    let args = json!({"path": scratch.display().to_string(), "content": "no human needed"});
    let wrote = tokio::time::timeout(Duration::from_secs(20), mcp.call_tool(call("write_file", args))).await;
    ok_text(&wrote.expect("an allowed write goes straight through").unwrap());
    assert_eq!(std::fs::read_to_string(&scratch).unwrap(), "no human needed");

    let args = json!({"source": path, "destination": dir.join("moved.txt").display().to_string()});
    let refused = mcp.call_tool(call("move_file", args)).await.unwrap();
    assert_eq!(refused.is_error, Some(true), "{refused:?}");
    assert!(text(&refused).contains("gate.rules:5"), "{}", text(&refused));
    assert!(dir.join("notes.txt").exists() && !dir.join("moved.txt").exists());

    nothing_pending(&s).await;
    mcp.cancel().await.unwrap();
    direct.cancel().await.unwrap();
}

/// Calls `write_file` through the gate, decides the approval with `decision`, returns the result.
async fn write_decided(s: &TestServer, mcp: &McpClient, file: &Path, content: &str, decision: Value) -> CallToolResult {
    write_decided_id(s, mcp, file, content, decision).await.0
}

/// [`write_decided`], with the approval's call id.
async fn write_decided_id(
    s: &TestServer,
    mcp: &McpClient,
    file: &Path,
    content: &str,
    decision: Value,
) -> (CallToolResult, String) {
    let peer = mcp.peer().clone();
    let args = json!({"path": file.display().to_string(), "content": content});
    let asked = tokio::spawn(async move { peer.call_tool(call("write_file", args)).await });
    let approval = pending(s, "function_calls").await;
    assert_eq!(approval["spec"]["fn"], "write_file");
    assert_eq!(approval["spec"]["kwargs"], json!({"path": file.display().to_string(), "content": content}));
    assert_eq!(approval["run_id"], "gate-test");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!file.exists(), "nothing is written before the human decides");
    assert!(!asked.is_finished());
    let call_id = approval["call_id"].as_str().unwrap();
    let (status, body) = s.post(&format!("/agent/function_calls/{call_id}/respond"), decision).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (asked.await.unwrap().expect("tools/call"), call_id.to_owned())
}

#[tokio::test]
async fn a_gated_write_happens_only_after_approval_with_the_humans_edits_and_never_when_rejected() {
    let s = TestServer::start().await;
    let (_dir, dir) = files();
    let mcp = gate(&s, "ask write_file\n", &dir).await;

    let approved = dir.join("approved.txt");
    let result = write_decided(&s, &mcp, &approved, "as the agent wrote it", json!({"approved": true})).await;
    ok_text(&result);
    assert_eq!(std::fs::read_to_string(&approved).unwrap(), "as the agent wrote it");

    let edited = dir.join("edited.txt");
    let edit = json!({"path": edited.display().to_string(), "content": "as the human fixed it"});
    let decision = json!({"approved": true, "comment": "typo", "updated_kwargs": edit});
    let result = write_decided(&s, &mcp, &edited, "as the agent wrote it", decision).await;
    ok_text(&result);
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), "as the human fixed it");

    let rejected = dir.join("rejected.txt");
    let decision = json!({"approved": false, "comment": "not in that folder"});
    let result = write_decided(&s, &mcp, &rejected, "should never land", decision).await;
    assert_eq!(result.is_error, Some(true), "{result:?}");
    assert_eq!(text(&result), "User denied write_file with message: not in that folder");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!rejected.exists(), "a rejected write writes nothing");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    mcp.cancel().await.unwrap();
}

#[tokio::test]
async fn the_gate_keeps_the_client_waiting_with_progress_while_the_human_decides() {
    use countersign_core::rules::Rules;
    use countersign_mcp::gate::{Downstream, Gate, Relay, connect};
    let s = TestServer::start().await;
    let (_dir, dir) = files();
    let downstream = connect(&Downstream::Command(filesystem_server(&dir)), Relay::default()).await.unwrap();
    let countersign = countersign_client::Client::builder().base_url(s.api("")).api_key(&s.key).build().unwrap();
    let rules = Rules::parse("inline", "ask write_file").unwrap();
    let gate = Gate::new(&downstream, rules, countersign).progress_every(Duration::from_millis(50));
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move { gate.serve(server_io).await.unwrap().waiting().await });
    let counter = CountsProgress::default();
    let mcp = counter.clone().serve(client_io).await.unwrap();

    let file = dir.join("slow.txt");
    let peer = mcp.peer().clone();
    let args = json!({"path": file.display().to_string(), "content": "eventually"});
    let asked = tokio::spawn(async move { peer.call_tool(call("write_file", args)).await });
    let approval = pending(&s, "function_calls").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let call_id = approval["call_id"].as_str().unwrap();
    let (status, _) = s.post(&format!("/agent/function_calls/{call_id}/respond"), json!({"approved": true})).await;
    assert_eq!(status, StatusCode::OK);
    ok_text(&asked.await.unwrap().unwrap());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "eventually");
    let progress = counter.0.load(Ordering::SeqCst);
    assert!(progress >= 4, "progress notifications while the human thought: {progress}");
    mcp.cancel().await.unwrap();
    downstream.cancel().await.unwrap();
}

#[tokio::test]
async fn the_gate_fronts_a_streamable_http_server_by_url() {
    let s = TestServer::start().await;
    let server = format!("http://{}", s.addr);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
    cmd.args(["mcp", "gate", "--ask", "request_permission", "--url", &s.root("/mcp")])
        .args(["--header", &format!("Authorization: Bearer {}", s.key)])
        .args(["--server", &server, "--key", &s.key]);
    let mcp = connect(cmd).await;
    let mut names: Vec<String> = mcp.list_all_tools().await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["ask_human", "request_permission"]);

    // ask_human is not selected by --ask: forwarded to /mcp at once, where it asks its question.
    let peer = mcp.peer().clone();
    let asked = tokio::spawn(async move { peer.call_tool(call("ask_human", json!({"question": "Ship it?"}))).await });
    let question = pending(&s, "human_contacts").await;
    assert_eq!(question["spec"]["msg"], "Ship it?");
    let call_id = question["call_id"].as_str().unwrap();
    let (status, _) = s.post(&format!("/agent/human_contacts/{call_id}/respond"), json!({"response": "yes"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ok_text(&asked.await.unwrap().unwrap()), "yes");
    nothing_pending(&s).await;
    mcp.cancel().await.unwrap();
}

async fn run_gate(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["mcp", "gate"])
        .args(args)
        .env_remove("COUNTERSIGN_API_KEY")
        .env_remove("HUMANLAYER_API_KEY")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_call_the_client_cancels_is_cancelled_in_countersign_and_never_forwarded() {
    let s = TestServer::start().await;
    let (_dir, dir) = files();
    let mcp = gate(&s, "ask write_file\n", &dir).await;
    let file = dir.join("cancelled.txt");
    let peer = mcp.peer().clone();
    let args = json!({"path": file.display().to_string(), "content": "too late"});
    let asked = tokio::spawn(async move { peer.call_tool(call("write_file", args)).await });
    let approval = pending(&s, "function_calls").await;
    asked.abort(); // dropping the request sends notifications/cancelled
    let _ = asked.await;
    let call_id = approval["call_id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let cancelled = loop {
        let (_, fc) = s.get(&format!("/function_calls/{call_id}")).await;
        if !fc["status"]["approved"].is_null() {
            break fc;
        }
        assert!(std::time::Instant::now() < deadline, "the approval was not cancelled: {fc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(cancelled["status"]["approved"], false);
    assert_eq!(cancelled["status"]["comment"], "the MCP client cancelled the tool call");
    // Nobody can approve it any more, and nothing ran.
    let (status, _) = s.post(&format!("/agent/function_calls/{call_id}/respond"), json!({"approved": true})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!file.exists(), "the client gave up: nothing may run");

    let again = dir.join("again.txt");
    let result = write_decided(&s, &mcp, &again, "still works", json!({"approved": true})).await;
    ok_text(&result);
    assert_eq!(std::fs::read_to_string(&again).unwrap(), "still works");
    mcp.cancel().await.unwrap();
}

#[tokio::test]
async fn bad_rules_files_and_unreachable_servers_are_refused_with_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("bad.rules");
    std::fs::write(&rules, "ask write_file\nask edit_file when path = \"/etc\"\n").unwrap();
    let out = run_gate(&["--rules", rules.to_str().unwrap(), "--", "true"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.rules:2: unknown operator `=`"), "{stderr}");
    assert!(stderr.contains("2 | ask edit_file when path = \"/etc\""), "{stderr}");

    let good = dir.path().join("good.rules");
    std::fs::write(&good, "allow write_file when path ~ \"/srv/tmp/*\"  # scratch\nask write_*\n").unwrap();
    let explain = |args: &[&str]| {
        let mut all = vec!["--rules", good.to_str().unwrap(), "--explain"];
        all.extend_from_slice(args);
        all.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    for (args, expected) in [
        (
            explain(&["write_file", r#"{"path": "/srv/tmp/a"}"#]),
            "good.rules:1: allow write_file when path ~ \"/srv/tmp/*\")",
        ),
        (explain(&["write_file", r#"{"path": "/srv/tmp/../etc/x"}"#]), "good.rules:2: ask write_*)"),
        (explain(&["write_config"]), "good.rules:2: ask write_*)"),
        (explain(&["read_file"]), "allow (no rule matches; forwarded at once)"),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_gate(&args).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let action = if expected.contains(": ask ") { "ask (" } else { "allow (" };
        assert!(stdout.starts_with(action) && stdout.trim().ends_with(expected), "{args:?}: {stdout}");
    }
    // Rules that are no boundary load, with a warning naming the file and line.
    let weak = dir.path().join("weak.rules");
    std::fs::write(
        &weak,
        "# scratch\nallow write_file when path ~ \"scratch/*\"\nallow deploy when env != \"production\"\nask *\n",
    )
    .unwrap();
    let weak_rules = weak.to_str().unwrap();
    let out = run_gate(&["--rules", weak_rules, "--explain", "deploy", "{}"]).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stderr.contains(&format!("warning: {weak_rules}:2: `path ~ \"scratch/*\"`: the glob is a relative path")),
        "{stderr}"
    );
    assert!(
        stderr
            .contains(&format!("warning: {weak_rules}:3: `env != \"production\"` also holds when a call has no `env`")),
        "{stderr}"
    );
    assert!(
        stdout.starts_with(&format!("allow ({weak_rules}:3: allow deploy when env != \"production\")")),
        "{stdout}"
    );
    assert!(stdout.contains("\n  warning: `env != \"production\"` also holds"), "the verdict repeats it: {stdout}");
    let out = run_gate(&["--rules", good.to_str().unwrap(), "--explain", "read_file"]).await;
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "sound rules load quietly: {out:?}");

    let out = run_gate(&["--rules", good.to_str().unwrap(), "--explain", "write_file", "[1]"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be a JSON object"));

    let out = run_gate(&["--ask", "write_file"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("name the downstream MCP server"), "{stderr}");

    let empty = dir.path().join("empty.rules");
    std::fs::write(&empty, "# to do\n").unwrap();
    let out = run_gate(&["--rules", empty.to_str().unwrap(), "--", "true"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has no rules, so every call would be forwarded without asking"), "{stderr}");

    let out = run_gate(&["--server", "http://127.0.0.1:9", "--key", "cs_x", "--", "true"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach Countersign at http://127.0.0.1:9/humanlayer/v1"), "{stderr}");

    let s = TestServer::start().await;
    let server = format!("http://{}", s.addr);
    let out = run_gate(&["--server", &server, "--key", "cs_not_a_key", "--", "true"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused the API key"), "{stderr}");

    let out = run_gate(&["--server", &server, "--key", &s.key, "--", "/nonexistent/mcp-server"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot start the downstream MCP server `/nonexistent/mcp-server`"), "{stderr}");
    assert!(out.stdout.is_empty(), "standard output is the MCP protocol only");
}

/// The gate checks each approval's signed receipt against the arguments it is about to forward:
/// through a proxy that alters approvals (other arguments, a receipt signed by an unknown key, an
/// altered receipt, another call's receipt), nothing is forwarded. What it does forward is
/// recorded as executed, with the SHA-256 of the result.
#[tokio::test]
async fn the_gate_forwards_only_what_the_receipt_approved_and_records_the_execution() {
    use countersign_fakes::tamper::{Alter, Tamper};
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};
    let s = TestServer::start().await;
    let (_dir, dir) = files();
    let mode = Arc::new(AtomicUsize::new(0));
    let other_receipt = Arc::new(Mutex::new(String::new()));
    let alter: Alter = {
        let (mode, other_receipt) = (mode.clone(), other_receipt.clone());
        let stranger = countersign_receipt::KeyPair::from_secret(&[7; 32]);
        Arc::new(move |fc: &mut Value| {
            let receipt = fc["status"]["receipt"].as_str().unwrap_or_default().to_owned();
            match mode.load(Ordering::SeqCst) {
                1 => {
                    let mut kwargs = fc["spec"]["kwargs"].clone();
                    kwargs["content"] = json!("what the attacker wants");
                    fc["status"]["updated_kwargs"] = kwargs;
                }
                2 => {
                    fc["status"]["receipt"] =
                        json!(stranger.sign(&countersign_receipt::read_unverified(&receipt).unwrap()))
                }
                3 => {
                    let (head, signature) = receipt.rsplit_once('.').unwrap();
                    let flipped = if signature.starts_with('A') { "B" } else { "A" };
                    fc["status"]["receipt"] = json!(format!("{head}.{flipped}{}", &signature[1..]));
                }
                4 => fc["status"]["receipt"] = json!(other_receipt.lock().unwrap().clone()),
                _ => {}
            }
        })
    };
    let proxy = Tamper::start(s.http.clone(), s.addr, alter).await;
    let mcp = gate_via(&s, "ask write_file\n", &dir, &format!("http://{}", proxy.addr)).await;

    let first = dir.join("first.txt");
    let (result, call_id) = write_decided_id(&s, &mcp, &first, "approved as is", json!({"approved": true})).await;
    ok_text(&result);
    assert_eq!(std::fs::read_to_string(&first).unwrap(), "approved as is");
    let (_, decided) = s.get(&format!("/function_calls/{call_id}")).await;
    *other_receipt.lock().unwrap() = decided["status"]["receipt"].as_str().unwrap().to_owned();
    let (status, execution) = s.get(&format!("/function_calls/{call_id}/execution")).await;
    assert_eq!(status, StatusCode::OK, "{execution}");
    assert_eq!(execution["state"], "finished", "{execution}");
    assert_eq!(execution["result_sha256"].as_str().map(str::len), Some(64), "{execution}");

    for (m, reason) in [
        (1, "arguments differ"),
        (2, "not among the published keys"),
        (3, "signature does not verify"),
        (4, "not for function_call"),
    ] {
        mode.store(m, Ordering::SeqCst);
        let file = dir.join(format!("refused-{m}.txt"));
        let (result, call_id) = write_decided_id(&s, &mcp, &file, "approved as is", json!({"approved": true})).await;
        assert_eq!(result.is_error, Some(true), "{result:?}");
        let said = text(&result);
        assert!(said.contains("did not forward write_file") && said.contains(reason), "mode {m}: {said}");
        assert!(!file.exists(), "mode {m}: nothing was written");
        let (status, _) = s.get(&format!("/function_calls/{call_id}/execution")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "mode {m}: nothing was started");
    }
    mcp.cancel().await.unwrap();
}
