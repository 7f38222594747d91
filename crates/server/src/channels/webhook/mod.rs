//! Signed webhooks: the outbound side (delivery of the events an endpoint subscribes to).

pub mod outbound;
