//! The MCP face: two tools that put a human in front of an MCP client (Claude Code, Claude Desktop,
//! Cursor). `request_permission` is Claude Code's `--permission-prompt-tool` contract; `ask_human`
//! asks a question. Each call is an ordinary approval or question in Countersign, so the inbox,
//! email and webhooks apply.
//!
//! The same tools run in two places: `countersign mcp` (stdio), a client of a running server over
//! the HumanLayer API ([`Desk::Remote`]), and `/mcp` on the server itself (streamable HTTP), where
//! they work on the server's own requests for the project of the bearer key ([`Desk::Local`]).

use crate::auth::Caller;
use crate::live::RequestKey;
use crate::state::AppState;
use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use countersign_client::{Answer, Approval, Client, FunctionCall, FunctionCallSpec, HumanContact, JsonObject};
use countersign_core::api_key::Scope;
use countersign_core::{NewRequest, RequestKind};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often a waiting tool call tells the MCP client it is still alive (when the client asked for
/// progress), so that clients with request timeouts that reset on progress keep waiting.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// How long one in-process wait lasts before it is renewed.
const LOCAL_WAIT: Duration = Duration::from_secs(30);

/// Where the tools create their requests and wait for the human.
#[derive(Clone)]
pub enum Desk {
    /// A running Countersign server, over the HumanLayer API (`countersign mcp`).
    Remote(Client),
    /// This server's own requests, for the project of the key the HTTP request carried.
    Local {
        /// The server's state.
        state: AppState,
        /// Groups the requests of MCP calls.
        run_id: String,
    },
}

/// Input of `request_permission`, as Claude Code sends it.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PermissionRequest {
    /// The name of the tool the model wants to run, e.g. `Bash` or `mcp__github__create_issue`.
    pub tool_name: String,
    /// The tool's input, as the model wrote it.
    pub input: JsonObject,
    /// The tool use's id; used as the approval's call id, so a retried prompt finds the same approval.
    #[serde(default)]
    pub tool_use_id: Option<String>,
}

/// Input of `ask_human`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Question {
    /// The question for the human, with the context they need to answer it.
    pub question: String,
}

/// The MCP server: `request_permission` and `ask_human` over a [`Desk`].
#[derive(Clone)]
pub struct HumanTools {
    desk: Desk,
    progress_every: Duration,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl HumanTools {
    /// The tools over `desk`.
    pub fn new(desk: Desk) -> Self {
        Self { desk, progress_every: PROGRESS_EVERY, tool_router: Self::tool_router() }
    }

    /// Sends progress notifications this often while waiting (default [`PROGRESS_EVERY`]).
    pub fn progress_every(mut self, every: Duration) -> Self {
        self.progress_every = every;
        self
    }

    #[tool(description = "Ask a human (through Countersign) to allow or deny a tool call, and wait for the decision. \
        This is Claude Code's --permission-prompt-tool contract: the result is the JSON text \
        {\"behavior\":\"allow\",\"updatedInput\":{...}} (the input the human approved, possibly edited) or \
        {\"behavior\":\"deny\",\"message\":\"...\"}.")]
    async fn request_permission(
        &self,
        Parameters(request): Parameters<PermissionRequest>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let call_id = request.tool_use_id.filter(|id| !id.trim().is_empty()).unwrap_or_else(|| random_id("mcp"));
        let spec = FunctionCallSpec::new(request.tool_name, request.input);
        tracing::info!(call_id, fn_name = %spec.fn_name, "permission requested");
        let approval = match with_progress(&ctx, self.progress_every, self.approval(&ctx, &call_id, spec)).await {
            Ok(approval) => approval,
            Err(message) => return Ok(CallToolResult::error(vec![ContentBlock::text(message)])),
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(permission_payload(&approval).to_string())]))
    }

    #[tool(
        description = "Ask a human (through Countersign) a question and wait for the answer, which is returned as text."
    )]
    async fn ask_human(
        &self,
        Parameters(question): Parameters<Question>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let call_id = random_id("mcp");
        tracing::info!(call_id, "question asked");
        match with_progress(&ctx, self.progress_every, self.answer(&ctx, &call_id, question.question)).await {
            Ok(answer) => Ok(CallToolResult::success(vec![ContentBlock::text(answer.response)])),
            Err(message) => Ok(CallToolResult::error(vec![ContentBlock::text(message)])),
        }
    }
}

