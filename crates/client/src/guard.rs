//! What makes an approved call safe to run: its signed receipt checked against the server's
//! published keys and the exact arguments about to run, and its execution reported so that it
//! runs at most once (a resumed agent finds it started and does not run it again).

use crate::models::Execution;
use crate::transport::Request;
use crate::{Approval, Client, Error};
use countersign_receipt::{Claims, PublicKey, ReceiptError};
use serde_json::{Value, json};
use std::time::Duration;

/// The longest key set read from the server.
const MAX_KEYS_BYTES: usize = 256 * 1024;
/// How long reading the key set may take, per attempt.
const KEYS_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at reading the key set before the call is refused.
const KEYS_ATTEMPTS: u32 = 4;
/// The longest error text the server keeps for a failed execution, in characters.
const MAX_ERROR_CHARS: usize = 2000;

/// The receipt keys a client has read, and where it reads them.
#[derive(Debug)]
pub(crate) struct Keys {
    pub(crate) url: reqwest::Url,
    pub(crate) known: tokio::sync::Mutex<Vec<PublicKey>>,
}

/// Where a server whose API base is `base` publishes its receipt keys: its origin's
/// `/.well-known/countersign/keys.json`, under the prefix the API sits below when it is proxied
/// (`https://host/cs/humanlayer/v1` → `https://host/cs/.well-known/...`).
pub(crate) fn keys_url(base: &reqwest::Url) -> reqwest::Url {
    let path = base.path().trim_end_matches('/');
    let prefix = path.strip_suffix("/humanlayer/v1").unwrap_or("");
    let mut url = base.clone();
    url.set_path(&format!("{prefix}/.well-known/countersign/keys.json"));
    url.set_query(None);
    url
}

impl Client {
    /// Whether this client checks receipts before running (see [`ClientBuilder::verify_receipts`]).
    ///
    /// [`ClientBuilder::verify_receipts`]: crate::ClientBuilder::verify_receipts
    pub fn verifies_receipts(&self) -> bool {
        self.shared.verify_receipts
    }

    /// Whether this client reports executions (see [`ClientBuilder::track_execution`]).
    ///
    /// [`ClientBuilder::track_execution`]: crate::ClientBuilder::track_execution
    pub fn tracks_execution(&self) -> bool {
        self.shared.track_execution
    }

    /// Checks that `approval` may run `args`: its receipt verifies with the server's published
    /// keys (read again once when it names a key not seen yet, after a rotation), and it states an
    /// approval of this exact call (`call_id`, function) with these arguments (the SHA-256 of their
    /// RFC 8785 canonical JSON). Returns what the receipt states. [`require_approval`] does this
    /// before it runs anything.
    ///
    /// [`require_approval`]: Client::require_approval
    pub async fn verify_approval(&self, approval: &Approval, args: &Value) -> Result<Claims, Error> {
        let call = &approval.call;
        let refuse = |reason: String| Error::Receipt {
            call_id: call.call_id.clone(),
            fn_name: call.spec.fn_name.clone(),
            reason,
        };
        let receipt = call.status.as_ref().and_then(|s| s.receipt.as_deref()).ok_or_else(|| {
            refuse(
                "the server sent no receipt with the approval (a Countersign server always does; against another \
                 HumanLayer-compatible server, build the client with verify_receipts(false))"
                    .to_owned(),
            )
        })?;
        let kid = countersign_receipt::kid_of(receipt).map_err(|e| refuse(e.to_string()))?;
        let mut keys = self.shared.keys.known.lock().await;
        if !keys.iter().any(|k| k.kid == kid) {
            *keys = self.fetch_keys().await.map_err(&refuse)?;
        }
        let claims = countersign_receipt::verify(receipt, &keys).map_err(|e| refuse(e.to_string()))?;
        drop(keys);
        claims.check_call("function_call", &call.call_id, args).map_err(|e| refuse(e.to_string()))?;
        if claims.function.as_deref() != Some(call.spec.fn_name.as_str()) {
            return Err(refuse(
                ReceiptError::OtherCall {
                    receipt: format!("function {:?}", claims.function.as_deref().unwrap_or("")),
                    expected: format!("function {:?}", call.spec.fn_name),
                }
                .to_string(),
            ));
        }
        Ok(claims)
    }

