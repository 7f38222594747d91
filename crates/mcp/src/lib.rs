//! Countersign's MCP face: a human in front of an MCP client's tool calls.
//!
//! - [`tools`]: `request_permission` (Claude Code's `--permission-prompt-tool` contract) and
//!   `ask_human`, served on stdio by `countersign mcp` as a client of a running server.
//! - [`http`]: the same tools at `/mcp` of the server itself (streamable HTTP, with the bearer
//!   key's project), working on the server's own requests in process.
//! - [`gate`]: `countersign mcp gate`, a proxy that puts another MCP server's tools behind the
//!   rules of [`countersign_core::rules`] and asks a human before the calls they select.
//! - [`progress`]: the progress notifications that keep a client waiting while a human thinks.

mod error;
pub mod gate;
pub mod http;
mod local;
pub mod progress;
pub mod tools;

pub use error::Error;
pub use progress::PROGRESS_EVERY;

/// A fresh id with `prefix`, e.g. `mcp-3f9a...`.
pub fn random_id(prefix: &str) -> String {
    format!("{prefix}-{}", countersign_core::session::random_text(16))
}
