//! The command-line grammar.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Countersign: a human-in-the-loop approval gateway for AI agents.
///
/// Agents built on the HumanLayer SDKs ask for approval through Countersign's HumanLayer-compatible
/// API; humans decide. Point HUMANLAYER_API_BASE at http://HOST:PORT/humanlayer/v1.
#[derive(Debug, Parser)]
#[command(name = "countersign", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes. Each also reads `COUNTERSIGN_<NAME>` from the environment and
/// the configuration file; a flag wins over both.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file (TOML) [default: ~/.config/countersign/config.toml if it exists; env: COUNTERSIGN_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of the embedded SQLite database [default: ~/.local/share/countersign; env: COUNTERSIGN_DATA_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL, instead of the data directory's SQLite file [env: COUNTERSIGN_DATABASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (creates a first API key on a fresh database).
    Serve(ServeArgs),
    /// Manage API keys: create, list, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage the people who decide: create, list, disable.
    #[command(subcommand)]
    Users(UsersCommand),
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a person with a role in one or more projects (created if new).
    Create {
        /// Their email address (also their login).
        #[arg(long)]
        email: String,
        /// admin or approver.
        #[arg(long, value_parser = ["admin", "approver"])]
        role: String,
        /// A project they decide for; repeat for several.
        #[arg(long = "project", required = true)]
        projects: Vec<String>,
        /// Read the password from the first line of standard input (at least 10 characters).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List people, with their role, projects and status.
    List {
        /// Only people of this project.
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Disable a person: they can no longer sign in or decide.
    Disable {
        /// Their email address.
        email: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8484; env: COUNTERSIGN_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key (and the project, if new); the key is printed once, alone on the last line.
    Create {
        /// Project the key belongs to.
        #[arg(long, default_value = "default")]
        project: String,
        /// A label to recognise the key by in `keys list`.
        #[arg(long)]
        name: Option<String>,
    },
    /// List API keys (never the secrets).
    List {
        /// Only keys of this project.
        #[arg(long)]
        project: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key by its id or its displayed prefix; running servers refuse it within a second.
    Revoke {
        /// The key's id or prefix, as shown by `keys list`.
        key: String,
    },
}
