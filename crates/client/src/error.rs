//! The one error type of the SDK.

use std::time::Duration;

/// Why a call to Countersign failed.
///
/// A human's rejection is not an error: it is an [`Approval`](crate::Approval) with `approved: false`
/// (or a [`Denied`](crate::Denied) from [`require_approval`](crate::Client::require_approval)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No API key was given or found in the environment.
    #[error("no API key: set COUNTERSIGN_API_KEY (or HUMANLAYER_API_KEY) to a key printed by `countersign serve`")]
    MissingApiKey,

    /// The base URL cannot be used.
    #[error("invalid base URL {url:?}: {reason}")]
    InvalidBaseUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The server refused the request (400, 401, 404, 409, 413, ...); retrying would not help.
    #[error("{method} {path}: HTTP {status} {code}: {message}")]
    Api {
        /// `GET` or `POST`.
        method: &'static str,
        /// The path relative to the base URL.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The server's error code (`unauthorized`, `not_found`, `conflict`, ...), or `http_<status>`.
        code: String,
        /// The server's explanation.
        message: String,
    },

    /// No decision or answer arrived before the caller's deadline. The request stays pending on the
    /// server: resume with [`wait_function_call`](crate::Client::wait_function_call) or
    /// [`wait_human_contact`](crate::Client::wait_human_contact).
    #[error("no answer to {call_id} within {after:?}; it is still pending on the server and can be waited on again")]
    Deadline {
        /// The request that is still pending.
        call_id: String,
        /// The deadline that passed.
        after: Duration,
    },

    /// The server answered 2xx with a body that is not the expected object.
    #[error("{method} {path}: unexpected response body: {source}")]
    Decode {
        /// `GET` or `POST`.
        method: &'static str,
        /// The path relative to the base URL.
        path: String,
        /// What did not parse.
        #[source]
        source: serde_json::Error,
    },

    /// A value could not be turned into the JSON the API needs (e.g. kwargs that are not an object),
    /// or the approved arguments could not be turned back into the function's argument type.
    #[error("{0}")]
    Arguments(String),

    /// The approval's signed receipt does not hold for the call about to run (missing, altered,
    /// signed by an unknown key, about another call, or over other arguments): the function was
    /// not run. Nothing to retry: someone or something changed what was approved.
    #[error("refused to run {fn_name} ({call_id}): {reason}")]
    Receipt {
        /// The approved call.
        call_id: String,
        /// The function that was not run.
        fn_name: String,
        /// Why the receipt was refused.
        reason: String,
    },

    /// The approved call was started before (by this agent before a crash or a lost answer, or by
    /// another process with the same `call_id`), so it was not run again. If `execution.state` is
    /// `started`, the first run never reported an end: it may or may not have had its effect, and
    /// the caller decides (check the effect, then report it with
    /// [`finish_execution`](crate::Client::finish_execution) or
    /// [`fail_execution`](crate::Client::fail_execution), or ask a human).
    #[error("{call_id} was not run again: it was {}", .execution.describe())]
    AlreadyExecuted {
        /// The approved call.
        call_id: String,
        /// Its execution as the server recorded it.
        execution: Box<crate::Execution>,
    },

    /// The HTTP client could not be built or a request could not be formed.
    #[error("HTTP client: {0}")]
    Http(#[source] reqwest::Error),
}

impl Error {
    /// The HTTP status of an [`Error::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}
