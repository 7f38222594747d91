//! `countersign policy set|show|test|suggest`, on the database directly; a running server applies a new
//! policy within a second, and every change is logged in the project's audit chain.

use super::groups::{CLI_ACTOR, project_id};
use crate::cli::PolicyCommand;
use anyhow::{Context, bail};
use countersign_core::{RequestKind, Timestamp};
use countersign_server::services::policies::{self as service, Refused};
use countersign_store::{RequestFilter, Store};
use serde_json::{Value, json};
use std::io::Read;
use std::path::Path;

pub async fn run(store: &dyn Store, cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Set { project, file } => {
            let project_id = project_id(store, &project).await?;
            let (source, text) = read(&file)?;
            let stored = service::set(store, &project_id, &source, &text, CLI_ACTOR).await.map_err(refused)?;
            let policy = service::validate(store, &project_id, &source, &text).await.map_err(refused)?;
            let names: Vec<&str> = policy.rules().iter().map(|r| r.name.as_str()).collect();
            println!(
                "Set the policy of {project:?} (version {}): {} rule{}{}. Running servers apply it within a second.",
                stored.version,
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                if names.is_empty() { String::new() } else { format!(": {}", names.join(", ")) }
            );
        }
        PolicyCommand::Show { project, json } => {
            let project_id = project_id(store, &project).await?;
            let stored = store.policy(&project_id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&service::policy_json(stored.as_ref()))?);
                return Ok(());
            }
            match stored {
                None => eprintln!(
                    "Project {project:?} has no policy: every request is asked. Set one with \
                     `countersign policy set --project {project} FILE`."
                ),
                Some(p) => {
                    eprintln!("# version {}, set by {} at {}", p.version, p.set_by, p.set_at);
                    print!("{}", p.source);
                    if !p.source.ends_with('\n') {
                        println!();
                    }
                }
            }
        }
        PolicyCommand::Test { project, function, args, run_id, question, owner, file, json } => {
            let project_id = project_id(store, &project).await?;
            let (kind, spec) = if question {
                (RequestKind::HumanContact, json!({"msg": function}))
            } else {
                let args: Value = serde_json::from_str(&args)
                    .with_context(|| format!("ARGS_JSON is not JSON: {args}; e.g. '{{\"amount\": 50}}'"))?;
                if !args.is_object() {
                    bail!("ARGS_JSON must be a JSON object, e.g. '{{\"amount\": 50}}'");
                }
                (RequestKind::FunctionCall, json!({"fn": function, "kwargs": args}))
            };
            let record = service::test_record(&project_id, kind, run_id.as_deref(), &spec)?;
            let policy = match &file {
                Some(path) => {
                    let (source, text) = read(path)?;
                    Some(service::validate(store, &project_id, &source, &text).await.map_err(refused)?)
                }
                None => match store.policy(&project_id).await? {
                    Some(stored) => Some(
                        service::validate(store, &project_id, "stored policy", &stored.source)
                            .await
                            .map_err(refused)?,
                    ),
                    None => None,
                },
            };
            let report = service::test(policy.as_ref(), &record, owner.as_deref());
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            match &report.rule {
                Some(rule) => println!("Rule {rule:?} decides: {}.", report.outcome),
                None => println!("No rule matches: {}.", report.outcome),
            }
            for error in &report.errors {
                println!(
                    "  note: the condition of rule {} could not be evaluated: {}",
                    error["rule"],
                    error["error"].as_str().unwrap_or_default()
                );
            }
        }
        PolicyCommand::Suggest { project, min, days, json } => {
            let project_id = project_id(store, &project).await?;
            let since = Timestamp::now().as_micros() - i64::from(days) * 86_400_000_000;
            let filter = RequestFilter { pending: false, ..RequestFilter::default() };
            let mut decided = Vec::new();
            'pages: for page in 0.. {
                let found = store.list_requests(std::slice::from_ref(&project_id), &filter, 1000, page * 1000).await?;
                for record in found.items.iter() {
                    let recent = record.outcome.as_ref().is_some_and(|o| o.responded_at.as_micros() >= since);
                    if !recent || decided.len() >= service::SUGGEST_SCAN_LIMIT {
                        break 'pages;
                    }
                    decided.push(record.clone());
                }
                if found.items.len() < 1000 {
                    break;
                }
            }
            let suggestions = service::suggest(&decided, min);
            if json {
                println!("{}", serde_json::to_string_pretty(&suggestions)?);
                return Ok(());
            }
            if suggestions.is_empty() {
                eprintln!(
                    "No suggestions: no function was approved {min} times or more and never rejected in the last \
                     {days} days ({} decided requests read).",
                    decided.len()
                );
                return Ok(());
            }
            eprintln!(
                "# {} suggestion{} from {} decided requests of the last {days} days; review before adding any \
                 (`policy set` applies nothing you do not give it).",
                suggestions.len(),
                if suggestions.len() == 1 { "" } else { "s" },
                decided.len()
            );
            for s in &suggestions {
                println!("{}", s.rule);
            }
        }
    }
    Ok(())
}

/// The file's name as given and its text (`-`: standard input).
fn read(path: &Path) -> anyhow::Result<(String, String)> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the policy from standard input")?;
        return Ok(("<stdin>".to_owned(), text));
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok((path.display().to_string(), text))
}

fn refused(refused: Refused) -> anyhow::Error {
    match refused {
        Refused::Invalid(err) => anyhow::anyhow!("the policy was not set (the one in force stays):\n{err}"),
        Refused::Store(err) => anyhow::anyhow!("{}", err.message()),
    }
}
