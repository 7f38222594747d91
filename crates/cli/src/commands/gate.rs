//! `countersign mcp gate`: an MCP proxy that puts a human in front of another MCP server's tools.
//!
//! The gate starts the downstream server (a command on stdio, or a streamable HTTP URL), offers
//! its tools to the MCP client unchanged, and checks every `tools/call` against the rules
//! ([`countersign_core::rules`]): `ask` creates an approval in Countersign and waits for the human
//! (sending progress notifications meanwhile), then forwards the call with the arguments the human
//! approved, or returns a tool error with the human's words; `allow` forwards at once; `deny`
//! refuses. Prompts and resources of the downstream server pass through untouched. A call the
//! client cancels is never forwarded, even if a human approves it later.

use crate::cli::GateArgs;
use crate::exit::{Exit, Failure};
use anyhow::Context;
use countersign_client::{Approval, Client, FunctionCallSpec};
use countersign_core::rules::{Action, Rule, Rules};
use countersign_server::mcp::{PROGRESS_EVERY, Progress, random_id};
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ClientConfig, CompleteRequestParams, CompleteResult,
    ContentBlock, GetPromptRequestParams, GetPromptResponse, Implementation, InitializeRequestParams, InitializeResult,
    ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig, ServerPeerInfo,
};
use rmcp::service::{NotificationContext, Peer, RequestContext, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ErrorData, RoleClient, RoleServer, ServerHandler, ServiceExt};
use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The MCP server the gate stands in front of.
#[derive(Debug, Clone)]
pub enum Downstream {
    /// A command that serves MCP on its stdin/stdout: the program and its arguments.
    Command(Vec<String>),
    /// A streamable HTTP endpoint, with extra request headers (e.g. `Authorization`).
    Url { url: String, headers: Vec<(String, String)> },
}

impl std::fmt::Display for Downstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Downstream::Command(command) => write!(f, "`{}`", command.join(" ")),
            Downstream::Url { url, .. } => f.write_str(url),
        }
    }
}

/// The gate's connection to the downstream server.
pub type DownstreamService = RunningService<RoleClient, Relay>;

/// The gate's side of the downstream connection: relays the downstream server's list-changed
/// notifications to the MCP client upstream, once it is connected. (Its progress notifications
/// are not relayed: the gate sends its own, counting up across the human's wait and the call.)
#[derive(Clone, Default)]
pub struct Relay {
    upstream: Arc<OnceLock<Peer<RoleServer>>>,
}

impl Relay {
    async fn relay<E: std::fmt::Display, F: Future<Output = Result<(), E>>>(
        &self,
        what: &str,
        send: impl FnOnce(Peer<RoleServer>) -> F,
    ) {
        if let Some(upstream) = self.upstream.get()
            && let Err(e) = send(upstream.clone()).await
        {
            tracing::debug!(error = %e, "cannot relay a {what} change");
        }
    }
}

impl ClientHandler for Relay {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.relay("tool list", |peer| async move { peer.notify_tool_list_changed().await }).await;
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.relay("prompt list", |peer| async move { peer.notify_prompt_list_changed().await }).await;
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.relay("resource list", |peer| async move { peer.notify_resource_list_changed().await }).await;
    }

    fn get_info(&self) -> ClientConfig {
        InitializeRequestParams::new(Default::default(), gate_implementation())
            .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }
}

fn gate_implementation() -> Implementation {
    Implementation::new("countersign-gate", env!("CARGO_PKG_VERSION"))
}

