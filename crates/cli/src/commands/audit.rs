//! `countersign audit verify|export|head`, on the database directly.

use crate::cli::AuditCommand;
use anyhow::{Context, anyhow, bail};
use countersign_core::event::{ChainHash, Checkpoint};
use countersign_server::services::audit::{PAGE, event_json, head_json, verify};
use countersign_store::{ChainState, Store};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;

pub async fn run(store: &dyn Store, cmd: AuditCommand) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify { project, checkpoint, json } => {
            verify_chains(store, project.as_deref(), checkpoint.as_deref(), json).await
        }
        AuditCommand::Export { project, since, jsonl } => export(store, project.as_deref(), since, jsonl).await,
        AuditCommand::Head { project, json } => head(store, project.as_deref(), json).await,
    }
}

/// The chains asked for, each with its project's name.
async fn chains(store: &dyn Store, project: Option<&str>) -> anyhow::Result<Vec<(String, ChainState)>> {
    let project_id = match project {
        Some(name) => Some(
            store
                .project_by_name(name)
                .await?
                .ok_or_else(|| anyhow!("no project {name:?}; see `countersign projects list`"))?
                .id,
        ),
        None => None,
    };
    let mut out = Vec::new();
    for chain in store.chains(project_id.as_deref()).await? {
        let name = match store.project_by_id(&chain.project_id).await? {
            Some(p) => p.name,
            None => chain.project_id.clone(),
        };
        out.push((name, chain));
    }
    if let (Some(id), true) = (project_id, out.is_empty()) {
        out.push((project.unwrap_or_default().to_owned(), ChainState { project_id: id, head: None, unsealed: 0 }));
    }
    Ok(out)
}

/// Reads checkpoint lines (`PROJECT COUNT HASH`; `#` starts a comment).
fn read_checkpoints(path: &std::path::Path) -> anyhow::Result<HashMap<String, Checkpoint>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = || anyhow!("{}:{}: expected `PROJECT COUNT HASH`, as `audit head` prints", path.display(), n + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [project, count, hash] = fields[..] else { return Err(bad()) };
        let count = count.parse().map_err(|_| bad())?;
        let head = ChainHash::from_hex(hash).ok_or_else(bad)?;
        out.insert(project.to_owned(), Checkpoint { count, head });
    }
    Ok(out)
}

async fn verify_chains(
    store: &dyn Store,
    project: Option<&str>,
    checkpoint: Option<&std::path::Path>,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut checkpoints = checkpoint.map(read_checkpoints).transpose()?.unwrap_or_default();
    let chains = chains(store, project).await?;
    let mut report = Vec::new();
    let mut first_break = None;
    for (name, chain) in &chains {
        let kept = checkpoints.remove(name);
        match verify(store, chain, kept).await? {
            Ok(head) => {
                if !as_json {
                    let pending = if chain.unsealed > 0 {
                        format!(" ({} not sealed yet)", chain.unsealed)
                    } else {
                        String::new()
                    };
                    println!("{name}: {} events verified, head {}{pending}", head.count, head.head);
                }
                report.push(json!({"project": name, "ok": true, "count": head.count, "head": head.head.to_hex(),
                    "unsealed": chain.unsealed}));
            }
            Err(err) => {
                if !as_json {
                    println!("{name}: FAILED at event {}: {err}", err.seq());
                }
                report.push(json!({"project": name, "ok": false, "seq": err.seq(), "error": err.to_string()}));
                first_break.get_or_insert(format!("project {name}: event {}: {err}", err.seq()));
            }
        }
    }
    // A checkpoint of a project with no chain any more: its events were all removed.
    let mut missing: Vec<_> = checkpoints.into_iter().filter(|(_, c)| c.count > 0).collect();
    missing.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, c) in missing {
        let err = format!("the checkpoint has {} events, but the database has none", c.count);
        if !as_json {
            println!("{name}: FAILED at event 1: {err}");
        }
        report.push(json!({"project": name, "ok": false, "seq": 1, "error": err}));
        first_break.get_or_insert(format!("project {name}: event 1: {err}"));
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&Value::Array(report))?);
    } else if chains.is_empty() {
        println!("No events yet.");
    }
    match first_break {
        Some(what) => bail!("the audit log does not verify: {what}"),
        None => Ok(()),
    }
}

async fn export(store: &dyn Store, project: Option<&str>, since: u64, jsonl: bool) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut first = true;
    if !jsonl {
        write!(out, "[")?;
    }
    for (name, chain) in chains(store, project).await? {
        let mut after = since;
        loop {
            let page = store.audit_events(&chain.project_id, after, PAGE).await?;
            for e in &page {
                let mut line = event_json(e);
                line["project"] = json!(name);
                if jsonl {
                    writeln!(out, "{line}")?;
                } else {
                    write!(out, "{}\n  {line}", if first { "" } else { "," })?;
                }
                first = false;
                after = e.seq;
            }
            if page.len() < PAGE as usize {
                break;
            }
        }
    }
    if !jsonl {
        writeln!(out, "{}]", if first { "" } else { "\n" })?;
    }
    out.flush()?;
    Ok(())
}

async fn head(store: &dyn Store, project: Option<&str>, as_json: bool) -> anyhow::Result<()> {
    let chains = chains(store, project).await?;
    if as_json {
        let items: Vec<Value> = chains
            .iter()
            .map(|(name, c)| json!({"project": name, "head": head_json(c.head), "unsealed": c.unsealed}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    println!("# countersign audit checkpoint, {}: PROJECT COUNT HASH", countersign_core::Timestamp::now().to_rfc3339());
    for (name, c) in chains {
        let head = c.head.unwrap_or(Checkpoint { count: 0, head: ChainHash::GENESIS });
        println!("{name} {} {}", head.count, head.head);
    }
    Ok(())
}
