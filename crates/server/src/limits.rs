//! Every bound on what a client can make the server do, in one place. Each field is a
//! configuration key of the same name (`countersign serve` reads them from the config file and
//! `COUNTERSIGN_<KEY>`); the README's configuration table lists them with these defaults.

use serde::{Deserialize, Serialize};

/// Bounds on what agents, people and peers can send and make the server hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Deepest nesting of arrays and objects accepted in any JSON body (a 400 above it).
    pub max_json_depth: usize,
    /// Largest `spec` of one request, in bytes of its JSON text (a 413 above it). The HumanLayer
    /// examples send multi-megabyte `state`, so the default leaves room for several MB.
    pub max_spec_bytes: usize,
    /// Most pending requests one project may hold (a 429 above it).
    pub max_pending_per_project: u64,
    /// Most bytes of pending specs one project may hold (a 429 above it).
    pub max_pending_bytes_per_project: u64,
    /// Most items in one page of a listing (`limit` is capped to it).
    pub max_page_items: u32,
    /// Most bytes of one page of a listing: a page stops early (with `has_more`) rather than
    /// grow past it, though it always holds at least one item.
    pub max_page_bytes: usize,
    /// Largest HTML page the web inbox renders; bigger JSON is cut with a note.
    pub max_page_render_bytes: usize,
    /// Seconds a client has to send a request's headers before it is disconnected; the same
    /// timer closes a kept-alive connection that sits idle this long between requests.
    pub header_read_timeout_secs: u64,
    /// Most open client connections (lowered to what the open-file limit allows); more wait in
    /// the kernel's accept queue.
    pub max_connections: usize,
    /// Seconds any request may take before a 503 (`request_timeout`); a long-poll gets its wait
    /// on top, event streams and `/mcp` are not timed.
    pub request_timeout_secs: u64,
    /// Most password hashes (argon2) computed at once; more wait.
    pub max_concurrent_password_hashes: usize,
    /// Failed logins per client address per minute before it must wait.
    pub login_attempts_per_address_per_minute: u32,
    /// Failed logins per account per minute before it must wait.
    pub login_attempts_per_account_per_minute: u32,
    /// Instructions ("fuel") one email template may spend when rendered; a template that runs
    /// out fails its email for good ("template ran out of fuel").
    pub template_fuel: u64,
    /// Largest output of one email template, in bytes (the email fails: "template output over N
    /// bytes").
    pub template_max_output_bytes: usize,
    /// Milliseconds one email template may take to render (the email fails: "template timed out").
    pub template_timeout_ms: u64,
    /// Memory one email template's renderer may use, in bytes (Linux: the address space of the
    /// child process `countersign serve` renders templates in, beyond what it uses at start).
    pub template_max_memory_bytes: u64,
    /// Let webhooks target loopback, private, link-local and unspecified addresses (off: refused).
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