/// Starts (or connects to) the downstream server and completes the MCP handshake with it.
pub async fn connect(downstream: &Downstream, relay: Relay) -> anyhow::Result<DownstreamService> {
    let service = match downstream {
        Downstream::Command(command) => {
            let (program, args) = command.split_first().context("the downstream command is empty")?;
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args);
            let (transport, _) = TokioChildProcess::builder(cmd)
                .spawn()
                .with_context(|| format!("cannot start the downstream MCP server {downstream}"))?;
            relay.serve(transport).await
        }
        Downstream::Url { url, headers } => {
            let mut custom = HashMap::new();
            for (name, value) in headers {
                let name = HeaderName::try_from(name.as_str())
                    .map_err(|_| Failure::new(Exit::Usage, format!("`{name}` is not an HTTP header name")))?;
                let value = HeaderValue::try_from(value.as_str())
                    .map_err(|_| Failure::new(Exit::Usage, format!("the value of header {name} is not valid")))?;
                custom.insert(name, value);
            }
            let config = StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(custom);
            relay.serve(StreamableHttpClientTransport::from_config(config)).await
        }
    };
    service.with_context(|| format!("the downstream MCP server {downstream} did not complete the MCP handshake"))
}

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

    /// Sends progress notifications this often while a human decides (default 15 s).
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
    ) -> Result<CallToolRequestParams, CallToolResult> {
        let call_id = random_id("gate");
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
        match decided {
            Ok(approval) if approval.approved => {
                tracing::info!(call_id, tool, "approved; forwarding");
                request.arguments = Some(approval.kwargs);
                Ok(request)
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
        let mut forward = match rule {
            Some(rule) if rule.action == Action::Ask => match self.ask(request, rule, ctx, &mut progress).await {
                Ok(approved) => approved,
                Err(result) => return Ok(result.into()),
            },
            Some(rule) if rule.action == Action::Deny => {
                tracing::info!(tool = %request.name, rule = %rule.origin, "denied by the rules");
                let text = format!("{} is not allowed by Countersign's gate rules ({})", request.name, rule.origin);
                return Ok(tool_error(text).into());
            }
            _ => request,
        };
        // The downstream server gets its own progress token from rmcp; the client hears the
        // gate's progress, which keeps counting up while the tool runs.
        forward.meta = None;
        let label = format!("waiting for {}", forward.name);
        match progress.during(ctx, &label, self.downstream.call_tool_once(forward)).await {
            Ok(response) => Ok(response),
            Err(ServiceError::McpError(error)) => Err(error),
            Err(e) => Ok(tool_error(format!("the downstream MCP server failed: {e}")).into()),
        }
    }
}

/// How long the gate tries to hand an approval request to Countersign before it gives up on the
/// call (the human's wait itself has no limit).
const CREATE_DEADLINE: Duration = Duration::from_secs(30);

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
                // Dropping `handle` stops the wait (an approval stays pending in Countersign, and
                // a later decision runs nothing) or cancels the forwarded call downstream.
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

/// Reads the rules: the file, then `--ask` globs; without either, every call is asked.
pub fn load_rules(file: Option<&Path>, ask: &[String]) -> anyhow::Result<Rules> {
    let mut rules = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::new(Exit::Usage, format!("cannot read the rules file {}: {e}", path.display()))
            })?;
            Rules::parse(&path.display().to_string(), &text).map_err(|e| Failure::new(Exit::Usage, e.to_string()))?
        }
        None => Rules::default(),
    };
    for glob in ask {
        let rule = Rule::ask(glob, "--ask").map_err(|e| Failure::new(Exit::Usage, format!("--ask {glob}: {e}")))?;
        rules.push(rule);
    }
    match file {
        None if ask.is_empty() => rules = Rules::ask_everything(),
        Some(path) if rules.is_empty() => {
            let message = format!(
                "{} has no rules, so every call would be forwarded without asking; add rules (e.g. `ask *`), \
                 or leave out --rules to ask before every call",
                path.display()
            );
            return Err(Failure::new(Exit::Usage, message).into());
        }
        _ => {}
    }
    Ok(rules)
}

/// `countersign mcp gate`: serves the gate on stdio until the client or the downstream server goes.
pub(crate) async fn run(args: GateArgs) -> anyhow::Result<()> {
    let rules = load_rules(args.rules.as_deref(), &args.ask)?;
    // Standard output is the MCP protocol; warnings go to standard error, as logs do.
    for warning in rules.warnings() {
        eprintln!("warning: {warning}");
    }
    if let Some(call) = &args.explain {
        println!("{}", explain(&rules, call)?);
        return Ok(());
    }
    let downstream = match (args.url, args.command.is_empty()) {
        (Some(url), true) => Downstream::Url { url, headers: parse_headers(&args.header)? },
        (None, false) => Downstream::Command(args.command),
        _ => {
            return Err(Failure::new(
                Exit::Usage,
                "name the downstream MCP server: `countersign mcp gate [--rules FILE] -- COMMAND ARGS...` or `--url URL`",
            )
            .into());
        }
    };
    let countersign = super::mcp::client(&args.connection, "gate")?;
    check_countersign(&countersign).await?;
    let relay = Relay::default();
    let service = connect(&downstream, relay).await?;
    warn_about_unused_rules(&service, &rules).await;
    tracing::info!(%downstream, base = %countersign.base_url(), run_id = countersign.run_id(), "gate serving MCP on stdio");
    let gate = Gate::new(&service, rules, countersign);
    let upstream =
        gate.serve(rmcp::transport::stdio()).await.context("the MCP client did not complete the handshake")?;
    tokio::select! {
        reason = upstream.waiting() => {
            tracing::info!(reason = ?reason.ok(), "MCP client disconnected");
            Ok(())
        }
        reason = service.waiting() => {
            anyhow::bail!("the downstream MCP server {downstream} stopped ({:?})", reason.ok())
        }
    }
}

