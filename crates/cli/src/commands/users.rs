//! `countersign users create|list|add-project|remove-project|disable|reset-password`.

use super::groups::cli_stamp;
use crate::cli::UsersCommand;
use crate::config::Config;
use anyhow::{Context, bail};
use countersign_core::session::{PASSWORD_LINK_TTL, PASSWORD_TOKEN_PREFIX, Secret};
use countersign_core::{Email, ProjectName, Role, Timestamp, User, user};
use countersign_store::Store;
use serde_json::json;
use std::io::BufRead;

pub async fn run(store: &dyn Store, config: &Config, cmd: UsersCommand) -> anyhow::Result<()> {
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
            let Some(created) =
                store.create_user(&email, role, password_hash.as_deref(), &project_ids, &cli_stamp()).await?
            else {
                bail!("a user with email {email} already exists; see `countersign users list`");
            };
            println!("Created {} {} in {}.", created.role.as_str(), created.email, created.projects.join(", "));
            if !created.has_password {
                print_password_link(store, config, &created).await?;
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
        UsersCommand::ResetPassword { email } => {
            let email = Email::parse(&email)?;
            let found = store.users(None).await?.into_iter().find(|u| u.email == email.as_str());
            match found {
                Some(user) if user.disabled_at.is_some() => {
                    bail!("{email} is disabled; a disabled person cannot sign in")
                }
                Some(user) => print_password_link(store, config, &user).await?,
                None => bail!("no user with email {email}; see `countersign users list`"),
            }
        }
        UsersCommand::Phone { email, number, clear } => {
            let email = Email::parse(&email)?;
            let number = match (number, clear) {
                (Some(number), _) => Some(countersign_server::channels::sms::e164(&number).with_context(|| {
                    format!("{number:?} is not a phone number in international form: + and the country code, e.g. +15551234567")
                })?),
                (None, true) => None,
                (None, false) => {
                    if store.users(None).await?.iter().all(|u| u.email != email.as_str()) {
                        bail!("no user with email {email}; see `countersign users list`");
                    }
                    match store.user_phone(email.as_str()).await? {
                        Some(phone) => println!("{phone}"),
                        None => println!("{email} has no phone number; set one with `countersign users phone {email} +1...`"),
                    }
                    return Ok(());
                }
            };
            match store.set_user_phone(email.as_str(), number.as_deref(), &cli_stamp()).await? {
                countersign_store::PhoneSet::Done => match &number {
                    Some(number) => {
                        println!("{email}'s phone number is {number}: their SMS and WhatsApp replies decide as them.")
                    }
                    None => println!("{email} has no phone number now."),
                },
                countersign_store::PhoneSet::NoSuchPerson => {
                    bail!("no user with email {email}; see `countersign users list`")
                }
                countersign_store::PhoneSet::Taken(other) => {
                    bail!(
                        "{} is {other}'s phone number already; clear it first with `countersign users phone {other} --clear`",
                        number.unwrap_or_default()
                    )
                }
            }
        }
        UsersCommand::AddProject { email, projects } => {
            let email = Email::parse(&email)?;
            let mut ids = Vec::new();
            for name in &projects {
                ids.push(store.ensure_project(&ProjectName::parse(name)?).await?.id);
            }
            let Some(user) = store.change_user_projects(&email, &ids, &[], &cli_stamp()).await? else {
                bail!("no user with email {email}; see `countersign users list`");
            };
            println!("{} is now in {}.", user.email, user.projects.join(", "));
        }
        UsersCommand::RemoveProject { email, projects } => {
            let email = Email::parse(&email)?;
            let Some(before) = store.users(None).await?.into_iter().find(|u| u.email == email.as_str()) else {
                bail!("no user with email {email}; see `countersign users list`");
            };
            let mut ids = Vec::new();
            for name in &projects {
                if !before.projects.contains(name) {
                    bail!("{email} is not in project {name:?} (their projects: {})", or_none(&before.projects));
                }
                let project = store.project_by_name(name).await?.context("the project disappeared meanwhile")?;
                ids.push(project.id);
            }
            let user = store
                .change_user_projects(&email, &[], &ids, &cli_stamp())
                .await?
                .context("the user disappeared meanwhile")?;
            println!("{} is now in {}.", user.email, or_none(&user.projects));
        }
        UsersCommand::Disable { email } => {
            let email = Email::parse(&email)?;
            match store.disable_user(&email, &cli_stamp()).await? {
                Some(user) => println!("Disabled {}.", user.email),
                None => bail!("no user with email {email}; see `countersign users list`"),
            }
        }
    }
    Ok(())
}

/// Stores a one-time set-password token and prints its link (the only place it ever appears).
async fn print_password_link(store: &dyn Store, config: &Config, user: &User) -> anyhow::Result<()> {
    let secret = Secret::generate(PASSWORD_TOKEN_PREFIX);
    store.create_password_token(&user.id, &secret.hash, Timestamp::now().plus(PASSWORD_LINK_TTL)).await?;
    println!(
        "Send {} this one-time link to set their password (valid {} hours; `countersign users reset-password` makes a new one):",
        user.email,
        PASSWORD_LINK_TTL.as_secs() / 3600
    );
    println!("{}/set-password?token={}", config.public_base(config.listen), secret.text);
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

fn or_none(projects: &[String]) -> String {
    if projects.is_empty() {
        "no project (they see nothing until added to one)".to_owned()
    } else {
        projects.join(", ")
    }
}
