//! The client: configuration, and the calls an agent makes.

use crate::Error;
use crate::models::{FunctionCall, FunctionCallSpec, HumanContact, HumanContactSpec};
use crate::outcome::{Answer, Approval, Denied};
use crate::transport::{Deadline, Operation, Request, Transport};
use rand::Rng;
use reqwest::Url;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The base URL of a local `countersign serve`.
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:8484/humanlayer/v1";
/// The longest single long-poll the server accepts.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// The default length of one long-poll.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

pub(crate) const FUNCTION_CALLS: &str = "function_calls";
const CONTACT_REQUESTS: &str = "contact_requests";

/// A Countersign (or HumanLayer API) client. Cheap to clone; clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) shared: Arc<Shared>,
    deadline: Option<Duration>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) transport: Transport,
    run_id: String,
    wait: Duration,
    /// Check each approval's signed receipt before running (see [`ClientBuilder::verify_receipts`]).
    pub(crate) verify_receipts: bool,
    /// Report executions so an approved call runs at most once (see [`ClientBuilder::track_execution`]).
    pub(crate) track_execution: bool,
    pub(crate) keys: crate::guard::Keys,
}

/// Configures a [`Client`]. Starts from the environment; every setter overrides it.
#[derive(Clone)]
pub struct ClientBuilder {
    base_url: Option<String>,
    api_key: Option<String>,
    run_id: Option<String>,
    wait: Duration,
    deadline: Option<Duration>,
    http: Option<reqwest::Client>,
    verify_receipts: bool,
    track_execution: bool,
    receipt_keys_url: Option<String>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("run_id", &self.run_id)
            .field("wait", &self.wait)
            .field("deadline", &self.deadline)
            .field("verify_receipts", &self.verify_receipts)
            .field("track_execution", &self.track_execution)
            .finish_non_exhaustive()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientBuilder {
    /// A builder with the environment's settings: base URL from `COUNTERSIGN_API_BASE` or
    /// `HUMANLAYER_API_BASE` (default [`DEFAULT_BASE_URL`]), key from `COUNTERSIGN_API_KEY` or
    /// `HUMANLAYER_API_KEY`, run id from `COUNTERSIGN_RUN_ID` or `HUMANLAYER_RUN_ID` (default a
    /// generated `agent-...`).
    pub fn new() -> Self {
        Self {
            base_url: env_var(&["COUNTERSIGN_API_BASE", "HUMANLAYER_API_BASE"]),
            api_key: env_var(&["COUNTERSIGN_API_KEY", "HUMANLAYER_API_KEY"]),
            run_id: env_var(&["COUNTERSIGN_RUN_ID", "HUMANLAYER_RUN_ID"]),
            wait: DEFAULT_WAIT,
            deadline: None,
            http: None,
            verify_receipts: true,
            track_execution: true,
            receipt_keys_url: None,
        }
    }

    /// The API base, e.g. `http://127.0.0.1:8484/humanlayer/v1`.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Some(base_url.into());
        self
    }

    /// The project's API key.
    pub fn api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// Groups the requests of this agent run.
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// How long one long-poll waits for a decision before asking again (default 30 s, at most 60 s).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait.min(MAX_WAIT);
        self
    }

    /// How long a request may stay undecided before [`Error::Deadline`] (default: forever).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Uses this HTTP client (proxies, TLS roots, ...). Give it no overall timeout shorter than the
    /// long-poll wait; the SDK sets one per request.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Whether [`require_approval`](Client::require_approval) checks each approval's signed
    /// receipt against the server's published keys and the arguments about to run, and refuses
    /// to run otherwise ([`Error::Receipt`]). On by default; turn it off only against a
    /// HumanLayer-compatible server that is not Countersign (it sends no receipts).
    pub fn verify_receipts(mut self, verify: bool) -> Self {
        self.verify_receipts = verify;
        self
    }

    /// Whether [`require_approval`](Client::require_approval) reports each approved call's
    /// execution (`started`, then `finished`), so that a call runs at most once: a resumed agent
    /// that finds it started gets [`Error::AlreadyExecuted`] instead of running it again. On by
    /// default; turn it off only against a server without `/function_calls/{id}/execution`.
    pub fn track_execution(mut self, track: bool) -> Self {
        self.track_execution = track;
        self
    }

    /// Where the receipt keys are read (default: the API's origin,
    /// `/.well-known/countersign/keys.json`).
    pub fn receipt_keys_url(mut self, url: impl Into<String>) -> Self {
        self.receipt_keys_url = Some(url.into());
        self
    }

    /// Checks the settings and builds the client.
    pub fn build(self) -> Result<Client, Error> {
        let api_key = self.api_key.filter(|k| !k.trim().is_empty()).ok_or(Error::MissingApiKey)?;
        let base_url = self.base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let base = parse_base(&base_url)?;
        let http = match self.http {
            Some(http) => http,
            None => {
                // The workspace builds reqwest's rustls without a crypto provider; choose ring once.
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build().map_err(Error::Http)?
            }
        };
        let run_id = self.run_id.filter(|r| !r.is_empty()).unwrap_or_else(|| random_id("agent"));
        let keys_url = match self.receipt_keys_url {
            Some(url) => Url::parse(&url)
                .map_err(|e| Error::InvalidBaseUrl { url: url.clone(), reason: format!("receipt keys URL: {e}") })?,
            None => crate::guard::keys_url(&base),
        };
        let keys = crate::guard::Keys { url: keys_url, known: Default::default() };
        Ok(Client {
            shared: Arc::new(Shared {
                transport: Transport { http, base, api_key },
                run_id,
                wait: self.wait,
                verify_receipts: self.verify_receipts,
                track_execution: self.track_execution,
                keys,
            }),
            deadline: self.deadline,
        })
    }
}

