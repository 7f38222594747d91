//! `countersign groups create|add|remove|list`, on the database directly; every change is logged
//! in the project's audit chain.

use crate::cli::GroupsCommand;
use anyhow::{anyhow, bail};
use countersign_core::Timestamp;
use countersign_core::event::{ProjectEvent, ProjectEventBody};
use countersign_store::{Group, GroupChange, Store};
use serde_json::json;

/// Who the CLI records as having made a change.
pub const CLI_ACTOR: &str = "cli";

/// The CLI, now: the stamp of a change made on the command line.
pub fn cli_stamp() -> countersign_core::event::Stamp {
    countersign_core::event::Stamp::now(CLI_ACTOR)
}

pub async fn run(store: &dyn Store, cmd: GroupsCommand) -> anyhow::Result<()> {
    match cmd {
        GroupsCommand::Create { name, project, members } => {
            check_name(&name)?;
            let project_id = project_id(store, &project).await?;
            let members = people_of(store, &project, &members).await?;
            let event = group_event(&project_id, &name, &members, &members, &[]);
            match store.create_group(&name, &members, &event).await? {
                GroupChange::Done(group) => {
                    println!("Created group {name:?} in {project:?}: {}.", members_text(&group))
                }
                GroupChange::Exists => bail!(
                    "group {name:?} exists in {project:?}; add members with \
                     `countersign groups add {name} --project {project} --member EMAIL`"
                ),
                GroupChange::NoSuchGroup => bail!("group {name:?} vanished while being created"),
            }
        }
        GroupsCommand::Add { name, project, members } => {
            let project_id = project_id(store, &project).await?;
            let members = people_of(store, &project, &members).await?;
            change(store, &project, &project_id, &name, &members, &[]).await?;
        }
        GroupsCommand::Remove { name, project, members } => {
            let project_id = project_id(store, &project).await?;
            let members: Vec<String> = members.iter().map(|m| m.trim().to_lowercase()).collect();
            change(store, &project, &project_id, &name, &[], &members).await?;
        }
        GroupsCommand::List { project, json } => {
            let project_id = match &project {
                Some(name) => Some(project_id(store, name).await?),
                None => None,
            };
            let groups = store.groups(project_id.as_deref()).await?;
            list(store, &groups, json).await?;
        }
    }
    Ok(())
}

async fn change(
    store: &dyn Store,
    project: &str,
    project_id: &str,
    name: &str,
    add: &[String],
    remove: &[String],
) -> anyhow::Result<()> {
    let Some(before) = store.group(project_id, name).await? else {
        bail!("no group {name:?} in {project:?}; see `countersign groups list --project {project}`");
    };
    let mut members: Vec<String> =
        before.members.iter().filter(|m| !remove.contains(m)).cloned().chain(add.iter().cloned()).collect();
    members.sort();
    members.dedup();
    let event = group_event(project_id, name, &members, add, remove);
    match store.change_group(name, add, remove, &event).await? {
        GroupChange::Done(group) => println!("Group {name:?} in {project:?}: {}.", members_text(&group)),
        GroupChange::NoSuchGroup | GroupChange::Exists => {
            bail!("no group {name:?} in {project:?}; see `countersign groups list --project {project}`")
        }
    }
    Ok(())
}

fn group_event(project_id: &str, name: &str, members: &[String], added: &[String], removed: &[String]) -> ProjectEvent {
    ProjectEvent {
        project_id: project_id.to_owned(),
        at: Timestamp::now(),
        by: CLI_ACTOR.to_owned(),
        body: ProjectEventBody::GroupChanged {
            group: name.to_owned(),
            members: members.to_vec(),
            added: added.to_vec(),
            removed: removed.to_vec(),
        },
    }
}

fn check_name(name: &str) -> anyhow::Result<()> {
    Ok(countersign_core::policy::check_group_name(name)?)
}

/// The project's id, or an error saying how to find the right name.
pub async fn project_id(store: &dyn Store, name: &str) -> anyhow::Result<String> {
    Ok(store
        .project_by_name(name)
        .await?
        .ok_or_else(|| anyhow!("no project named {name:?}; see `countersign keys list` for the projects"))?
        .id)
}

/// The emails, lower-cased and deduplicated, each checked to be an active person of the project.
async fn people_of(store: &dyn Store, project: &str, emails: &[String]) -> anyhow::Result<Vec<String>> {
    let people = store.users(Some(project)).await?;
    let mut out = Vec::new();
    for email in emails {
        let email = countersign_core::Email::parse(email)?.as_str().to_lowercase();
        let Some(person) = people.iter().find(|p| p.email.to_lowercase() == email) else {
            bail!(
                "{email} is not a person of project {project:?}; add them first with \
                 `countersign users create --email {email} --role approver --project {project}` \
                 (or `users add-project`)"
            );
        };
        if person.disabled_at.is_some() {
            bail!("{email} is disabled; a disabled person cannot approve");
        }
        if !out.contains(&email) {
            out.push(email);
        }
    }
    Ok(out)
}

fn members_text(group: &Group) -> String {
    match group.members.len() {
        0 => "no members".to_owned(),
        n => format!("{n} member{} ({})", if n == 1 { "" } else { "s" }, group.members.join(", ")),
    }
}

async fn list(store: &dyn Store, groups: &[Group], json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for g in groups {
        let project = store.project_by_id(&g.project_id).await?.map_or_else(|| g.project_id.clone(), |p| p.name);
        rows.push((project, g));
    }
    if json {
        let items: Vec<_> = rows
            .iter()
            .map(|(project, g)| {
                json!({"project": project, "name": g.name, "members": g.members, "created_at": g.created_at.to_rfc3339()})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("No groups. Create one with `countersign groups create NAME --project PROJECT --member EMAIL`.");
        return Ok(());
    }
    let table = rows.iter().map(|(project, g)| vec![project.clone(), g.name.clone(), g.members.join(", ")]);
    super::table::print(&["PROJECT", "GROUP", "MEMBERS"], table);
    Ok(())
}
