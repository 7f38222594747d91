//! `countersign serve`: open the database, make sure a first key exists, serve until a signal.

use super::keys;
use crate::cli::ServeArgs;
use crate::config::Config;
use anyhow::Context;
use countersign_server::{Server, Settings};

pub async fn run(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    // One server per SQLite file: its pending requests live in this process's memory. The lock
    // also keeps `countersign restore` off a database in use; the kernel drops it at exit.
    let _live = match countersign_store::sqlite_path(&config.database_url()) {
        Some(db) => Some(countersign_store::sqlite::backup::LiveLock::acquire(&db)?),
        None => None,
    };
    let store = super::open_store(&config).await?;
    let first_key = if store.count_active_api_keys().await? == 0 {
        Some(keys::create(store.as_ref(), "default", Some("first key".into())).await?)
    } else {
        None
    };
    let settings = Settings {
        max_body_bytes: config.max_body_bytes,
        organization: config.organization.clone(),
        public_url: config.public_url.clone(),
        email: countersign_server::channels::email::EmailSettings {
            smtp_url: config.smtp_url.clone(),
            from: config.email_from.clone(),
            // Agents' email templates render in a child process of this binary, with a memory cap.
            template_renderer: std::env::current_exe().ok(),
        },
        slack: countersign_server::channels::slack::SlackSettings { api_base: config.slack_api_base.clone() },
        twilio: countersign_server::channels::sms::TwilioSettings { api_base: config.twilio_api_base.clone() },
        limits: config.limits.clone(),
        metrics: countersign_server::metrics::MetricsSettings {
            listen: config.metrics_listen,
            token: config.metrics_token.clone(),
        },
        commit: crate::cli::COMMIT,
    };
    let server = Server::bind(config.listen, store.clone(), settings).await.context("cannot start the server")?;
    // The MCP tools over streamable HTTP (`/mcp`) come from their own crate; the server only hosts them.
    let server = server.mount(countersign_mcp::http::router);
    let addr = server.local_addr();
    let base = config.public_base(addr);
    let base = base.as_str();
    let email = config
        .smtp_url
        .as_deref()
        .map_or_else(|| "off (no smtp_url)".to_owned(), countersign_core::redact::mask_password);
    tracing::info!(%addr, database = %countersign_core::redact::mask_password(&config.database_url()), %email, "countersign {} ready", crate::cli::VERSION);
    // Before the listening line, which scripts wait for: by then this one has been read too.
    if let Some(metrics) = server.metrics_addr() {
        println!("Metrics on http://{metrics}/metrics");
        tracing::info!(%metrics, "serving /metrics without a key on metrics_listen");
    }
    println!("Listening on http://{addr}");
    if let Some(key) = first_key {
        println!();
        println!("Created project \"default\" and its first API key; it is shown only this once. To use it:");
        println!();
        println!("  export HUMANLAYER_API_BASE={base}/humanlayer/v1");
        println!("  export HUMANLAYER_API_KEY={}", key.secret);
        println!();
        println!("More keys: countersign keys create --project NAME");
    } else {
        println!("Agents use HUMANLAYER_API_BASE={base}/humanlayer/v1 and a key from `countersign keys create`.");
    }
    server.run(shutdown_signal()).await.context("the server failed")?;
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
