//! `countersign config`: the configuration in effect, and the reference of every key.

use crate::cli::ConfigCommand;
use crate::config::Config;
use anyhow::Context;

pub(crate) fn run(config: &Config, cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Show { json } => {
            let shown = masked(config);
            if json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                print!("{}", toml::to_string(&shown).context("cannot write the configuration as TOML")?);
            }
        }
        ConfigCommand::Reference => print!("{}", crate::config::reference()?.markdown()),
    }
    Ok(())
}

/// `countersign health`: `GET /readyz` of the server; an error (exit 1) unless it answers 200.
pub(crate) async fn health(config: &Config, args: crate::cli::HealthArgs) -> anyhow::Result<()> {
    let base = args.url.unwrap_or_else(|| Config::local_base(config.listen));
    let url = format!("{}/readyz", base.trim_end_matches('/'));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(args.timeout.max(1)))
        .user_agent(concat!("countersign-health/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let answer =
        http.get(&url).send().await.with_context(|| format!("{url} did not answer; is the server running?"))?;
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    if status.is_success() {
        println!(
            "ready: {url} (version {}, commit {})",
            body["version"].as_str().unwrap_or("?"),
            body["commit"].as_str().unwrap_or("?")
        );
        Ok(())
    } else {
        let why = body["error"]["message"].as_str().or(body["message"].as_str()).unwrap_or("no reason given");
        anyhow::bail!("not ready: {url} answered {status}: {why}")
    }
}

/// The configuration with its secrets masked: URL passwords, the metrics token, the master key.
fn masked(config: &Config) -> Config {
    let mut shown = config.clone();
    shown.database_url = Some(countersign_core::redact::mask_password(&config.database_url()));
    shown.smtp_url = config.smtp_url.as_deref().map(countersign_core::redact::mask_password);
    shown.metrics_token = config.metrics_token.as_ref().map(|_| "***".to_owned());
    shown.master_key = config.master_key.as_ref().map(|_| "***".to_owned());
    shown
}
