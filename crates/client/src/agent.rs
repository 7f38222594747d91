//! A small tool-calling agent over an OpenAI-compatible chat completions API, whose risky tools
//! run only after a human approves them through Countersign.
//!
//! The loop: send the conversation and the tool definitions to `POST {base}/chat/completions`;
//! when the model answers with `tool_calls`, run each tool (risky ones through
//! [`Client::require_approval`]), send the results (or the human's denial) back as `role: "tool"`
//! messages, and repeat until the model answers without tool calls.
//!
//! ```no_run
//! use countersign_client::Client;
//! use countersign_client::agent::{Agent, ChatModel, Tool};
//! use serde_json::{json, Value};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let send_email = Tool::new(
//!     "send_email",
//!     "Send an email",
//!     json!({"type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"}},
//!            "required": ["to", "body"]}),
//!     |args: Value| async move { format!("sent to {}", args["to"]) },
//! )
//! .requires_approval();
//! let agent = Agent::new(ChatModel::from_env()?, Client::from_env()?).tool(send_email);
//! let answer = agent.run("Email bob@example.com that the build is green.").await?;
//! println!("{}", answer.text);
//! # Ok(()) }
//! ```

use crate::{Client, Error};
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The default OpenAI-compatible API.
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// The model used when `OPENAI_MODEL` is not set.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// Why the agent stopped without an answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Countersign could not be reached in time, or refused a request.
    #[error("countersign: {0}")]
    Countersign(#[from] Error),
    /// No API key for the model.
    #[error("no model API key: set OPENAI_API_KEY (or OPENAI_BASE_URL for a local server that needs none)")]
    MissingModelKey,
    /// The model's API could not be reached.
    #[error("model API unreachable: {0}")]
    ModelUnreachable(#[source] reqwest::Error),
    /// The model's API answered with an error.
    #[error("model API: HTTP {status}: {body}")]
    Model {
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The model's answer is not a chat completion.
    #[error("model API: unexpected answer: {0}")]
    BadAnswer(String),
    /// The model kept calling tools.
    #[error("no final answer after {0} model turns")]
    TooManyTurns(usize),
}

/// An OpenAI-compatible chat completions endpoint and model.
#[derive(Clone)]
pub struct ChatModel {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    model: String,
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatModel")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl ChatModel {
    /// A model at `base_url` (e.g. `https://api.openai.com/v1`).
    pub fn new(
        base_url: impl Into<String>,
        api_key: Option<String>,
        model: impl Into<String>,
    ) -> Result<Self, AgentError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(AgentError::ModelUnreachable)?;
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        Ok(Self { http, base_url, api_key, model: model.into() })
    }

    /// `OPENAI_BASE_URL` (default OpenAI), `OPENAI_API_KEY` (required for OpenAI itself) and
    /// `OPENAI_MODEL` (default [`DEFAULT_MODEL`]).
    pub fn from_env() -> Result<Self, AgentError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let base_url = var("OPENAI_BASE_URL");
        let api_key = var("OPENAI_API_KEY");
        if base_url.is_none() && api_key.is_none() {
            return Err(AgentError::MissingModelKey);
        }
        let model = var("OPENAI_MODEL").unwrap_or_else(|| DEFAULT_MODEL.to_owned());
        Self::new(base_url.unwrap_or_else(|| DEFAULT_OPENAI_BASE_URL.to_owned()), api_key, model)
    }

    /// One completion: the assistant's message.
    async fn complete(&self, messages: &[Value], tools: &[Value]) -> Result<Value, AgentError> {
        let mut body = json!({"model": self.model, "messages": messages});
        if !tools.is_empty() {
            body["tools"] = Value::Array(tools.to_vec());
        }
        let mut request = self.http.post(format!("{}/chat/completions", self.base_url)).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(AgentError::ModelUnreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(AgentError::ModelUnreachable)?;
        if !status.is_success() {
            return Err(AgentError::Model { status: status.as_u16(), body: text.chars().take(500).collect() });
        }
        let mut answer: Value = serde_json::from_str(&text).map_err(|e| AgentError::BadAnswer(e.to_string()))?;
        match answer.pointer_mut("/choices/0/message").map(Value::take) {
            Some(message @ Value::Object(_)) => Ok(message),
            _ => Err(AgentError::BadAnswer(format!(
                "no choices[0].message in {}",
                text.chars().take(300).collect::<String>()
            ))),
        }
    }
}

type ToolFuture = Pin<Box<dyn Future<Output = String> + Send>>;
type ToolFn = dyn Fn(Value) -> ToolFuture + Send + Sync;

/// A function the model may call.
#[derive(Clone)]
pub struct Tool {
    name: String,
    description: String,
    parameters: Value,
    risky: bool,
    run: Arc<ToolFn>,
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool").field("name", &self.name).field("risky", &self.risky).finish_non_exhaustive()
    }
}

