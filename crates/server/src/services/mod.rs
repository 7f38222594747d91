//! Services: what the faces and channels call. The request lifecycle and its in-memory view, people
//! and their sessions, key authentication, webhook endpoints, channel connections, the audit log,
//! policies. Nothing here speaks HTTP to a client; only `connections` reaches an outside service,
//! through a channel's API client, to check credentials before storing them.

pub mod audit;
pub mod auth;
pub mod connections;
pub mod executions;
pub mod live;
pub mod people;
pub mod policies;
pub mod receipts;
pub mod requests;
pub mod webhooks;
