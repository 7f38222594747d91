//! `countersign mcp`: the flags of the MCP tools (`request_permission`, `ask_human`; see
//! [`countersign_mcp::tools`]) served over stdio as a client of a running Countersign server.
//! Standard output is the protocol; logs go to standard error. `countersign mcp gate` is in
//! [`super::gate`].

use crate::cli::{McpArgs, McpCommand, McpConnection};
use anyhow::Context;
use countersign_client::Client;
use countersign_mcp::random_id;

/// Serves MCP on stdin/stdout until the client closes the connection (or runs `mcp gate`).
pub async fn run(args: McpArgs) -> anyhow::Result<()> {
    if let Some(McpCommand::Gate(gate)) = args.command {
        return super::gate::run(gate).await;
    }
    let client = client(&args.connection, "mcp")?;
    Ok(countersign_mcp::tools::serve_stdio(client).await?)
}

/// The Countersign client of the MCP tools: `--server`/`--key`/`--run-id`, else the environment;
/// without a run id anywhere, a fresh `PREFIX-<random>` groups this session's requests.
pub fn client(connection: &McpConnection, prefix: &str) -> anyhow::Result<Client> {
    let mut builder = Client::builder();
    if let Some(server) = &connection.server {
        builder = builder.base_url(api_base(server));
    }
    if let Some(key) = &connection.key {
        builder = builder.api_key(key.clone());
    }
    let from_env = ["COUNTERSIGN_RUN_ID", "HUMANLAYER_RUN_ID"].iter().any(|name| std::env::var_os(name).is_some());
    match &connection.run_id {
        Some(run_id) => builder = builder.run_id(run_id.clone()),
        None if !from_env => builder = builder.run_id(random_id(prefix)),
        None => {}
    }
    builder.build().context("cannot configure the Countersign client; pass --server and --key")
}

/// The HumanLayer API base of a server URL: `/humanlayer/v1` is added when the URL has no path.
fn api_base(server: &str) -> String {
    let trimmed = server.trim().trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
    if after_scheme.contains('/') { trimmed.to_owned() } else { format!("{trimmed}/humanlayer/v1") }
}

#[cfg(test)]
mod tests {
    use super::api_base;

    #[test]
    fn a_bare_server_url_gets_the_humanlayer_path() {
        assert_eq!(api_base("http://127.0.0.1:8484"), "http://127.0.0.1:8484/humanlayer/v1");
        assert_eq!(api_base("https://cs.example.com/"), "https://cs.example.com/humanlayer/v1");
        assert_eq!(api_base("http://h:1/humanlayer/v1"), "http://h:1/humanlayer/v1");
        assert_eq!(
            api_base("https://example.com/countersign/humanlayer/v1/"),
            "https://example.com/countersign/humanlayer/v1"
        );
    }
}