    /// Reads the server's published receipt keys (a few attempts; the call is refused without them).
    async fn fetch_keys(&self) -> Result<Vec<PublicKey>, String> {
        let url = &self.shared.keys.url;
        let mut backoff = crate::transport::Backoff::new();
        let mut last = String::new();
        for attempt in 1..=KEYS_ATTEMPTS {
            match self.shared.transport.http.get(url.clone()).timeout(KEYS_TIMEOUT).send().await {
                Ok(response) if response.status().is_success() => {
                    let body = response.bytes().await.map_err(|e| format!("reading the keys at {url}: {e}"))?;
                    if body.len() > MAX_KEYS_BYTES {
                        return Err(format!("the key set at {url} is larger than {MAX_KEYS_BYTES} bytes"));
                    }
                    let set: Value =
                        serde_json::from_slice(&body).map_err(|e| format!("the key set at {url} is not JSON: {e}"))?;
                    return Ok(PublicKey::from_jwks(&set));
                }
                Ok(response) if response.status().is_server_error() => last = format!("HTTP {}", response.status()),
                Ok(response) => {
                    return Err(format!("cannot read the receipt keys at {url}: HTTP {}", response.status()));
                }
                Err(e) => last = e.to_string(),
            }
            if attempt < KEYS_ATTEMPTS {
                tokio::time::sleep(backoff.pause()).await;
            }
        }
        Err(format!("cannot read the receipt keys at {url}: {last}"))
    }

    /// Reports that the approved call `call_id` starts running. Succeeds once per call: if it was
    /// started before, this is [`Error::AlreadyExecuted`] with when and by whom. `token` makes the
    /// report safe to retry (a start sent again with the same token is answered again).
    pub async fn start_execution(&self, call_id: &str, token: Option<&str>) -> Result<Execution, Error> {
        let body = json!({"state": "started", "token": token});
        match self.report_execution(call_id, body).await {
            // Any 409 of a start: if an execution is recorded, the call was started before;
            // otherwise (not approved) the server's own error stands.
            Err(refused @ Error::Api { status: 409, .. }) => match self.get_execution(call_id).await? {
                Some(execution) => {
                    Err(Error::AlreadyExecuted { call_id: call_id.to_owned(), execution: Box::new(execution) })
                }
                None => Err(refused),
            },
            other => other,
        }
    }

    /// Reports that the call finished, with the SHA-256 (hex) of its result if you have one.
    pub async fn finish_execution(&self, call_id: &str, result_sha256: Option<&str>) -> Result<Execution, Error> {
        self.report_execution(call_id, json!({"state": "finished", "result_sha256": result_sha256})).await
    }

    /// Reports that the call failed (it may be safe to ask for approval again, with a new `call_id`).
    pub async fn fail_execution(&self, call_id: &str, error: &str) -> Result<Execution, Error> {
        let error: String = error.chars().take(MAX_ERROR_CHARS).collect();
        self.report_execution(call_id, json!({"state": "failed", "error": error})).await
    }

    /// The execution of an approved call as recorded; `None` when it was never started.
    pub async fn get_execution(&self, call_id: &str) -> Result<Option<Execution>, Error> {
        let request = Request::get(&[crate::client::FUNCTION_CALLS, call_id, "execution"]);
        match self.operation(call_id).send::<Execution>(&request).await {
            Ok((execution, _)) => Ok(Some(execution)),
            Err(Error::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn report_execution(&self, call_id: &str, body: Value) -> Result<Execution, Error> {
        let body = serde_json::to_vec(&body).map_err(|e| Error::Arguments(e.to_string()))?;
        let request = Request::post(&[crate::client::FUNCTION_CALLS, call_id, "execution"], body);
        Ok(self.operation(call_id).send(&request).await?.0)
    }

    /// Runs `f(args)` for an approved call, at most once: checks the receipt (unless turned off),
    /// reports the start (unless turned off), runs, reports the end.
    pub(crate) async fn run_approved<A, F, Fut, T>(&self, approval: &Approval, args: A, f: F) -> Result<T, Error>
    where
        A: serde::Serialize,
        F: FnOnce(A) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let call = &approval.call;
        let call_id = call.call_id.as_str();
        if self.shared.verify_receipts {
            let value = serde_json::to_value(&args).map_err(|e| {
                Error::Arguments(format!("the arguments of {} do not serialize: {e}", call.spec.fn_name))
            })?;
            self.verify_approval(approval, &value).await?;
        }
        if self.shared.track_execution {
            let token = crate::client::random_id("start");
            self.start_execution(call_id, Some(&token)).await?;
        }
        let out = f(args).await;
        if self.shared.track_execution
            && let Err(e) = self.finish_execution(call_id, None).await
        {
            // It ran: the caller gets its result. The record stays "started", which a resumed
            // agent reads as "maybe ran" and does not run again.
            tracing::warn!(call_id, error = %e, "the call ran but its end could not be reported");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::keys_url;

    #[test]
    fn keys_are_read_from_the_origin_or_below_the_proxy_prefix() {
        let url = |base: &str| keys_url(&reqwest::Url::parse(base).unwrap()).to_string();
        assert_eq!(
            url("http://127.0.0.1:8484/humanlayer/v1"),
            "http://127.0.0.1:8484/.well-known/countersign/keys.json"
        );
        assert_eq!(url("https://h.example/humanlayer/v1/"), "https://h.example/.well-known/countersign/keys.json");
        assert_eq!(url("https://h.example/cs/humanlayer/v1"), "https://h.example/cs/.well-known/countersign/keys.json");
        assert_eq!(url("https://h.example/other/api"), "https://h.example/.well-known/countersign/keys.json");
    }
}
