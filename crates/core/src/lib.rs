//! Countersign's domain: approval requests (function calls), questions (human contacts), the
//! decisions humans make on them, and the rules of their lifecycle. Nothing here does I/O.

pub mod api_key;
pub mod decision;
pub mod escalation;
pub mod event;
pub mod execution;
pub mod governance;
pub mod invalid;
pub mod json_depth;
pub mod policy;
pub mod project;
pub mod redact;
pub mod reply;
pub mod request;
pub mod route;
pub mod rules;
pub mod session;
pub mod slack;
pub mod sms;
pub mod time;
pub mod user;
pub mod webhook;
pub mod wire;

pub use decision::{Actor, Decision, DecisionChannel, Ending, Outcome, Vote};
pub use escalation::Escalation;
pub use invalid::Invalid;
pub use project::{Project, ProjectName};
pub use request::{Fields, Intent, NewRequest, RequestKind, RequestRecord};
pub use time::Timestamp;
pub use user::{Email, Role, User};