/// `--explain TOOL [ARGUMENTS]`: the verdict on one call, e.g. `ask (gate.rules:3: ask write_file)`,
/// followed by the warnings about the deciding rule, if any.
fn explain(rules: &Rules, call: &[String]) -> anyhow::Result<String> {
    let tool = &call[0];
    let arguments = match call.get(1) {
        Some(json) => match serde_json::from_str::<serde_json::Value>(json) {
            Ok(serde_json::Value::Object(arguments)) => arguments,
            _ => {
                let message =
                    format!("--explain {tool}: the arguments must be a JSON object, e.g. '{{\"path\": \"/tmp/x\"}}'");
                return Err(Failure::new(Exit::Usage, message).into());
            }
        },
        None => serde_json::Map::new(),
    };
    Ok(match rules.verdict(tool, &arguments) {
        Some(rule) => {
            let mut text = format!("{} ({}: {})", rule.action.as_str(), rule.origin, rule.text);
            for warning in rules.warnings().iter().filter(|w| format!("{}:{}", w.source, w.line) == rule.origin) {
                text.push_str(&format!("\n  warning: {}", warning.message));
            }
            text
        }
        None => "allow (no rule matches; forwarded at once)".to_owned(),
    })
}

/// Fails fast when Countersign cannot be reached or refuses the key, rather than leaving every
/// gated call to hang later.
async fn check_countersign(countersign: &Client) -> anyhow::Result<()> {
    let base = countersign.base_url().clone();
    let probe = countersign.with_deadline(Some(Duration::from_secs(5)));
    match probe.get_function_call(&random_id("gate-startup-check")).await {
        Ok(_) | Err(countersign_client::Error::Api { status: 404, .. }) => Ok(()),
        Err(countersign_client::Error::Api { status: 401 | 403, message, .. }) => Err(anyhow::anyhow!(
            "Countersign at {base} refused the API key ({message}); pass --key or set COUNTERSIGN_API_KEY"
        )),
        Err(countersign_client::Error::Deadline { after, .. }) => {
            Err(anyhow::anyhow!("cannot reach Countersign at {base} within {after:?} (is it running? see --server)"))
        }
        Err(e) => Err(anyhow::anyhow!("cannot reach Countersign at {base} (is it running? see --server): {e}")),
    }
}

/// `Name: value` pairs from `--header`.
fn parse_headers(headers: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    headers
        .iter()
        .map(|header| match header.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_owned(), value.trim().to_owned())),
            _ => Err(Failure::new(Exit::Usage, format!("--header {header:?} is not `Name: value`")).into()),
        })
        .collect()
}

/// Logs the rules whose tool glob names none of the downstream server's tools (likely typos).
async fn warn_about_unused_rules(service: &DownstreamService, rules: &Rules) {
    let Ok(tools) = service.peer().list_all_tools().await else { return };
    for rule in rules.iter() {
        if !tools.iter().any(|tool| rule.names(&tool.name)) {
            tracing::warn!(rule = %rule.origin, tools = %rule.tools, "this rule matches none of the downstream server's tools");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_colon_value() {
        let parsed = parse_headers(&["Authorization: Bearer cs_1".into(), "X-A:b".into()]).unwrap();
        assert_eq!(parsed, [("Authorization".into(), "Bearer cs_1".into()), ("X-A".into(), "b".into())]);
        assert!(parse_headers(&["no colon".into()]).is_err());
        assert!(parse_headers(&[": v".into()]).is_err());
    }

    #[test]
    fn no_rules_asks_everything_and_ask_flags_follow_the_file() {
        let empty = serde_json::Map::new();
        assert_eq!(load_rules(None, &[]).unwrap().action("x", &empty), Action::Ask);
        let only = load_rules(None, &["write_*".into()]).unwrap();
        assert_eq!(only.action("write_file", &empty), Action::Ask);
        assert_eq!(only.action("read_file", &empty), Action::Allow);
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.rules");
        std::fs::write(&empty, "# nothing yet\n\n").unwrap();
        let err = load_rules(Some(&empty), &[]).unwrap_err();
        assert_eq!(crate::exit::of(&err), Exit::Usage);
        assert!(err.to_string().contains("has no rules"), "{err}");
        assert!(load_rules(Some(&empty), &["write_file".into()]).is_ok());
        let err = load_rules(Some(Path::new("/nonexistent/gate.rules")), &[]).unwrap_err();
        assert_eq!(crate::exit::of(&err), Exit::Usage);
        assert!(err.to_string().contains("/nonexistent/gate.rules"), "{err}");
    }
}
