//! The MCP server the client talks to: the downstream server's tools, prompts and resources,
//! with every tool call checked against the rules first.

use super::downstream::{DownstreamService, gate_implementation};
use crate::progress::{PROGRESS_EVERY, Progress};
use countersign_client::{Approval, Client, FunctionCallSpec};
use countersign_core::rules::{Action, Rule, Rules};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CompleteRequestParams, CompleteResult, ContentBlock,
    GetPromptRequestParams, GetPromptResponse, InitializeRequestParams, InitializeResult, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig, ServerPeerInfo,
};
use rmcp::service::{Peer, RequestContext, ServiceError};
use rmcp::{ErrorData, RoleClient, RoleServer, ServerHandler};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long the gate tries to hand an approval request to Countersign before it gives up on the
/// call (the human's wait itself has no limit).
const CREATE_DEADLINE: Duration = Duration::from_secs(30);

/// The MCP server the client talks to: the downstream server's tools, behind the rules.
#[derive(Clone)]
pub struct Gate {
    downstream: Peer<RoleClient>,
    info: ServerConfig,
    rules: Arc<Rules>,
    countersign: Client,
    upstream: Arc<OnceLock<Peer<RoleServer>>>,
    progress_every: Duration,
}

impl Gate {
    /// A gate over a connected downstream server.
    pub fn new(downstream: &DownstreamService, rules: Rules, countersign: Client) -> Self {
        let info = upstream_info(downstream.peer().peer_info().as_deref());
        Self {
            downstream: downstream.peer().clone(),
            info,
            rules: Arc::new(rules),
            countersign,
            upstream: downstream.service().upstream.clone(),
            progress_every: PROGRESS_EVERY,
        }
    }

    /// Sends progress notifications this often while a human decides (default [`PROGRESS_EVERY`]).
    pub fn progress_every(mut self, every: Duration) -> Self {
        self.progress_every = every;
        self
    }

    /// Asks a human about `request`; the call to forward when approved, else the tool result.
    async fn ask(
        &self,
        mut request: CallToolRequestParams,
        rule: &Rule,
        ctx: &RequestContext<RoleServer>,
        progress: &mut Progress,
    ) -> Result<(CallToolRequestParams, String), CallToolResult> {
        let call_id = crate::random_id("gate");
        // If the client cancels the call while a human is asked, this future is dropped: the
        // approval is then cancelled in Countersign too, so nobody decides a call that is gone.
        let mut pending = CancelOnDrop { countersign: Some(self.countersign.clone()), call_id: call_id.clone() };
        let tool = request.name.to_string();
        let spec = FunctionCallSpec::new(tool.clone(), request.arguments.clone().unwrap_or_default());
        let creating = self.countersign.with_deadline(Some(CREATE_DEADLINE));
        let created = progress.during(ctx, "asking Countersign", creating.create_function_call(&call_id, &spec)).await;
        let decided = match created.map(Approval::from_call) {
            Ok(Some(decided)) => Ok(decided),
            Ok(None) => {
                tracing::info!(call_id, tool, rule = %rule.origin, "waiting for a human");
                let waiting = self.countersign.wait_function_call(&call_id);
                progress.during(ctx, "waiting for a human in Countersign", waiting).await
            }
            Err(e) => Err(e),
        };
        pending.countersign = None;
        match decided {
            Ok(approval) if approval.approved => {
                let arguments = approval.kwargs.clone();
                if let Err(e) = self.may_run(&call_id, &approval, &arguments).await {
                    tracing::warn!(call_id, tool, error = %e, "approved, but not forwarded");
                    return Err(tool_error(format!("Countersign's gate did not forward {tool}: {e}")));
                }
                tracing::info!(call_id, tool, "approved; forwarding");
                request.arguments = Some(arguments);
                Ok((request, call_id))
            }
            Ok(approval) => {
                tracing::info!(call_id, tool, "denied");
                Err(tool_error(denial(&tool, &approval)))
            }
            Err(e) => {
                tracing::warn!(call_id, tool, error = %e, "cannot get a decision");
                Err(tool_error(format!("Countersign could not get a human's decision on {tool}: {e}")))
            }
        }
    }

