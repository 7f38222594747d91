//! The SDK against a real Countersign server started in-process (and a few scripted fakes).

mod agent;
mod approvals;
mod fake_api;
mod questions;
mod receipts;
mod support;
mod waiting;