impl Client {
    /// A client of the API at `base_url` with `api_key` (other settings from the environment).
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Result<Self, Error> {
        ClientBuilder::new().base_url(base_url).api_key(api_key).build()
    }

    /// A client configured by the environment (see [`ClientBuilder::new`]).
    pub fn from_env() -> Result<Self, Error> {
        ClientBuilder::new().build()
    }

    /// A builder, starting from the environment.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// This client's run id.
    pub fn run_id(&self) -> &str {
        &self.shared.run_id
    }

    /// The API base URL.
    pub fn base_url(&self) -> &Url {
        &self.shared.transport.base
    }

    /// The same client with another deadline (`None`: wait forever).
    pub fn with_deadline(&self, deadline: Option<Duration>) -> Self {
        Self { shared: self.shared.clone(), deadline }
    }

    pub(crate) fn operation<'a>(&'a self, call_id: &'a str) -> Operation<'a> {
        Operation::new(&self.shared.transport, call_id, self.deadline.map(Deadline::after))
    }

    /// Asks a human to approve `spec` and waits for the decision.
    pub async fn request_approval(&self, spec: FunctionCallSpec) -> Result<Approval, Error> {
        self.request_approval_with_id(&random_id("call"), spec).await
    }

    /// Like [`request_approval`](Self::request_approval) with your own `call_id`, so that the wait
    /// can be resumed with [`wait_function_call`](Self::wait_function_call) after a crash.
    /// Creating again with the same id and spec is safe: the server returns the stored request.
    pub async fn request_approval_with_id(&self, call_id: &str, spec: FunctionCallSpec) -> Result<Approval, Error> {
        let mut op = self.operation(call_id);
        let created: FunctionCall = op.send(&create_request(FUNCTION_CALLS, self.run_id(), call_id, &spec)?).await?.0;
        tracing::debug!(call_id, fn_name = %spec.fn_name, "approval requested");
        if let Some(approval) = Approval::from_call(created) {
            return Ok(approval);
        }
        op.wait_for([FUNCTION_CALLS, call_id].as_slice(), self.shared.wait, Approval::from_call).await
    }

    /// Waits for the decision on an existing approval request (e.g. after a restart of the agent).
    pub async fn wait_function_call(&self, call_id: &str) -> Result<Approval, Error> {
        self.operation(call_id).wait_for(&[FUNCTION_CALLS, call_id], self.shared.wait, Approval::from_call).await
    }

    /// Creates an approval request without waiting (retried like every call).
    pub async fn create_function_call(&self, call_id: &str, spec: &FunctionCallSpec) -> Result<FunctionCall, Error> {
        let request = create_request(FUNCTION_CALLS, self.run_id(), call_id, spec)?;
        Ok(self.operation(call_id).send(&request).await?.0)
    }

    /// Cancels a pending approval request (the agent no longer needs it): it ends as
    /// `cancelled`, with `reason` (if any) shown to people. A decided one is an error (409).
    pub async fn cancel_function_call(&self, call_id: &str, reason: Option<&str>) -> Result<FunctionCall, Error> {
        let body = serde_json::to_vec(&serde_json::json!({ "reason": reason }))
            .map_err(|e| Error::Arguments(e.to_string()))?;
        let request = Request::post(&[FUNCTION_CALLS, call_id, "cancel"], body);
        Ok(self.operation(call_id).send(&request).await?.0)
    }

    /// The approval request as it is now, without waiting.
    pub async fn get_function_call(&self, call_id: &str) -> Result<FunctionCall, Error> {
        Ok(self.operation(call_id).send(&Request::get(&[FUNCTION_CALLS, call_id])).await?.0)
    }

