//! `countersign migrate`: SQLite to PostgreSQL, verified.

use crate::cli::MigrateArgs;
use crate::config::Config;
use anyhow::{Context, bail};
use countersign_server::services::audit::verify;
use countersign_store::Store;
use serde_json::json;

pub(crate) async fn run(config: &Config, args: MigrateArgs) -> anyhow::Result<()> {
    let from = args.from.clone().unwrap_or_else(|| config.database_url());
    let Some(db) = countersign_store::sqlite_path(&from) else {
        bail!("--from must be a SQLite database (sqlite://PATH); {from} is not one")
    };
    if countersign_store::sqlite_path(&args.to).is_some() {
        bail!("--to must be a PostgreSQL database (postgres://USER:PASSWORD@HOST/DB)");
    }
    anyhow::ensure!(db.is_file(), "there is no SQLite database at {}", db.display());
    let to = countersign_core::redact::mask_password(&args.to);
    // Nothing may write to the source while it is copied.
    let _live = countersign_store::sqlite::backup::LiveLock::acquire(&db)?;
    // The source's key: the configured one, where the source's key file is.
    let source_config = Config { database_url: Some(from.clone()), ..config.clone() };
    let (keyring, key_source) = super::keyring_for(&source_config, &from).await?;

    // The source at this release's schema, with its secrets sealed (an older release's are not).
    let source =
        countersign_store::open(&from, keyring.clone()).await.with_context(|| format!("cannot open {from}"))?;
    source.close().await;
    countersign_store::postgres::migrate_schema(&args.to)
        .await
        .with_context(|| format!("cannot prepare the schema of {to}"))?;
    let copied = countersign_store::copy::sqlite_to_postgres(&db, &args.to)
        .await
        .with_context(|| format!("cannot copy into {to}"))?;

    // Verify: every audit chain of the copy verifies and ends at the same head as the source's.
    let source = countersign_store::open(&from, keyring.clone()).await?;
    let target = countersign_store::open(&args.to, keyring).await.with_context(|| format!("cannot open {to}"))?;
    let chains = compare_chains(source.as_ref(), target.as_ref()).await;
    source.close().await;
    target.close().await;
    let chains = chains?;

    if args.json {
        let tables: serde_json::Map<_, _> = copied.iter().map(|(t, n)| (t.clone(), json!(n))).collect();
        let chains: Vec<_> = chains.iter().map(|(p, n, h)| json!({"project_id": p, "events": n, "head": h})).collect();
        println!("{}", serde_json::to_string_pretty(&json!({"tables": tables, "chains": chains}))?);
    } else {
        let rows: u64 = copied.iter().map(|(_, n)| n).sum();
        println!("Copied {rows} rows in {} tables from {} to {to}:", copied.len(), db.display());
        for (table, n) in copied.iter().filter(|(_, n)| *n > 0) {
            println!("  {table:<20} {n}");
        }
        for (project, n, head) in &chains {
            println!("Audit chain of project {project}: {n} events verified, head {head} (the same as in SQLite)");
        }
        println!();
        println!("Next: set database_url (COUNTERSIGN_DATABASE_URL) to the PostgreSQL URL, and give every instance");
        println!("the master key of the SQLite server ({key_source}): the copied secrets are encrypted with it.");
    }
    Ok(())
}

/// `(project id, events, head)` of every chain, verified on both and equal.
async fn compare_chains(source: &dyn Store, target: &dyn Store) -> anyhow::Result<Vec<(String, u64, String)>> {
    let mut out = Vec::new();
    let theirs = target.chains(None).await?;
    let ours = source.chains(None).await?;
    anyhow::ensure!(theirs.len() == ours.len(), "PostgreSQL has {} audit chains, SQLite {}", theirs.len(), ours.len());
    for chain in ours {
        let copy = theirs
            .iter()
            .find(|c| c.project_id == chain.project_id)
            .with_context(|| format!("project {}'s audit chain is missing in PostgreSQL", chain.project_id))?;
        let before = verify(source, &chain, None)
            .await?
            .map_err(|e| anyhow::anyhow!("the SQLite audit chain of {} does not verify: {e}", chain.project_id))?;
        let after = verify(target, copy, None)
            .await?
            .map_err(|e| anyhow::anyhow!("the copied audit chain of {} does not verify: {e}", chain.project_id))?;
        anyhow::ensure!(
            before.count == after.count && before.head == after.head,
            "project {}: the copied chain ends at event {} ({}), the source's at {} ({})",
            chain.project_id,
            after.count,
            after.head,
            before.count,
            before.head
        );
        out.push((chain.project_id.clone(), after.count, after.head.to_hex()));
    }
    Ok(out)
}
