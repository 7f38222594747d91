//! The Rust SDK of Countersign: ask a human to approve a function call, or to answer a question,
//! and wait for them. It speaks the HumanLayer API, so it works with `countersign serve` and with
//! any other server of that API.
//!
//! # Setup
//!
//! ```sh
//! export COUNTERSIGN_API_BASE=http://127.0.0.1:8484/humanlayer/v1   # or HUMANLAYER_API_BASE
//! export COUNTERSIGN_API_KEY=cs_...                                 # or HUMANLAYER_API_KEY
//! ```
//!
//! # Guard a function
//!
//! [`Client::require_approval`] asks for approval and runs the function only when a human approves,
//! with the arguments they approved (a human may edit them). A rejection comes back as [`Denied`],
//! whose [`message`](Denied::message) is the text for the LLM, worded as the HumanLayer SDKs word it:
//! `User denied send_email with message: not to the CEO`.
//!
//! ```no_run
//! use countersign_client::{Client, Error};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Email {
//!     to: String,
//!     body: String,
//! }
//!
//! async fn send_email(email: Email) -> String {
//!     format!("sent to {}", email.to)
//! }
//!
//! # async fn demo() -> Result<(), Error> {
//! let client = Client::from_env()?;
//! let email = Email { to: "ceo@example.com".into(), body: "Q3 numbers attached".into() };
//! let tool_result = match client.require_approval("send_email", email, send_email).await? {
//!     Ok(sent) => sent,
//!     Err(denied) => denied.message().to_owned(),
//! };
//! # Ok(()) }
//! ```
//!
//! Closures work too, with `serde_json::Value` arguments:
//!
//! ```no_run
//! # async fn demo(client: countersign_client::Client) -> Result<(), countersign_client::Error> {
//! use serde_json::{json, Value};
//! let refunded = client
//!     .require_approval("refund", json!({"customer": "acme", "amount": 120}), |args: Value| async move {
//!         format!("refunded {} to {}", args["amount"], args["customer"])
//!     })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Ask for approval, or ask a question
//!
//! ```no_run
//! use countersign_client::{Client, FunctionCallSpec, HumanContactSpec, ResponseOption};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), countersign_client::Error> {
//! let client = Client::from_env()?;
//! let spec = FunctionCallSpec::from_args("drop_table", &json!({"table": "users"}))?
//!     .reject_option(ResponseOption::new("use_archive").prompt_fill("archive it instead"));
//! let approval = client.request_approval(spec).await?;
//! if approval.approved {
//!     println!("run with {:?}", approval.kwargs); // the edited arguments, if the human edited them
//! } else {
//!     println!("{}", approval.denial_message());
//! }
//!
//! let answer = client.ask_human("Which region should I deploy to?").await?;
//! println!("{}", answer.response);
//! let answer = client
//!     .ask_human(HumanContactSpec::new("Ship it?").response_option(ResponseOption::new("yes").prompt_fill("yes")))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Waiting
//!
//! The SDK waits with long-polls (`GET .../{call_id}?wait=30`), so a decision arrives as soon as it
//! is made, with one request per 30 s while nobody decides. It keeps waiting through server
//! restarts and network errors: it reconnects with exponential back-off (100 ms doubling to 5 s,
//! with jitter) and retries 503 and other transient answers. Errors that retrying cannot fix (400,
//! 401, 404, 409) are returned at once.
//!
//! By default it waits forever. Set a deadline to give up with [`Error::Deadline`]; the request
//! stays pending on the server:
//!
//! ```no_run
//! # async fn demo() -> Result<(), countersign_client::Error> {
//! use countersign_client::{Client, FunctionCallSpec};
//! use std::time::Duration;
//!
//! let client = Client::builder()
//!     .base_url("http://127.0.0.1:8484/humanlayer/v1")
//!     .api_key("cs_...")
//!     .run_id("billing-agent")
//!     .wait(Duration::from_secs(60))
//!     .deadline(Duration::from_secs(3600))
//!     .build()?;
//! # Ok(()) }
//! ```
//!
//! To survive a crash of the agent itself, choose the `call_id`, and wait again after a restart:
//!
//! ```no_run
//! # async fn demo(client: countersign_client::Client, spec: countersign_client::FunctionCallSpec)
//! # -> Result<(), countersign_client::Error> {
//! let approval = client.request_approval_with_id("refund-order-1042", spec).await?;
//! // ...after a restart:
//! let approval = client.wait_function_call("refund-order-1042").await?;
//! # Ok(()) }
//! ```
//!
//! # A tool-calling agent
//!
//! [`agent`] runs an OpenAI-compatible chat model with tools; tools marked
//! [`requires_approval`](agent::Tool::requires_approval) go through [`Client::require_approval`].
//! See `examples/tool_agent.rs`.

pub mod agent;
mod client;
mod error;
mod guard;
pub mod models;
mod outcome;
mod transport;

pub use client::{Client, ClientBuilder, DEFAULT_BASE_URL, DEFAULT_WAIT, MAX_WAIT};
pub use countersign_receipt::Claims as ReceiptClaims;
pub use error::Error;
pub use models::{
    ContactChannel, EmailContactChannel, EmailRecipient, Execution, ExecutionState, FunctionCall, FunctionCallSpec,
    FunctionCallStatus, HumanContact, HumanContactSpec, HumanContactStatus, JsonObject, PhoneContactChannel,
    ResponseOption, SlackContactChannel, UserInfo,
};
pub use outcome::{Answer, Approval, Denied};
