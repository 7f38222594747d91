//! Integration tests: the real server on 127.0.0.1:0 over a real SQLite file, and the real
//! `countersign` binary. One test binary (modules by area) to keep links fast.

mod admin;
mod api_errors;
mod audit;
mod backup;
mod binary;
mod browser;
mod doctor;
mod email;
mod executions;
mod faults;
mod function_calls;
mod gate;
mod hostile;
mod hostile_web;
mod hostile_webhooks;
mod human_contacts;
mod instances;
mod long_poll;
mod mcp;
mod metrics;
mod migrate;
mod packaging;
mod policies;
mod policy_views;
mod receipts;
mod restart;
mod secrets;
mod slack;
mod sms;
mod support;
mod terminal;
mod upgrade;
mod web;
mod webhooks;
mod webhooks_cli;
