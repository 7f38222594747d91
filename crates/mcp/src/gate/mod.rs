//! The gate: an MCP proxy that puts a human in front of another MCP server's tools
//! (`countersign mcp gate`).
//!
//! The gate starts the downstream server (a command on stdio, or a streamable HTTP URL;
//! [`downstream`]), offers its tools to the MCP client unchanged, and checks every `tools/call`
//! against the rules ([`countersign_core::rules`]; [`load_rules`]): `ask` creates an approval in
//! Countersign and waits for the human (sending progress notifications meanwhile), then forwards
//! the call with the arguments the human approved, or returns a tool error with the human's words;
//! `allow` forwards at once; `deny` refuses ([`proxy`]). Prompts and resources of the downstream
//! server pass through untouched. A call the client cancels is never forwarded, and its pending
//! approval is cancelled in Countersign (it ends as `cancelled`).

pub mod downstream;
pub mod proxy;
mod rules;

pub use downstream::{Downstream, DownstreamService, Relay, connect};
pub use proxy::Gate;
pub use rules::{explain, load_rules};

use crate::Error;
use countersign_client::Client;
use countersign_core::rules::Rules;
use rmcp::ServiceExt;
use std::time::Duration;

/// Serves the gate on stdin/stdout until the MCP client or the downstream server goes: checks that
/// `countersign` answers and accepts its key, starts (or connects to) `downstream`, warns about
/// rules that name none of its tools, then proxies.
pub async fn serve_stdio(downstream: Downstream, rules: Rules, countersign: Client) -> Result<(), Error> {
    check_countersign(&countersign).await?;
    let service = connect(&downstream, Relay::default()).await?;
    rules::warn_about_unused_rules(&service, &rules).await;
    tracing::info!(%downstream, base = %countersign.base_url(), run_id = countersign.run_id(), "gate serving MCP on stdio");
    let gate = Gate::new(&service, rules, countersign);
    let upstream = gate.serve(rmcp::transport::stdio()).await.map_err(|e| Error::Handshake(Box::new(e)))?;
    tokio::select! {
        reason = upstream.waiting() => {
            tracing::info!(reason = ?reason.ok(), "MCP client disconnected");
            Ok(())
        }
        reason = service.waiting() => Err(Error::Downstream {
            message: format!("the downstream MCP server {downstream} stopped ({:?})", reason.ok()),
            source: None,
        }),
    }
}

/// Fails fast when Countersign cannot be reached or refuses the key, rather than leaving every
/// gated call to hang later.
async fn check_countersign(countersign: &Client) -> Result<(), Error> {
    use countersign_client::Error as ClientError;
    let base = countersign.base_url().clone();
    let probe = countersign.with_deadline(Some(Duration::from_secs(5)));
    let refused = match probe.get_function_call(&crate::random_id("gate-startup-check")).await {
        Ok(_) | Err(ClientError::Api { status: 404, .. }) => return Ok(()),
        Err(ClientError::Api { status: 401 | 403, message, .. }) => {
            format!("Countersign at {base} refused the API key ({message}); pass --key or set COUNTERSIGN_API_KEY")
        }
        Err(ClientError::Deadline { after, .. }) => {
            format!("cannot reach Countersign at {base} within {after:?} (is it running? see --server)")
        }
        Err(e) => format!("cannot reach Countersign at {base} (is it running? see --server): {e}"),
    };
    Err(Error::Countersign(refused))
}
