//! `countersign projects email`.

use crate::cli::ProjectsCommand;
use anyhow::bail;
use countersign_core::Email;
use countersign_store::Store;
use serde_json::json;

pub async fn run(store: &dyn Store, cmd: ProjectsCommand) -> anyhow::Result<()> {
    match cmd {
        ProjectsCommand::Email { project, address, clear, json } => {
            let Some(found) = store.project_by_name(&project).await? else {
                bail!("no project named {project:?}; projects are created by `countersign keys create --project NAME`");
            };
            if clear || address.is_some() {
                let address = address.as_deref().map(Email::parse).transpose()?;
                store.set_default_email(&found.id, address.as_ref().map(Email::as_str)).await?;
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
    }
    Ok(())
}