impl Tool {
    /// A tool: its name, what it does, the JSON schema of its arguments, and the function, which
    /// gets the arguments and returns the text the model sees.
    pub fn new<F, Fut>(name: impl Into<String>, description: impl Into<String>, parameters: Value, run: F) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = String> + Send + 'static,
    {
        let run: Arc<ToolFn> = Arc::new(move |args| Box::pin(run(args)));
        Self { name: name.into(), description: description.into(), parameters, risky: false, run }
    }

    /// Runs the tool only after a human approves the call.
    pub fn requires_approval(mut self) -> Self {
        self.risky = true;
        self
    }

    fn definition(&self) -> Value {
        json!({"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}})
    }
}

/// The agent: a model, tools, and Countersign to guard the risky ones.
#[derive(Debug, Clone)]
pub struct Agent {
    model: ChatModel,
    client: Client,
    tools: Vec<Tool>,
    system: Option<String>,
    max_turns: usize,
}

/// The agent's final answer and the whole conversation.
#[derive(Debug, Clone)]
pub struct AgentAnswer {
    /// The model's final text.
    pub text: String,
    /// Every message, tool results included.
    pub messages: Vec<Value>,
}

impl Agent {
    /// An agent with no tools, at most 10 model turns.
    pub fn new(model: ChatModel, client: Client) -> Self {
        Self { model, client, tools: Vec::new(), system: None, max_turns: 10 }
    }

    /// Adds a tool.
    pub fn tool(mut self, tool: Tool) -> Self {
        self.tools.push(tool);
        self
    }

    /// Sets the system prompt.
    pub fn system(mut self, prompt: impl Into<String>) -> Self {
        self.system = Some(prompt.into());
        self
    }

    /// Caps the number of model calls.
    pub fn max_turns(mut self, turns: usize) -> Self {
        self.max_turns = turns;
        self
    }

    /// Answers `prompt`, calling tools as the model asks.
    pub async fn run(&self, prompt: &str) -> Result<AgentAnswer, AgentError> {
        let mut messages = Vec::new();
        if let Some(system) = &self.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        self.run_messages(messages).await
    }

    /// Continues a conversation until the model answers without tool calls.
    pub async fn run_messages(&self, mut messages: Vec<Value>) -> Result<AgentAnswer, AgentError> {
        let definitions: Vec<Value> = self.tools.iter().map(Tool::definition).collect();
        for _ in 0..self.max_turns {
            let message = self.model.complete(&messages, &definitions).await?;
            let calls = message.get("tool_calls").and_then(Value::as_array).cloned().unwrap_or_default();
            let text = message.get("content").and_then(Value::as_str).unwrap_or_default().to_owned();
            messages.push(message);
            if calls.is_empty() {
                return Ok(AgentAnswer { text, messages });
            }
            for call in &calls {
                let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
                let content = self.call_tool(call).await?;
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
        }
        Err(AgentError::TooManyTurns(self.max_turns))
    }

    /// Runs one tool call; returns what the model should see.
    async fn call_tool(&self, call: &Value) -> Result<String, AgentError> {
        let name = call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default();
        let Some(tool) = self.tools.iter().find(|t| t.name == name) else {
            return Ok(format!("Error: there is no tool named {name:?}"));
        };
        let raw = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("{}");
        let args: Value = match serde_json::from_str(if raw.trim().is_empty() { "{}" } else { raw }) {
            Ok(args @ Value::Object(_)) => args,
            Ok(_) => return Ok(format!("Error: the arguments of {name} must be a JSON object")),
            Err(e) => return Ok(format!("Error: the arguments of {name} are not valid JSON: {e}")),
        };
        if !tool.risky {
            return Ok((tool.run)(args).await);
        }
        let run = tool.run.clone();
        let outcome = self.client.require_approval(name, args, move |args: Value| run(args)).await?;
        Ok(outcome.unwrap_or_else(|denied| denied.message().to_owned()))
    }
}