#[tool_handler(
    router = self.tool_router,
    name = "countersign",
    instructions = "Countersign puts a human in the loop. Call request_permission before a risky action (it is Claude Code's --permission-prompt-tool contract) and ask_human to ask the human a question; both wait until the human answers."
)]
impl rmcp::ServerHandler for HumanTools {}

impl HumanTools {
    async fn approval(
        &self,
        ctx: &RequestContext<RoleServer>,
        call_id: &str,
        spec: FunctionCallSpec,
    ) -> Result<Approval, String> {
        match &self.desk {
            Desk::Remote(client) => client.request_approval_with_id(call_id, spec).await.map_err(describe),
            Desk::Local { state, run_id } => {
                let caller = caller(ctx)?;
                let run_id = requested_run_id(ctx).unwrap_or_else(|| run_id.clone());
                let body = json!({"run_id": run_id, "call_id": call_id, "spec": spec});
                let key = key(&caller, RequestKind::FunctionCall, call_id);
                let call: FunctionCall = local_wait(state, &caller, key, &body).await?;
                Approval::from_call(call).ok_or_else(|| "the approval has no decision".to_owned())
            }
        }
    }

    async fn answer(
        &self,
        ctx: &RequestContext<RoleServer>,
        call_id: &str,
        question: String,
    ) -> Result<Answer, String> {
        match &self.desk {
            Desk::Remote(client) => client.ask_human_with_id(call_id, question).await.map_err(describe),
            Desk::Local { state, run_id } => {
                let caller = caller(ctx)?;
                let run_id = requested_run_id(ctx).unwrap_or_else(|| run_id.clone());
                let body = json!({"run_id": run_id, "call_id": call_id, "spec": {"msg": question}});
                let key = key(&caller, RequestKind::HumanContact, call_id);
                let contact: HumanContact = local_wait(state, &caller, key, &body).await?;
                Answer::from_contact(contact).ok_or_else(|| "the question has no answer".to_owned())
            }
        }
    }
}

/// `/mcp`: the tools over MCP's streamable HTTP, for the project of the bearer API key (401 without
/// one). Requests are grouped under run id `mcp`, or the one the client names in an
/// `X-Countersign-Run-Id` header or a `?run_id=` query parameter. Stateless (no MCP sessions), so
/// any instance of a multi-instance deployment can answer.
pub fn routes(state: AppState) -> Router<AppState> {
    // Every request needs an API key, as the rest of the API, so the Host check that protects
    // key-less local servers from DNS rebinding is not needed (and would refuse public hostnames).
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .disable_allowed_hosts()
        .with_max_request_body_bytes(state.settings.max_body_bytes);
    let tools_state = state.clone();
    let tools = move || Ok(HumanTools::new(Desk::Local { state: tools_state.clone(), run_id: "mcp".to_owned() }));
    let service = StreamableHttpService::new(tools, Arc::new(NeverSessionManager::default()), config);
    Router::new().route_service("/mcp", service).route_layer(axum::middleware::from_fn_with_state(state, authenticate))
}

