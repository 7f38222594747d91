//! The overhead of `countersign mcp gate` on calls its rules do not select: an MCP client (rmcp,
//! over stdio) calls the `echo` tool of this binary's hidden `echo-mcp` server, once spawned
//! directly (the baseline) and once behind `countersign mcp gate --ask no_such_tool` (so that no
//! call is selected, and the gate forwards each at once, without touching Countersign). Both
//! clients are connected for the whole part; their phases alternate (warm-up, then sequential
//! calls direct and gated, then calls with [`IN_FLIGHT`] in flight direct and gated).

use crate::process;
use crate::stats::Samples;
use anyhow::{Context, Result, bail};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock, JsonObject};
use rmcp::service::{Peer, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ErrorData, RoleClient, ServiceExt, tool, tool_handler, tool_router};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// Calls kept in flight at once in the concurrent phase.
pub const IN_FLIGHT: usize = 16;
/// The tool name the gate is told to ask about: no such tool exists, so no call is selected.
pub const UNSELECTED_GLOB: &str = "no_such_tool";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The `echo-mcp` server.

/// A minimal MCP server: one tool, `echo`, that returns its arguments as JSON text.
#[derive(Clone)]
struct Echo {
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl Echo {
    fn new() -> Self {
        Self { tool_router: Self::tool_router() }
    }

    #[tool(description = "Returns its arguments as JSON text.")]
    async fn echo(&self, Parameters(arguments): Parameters<JsonObject>) -> Result<CallToolResult, ErrorData> {
        Ok(CallToolResult::success(vec![ContentBlock::text(Value::Object(arguments).to_string())]))
    }
}

#[tool_handler(router = self.tool_router, name = "countersign-bench-echo")]
impl rmcp::ServerHandler for Echo {}

/// `countersign-bench echo-mcp`: serves [`Echo`] on stdin/stdout until the client goes.
pub fn run_echo_server() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let service = Echo::new().serve(rmcp::transport::stdio()).await.context("MCP handshake")?;
        service.waiting().await?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// The client side.

/// What one side (direct or through the gate) measured.
#[derive(Debug, Default)]
pub struct Side {
    /// Spawn → MCP handshake complete (for the gate: its Countersign check, the echo server's
    /// start and handshake, and its own handshake).
    pub startup: Duration,
    /// Latency of each sequential call.
    pub sequential: Samples,
    pub sequential_elapsed: Duration,
    /// Latency of each call with [`IN_FLIGHT`] in flight.
    pub concurrent: Samples,
    pub concurrent_elapsed: Duration,
    /// Calls that failed or answered something else than their arguments (all phases).
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Side {
    pub fn sequential_rate(&self) -> f64 {
        rate(self.sequential.len(), self.sequential_elapsed)
    }

    pub fn concurrent_rate(&self) -> f64 {
        rate(self.concurrent.len(), self.concurrent_elapsed)
    }

    fn fail(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    if elapsed.is_zero() { 0.0 } else { n as f64 / elapsed.as_secs_f64() }
}

#[derive(Debug, Default)]
pub struct GateResult {
    /// Calls per measured phase (each side, sequential and concurrent alike).
    pub calls: usize,
    pub warmup: usize,
    pub direct: Side,
    pub gated: Side,
}

/// Measures the direct echo server against the same server behind the gate, the gate pointed at
/// the Countersign server at `addr` with `key`.
pub async fn run(
    bin: &Path,
    addr: SocketAddr,
    key: &str,
    config_home: &Path,
    tmp: &Path,
    calls: usize,
) -> Result<GateResult> {
    let exe = std::env::current_exe()?;
    let warmup = (calls / 10).clamp(IN_FLIGHT, 1_000);
    let mut result = GateResult { calls, warmup, ..GateResult::default() };

    let mut direct = Command::new(&exe);
    process::isolate(&mut direct, config_home);
    direct.arg("echo-mcp");
    let mut gated = Command::new(bin);
    process::isolate(&mut gated, config_home);
    gated.args(["mcp", "gate", "--ask", UNSELECTED_GLOB, "--server", &format!("http://{addr}"), "--key", key]);
    gated.args(["--run-id", "bench-gate", "--"]).arg(&exe).arg("echo-mcp");

    eprintln!("baseline: starting `countersign-bench echo-mcp` (MCP on stdio) ...");
    let (direct_client, startup) = connect("the echo MCP server", direct, &tmp.join("echo-direct.log")).await?;
    result.direct.startup = startup;
    eprintln!("countersign: starting `countersign mcp gate --ask {UNSELECTED_GLOB} -- countersign-bench echo-mcp` ...");
    let (gated_client, startup) = connect("countersign mcp gate", gated, &tmp.join("gate.log")).await?;
    result.gated.startup = startup;

    let outcome = async {
        let (direct, gated) = (direct_client.peer().clone(), gated_client.peer().clone());
        for (peer, side) in [(&direct, &mut result.direct), (&gated, &mut result.gated)] {
            expect_echo_tool(peer).await?;
            sequential(peer, warmup, side).await;
            concurrent(peer, warmup, side).await;
            (side.errors, side.first_error) = (0, None);
        }
        eprintln!("baseline: {calls} sequential echo calls, direct ...");
        (result.direct.sequential, result.direct.sequential_elapsed) =
            sequential(&direct, calls, &mut result.direct).await;
        eprintln!("countersign: {calls} sequential echo calls through the gate ...");
        (result.gated.sequential, result.gated.sequential_elapsed) = sequential(&gated, calls, &mut result.gated).await;
        eprintln!("baseline: {calls} echo calls, {IN_FLIGHT} in flight, direct ...");
        (result.direct.concurrent, result.direct.concurrent_elapsed) =
            concurrent(&direct, calls, &mut result.direct).await;
        eprintln!("countersign: {calls} echo calls, {IN_FLIGHT} in flight, through the gate ...");
        (result.gated.concurrent, result.gated.concurrent_elapsed) = concurrent(&gated, calls, &mut result.gated).await;
        for (name, side) in [("direct", &result.direct), ("through the gate", &result.gated)] {
            if side.errors as usize >= calls {
                bail!("every echo call failed {name}: {}", side.first_error.as_deref().unwrap_or("-"));
            }
        }
        Ok(())
    }
    .await;
    let closed_direct = close(direct_client).await;
    let closed_gated = close(gated_client).await;
    outcome?;
    closed_direct.context("closing the direct echo client")?;
    closed_gated.context("closing the gate's client")?;
    Ok(result)
}

type Client = RunningService<RoleClient, ()>;

/// Spawns `command` (stderr to `log`) and completes the MCP handshake; the time that took.
async fn connect(name: &str, command: Command, log: &Path) -> Result<(Client, Duration)> {
    let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let started = Instant::now();
    let (transport, _) = TokioChildProcess::builder(command)
        .stderr(Stdio::from(log_file))
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    match tokio::time::timeout(STARTUP_TIMEOUT, ().serve(transport)).await {
        Ok(Ok(client)) => Ok((client, started.elapsed())),
        Ok(Err(e)) => bail!("MCP handshake with {name} failed: {e}; stderr:\n{}", process::tail(log)),
        Err(_) => bail!("no MCP handshake with {name} within {STARTUP_TIMEOUT:?}; stderr:\n{}", process::tail(log)),
    }
}

async fn close(mut client: Client) -> Result<()> {
    match client.close_with_timeout(Duration::from_secs(10)).await? {
        Some(_) => Ok(()),
        None => bail!("the MCP client did not close within 10 s"),
    }
}

async fn expect_echo_tool(peer: &Peer<RoleClient>) -> Result<()> {
    let tools = peer.list_all_tools().await.context("tools/list")?;
    anyhow::ensure!(
        tools.iter().any(|tool| tool.name == "echo"),
        "the echo tool is not offered (tools: {:?})",
        tools.iter().map(|tool| tool.name.as_ref()).collect::<Vec<_>>()
    );
    Ok(())
}

/// One `tools/call echo` with arguments of its own; its latency, or what went wrong.
async fn call(peer: &Peer<RoleClient>, seq: usize) -> Result<Duration, String> {
    let arguments = json!({"seq": seq, "text": "countersign-bench gate", "flag": true});
    let Value::Object(arguments) = arguments else { unreachable!("an object") };
    let request = CallToolRequestParams::new("echo").with_arguments(arguments.clone());
    let started = Instant::now();
    let answer = tokio::time::timeout(CALL_TIMEOUT, peer.call_tool(request)).await;
    let elapsed = started.elapsed();
    let result = match answer {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => return Err(format!("tools/call echo: {e}")),
        Err(_) => return Err(format!("tools/call echo: no answer within {CALL_TIMEOUT:?}")),
    };
    let text = match result.content.as_slice() {
        [content] if result.is_error != Some(true) => content.as_text().map(|t| t.text.as_str()),
        _ => None,
    };
    match text.map(serde_json::from_str::<Value>) {
        Some(Ok(Value::Object(echoed))) if echoed == arguments => Ok(elapsed),
        _ => Err(format!("echo answered {result:?} to {}", Value::Object(arguments))),
    }
}

/// `n` calls one after another: their latencies and the time they took.
async fn sequential(peer: &Peer<RoleClient>, n: usize, side: &mut Side) -> (Samples, Duration) {
    let mut latencies = Vec::with_capacity(n);
    let started = Instant::now();
    for seq in 0..n {
        match call(peer, seq).await {
            Ok(latency) => latencies.push(latency),
            Err(e) => side.fail(e),
        }
    }
    (Samples::from_durations(latencies), started.elapsed())
}

/// `n` calls from [`IN_FLIGHT`] tasks, each sending its next call as soon as the last is answered.
async fn concurrent(peer: &Peer<RoleClient>, n: usize, side: &mut Side) -> (Samples, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (peer, next) = (peer.clone(), next.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), Vec::new());
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= n {
                        break;
                    }
                    match call(&peer, seq).await {
                        Ok(latency) => latencies.push(latency),
                        Err(e) => errors.push(e),
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(n);
    for task in tasks {
        match task.await {
            Ok((mine, errors)) => {
                latencies.extend(mine);
                errors.into_iter().for_each(|e| side.fail(e));
            }
            Err(e) => side.fail(format!("a client task failed: {e}")),
        }
    }
    let elapsed = started.elapsed();
    (Samples::from_durations(latencies), elapsed)
}
