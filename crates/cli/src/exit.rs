//! Exit codes scripts can rely on, and the error that carries one out of a command.

use std::fmt;
use std::process::ExitCode;

/// Why a command failed, as its exit code says. Anything not listed exits 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 1: anything else (network, server error, bad answer).
    Other = 1,
    /// 2: a usage error, or an id that exists in several projects (pass `--project`).
    Usage = 2,
    /// 3: not signed in, login expired or revoked, wrong password, too many sign-in attempts.
    SignIn = 3,
    /// 4: no such request in your projects.
    NotFound = 4,
    /// 5: the request is already decided.
    Decided = 5,
}

/// The exit codes of the terminal commands, for their `--help`.
pub const HELP: &str = "\
Exit codes:
  0  success
  1  other errors (server unreachable, server error, invalid decision such as an unknown option)
  2  usage error, or the id exists in several of your projects (pass --project)
  3  not signed in, login expired, wrong email or password, or too many sign-in attempts
  4  no such request in your projects
  5  already decided (the message says by whom and what)";

/// An error that ends the command with a chosen exit code; its message is shown as is.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self { exit, message: message.into() }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Why a command failed: the [`Failure`]'s exit anywhere in the chain, else [`Exit::Other`].
pub fn of(err: &anyhow::Error) -> Exit {
    err.chain().find_map(|e| e.downcast_ref::<Failure>()).map_or(Exit::Other, |f| f.exit)
}

/// The process exit code of a failed command.
pub fn code(err: &anyhow::Error) -> ExitCode {
    ExitCode::from(of(err) as u8)
}
