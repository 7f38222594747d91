//! Fakes of outside services that speak those services' documented APIs on loopback, so tests
//! and benchmarks can point the real production code at them by changing only a base URL.
//!
//! - [`slack`]: the Slack Web API (`chat.postMessage`, `chat.update`, `views.open`, ...).
//! - [`twilio`]: Twilio's REST API (sending SMS with `Messages.json`, checking an account).

pub mod slack;
pub mod twilio;
