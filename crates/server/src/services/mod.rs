//! Services: what the faces and channels call. The request lifecycle and its in-memory view, people
//! and their sessions, key authentication, webhook endpoints, the audit log, policies. Nothing here speaks
//! HTTP to a client or to an outside service.

pub mod audit;
pub mod auth;
pub mod executions;
pub mod live;
pub mod people;
pub mod policies;
pub mod receipts;
pub mod requests;
pub mod webhooks;