    /// Checks the approval's receipt against the arguments about to be forwarded, and reports the
    /// start of the execution (once; the client's settings can turn either off).
    async fn may_run(
        &self,
        call_id: &str,
        approval: &Approval,
        arguments: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), countersign_client::Error> {
        if self.countersign.verifies_receipts() {
            self.countersign.verify_approval(approval, &serde_json::Value::Object(arguments.clone())).await?;
        }
        if self.countersign.tracks_execution() {
            let token = crate::random_id("start");
            self.countersign.start_execution(call_id, Some(&token)).await?;
        }
        Ok(())
    }

    /// Reports how the forwarded call ended: finished with the SHA-256 of the result's canonical
    /// JSON, or failed.
    async fn report_end(&self, call_id: &str, ended: Result<&CallToolResponse, String>) {
        if !self.countersign.tracks_execution() {
            return;
        }
        let reported = match ended {
            Ok(CallToolResponse::Complete(result)) if result.is_error == Some(true) => {
                self.countersign.fail_execution(call_id, "the tool answered with an error result").await
            }
            Ok(CallToolResponse::Complete(result)) => {
                let hash = serde_json::to_value(result).ok().map(|v| countersign_receipt::args_sha256(&v));
                self.countersign.finish_execution(call_id, hash.as_deref()).await
            }
            Ok(_) => self.countersign.finish_execution(call_id, None).await,
            Err(error) => self.countersign.fail_execution(call_id, &error).await,
        };
        if let Err(e) = reported {
            tracing::warn!(call_id, error = %e, "the forwarded call ended but its end could not be reported");
        }
    }

    /// Applies the rules to one call and forwards it when they (or a human) allow it.
    async fn handle(
        &self,
        request: CallToolRequestParams,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let no_arguments = serde_json::Map::new();
        let arguments = request.arguments.as_ref().unwrap_or(&no_arguments);
        let rule = self.rules.verdict(&request.name, arguments);
        let mut progress = Progress::new(ctx, self.progress_every);
        let (mut forward, approved) = match rule {
            Some(rule) if rule.action == Action::Ask => match self.ask(request, rule, ctx, &mut progress).await {
                Ok((approved, call_id)) => (approved, Some(call_id)),
                Err(result) => return Ok(result.into()),
            },
            Some(rule) if rule.action == Action::Deny => {
                tracing::info!(tool = %request.name, rule = %rule.origin, "denied by the rules");
                let text = format!("{} is not allowed by Countersign's gate rules ({})", request.name, rule.origin);
                return Ok(tool_error(text).into());
            }
            _ => (request, None),
        };
        // The downstream server gets its own progress token from rmcp; the client hears the
        // gate's progress, which keeps counting up while the tool runs.
        forward.meta = None;
        let label = format!("waiting for {}", forward.name);
        let answer = progress.during(ctx, &label, self.downstream.call_tool_once(forward)).await;
        if let Some(call_id) = &approved {
            let ended = answer.as_ref().map_err(|e| format!("the downstream MCP server failed: {e}"));
            self.report_end(call_id, ended).await;
        }
        match answer {
            Ok(response) => Ok(response),
            Err(ServiceError::McpError(error)) => Err(error),
            Err(e) => Ok(tool_error(format!("the downstream MCP server failed: {e}")).into()),
        }
    }
}

/// Cancels an approval whose wait was abandoned (the client cancelled its call).
struct CancelOnDrop {
    countersign: Option<Client>,
    call_id: String,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(countersign) = self.countersign.take() else { return };
        let call_id = std::mem::take(&mut self.call_id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                match countersign.cancel_function_call(&call_id, Some("the MCP client cancelled the tool call")).await {
                    Ok(_) => tracing::info!(call_id, "approval cancelled: the client cancelled the call"),
                    Err(e) => tracing::warn!(call_id, error = %e, "cannot cancel the abandoned approval"),
                }
            });
        }
    }
}

