//! The MCP server the gate stands in front of: how it is reached, and the gate's client side of
//! that connection, which relays the server's list-changed notifications upstream.

use crate::Error;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{ClientConfig, Implementation, InitializeRequestParams, ProtocolVersion};
use rmcp::service::{NotificationContext, Peer, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, RoleServer, ServiceExt};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};

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
    pub(super) upstream: Arc<OnceLock<Peer<RoleServer>>>,
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

/// How the gate names itself when the downstream server does not say who it is.
pub(super) fn gate_implementation() -> Implementation {
    Implementation::new("countersign-gate", env!("CARGO_PKG_VERSION"))
}

/// Starts (or connects to) the downstream server and completes the MCP handshake with it.
pub async fn connect(downstream: &Downstream, relay: Relay) -> Result<DownstreamService, Error> {
    let service = match downstream {
        Downstream::Command(command) => {
            let Some((program, args)) = command.split_first() else {
                return Err(Error::Downstream { message: "the downstream command is empty".into(), source: None });
            };
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args);
            let (transport, _) = TokioChildProcess::builder(cmd)
                .spawn()
                .map_err(|e| Error::downstream(format!("cannot start the downstream MCP server {downstream}"), e))?;
            relay.serve(transport).await
        }
        Downstream::Url { url, headers } => {
            let config =
                StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(http_headers(headers)?);
            relay.serve(StreamableHttpClientTransport::from_config(config)).await
        }
    };
    service.map_err(|e| {
        Error::downstream(format!("the downstream MCP server {downstream} did not complete the MCP handshake"), e)
    })
}

/// The headers for a downstream URL, checked.
fn http_headers(headers: &[(String, String)]) -> Result<HashMap<HeaderName, HeaderValue>, Error> {
    let mut checked = HashMap::new();
    for (name, value) in headers {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|_| Error::Header(format!("`{name}` is not an HTTP header name")))?;
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|_| Error::Header(format!("the value of header {name} is not valid")))?;
        checked.insert(name, value);
    }
    Ok(checked)
}
