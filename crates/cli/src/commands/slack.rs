//! `countersign slack connect | status | disconnect | manifest`.

use super::groups::cli_stamp;
use crate::cli::SlackCommand;
use crate::config::Config;
use crate::exit::{Exit, Failure};
use anyhow::{Context, bail};
use countersign_core::Project;
use countersign_server::channels::slack::SlackApi;
use countersign_server::services::connections::{SlackCredentials, connect_slack};
use countersign_store::{SlackConnection, Store};
use serde_json::{Value, json};
use std::io::BufRead;

use super::project_named;

pub async fn run(store: &dyn Store, config: &Config, cmd: SlackCommand) -> anyhow::Result<()> {
    let api = SlackApi::new(&config.slack_api_base);
    match cmd {
        SlackCommand::Connect {
            project,
            bot_token,
            bot_token_stdin,
            signing_secret,
            signing_secret_stdin,
            default_channel,
            require_known_users,
            json,
        } => {
            let found = project_named(store, &project).await?;
            let mut stdin = std::io::stdin().lock().lines();
            let mut read_line = |what: &str| -> anyhow::Result<String> {
                let line = stdin.next().with_context(|| format!("no {what} on standard input"))??;
                Ok(line.trim().to_owned())
            };
            let bot_token = match (bot_token, bot_token_stdin) {
                (_, true) => read_line("bot token")?,
                (Some(token), false) => token.trim().to_owned(),
                (None, false) => bail!(Failure::new(
                    Exit::Usage,
                    "give the bot token: --bot-token-stdin, COUNTERSIGN_SLACK_BOT_TOKEN, or --bot-token"
                )),
            };
            let signing_secret = match (signing_secret, signing_secret_stdin) {
                (_, true) => Some(read_line("signing secret")?),
                (secret, false) => secret.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
            };
            let given = SlackCredentials { bot_token, signing_secret, default_channel, require_known_users };
            let (connection, who) =
                connect_slack(store, &api, &found.id, given, &cli_stamp()).await.map_err(super::connection_refused)?;
            let text = |key: &str| who.get(key).and_then(Value::as_str).map(str::to_owned);
            let summary = summary(&found, &connection, Some(&who));
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!(
                    "Connected {} to the Slack workspace {} as the bot {}.",
                    found.name,
                    connection.team_name.as_deref().unwrap_or("?"),
                    text("user").unwrap_or_default()
                );
                print_details(&connection);
            }
        }
        SlackCommand::Status { project, json } => {
            let found = project_named(store, &project).await?;
            let Some(connection) = store.slack_connection(&found.id).await? else {
                bail!(Failure::new(
                    Exit::Other,
                    format!(
                        "{} is not connected to Slack; connect it with `countersign slack connect --project {}`",
                        found.name, found.name
                    )
                ));
            };
            let checked = api.call("auth.test", &connection.bot_token, &json!({})).await;
            let mut summary = summary(&found, &connection, checked.as_ref().ok());
            summary["token_ok"] = json!(checked.is_ok());
            if let Err(e) = &checked {
                summary["token_error"] = json!(e.to_string());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                match &checked {
                    Ok(who) => println!(
                        "{} is connected to the Slack workspace {} ({}) as the bot {} ({}).",
                        found.name,
                        who.get("team").and_then(Value::as_str).unwrap_or("?"),
                        who.get("team_id").and_then(Value::as_str).unwrap_or("?"),
                        who.get("user").and_then(Value::as_str).unwrap_or("?"),
                        who.get("user_id").and_then(Value::as_str).unwrap_or("?"),
                    ),
                    Err(e) => println!("{} is connected to Slack, but Slack refuses its bot token: {e}.", found.name),
                }
                print_details(&connection);
            }
            if let Err(e) = checked {
                bail!(Failure::new(
                    Exit::Other,
                    format!("Slack refused the bot token ({e}); connect again with a valid token")
                ));
            }
        }
        SlackCommand::Disconnect { project } => {
            let found = project_named(store, &project).await?;
            if store.remove_slack_connection(&found.id, &cli_stamp()).await? {
                println!("{} is disconnected from Slack: its bot token and signing secret are deleted.", found.name);
            } else {
                println!("{} was not connected to Slack.", found.name);
            }
        }
        SlackCommand::Manifest { .. } => unreachable!("handled without a store"),
    }
    Ok(())
}

/// What `connect` and `status` show (never the token or the secret).
fn summary(project: &Project, c: &SlackConnection, who: Option<&Value>) -> Value {
    let from_slack = |key: &str| who.and_then(|w| w.get(key)).cloned().unwrap_or(Value::Null);
    json!({
        "project": project.name,
        "team_id": c.team_id,
        "team": c.team_name,
        "bot_user_id": c.bot_user_id,
        "bot": from_slack("user"),
        "url": from_slack("url"),
        "signing_secret_set": c.signing_secret.is_some(),
        "default_channel": c.default_channel,
        "require_known_users": c.require_known_users,
        "connected_at": c.connected_at.to_rfc3339(),
    })
}

fn print_details(c: &SlackConnection) {
    match &c.default_channel {
        Some(channel) => println!("  Default channel: {channel} (requests that name no channel are posted there)"),
        None => println!("  Default channel: none (only requests that name a Slack channel are posted)"),
    }
    if c.signing_secret.is_some() {
        println!("  Signing secret:  set (clicks and replies from Slack are accepted)");
    } else {
        println!(
            "  Signing secret:  NOT set: clicks and replies are refused; connect again with --signing-secret-stdin"
        );
    }
    if c.require_known_users {
        println!("  Deciders:        only Slack users whose email belongs to a person of the project");
    }
}

/// Prints the app manifest.
pub fn manifest(public_url: Option<&str>, compact: bool) -> anyhow::Result<()> {
    let base = public_url.unwrap_or("https://countersign.example.com").trim_end_matches('/');
    let manifest = json!({
        "display_information": {
            "name": "Countersign",
            "description": "Approve or reject what AI agents want to do, and answer their questions.",
            "background_color": "#1d2733"
        },
        "features": {
            "bot_user": {"display_name": "Countersign", "always_online": true}
        },
        "oauth_config": {
            "scopes": {
                "bot": [
                    "chat:write",
                    "chat:write.public",
                    "im:write",
                    "users:read",
                    "users:read.email",
                    "channels:history",
                    "groups:history",
                    "im:history",
                    "mpim:history"
                ]
            }
        },
        "settings": {
            "event_subscriptions": {
                "request_url": format!("{base}/slack/events"),
                "bot_events": ["message.channels", "message.groups", "message.im", "message.mpim"]
            },
            "interactivity": {
                "is_enabled": true,
                "request_url": format!("{base}/slack/interactions")
            },
            "org_deploy_enabled": false,
            "socket_mode_enabled": false,
            "token_rotation_enabled": false
        }
    });
    if compact {
        println!("{manifest}");
    } else {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
    }
    if public_url.is_none() {
        eprintln!(
            "note: no --public-url (or public_url in the configuration): the request URLs use {base}; replace it"
        );
    }
    Ok(())
}
