//! Every bound on what a client can make the server do, in one place. Each field is a
//! configuration key of the same name (`countersign serve` reads them from the config file and
//! `COUNTERSIGN_<KEY>`); the README's configuration table lists them with these defaults.

use serde::{Deserialize, Serialize};

/// Bounds on what agents, people and peers can send and make the server hold. The doc comment of
/// each field is its row in the README's limits table (`countersign config reference`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Nesting of arrays and objects in any JSON body: 400 `invalid_request` above it.
    pub max_json_depth: usize,
    /// Bytes of one request's `spec` (its JSON text): 413 `payload_too_large` above it
    /// (`max_body_bytes` bounds the whole body first). The HumanLayer examples send
    /// multi-megabyte `state`, so the default leaves room for several MB.
    pub max_spec_bytes: usize,
    /// Pending requests of one project held by this instance: 429 `too_many_pending` until some
    /// are decided (creates in flight count, so racing creates cannot pass it together).
    pub max_pending_per_project: u64,
    /// Bytes of one project's pending specs: 429 `too_many_pending` above it.
    pub max_pending_bytes_per_project: u64,
    /// Items in one listing page: `limit` is capped to it.
    pub max_page_items: u32,
    /// Bytes of one listing page: the page ends early with `has_more: true` (it always holds
    /// one item).
    pub max_page_bytes: usize,
    /// Highlighted JSON on an inbox or email-link page: cut with a note above it (the API
    /// returns it whole).
    pub max_page_render_bytes: usize,
    /// Seconds a client has to send a request's headers; the same timer closes a kept-alive
    /// connection that sits idle this long between requests.
    pub header_read_timeout_secs: u64,
    /// Open client connections (lowered to the open-file limit less 128, which `serve` raises
    /// to its hard limit); more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Seconds any request (body included) may take: 503 `request_timeout` after it. A
    /// long-poll gets its `wait` (at most 60 s) on top; `/events` and `/mcp` streams are not
    /// timed.
    pub request_timeout_secs: u64,
    /// Password hashes (argon2) computed at once (login, set-password); more wait their turn,
    /// up to 5 s, then 503 `busy` with `Retry-After`.
    pub max_concurrent_password_hashes: usize,
    /// Failed logins from one client address per window: 429 with `Retry-After` above it.
    pub login_attempts_per_address_per_minute: u32,
    /// Failed logins to one account per window: 429 with `Retry-After` above it (the same
    /// answer for unknown accounts; no lockout beyond the window).
    pub login_attempts_per_account_per_minute: u32,
    /// Instructions ("fuel") one email template may spend: a template that runs out fails its
    /// email for good ("template ran out of fuel").
    pub template_fuel: u64,
    /// Bytes of one email template's output: the email fails for good above it.
    pub template_max_output_bytes: usize,
    /// Milliseconds one email template may take to render: the email fails for good after it.
    pub template_timeout_ms: u64,
    /// Memory of the email template renderer, in bytes (Linux: the address space of the child
    /// process templates render in, beyond what it uses at start): the email fails for good.
    pub template_max_memory_bytes: u64,
    /// Let webhooks target loopback, private, link-local and unspecified addresses (off: they
    /// are refused; see Webhooks).
    pub allow_private_webhook_targets: bool,
    /// Seconds of the window the two `login_attempts_*` limits count over (60: per minute); a
    /// throttled client is told to wait until its window ends (`Retry-After`).
    pub login_throttle_window_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_json_depth: 64,
            max_spec_bytes: 8 * 1024 * 1024,
            max_pending_per_project: 10_000,
            max_pending_bytes_per_project: 256 * 1024 * 1024,
            max_page_items: 1000,
            max_page_bytes: 8 * 1024 * 1024,
            max_page_render_bytes: 2 * 1024 * 1024,
            header_read_timeout_secs: 10,
            max_connections: 10_000,
            request_timeout_secs: 30,
            max_concurrent_password_hashes: 2,
            login_attempts_per_address_per_minute: 20,
            login_attempts_per_account_per_minute: 5,
            template_fuel: 200_000,
            template_max_output_bytes: 1024 * 1024,
            template_timeout_ms: 2_000,
            template_max_memory_bytes: 128 * 1024 * 1024,
            allow_private_webhook_targets: false,
            login_throttle_window_secs: 60,
        }
    }
}
