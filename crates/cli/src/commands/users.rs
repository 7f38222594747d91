//! `countersign users create|list|disable`.

use crate::cli::UsersCommand;
use anyhow::{Context, bail};
use countersign_core::{Email, ProjectName, Role, User, user};
use countersign_store::Store;
use serde_json::json;
use std::io::BufRead;

pub async fn run(store: &dyn Store, cmd: UsersCommand) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::Create { email, role, projects, password_stdin } => {
            let email = Email::parse(&email)?;
            let role = Role::parse(&role)?;
            let password_hash = if password_stdin {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
                Some(user::hash_password(line.trim_end_matches(['\r', '\n']))?)
            } else {
                None
            };
            let mut project_ids = Vec::new();
            for name in &projects {
                project_ids.push(store.ensure_project(&ProjectName::parse(name)?).await?.id);
            }
            let Some(created) = store.create_user(&email, role, password_hash.as_deref(), &project_ids).await? else {
                bail!("a user with email {email} already exists; see `countersign users list`");
            };
            println!("Created {} {} in {}.", created.role.as_str(), created.email, created.projects.join(", "));
            if !created.has_password {
                println!(
                    "No password is set yet. Set one now with --password-stdin (the one-time link to set it in the \
                     browser comes with the web inbox)."
                );
            }
        }
        UsersCommand::List { project, json } => {
            if let Some(name) = &project
                && store.project_by_name(name).await?.is_none()
            {
                bail!("no project named {name:?}");
            }
            let users = store.users(project.as_deref()).await?;
            if json {
                let rows: Vec<_> = users.iter().map(user_json).collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if users.is_empty() {
                println!("No users. Create one with `countersign users create --email E --role approver --project P`.");
            } else {
                let rows = users.iter().map(|u| {
                    vec![
                        u.email.clone(),
                        u.role.as_str().to_owned(),
                        u.projects.join(","),
                        status(u).to_owned(),
                        u.created_at.to_rfc3339()[..19].replace('T', " "),
                    ]
                });
                super::table::print(&["EMAIL", "ROLE", "PROJECTS", "STATUS", "CREATED (UTC)"], rows);
            }
        }
        UsersCommand::Disable { email } => {
            let email = Email::parse(&email)?;
            match store.disable_user(&email).await? {
                Some(user) => println!("Disabled {}.", user.email),
                None => bail!("no user with email {email}; see `countersign users list`"),
            }
        }
    }
    Ok(())
}

fn status(user: &User) -> &'static str {
    match (user.disabled_at, user.has_password) {
        (Some(_), _) => "disabled",
        (None, false) => "no password",
        (None, true) => "active",
    }
}

fn user_json(u: &User) -> serde_json::Value {
    json!({
        "id": u.id,
        "email": u.email,
        "role": u.role.as_str(),
        "projects": u.projects,
        "status": status(u),
        "created_at": u.created_at.to_rfc3339(),
        "disabled_at": u.disabled_at.map(|t| t.to_rfc3339()),
    })
}
