//! `countersign twilio connect | status | disconnect`.

use super::groups::cli_stamp;
use crate::cli::TwilioCommand;
use crate::config::Config;
use crate::exit::{Exit, Failure};
use anyhow::{Context, bail};
use countersign_core::Project;
use countersign_server::channels::sms::TwilioApi;
use countersign_server::services::connections::{TwilioCredentials, connect_twilio};
use countersign_store::{Store, TwilioConnection};
use serde_json::{Value, json};
use std::io::BufRead;

use super::project_named;

pub async fn run(store: &dyn Store, config: &Config, cmd: TwilioCommand) -> anyhow::Result<()> {
    let api = TwilioApi::new(&config.twilio_api_base);
    let inbound =
        format!("{}/twilio/inbound", config.public_url.as_deref().unwrap_or("PUBLIC_URL").trim_end_matches('/'));
    match cmd {
        TwilioCommand::Connect { project, account_sid, auth_token, auth_token_stdin, from, whatsapp_from, json } => {
            let found = project_named(store, &project).await?;
            let auth_token = match (auth_token, auth_token_stdin) {
                (_, true) => {
                    let line = std::io::stdin().lock().lines().next().context("no auth token on standard input")??;
                    line.trim().to_owned()
                }
                (Some(token), false) => token.trim().to_owned(),
                (None, false) => bail!(Failure::new(
                    Exit::Usage,
                    "give the auth token: --auth-token-stdin, COUNTERSIGN_TWILIO_AUTH_TOKEN, or --auth-token"
                )),
            };
            let given = TwilioCredentials { account_sid, auth_token, from, whatsapp_from };
            let connection =
                connect_twilio(store, &api, &found.id, given, &cli_stamp()).await.map_err(super::connection_refused)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary(&found, &connection, &inbound))?);
            } else {
                println!("Connected {} to the Twilio account {}.", found.name, connection.account_sid);
                print_details(&connection, &inbound);
            }
        }
        TwilioCommand::Status { project, json } => {
            let found = project_named(store, &project).await?;
            let Some(connection) = store.twilio_connection(&found.id).await? else {
                bail!(Failure::new(
                    Exit::Other,
                    format!(
                        "{} is not connected to Twilio; connect it with `countersign twilio connect --project {}`",
                        found.name, found.name
                    )
                ));
            };
            let checked = api.check(&connection.account_sid, &connection.auth_token).await;
            let mut summary = summary(&found, &connection, &inbound);
            summary["credentials_ok"] = json!(checked.is_ok());
            if let Err(e) = &checked {
                summary["credentials_error"] = json!(e.to_string());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                match &checked {
                    Ok(()) => println!("{} is connected to the Twilio account {}.", found.name, connection.account_sid),
                    Err(e) => {
                        println!("{} is connected to Twilio, but Twilio refuses its credentials: {e}.", found.name)
                    }
                }
                print_details(&connection, &inbound);
            }
            if let Err(e) = checked {
                bail!(Failure::new(
                    Exit::Other,
                    format!("Twilio refused the credentials ({e}); connect again with valid ones")
                ));
            }
        }
        TwilioCommand::Disconnect { project } => {
            let found = project_named(store, &project).await?;
            if store.remove_twilio_connection(&found.id, &cli_stamp()).await? {
                println!("{} is disconnected from Twilio: its auth token is deleted.", found.name);
            } else {
                println!("{} was not connected to Twilio.", found.name);
            }
        }
    }
    Ok(())
}

/// What `connect` and `status` show (never the auth token).
fn summary(project: &Project, c: &TwilioConnection, inbound: &str) -> Value {
    json!({
        "project": project.name,
        "account_sid": c.account_sid,
        "from": c.from,
        "whatsapp_from": c.whatsapp_from.as_ref().map(|w| format!("whatsapp:{w}")),
        "inbound_url": inbound,
        "connected_at": c.connected_at.to_string(),
    })
}

fn print_details(c: &TwilioConnection, inbound: &str) {
    println!("  SMS from:      {}", c.from);
    match &c.whatsapp_from {
        Some(w) => println!("  WhatsApp from: whatsapp:{w}"),
        None => println!("  WhatsApp from: - (none: --whatsapp-from whatsapp:+1...)"),
    }
    println!("  inbound URL:   {inbound} (Twilio's \"A message comes in\" webhook, HTTP POST)");
}
