//! One module per command.

mod audit;
mod backup;
mod config;
mod doctor;
mod gate;
mod groups;
mod keys;
mod mcp;
mod migrate;
mod policy;
mod projects;
mod receipts;
mod secrets;
mod serve;
mod slack;
mod table;
mod terminal;
mod twilio;
mod users;
mod webhooks;

use crate::cli::{Cli, Command};
use crate::config::Config;
use anyhow::Context;
use countersign_store::Store;
use std::sync::Arc;

/// The project with this name, or an error saying how projects are made (exit code 1).
pub(crate) async fn project_named(store: &dyn Store, name: &str) -> anyhow::Result<countersign_core::Project> {
    match store.project_by_name(name).await? {
        Some(found) => Ok(found),
        None => anyhow::bail!(crate::exit::Failure::new(
            crate::exit::Exit::Other,
            format!("no project named {name:?}; projects are created by `countersign keys create --project NAME`")
        )),
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let format = match cli.global.log_format {
        Some(format) => format,
        None => match std::env::var("COUNTERSIGN_LOG_FORMAT") {
            Ok(text) => <crate::cli::LogFormat as clap::ValueEnum>::from_str(&text, true).map_err(|_| {
                crate::exit::Failure::new(
                    crate::exit::Exit::Usage,
                    format!("COUNTERSIGN_LOG_FORMAT={text:?} is not a log format: use text or json"),
                )
            })?,
            Err(_) => crate::cli::LogFormat::Text,
        },
    };
    let _ = LOG_FORMAT.set(format);
    let config = Config::load(&cli.global)?;
    match cli.command {
        Command::Serve(args) => {
            init_logging("info");
            serve::run(config, args).await
        }
        Command::Config(cmd) => config::run(&config, cmd),
        Command::Secrets(cmd) => {
            init_logging("warn");
            secrets::run(&config, cmd).await
        }
        Command::Migrate(args) => {
            init_logging("warn");
            migrate::run(&config, args).await
        }
        Command::Backup(args) => backup::backup(&config, args).await,
        Command::Restore(args) => backup::restore(&config, args).await,
        Command::Doctor(args) => {
            init_logging("error");
            doctor::run(&config, args).await
        }
        Command::Health(args) => config::health(&config, args).await,
        Command::Keys(cmd) => {
            init_logging("warn");
            let store = open_store(&config).await?;
            let result = keys::run(store.as_ref(), cmd).await;
            store.close().await;
            result
        }
        Command::Projects(cmd) => {
            init_logging("warn");
            let store = open_store(&config).await?;
            let result = projects::run(store.as_ref(), cmd).await;
            store.close().await;
            result
        }
        Command::Users(cmd) => {
            init_logging("warn");
            let store = open_store(&config).await?;
            let result = users::run(store.as_ref(), &config, cmd).await;
            store.close().await;
            result
        }
        Command::Webhooks(cmd) => {
            init_logging("warn");
            let store = open_store(&config).await?;
            let result = webhooks::run(store.as_ref(), cmd, config.limits.allow_private_webhook_targets).await;
            store.close().await;
            result
        }
        Command::Slack(cmd) => {
            init_logging("warn");
            if let crate::cli::SlackCommand::Manifest { public_url, json } = &cmd {
                return slack::manifest(public_url.as_deref().or(config.public_url.as_deref()), *json);
            }
            let store = open_store(&config).await?;
            let result = slack::run(store.as_ref(), &config, cmd).await;
            store.close().await;
            result
        }
        Command::Receipts(cmd) => {
            init_logging("warn");
            receipts::run(&config, cmd).await
        }
        Command::Twilio(cmd) => {
            init_logging("warn");
            let store = open_store(&config).await?;
            let result = twilio::run(store.as_ref(), &config, cmd).await;
            store.close().await;
            result
        }
        Command::Audit(cmd) => {
            init_logging("warn");
            let store = open_store(&config).await?;
            let result = audit::run(store.as_ref(), cmd).await;
            store.close().await;
            result
        }
        Command::Policy(cmd) => {
            init_logging("warn");
            let store = open_store(&config).await?;
            let result = policy::run(store.as_ref(), cmd).await;
            store.close().await;
            result
        }
        Command::Groups(cmd) => {
            init_logging("warn");
            let store = open_store(&config).await?;
            let result = groups::run(store.as_ref(), cmd).await;
            store.close().await;
            result
        }
        // The terminal commands talk to a running server: no database, no configuration needed.
        Command::Login(args) => {
            init_logging("warn");
            terminal::login(args).await
        }
        Command::Logout(args) => {
            init_logging("warn");
            terminal::logout(args).await
        }
        Command::Inbox(args) => {
            init_logging("warn");
            terminal::inbox(args).await
        }
        Command::Approve(args) => {
            init_logging("warn");
            terminal::approve(args).await
        }
        Command::Reject(args) => {
            init_logging("warn");
            terminal::reject(args).await
        }
        Command::Answer(args) => {
            init_logging("warn");
            terminal::answer(args).await
        }
        Command::Mcp(args) => {
            init_logging("info,rmcp=warn");
            mcp::run(args).await
        }
    }
}

/// Opens the configured database, with an error that says which one and why.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.database_url();
    let (keyring, _) = keyring_for(config, &url).await?;
    countersign_store::open(&url, keyring).await.with_context(|| format!("cannot open the database {url}"))
}

/// The master keys for the database `url`, and where they came from. Without a key file yet, one
/// is made for a new database; but a database whose secrets already have a key needs that key
/// (copied from the server), not a new one.
pub(crate) async fn keyring_for(
    config: &Config,
    url: &str,
) -> anyhow::Result<(countersign_store::secrets::Keyring, String)> {
    let key_file = config.master_key_file();
    if config.master_key.is_none()
        && !key_file.exists()
        && let Ok(found) = countersign_store::inspect(url).await
        && let Some(id) = found.master_key_id
    {
        anyhow::bail!(
            "the database's secrets are encrypted with master key {id}, and there is no key file at {}: \
             copy the server's master.key there, or point COUNTERSIGN_MASTER_KEY_FILE (or --config's \
             master_key_file) at it",
            key_file.display()
        );
    }
    config.keyring()
}

/// The log format chosen by `--log-format` or `COUNTERSIGN_LOG_FORMAT`.
static LOG_FORMAT: std::sync::OnceLock<crate::cli::LogFormat> = std::sync::OnceLock::new();

/// Logs to stderr, as text or JSON lines (`--log-format`); `COUNTERSIGN_LOG` (or `RUST_LOG`)
/// overrides the level, e.g. `debug`.
fn init_logging(default: &str) {
    let filter = std::env::var("COUNTERSIGN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| format!("{default},sqlx=warn"));
    let filter = tracing_subscriber::EnvFilter::new(filter);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match LOG_FORMAT.get().copied().unwrap_or_default() {
        crate::cli::LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
        crate::cli::LogFormat::Text => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init()
        }
    };
}

/// A refused connection as the CLI's failure: bad input is a usage error.
pub(crate) fn connection_refused(refused: countersign_server::services::connections::Refused) -> anyhow::Error {
    use crate::exit::{Exit, Failure};
    use countersign_server::services::connections::Refused;
    match refused {
        Refused::Invalid(m) => Failure::new(Exit::Usage, m).into(),
        Refused::Provider(m) => Failure::new(Exit::Other, m).into(),
        Refused::Store(e) => anyhow::anyhow!(e.message().to_owned()),
    }
}