    /// Runs `f` once a human approves calling `fn_name` with `args`, with the arguments the human
    /// approved (they may have edited them); returns [`Denied`] instead if the human rejects.
    ///
    /// Before it runs anything it checks the approval's signed receipt against the server's
    /// published keys and the exact arguments `f` gets ([`Error::Receipt`] otherwise), and it
    /// reports the execution so that the call runs at most once (see
    /// [`require_approval_with_id`](Self::require_approval_with_id)).
    ///
    /// ```no_run
    /// # async fn demo(client: countersign_client::Client) -> Result<(), countersign_client::Error> {
    /// use serde_json::{json, Value};
    /// let sent = client
    ///     .require_approval("send_email", json!({"to": "ceo@example.com"}), |args: Value| async move {
    ///         format!("sent to {}", args["to"])
    ///     })
    ///     .await?;
    /// let tool_result = match sent {
    ///     Ok(text) => text,
    ///     Err(denied) => denied.message().to_owned(), // "User denied send_email with message: ..."
    /// };
    /// # Ok(()) }
    /// ```
    pub async fn require_approval<A, F, Fut, T>(&self, fn_name: &str, args: A, f: F) -> Result<Result<T, Denied>, Error>
    where
        A: Serialize + DeserializeOwned,
        F: FnOnce(A) -> Fut,
        Fut: Future<Output = T>,
    {
        self.require_approval_with_id(&random_id("call"), fn_name, args, f).await
    }

    /// Like [`require_approval`](Self::require_approval) with your own `call_id`, so that an agent
    /// that crashed can call it again after a restart: it waits for the same request instead of
    /// asking again, and never runs an approved call twice. If the call was started before (the
    /// crash came after the start), the result is [`Error::AlreadyExecuted`], with when and by
    /// whom it started and whether it reported an end: the function may or may not have had its
    /// effect, and the caller decides what to do (check the effect; report it with
    /// [`finish_execution`](Self::finish_execution); ask a human).
    ///
    /// ```no_run
    /// # async fn demo(client: countersign_client::Client) -> Result<(), countersign_client::Error> {
    /// use countersign_client::Error;
    /// use serde_json::{json, Value};
    /// let refund = json!({"order": 1042, "amount": 120});
    /// match client.require_approval_with_id("refund-order-1042", "refund", refund, |args: Value| async move {
    ///     format!("refunded {}", args["amount"])
    /// }).await {
    ///     Ok(Ok(done)) => println!("{done}"),
    ///     Ok(Err(denied)) => println!("{}", denied.message()),
    ///     Err(Error::AlreadyExecuted { execution, .. }) => println!("not run again: {}", execution.describe()),
    ///     Err(other) => return Err(other),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn require_approval_with_id<A, F, Fut, T>(
        &self,
        call_id: &str,
        fn_name: &str,
        args: A,
        f: F,
    ) -> Result<Result<T, Denied>, Error>
    where
        A: Serialize + DeserializeOwned,
        F: FnOnce(A) -> Fut,
        Fut: Future<Output = T>,
    {
        let spec = FunctionCallSpec::from_args(fn_name, &args)?;
        let approval = self.request_approval_with_id(call_id, spec).await?;
        if let Some(denied) = approval.denied() {
            return Ok(Err(denied));
        }
        let args = if approval.kwargs_edited() { approved_args(&approval)? } else { args };
        Ok(Ok(self.run_approved(&approval, args, f).await?))
    }

    /// Like [`require_approval`](Self::require_approval) for a full spec (reject options, channel,
    /// state); `f` gets the approved kwargs as `A` (which must serialize back to exactly the
    /// approved arguments: the receipt is checked against them).
    pub async fn require_approval_spec<A, F, Fut, T>(
        &self,
        spec: FunctionCallSpec,
        f: F,
    ) -> Result<Result<T, Denied>, Error>
    where
        A: Serialize + DeserializeOwned,
        F: FnOnce(A) -> Fut,
        Fut: Future<Output = T>,
    {
        let approval = self.request_approval(spec).await?;
        if let Some(denied) = approval.denied() {
            return Ok(Err(denied));
        }
        let args = approved_args(&approval)?;
        Ok(Ok(self.run_approved(&approval, args, f).await?))
    }

    /// Asks a human a question and waits for the answer.
    pub async fn ask_human(&self, question: impl Into<HumanContactSpec>) -> Result<Answer, Error> {
        self.ask_human_with_id(&random_id("call"), question).await
    }

    /// Like [`ask_human`](Self::ask_human) with your own `call_id`, resumable with
    /// [`wait_human_contact`](Self::wait_human_contact).
    pub async fn ask_human_with_id(
        &self,
        call_id: &str,
        question: impl Into<HumanContactSpec>,
    ) -> Result<Answer, Error> {
        let spec = question.into();
        let mut op = self.operation(call_id);
        let created: HumanContact = op.send(&create_request(CONTACT_REQUESTS, self.run_id(), call_id, &spec)?).await?.0;
        tracing::debug!(call_id, "question asked");
        if let Some(answer) = Answer::from_contact(created) {
            return Ok(answer);
        }
        op.wait_for([CONTACT_REQUESTS, call_id].as_slice(), self.shared.wait, Answer::from_contact).await
    }

    /// Waits for the answer to an existing question (e.g. after a restart of the agent).
    pub async fn wait_human_contact(&self, call_id: &str) -> Result<Answer, Error> {
        self.operation(call_id).wait_for(&[CONTACT_REQUESTS, call_id], self.shared.wait, Answer::from_contact).await
    }

    /// Creates a question without waiting (retried like every call).
    pub async fn create_human_contact(&self, call_id: &str, spec: &HumanContactSpec) -> Result<HumanContact, Error> {
        let request = create_request(CONTACT_REQUESTS, self.run_id(), call_id, spec)?;
        Ok(self.operation(call_id).send(&request).await?.0)
    }

    /// The question as it is now, without waiting.
    pub async fn get_human_contact(&self, call_id: &str) -> Result<HumanContact, Error> {
        Ok(self.operation(call_id).send(&Request::get(&[CONTACT_REQUESTS, call_id])).await?.0)
    }
}