/// Refuses requests without a valid API key with the `agent` scope (the tools create requests
/// and wait on them); hands the caller to the tools.
async fn authenticate(caller: Caller, mut request: Request, next: Next) -> Response {
    if let Err(refused) = caller.require(Scope::Agent) {
        return refused.into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The `--permission-prompt-tool` payload for a decision.
pub fn permission_payload(approval: &Approval) -> Value {
    if approval.approved {
        json!({"behavior": "allow", "updatedInput": approval.kwargs})
    } else {
        json!({"behavior": "deny", "message": denial_text(approval)})
    }
}

/// What a model should read about a rejection: the human's comment, else the reject option picked.
fn denial_text(approval: &Approval) -> String {
    match approval.comment.as_deref().map(str::trim) {
        Some(comment) if !comment.is_empty() => comment.to_owned(),
        _ => match &approval.reject_option_name {
            Some(option) => format!("denied by a human ({option})"),
            None => approval.denial_message(),
        },
    }
}

/// Runs `work`, sending a progress notification `every` while it waits, when the client gave a
/// progress token.
async fn with_progress<T>(ctx: &RequestContext<RoleServer>, every: Duration, work: impl Future<Output = T>) -> T {
    Progress::new(ctx, every).during(ctx, "waiting for a human in Countersign", work).await
}

/// Progress notifications for one request, counting up across several waits (the MCP spec wants
/// the progress value to increase), so that clients whose timeouts reset on progress keep waiting.
pub struct Progress {
    token: Option<ProgressToken>,
    every: Duration,
    sent: u32,
    started: tokio::time::Instant,
}

impl Progress {
    /// Progress for the request of `ctx`; silent when the client gave no progress token.
    pub fn new(ctx: &RequestContext<RoleServer>, every: Duration) -> Self {
        Self { token: ctx.meta.get_progress_token(), every, sent: 0, started: tokio::time::Instant::now() }
    }

    /// Runs `work`, notifying `label (N s)` every `every` until it ends.
    pub async fn during<T>(
        &mut self,
        ctx: &RequestContext<RoleServer>,
        label: &str,
        work: impl Future<Output = T>,
    ) -> T {
        let Some(token) = self.token.clone() else {
            return work.await;
        };
        let mut work = std::pin::pin!(work);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + self.every, self.every);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = ticks.tick() => {
                    self.sent += 1;
                    let seconds = self.started.elapsed().as_secs();
                    let note = ProgressNotificationParam::new(token.clone(), f64::from(self.sent))
                        .with_message(format!("{label} ({seconds} s)"));
                    if let Err(e) = ctx.peer.notify_progress(note).await {
                        tracing::debug!(error = %e, "cannot send a progress notification");
                    }
                }
            }
        }
    }
}

/// Creates the request (idempotently) and waits in-process until a human decides it.
async fn local_wait<T: for<'de> Deserialize<'de>>(
    state: &AppState,
    caller: &Caller,
    key: RequestKey,
    body: &Value,
) -> Result<T, String> {
    let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let new = NewRequest::parse(key.kind, &bytes).map_err(|e| e.to_string())?;
    let mut json = state.requests.create(&caller.project.id, new).await.map_err(|e| e.message().to_owned())?;
    let mut closing = state.requests.closing();
    loop {
        let current: Value = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
        if decided(&current) {
            return serde_json::from_value(current).map_err(|e| e.to_string());
        }
        if *closing.borrow_and_update() {
            return Err("the Countersign server is shutting down; the request stays pending".into());
        }
        json = state.requests.wait(&key, LOCAL_WAIT).await.map_err(|e| e.message().to_owned())?;
    }
}

/// True when a function call has a decision or a question has an answer.
fn decided(request: &Value) -> bool {
    let status = &request["status"];
    !status["approved"].is_null() || !status["response"].is_null()
}

fn key(caller: &Caller, kind: RequestKind, call_id: &str) -> RequestKey {
    RequestKey { project_id: caller.project.id.clone(), kind, call_id: call_id.to_owned() }
}

/// The caller that the `/mcp` route authenticated (see [`crate::app`]).
fn caller(ctx: &RequestContext<RoleServer>) -> Result<Caller, String> {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Caller>())
        .cloned()
        .ok_or_else(|| "no API key came with this MCP request".to_owned())
}

/// The run id the HTTP request asked for: the `X-Countersign-Run-Id` header, else the `run_id`
/// query parameter of the `/mcp` URL (for clients whose config holds only a URL).
fn requested_run_id(ctx: &RequestContext<RoleServer>) -> Option<String> {
    let parts = ctx.extensions.get::<axum::http::request::Parts>()?;
    let header = parts.headers.get("x-countersign-run-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let query = || {
        let axum::extract::Query(mut params) =
            axum::extract::Query::<std::collections::HashMap<String, String>>::try_from_uri(&parts.uri).ok()?;
        params.remove("run_id")
    };
    header.or_else(query).map(|id| id.trim().to_owned()).filter(|id| !id.is_empty())
}

fn describe(err: countersign_client::Error) -> String {
    format!("Countersign: {err}")
}

/// A fresh id with `prefix`, e.g. `mcp-3f9a...`.
pub fn random_id(prefix: &str) -> String {
    format!("{prefix}-{}", countersign_core::session::random_text(16))
}
