//! Fakes of outside services that speak those services' documented APIs on loopback, so tests
//! and benchmarks can point the real production code at them by changing only a base URL.
//!
//! - [`slack`]: the Slack Web API (`chat.postMessage`, `chat.update`, `views.open`, ...).
//! - [`twilio`]: Twilio's REST API (sending SMS with `Messages.json`, checking an account).
//! - [`tamper`]: not a fake but an attacker: a proxy in front of a real Countersign server that
//!   alters the approvals it passes back.

pub mod slack;
pub mod tamper;
pub mod twilio;
