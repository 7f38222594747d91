//! `countersign backup` and `countersign restore`: online copies of the SQLite database.

use crate::cli::{BackupArgs, RestoreArgs};
use crate::config::Config;
use countersign_store::sqlite::backup::{self, Summary};
use std::path::PathBuf;

/// The SQLite file of the configured database, or how to back PostgreSQL up instead.
fn sqlite_file(config: &Config, what: &str) -> anyhow::Result<PathBuf> {
    match countersign_store::sqlite_path(&config.database_url()) {
        Some(path) => Ok(path),
        None => anyhow::bail!(
            "the database is PostgreSQL: {what} it with pg_dump and pg_restore, e.g. \
             `pg_dump --format=custom --file countersign.dump \"$COUNTERSIGN_DATABASE_URL\"` \
             (see the README, \"Backups\")"
        ),
    }
}

fn describe(summary: &Summary) -> String {
    format!(
        "{} requests, {} audit events, schema {}, {:.1} MB",
        summary.requests,
        summary.events,
        summary.schema_version,
        summary.bytes as f64 / 1e6
    )
}

pub(crate) async fn backup(config: &Config, args: BackupArgs) -> anyhow::Result<()> {
    let db = sqlite_file(config, "back up")?;
    let summary = backup::backup(&db, &args.file).await?;
    println!("Backed up {} to {}: {}", db.display(), args.file.display(), describe(&summary));
    Ok(())
}

pub(crate) async fn restore(config: &Config, args: RestoreArgs) -> anyhow::Result<()> {
    let db = sqlite_file(config, "restore")?;
    let restored = backup::restore(&args.file, &db, args.replace).await?;
    if let Some(aside) = &restored.moved_aside {
        println!("Moved the database that was there to {}", aside.display());
    }
    println!("Restored {} to {}: {}", args.file.display(), db.display(), describe(&restored.summary));
    if let Some(id) = &restored.summary.master_key_id {
        // The server opens the secrets only with the key they were encrypted with; say which.
        let configured = if config.master_key.is_some() || config.master_key_file().exists() {
            config.keyring().ok().map(|(ring, _)| ring)
        } else {
            None
        };
        match configured {
            Some(ring) if ring.knows(id) => {
                println!("Its secrets are encrypted with master key {id}, which is configured.")
            }
            Some(ring) => println!(
                "Warning: its secrets are encrypted with master key {id}, but the configured key is {}: \
                 put the key file of the backed-up server at {} (or set COUNTERSIGN_MASTER_KEY) before starting.",
                ring.current().id(),
                config.master_key_file().display()
            ),
            None => println!(
                "Its secrets are encrypted with master key {id}: copy the key file of the backed-up server to {} \
                 (or set COUNTERSIGN_MASTER_KEY) before starting.",
                config.master_key_file().display()
            ),
        }
    }
    println!("Start the server; it brings the schema up to date if the backup is older.");
    Ok(())
}
