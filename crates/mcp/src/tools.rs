//! The human tools: `request_permission` (Claude Code's `--permission-prompt-tool` contract) and
//! `ask_human`. Each call is an ordinary approval or question in Countersign, so the inbox, email
//! and webhooks apply.
//!
//! The same tools run in two places: `countersign mcp` (stdio, [`serve_stdio`]), a client of a
//! running server over the HumanLayer API ([`Desk::Remote`]), and `/mcp` on the server itself
//! ([`crate::http`]), where they work on the server's own requests for the project of the bearer
//! key ([`Desk::Local`]).

use crate::Error;
use crate::progress::{PROGRESS_EVERY, Progress};
use countersign_client::{Answer, Approval, Client, FunctionCallSpec, JsonObject};
use countersign_server::state::AppState;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServiceExt, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use std::future::Future;
use std::time::Duration;

/// Where the tools create their requests and wait for the human.
#[derive(Clone)]
pub enum Desk {
    /// A running Countersign server, over the HumanLayer API (`countersign mcp`).
    Remote(Client),
    /// This server's own requests, for the project of the key the HTTP request carried.
    Local {
        /// The server's state.
        state: AppState,
        /// Groups the requests of MCP calls (unless the HTTP request names its own run id).
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
        let call_id = request.tool_use_id.filter(|id| !id.trim().is_empty()).unwrap_or_else(|| crate::random_id("mcp"));
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
        let call_id = crate::random_id("mcp");
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
            Desk::Local { state, run_id } => crate::local::approval(state, ctx, run_id, call_id, spec).await,
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
            Desk::Local { state, run_id } => crate::local::answer(state, ctx, run_id, call_id, question).await,
        }
    }
}

/// `countersign mcp`: serves the tools on stdin/stdout, as a client of the server `client` names,
/// until the MCP client closes the connection.
pub async fn serve_stdio(client: Client) -> Result<(), Error> {
    tracing::info!(base = %client.base_url(), run_id = client.run_id(), "serving MCP on stdio");
    let service = HumanTools::new(Desk::Remote(client))
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Error::Handshake(Box::new(e)))?;
    let reason = service.waiting().await.map_err(Error::Stopped)?;
    tracing::info!(?reason, "MCP client disconnected");
    Ok(())
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

fn describe(err: countersign_client::Error) -> String {
    format!("Countersign: {err}")
}
