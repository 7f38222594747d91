//! Why an MCP face could not start, or stopped.

/// Why an MCP face could not start, or stopped. [`Error::Rules`] and [`Error::Header`] are the
/// caller's input at fault (a command line exits with a usage error); the rest is the world.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gate's rules are unusable: the file cannot be read, does not parse or holds no rules,
    /// or an `--ask` glob is bad. The message says which and how to fix it.
    #[error("{0}")]
    Rules(String),
    /// A header for the downstream URL is not valid HTTP.
    #[error("{0}")]
    Header(String),
    /// Countersign cannot be reached, or refuses the key.
    #[error("{0}")]
    Countersign(String),
    /// The downstream MCP server cannot be started, did not complete the handshake, or stopped.
    #[error("{message}")]
    Downstream {
        /// What happened to which server.
        message: String,
        /// The underlying failure, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The MCP client on stdio did not complete the handshake.
    #[error("the MCP client did not complete the handshake")]
    Handshake(#[source] Box<rmcp::service::ServerInitializeError>),
    /// The task serving MCP ended abnormally.
    #[error("the MCP service stopped")]
    Stopped(#[source] tokio::task::JoinError),
}

impl Error {
    /// A downstream failure with its cause.
    pub(crate) fn downstream(message: String, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Downstream { message, source: Some(Box::new(source)) }
    }
}
