//! Layered configuration: built-in defaults, then a TOML file, then `COUNTERSIGN_*` environment
//! variables, then command-line flags.

use crate::cli::GlobalArgs;
use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything Countersign can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the server listens on.
    pub listen: SocketAddr,
    /// Directory of the embedded SQLite database.
    pub data_dir: PathBuf,
    /// Database URL; when unset, `sqlite://<data_dir>/countersign.db`.
    pub database_url: Option<String>,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Public base URL of this server, used in the printed `export` lines.
    pub public_url: Option<String>,
    /// Organization name reported by `GET /humanlayer/v1/project`.
    pub organization: String,
    /// SMTP server for the email channel: `smtp://user:pass@host:587?tls=required` (STARTTLS),
    /// `smtps://user:pass@host:465` (TLS), or `smtp://host:25` (plain, for a local relay).
    pub smtp_url: Option<String>,
    /// The From address of emails, e.g. `Countersign <approvals@example.com>`.
    pub email_from: Option<String>,
    /// The Slack Web API's base URL (`https://slack.com/api`; a local fake in tests).
    pub slack_api_base: String,
    /// The Twilio REST API's base URL (`https://api.twilio.com`; a local fake in tests).
    pub twilio_api_base: String,
    /// Serve Prometheus metrics at `/metrics` on this address too, without a key (keep it
    /// private: loopback or an internal network), e.g. `127.0.0.1:9464`. Off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve Prometheus metrics at `/metrics` on the main address to requests with
    /// `Authorization: Bearer <metrics_token>` (at least 16 characters). Off when unset.
    pub metrics_token: Option<String>,
    /// Bounds on what clients can send and make the server hold (`[limits]` in the file; each
    /// also as `COUNTERSIGN_<KEY>`, e.g. `COUNTERSIGN_MAX_JSON_DEPTH`).
    pub limits: countersign_server::Limits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8484)),
            data_dir: dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("countersign"),
            database_url: None,
            max_body_bytes: 16 * 1024 * 1024,
            public_url: None,
            organization: "countersign".into(),
            smtp_url: None,
            email_from: None,
            slack_api_base: countersign_server::channels::slack::DEFAULT_API_BASE.to_owned(),
            twilio_api_base: countersign_server::channels::sms::DEFAULT_API_BASE.to_owned(),
            metrics_listen: None,
            metrics_token: None,
            limits: countersign_server::Limits::default(),
        }
    }
}

/// The keys `COUNTERSIGN_<KEY>` environment variables may set; other `COUNTERSIGN_` variables
/// (`COUNTERSIGN_LOG`, `COUNTERSIGN_CONFIG`, ...) are not configuration keys.
const ENV_KEYS: [&str; 12] = [
    "listen",
    "data_dir",
    "database_url",
    "max_body_bytes",
    "public_url",
    "organization",
    "smtp_url",
    "email_from",
    "slack_api_base",
    "twilio_api_base",
    "metrics_listen",
    "metrics_token",
];

/// The names of the limits (each a `[limits]` key and a `COUNTERSIGN_<KEY>` variable).
fn limit_keys() -> Vec<String> {
    match serde_json::to_value(countersign_server::Limits::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

impl Config {
    /// Loads the layers; flags in `args` win.
    pub fn load(args: &GlobalArgs) -> anyhow::Result<Self> {
        let file = args.config.clone().or_else(|| std::env::var_os("COUNTERSIGN_CONFIG").map(PathBuf::from));
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match &file {
            Some(path) if !path.exists() => anyhow::bail!("configuration file {} does not exist", path.display()),
            Some(path) => figment = figment.merge(Toml::file(path)),
            None => {
                if let Some(default) = dirs::config_dir().map(|d| d.join("countersign").join("config.toml")) {
                    figment = figment.merge(Toml::file(default));
                }
            }
        }
        figment = figment.merge(Env::prefixed("COUNTERSIGN_").only(&ENV_KEYS));
        let limit_keys = limit_keys();
        let nested = limit_keys.clone();
        figment = figment.merge(
            Env::prefixed("COUNTERSIGN_").filter(move |key| limit_keys.iter().any(|k| key == k.as_str())).map(
                move |key| match nested.iter().find(|k| key == k.as_str()) {
                    Some(k) => format!("limits.{k}").into(),
                    None => key.into(),
                },
            ),
        );
        let mut config: Config = figment.extract().context("invalid configuration")?;
        if let Some(dir) = &args.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &args.database_url {
            config.database_url = Some(url.clone());
        }
        if let Some(token) = &config.metrics_token {
            let min = countersign_server::metrics::MIN_TOKEN_LEN;
            anyhow::ensure!(
                token.chars().count() >= min && !token.chars().any(char::is_whitespace),
                "metrics_token must be at least {min} characters without spaces (e.g. `openssl rand -hex 24`)"
            );
        }
        Ok(config)
    }

    /// The database to open.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.sqlite_path().display()))
    }

    /// The base URL people and agents reach this server at: `public_url`, else the listen address.
    pub fn public_base(&self, bound: SocketAddr) -> String {
        let base = self.public_url.clone().unwrap_or_else(|| {
            let ip = bound.ip();
            let host = if ip.is_unspecified() { "127.0.0.1".to_owned() } else { ip.to_string() };
            let host = if bound.is_ipv6() && !ip.is_unspecified() { format!("[{host}]") } else { host };
            format!("http://{host}:{}", bound.port())
        });
        base.trim_end_matches('/').to_owned()
    }

    /// Where the embedded database lives.
    pub fn sqlite_path(&self) -> PathBuf {
        Path::new(&self.data_dir).join("countersign.db")
    }
}