/// The tool error for a rejection: HumanLayer's wording with the human's comment, else the reject
/// option, else just that the human said no.
fn denial(tool: &str, approval: &Approval) -> String {
    let comment = approval.comment.as_deref().map(str::trim).unwrap_or("");
    match &approval.reject_option_name {
        _ if !comment.is_empty() => approval.denial_message(),
        Some(option) => format!("User denied {tool} ({option})"),
        None => format!("User denied {tool}"),
    }
}

/// What the gate tells the MCP client about itself: the downstream server's name, protocol version
/// and instructions, with the capabilities the gate passes through.
fn upstream_info(downstream: Option<&ServerPeerInfo>) -> ServerConfig {
    let mut capabilities = ServerCapabilities::default();
    let mut info = ServerConfig::new(ServerCapabilities::default()).with_server_info(gate_implementation());
    if let Some(downstream) = downstream {
        let theirs = &downstream.capabilities;
        capabilities.tools = theirs.tools.clone();
        capabilities.prompts = theirs.prompts.clone();
        capabilities.completions = theirs.completions.clone();
        capabilities.resources = theirs.resources.clone().map(|mut resources| {
            resources.subscribe = None;
            resources
        });
        info.protocol_version = downstream.protocol_version.clone();
        if let Some(implementation) = &downstream.server_info {
            info.server_info = implementation.clone();
        }
        info.instructions = downstream.instructions.clone();
    }
    if capabilities.tools.is_none() {
        capabilities.tools = Some(Default::default());
    }
    info.capabilities = capabilities;
    let note = "Some tool calls wait for a human's approval in Countersign; a denied call returns the human's reason.";
    info.instructions = Some(match info.instructions.take() {
        Some(theirs) if !theirs.trim().is_empty() => format!("{theirs}\n\n{note}"),
        _ => note.to_owned(),
    });
    info
}

fn tool_error(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// A downstream failure as the MCP client should see it: the downstream's own protocol error as is.
fn protocol_error(e: ServiceError) -> ErrorData {
    match e {
        ServiceError::McpError(error) => error,
        other => ErrorData::internal_error(format!("the downstream MCP server failed: {other}"), None),
    }
}

impl ServerHandler for Gate {
    fn get_info(&self) -> ServerConfig {
        self.info.clone()
    }

    /// No newer than what the downstream server speaks, so that the client does not count on
    /// features the gate would have to pass on.
    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        match ProtocolVersion::known_up_to(&self.info.protocol_version) {
            [] => Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS),
            versions => Cow::Borrowed(versions),
        }
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        context.peer.set_peer_info(request.clone());
        let _ = self.upstream.set(context.peer.clone());
        self.negotiate_initialize(&request)
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        self.downstream.list_tools(request).await.map_err(protocol_error)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let _ = self.upstream.set(context.peer.clone());
        let tool = request.name.clone();
        tokio::select! {
            response = self.handle(request, &context) => response,
            () = context.ct.cancelled() => {
                // Dropping `handle` stops the wait (and cancels the approval in Countersign) or
                // cancels the forwarded call downstream.
                tracing::info!(%tool, "the client cancelled the call; nothing is forwarded");
                Ok(tool_error(format!("{tool} was cancelled by the client")).into())
            }
        }
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        self.downstream.list_prompts(request).await.map_err(protocol_error)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        self.downstream.get_prompt_once(request).await.map_err(protocol_error)
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.downstream.list_resources(request).await.map_err(protocol_error)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        self.downstream.list_resource_templates(request).await.map_err(protocol_error)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.downstream.read_resource_once(request).await.map_err(protocol_error)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        self.downstream.complete(request).await.map_err(protocol_error)
    }
}
