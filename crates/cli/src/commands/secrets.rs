//! `countersign secrets`: the master key of the stored channel secrets.

use crate::cli::SecretsCommand;
use crate::config::Config;
use anyhow::Context;
use countersign_store::secrets::{self, Keyring, MasterKey};

pub(crate) async fn run(config: &Config, cmd: SecretsCommand) -> anyhow::Result<()> {
    match cmd {
        SecretsCommand::Status { json } => status(config, json).await,
        SecretsCommand::RotateMasterKey { all_instances_stopped } => rotate(config, all_instances_stopped).await,
    }
}

async fn status(config: &Config, json: bool) -> anyhow::Result<()> {
    let (ring, source) = super::keyring_for(config, &config.database_url()).await?;
    // Opening checks that the database's secrets are sealed with this key (and seals any that
    // an older release stored in plain text).
    let store = super::open_store(config).await?;
    store.close().await;
    if json {
        let report = serde_json::json!({
            "source": source,
            "key_id": ring.current().id(),
            "older_key_ids": ring.ids()[1..],
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("master key {} from {source}", ring.current().id());
        for older in &ring.ids()[1..] {
            println!("older key {older} (decrypts only; the next start re-encrypts what it sealed)");
        }
        println!("the database's secrets are encrypted with it");
    }
    Ok(())
}

async fn rotate(config: &Config, all_stopped: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.master_key.is_none(),
        "the master key comes from COUNTERSIGN_MASTER_KEY (or master_key in the config file), which this \
         command cannot change: keep it in a file (COUNTERSIGN_MASTER_KEY_FILE) to rotate it here"
    );
    let path = config.master_key_file();
    let url = config.database_url();
    let sqlite = countersign_store::sqlite_path(&url);
    // Instances still running with the old key would go on sealing new secrets with it, which
    // nothing could open once the old key is gone from every key file.
    anyhow::ensure!(
        sqlite.is_some() || all_stopped,
        "on PostgreSQL, stop every instance first (they would go on encrypting with the old key), \
         then run this again with --all-instances-stopped, and give them all the new key file before they start"
    );
    let (old, _) = super::keyring_for(config, &url).await?;
    // A running server on SQLite would go on sealing with the old key: refuse while one does.
    let _live = match &sqlite {
        Some(db) => Some(countersign_store::sqlite::backup::LiveLock::acquire(db)?),
        None => None,
    };
    let new = MasterKey::generate();
    // First the file holds both keys (the new one first), so that whatever happens next, every
    // stored secret opens with it; then opening the store re-seals each one with the new key;
    // then the file keeps the new key alone.
    let mut keys: Vec<&MasterKey> = vec![&new, old.current()];
    let older = old_keys(&old);
    keys.extend(older.iter());
    secrets::write_key_file(&path, &keys).with_context(|| format!("cannot write {}", path.display()))?;
    let ring = Keyring::new(new.clone(), std::iter::once(old.current().clone()).chain(older.iter().cloned()).collect());
    let store = countersign_store::open(&url, ring).await.with_context(|| format!("cannot open the database {url}"))?;
    let resealed = store.secrets_resealed();
    store.close().await;
    secrets::write_key_file(&path, &[&new]).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "Rotated the master key {} → {}: {resealed} stored secrets re-encrypted; {} holds the new key alone.",
        old.current().id(),
        new.id(),
        path.display()
    );
    println!("Backups taken before now need the old key to open their secrets; the old key is no longer kept here.");
    if sqlite.is_none() {
        println!("On PostgreSQL: copy {} to every instance before starting them.", path.display());
    }
    Ok(())
}

/// The keys of `ring` after its current one.
fn old_keys(ring: &Keyring) -> Vec<MasterKey> {
    ring.older().to_vec()
}