/// The approved kwargs as the function's argument type.
fn approved_args<A: DeserializeOwned>(approval: &Approval) -> Result<A, Error> {
    serde_json::from_value(serde_json::Value::Object(approval.kwargs.clone())).map_err(|e| {
        Error::Arguments(format!("the approved arguments of {} do not fit the function: {e}", approval.fn_name()))
    })
}

/// `POST /{collection}` with `{run_id, call_id, spec}`.
fn create_request(collection: &str, run_id: &str, call_id: &str, spec: &impl Serialize) -> Result<Request, Error> {
    #[derive(Serialize)]
    struct Create<'a, S> {
        run_id: &'a str,
        call_id: &'a str,
        spec: &'a S,
    }
    if call_id.is_empty() {
        return Err(Error::Arguments("call_id must not be empty".into()));
    }
    let body = serde_json::to_vec(&Create { run_id, call_id, spec })
        .map_err(|e| Error::Arguments(format!("cannot serialize the request: {e}")))?;
    Ok(Request::post(&[collection], body))
}

/// The first non-empty variable of `names`.
fn env_var(names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

fn parse_base(base_url: &str) -> Result<Url, Error> {
    let invalid = |reason: &str| Error::InvalidBaseUrl { url: base_url.to_owned(), reason: reason.to_owned() };
    let url = Url::parse(base_url.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.cannot_be_a_base() || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("expected a base like http://127.0.0.1:8484/humanlayer/v1"));
    }
    Ok(url)
}

/// `{prefix}-` and 16 random letters and digits (the Python SDK uses `call-` and 11 characters).
pub(crate) fn random_id(prefix: &str) -> String {
    let suffix: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(16).map(char::from).collect();
    format!("{prefix}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_required() {
        let err = ClientBuilder::new().api_key("  ").build().unwrap_err();
        assert!(matches!(err, Error::MissingApiKey));
        assert!(err.to_string().contains("COUNTERSIGN_API_KEY"), "{err}");
    }

    #[test]
    fn the_base_url_must_be_http() {
        let err = Client::new("ftp://x/humanlayer/v1", "k").unwrap_err();
        assert!(err.to_string().contains("http or https"), "{err}");
        let err = Client::new("127.0.0.1:8484", "k").unwrap_err();
        assert!(matches!(err, Error::InvalidBaseUrl { .. }), "{err}");
    }

    #[test]
    fn settings_are_kept() {
        let client = Client::builder()
            .base_url("http://h:1/humanlayer/v1/")
            .api_key("k")
            .run_id("run-7")
            .wait(Duration::from_secs(600))
            .build()
            .unwrap();
        assert_eq!(client.run_id(), "run-7");
        assert_eq!(client.shared.wait, MAX_WAIT);
        assert_eq!(client.base_url().as_str(), "http://h:1/humanlayer/v1/");
        assert_eq!(client.deadline, None);
        assert_eq!(client.with_deadline(Some(Duration::from_secs(5))).deadline, Some(Duration::from_secs(5)));
    }

    #[test]
    fn debug_output_hides_the_key() {
        let builder = ClientBuilder::new().api_key("cs_secret_value").base_url("http://h/humanlayer/v1");
        assert!(!format!("{builder:?}").contains("cs_secret_value"));
        assert!(!format!("{:?}", builder.build().unwrap()).contains("cs_secret_value"));
    }

    #[test]
    fn ids_look_like_the_python_sdk_ones() {
        let id = random_id("call");
        assert!(id.starts_with("call-") && id.len() == 21, "{id}");
        assert_ne!(random_id("call"), id);
    }
}
