//! A small client of the server's terminal API (`/api/v1`): JSON both ways, a bearer token, and
//! error answers turned into the server's message and an exit code.

use crate::exit::{Exit, Failure};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// Talks to one server, signed in or not.
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl Client {
    /// A client of `server` (an `http://` or `https://` base URL), sending `token` if given.
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Self> {
        // reqwest's TLS has no crypto provider of its own here: use ring, which sqlx already brings.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, server: server.to_owned(), token })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::GET, path, None).await
    }

    /// Posts `body`; an empty answer (204) is `Value::Null`.
    pub async fn post(&self, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        self.send(Method::POST, path, body).await
    }

    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, format!("{}/api/v1{path}", self.server));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        if !status.is_success() {
            return Err(self.failure(status, &text).into());
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "the server at {} answered {status} with invalid JSON ({e}); is it Countersign?",
                self.server
            )
        })
    }

    fn unreachable(&self, err: &reqwest::Error) -> anyhow::Error {
        // reqwest's own text is generic ("error sending request"); the innermost cause says why.
        let mut cause: &dyn std::error::Error = err;
        while let Some(source) = cause.source() {
            cause = source;
        }
        let why = if err.is_timeout() { "no answer in time".to_owned() } else { cause.to_string() };
        anyhow::anyhow!(
            "cannot reach the server at {}: {why} (is `countersign serve` running? pass --server)",
            self.server
        )
    }

    /// An error answer: `{"error": {"code", "message"}}` gives the message and the exit code.
    fn failure(&self, status: StatusCode, text: &str) -> Failure {
        let body: Value = serde_json::from_str(text).unwrap_or_default();
        let (Some(code), Some(message)) = (body["error"]["code"].as_str(), body["error"]["message"].as_str()) else {
            let excerpt: String = text.chars().take(200).collect();
            return Failure::new(
                if status == StatusCode::UNAUTHORIZED { Exit::SignIn } else { Exit::Other },
                format!("the server at {} answered {status}: {excerpt:?}; is it Countersign?", self.server),
            );
        };
        let exit = match code {
            "unauthorized" | "too_many_attempts" => Exit::SignIn,
            "not_found" => Exit::NotFound,
            "conflict" => Exit::Decided,
            "ambiguous" => Exit::Usage,
            _ if status == StatusCode::UNAUTHORIZED => Exit::SignIn,
            _ => Exit::Other,
        };
        Failure::new(exit, message)
    }
}
