//! `countersign projects email` and `countersign projects inbound-email-secret`.

use crate::cli::ProjectsCommand;
use anyhow::bail;
use countersign_core::{Email, Project};
use countersign_server::channels::email::inbound;
use countersign_store::Store;
use serde_json::json;

pub async fn run(store: &dyn Store, cmd: ProjectsCommand) -> anyhow::Result<()> {
    match cmd {
        ProjectsCommand::Email { project, address, clear, json } => {
            let found = project_named(store, &project).await?;
            if clear || address.is_some() {
                let address = address.as_deref().map(Email::parse).transpose()?;
                store
                    .set_default_email(&found.id, address.as_ref().map(Email::as_str), &super::groups::cli_stamp())
                    .await?;
            }
            let current = store.default_email(&found.id).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"project": found.name, "default_email": current}))?
                );
            } else {
                match current {
                    Some(address) => println!(
                        "Requests of {} that name no channel are emailed to {address} (when smtp_url is configured).",
                        found.name
                    ),
                    None => println!(
                        "{} has no default email; only requests with an email channel are emailed.",
                        found.name
                    ),
                }
            }
        }
        ProjectsCommand::InboundEmailSecret { project, revoke, json } => {
            let found = project_named(store, &project).await?;
            if revoke {
                if !store.set_inbound_email_secret(&found.id, None).await? {
                    bail!("the project {project:?} is gone");
                }
                if json {
                    println!("{}", serde_json::to_string_pretty(&json!({"project": found.name, "secret": null}))?);
                } else {
                    println!("{} has no inbound-email secret now: replies by email are refused.", found.name);
                }
                return Ok(());
            }
            let secret = inbound::generate_secret();
            if !store.set_inbound_email_secret(&found.id, Some(&secret.hash)).await? {
                bail!("the project {project:?} is gone");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&json!({"project": found.name, "secret": secret.secret}))?);
            } else {
                println!(
                    "Inbound-email secret of {} (shown only this once; any earlier one stops working):",
                    found.name
                );
                println!();
                println!("  {}", secret.secret);
                println!();
                println!(
                    "Point the inbound-mail service at POST /humanlayer/v1/email/inbound with the raw message and"
                );
                println!("`Authorization: Bearer {}`, or put it in the URL as the Basic-auth password:", secret.secret);
                println!("  https://inbound:{}@<host>/humanlayer/v1/email/inbound", secret.secret);
            }
        }
    }
    Ok(())
}

async fn project_named(store: &dyn Store, name: &str) -> anyhow::Result<Project> {
    match store.project_by_name(name).await? {
        Some(found) => Ok(found),
        None => bail!("no project named {name:?}; projects are created by `countersign keys create --project NAME`"),
    }
}
