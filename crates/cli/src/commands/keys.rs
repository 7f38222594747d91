//! `countersign keys create|list|revoke`.

use super::groups::cli_stamp;
use crate::cli::KeysCommand;
use anyhow::{Context, bail};
use countersign_core::api_key::{Scope, Scopes};
use countersign_core::{ProjectName, api_key};
use countersign_store::{ApiKeyRecord, NewApiKey, Store};
use serde_json::json;

pub async fn run(store: &dyn Store, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create { project, name, scopes, owner } => {
            let scopes = if scopes.is_empty() {
                Scopes::all()
            } else {
                Scopes::of(&scopes.iter().filter_map(|s| Scope::parse(s)).collect::<Vec<_>>())
            };
            let owner = owner.map(|o| countersign_core::Email::parse(&o)).transpose()?;
            let key = create_scoped(store, &project, name, scopes, owner.as_ref().map(|o| o.as_str())).await?;
            let owned = owner.map(|o| format!(", acting for {o}")).unwrap_or_default();
            println!(
                "Created API key {} for project {project:?} with scopes {}{owned}. It is shown only this once:",
                key.display_prefix,
                scopes.to_text()
            );
            println!("{}", key.secret);
        }
        KeysCommand::List { project, json } => {
            if let Some(name) = &project
                && store.project_by_name(name).await?.is_none()
            {
                bail!("no project named {name:?}; create one with `countersign keys create --project {name}`");
            }
            let keys = store.api_keys(project.as_deref()).await?;
            if json {
                let rows: Vec<_> = keys.iter().map(key_json).collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_table(&keys);
            }
        }
        KeysCommand::Revoke { key } => match store.revoke_api_key(&key, &cli_stamp()).await? {
            Some(record) => println!(
                "Revoked API key {} ({}) of project {:?}; servers refuse it within a second.",
                record.display_prefix, record.id, record.project_name
            ),
            None => bail!("no API key with id or prefix {key:?}; see `countersign keys list`"),
        },
    }
    Ok(())
}

/// Creates a key with every scope (and its project if needed); returns the secret to show once.
pub async fn create(store: &dyn Store, project: &str, name: Option<String>) -> anyhow::Result<api_key::GeneratedKey> {
    create_scoped(store, project, name, Scopes::all(), None).await
}

/// Creates a key with these scopes (and its project if needed); returns the secret to show once.
pub async fn create_scoped(
    store: &dyn Store,
    project: &str,
    name: Option<String>,
    scopes: Scopes,
    owner: Option<&str>,
) -> anyhow::Result<api_key::GeneratedKey> {
    let project_name = ProjectName::parse(project)?;
    let project = store.ensure_project(&project_name).await.context("cannot create the project")?;
    let key = api_key::generate();
    store
        .insert_api_key(
            NewApiKey {
                project_id: project.id,
                name,
                display_prefix: key.display_prefix.clone(),
                hash: key.hash,
                scopes,
                owner: owner.map(str::to_lowercase),
            },
            &cli_stamp(),
        )
        .await
        .context("cannot store the key")?;
    Ok(key)
}

fn key_json(k: &ApiKeyRecord) -> serde_json::Value {
    json!({
        "id": k.id,
        "prefix": k.display_prefix,
        "project": k.project_name,
        "name": k.name,
        "created_at": k.created_at.to_rfc3339(),
        "revoked_at": k.revoked_at.map(|t| t.to_rfc3339()),
        "scopes": k.scopes.list().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "owner": k.owner,
    })
}

fn print_table(keys: &[ApiKeyRecord]) {
    if keys.is_empty() {
        println!("No API keys. Create one with `countersign keys create --project NAME`.");
        return;
    }
    let rows = keys.iter().map(|k| {
        vec![
            k.display_prefix.clone(),
            k.id.clone(),
            k.project_name.clone(),
            k.name.clone().unwrap_or_default(),
            k.scopes.to_text(),
            k.created_at.to_rfc3339()[..19].replace('T', " "),
            if k.revoked_at.is_some() { "revoked".into() } else { "active".into() },
        ]
    });
    super::table::print(&["PREFIX", "ID", "PROJECT", "NAME", "SCOPES", "CREATED (UTC)", "STATUS"], rows);
}
