//! A look at a database without changing it (no migrations, no writes), for `countersign
//! doctor`: does it answer, how far is its schema, which master key its secrets are sealed with,
//! and how far its clock is from ours.

use crate::{StoreError, StoreResult};
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;

/// What [`inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The newest migration applied (0 for a database Countersign never opened).
    pub schema: i64,
    /// The newest migration this binary knows.
    pub known: i64,
    /// The id of the master key its secrets are sealed with, if it has one yet.
    pub master_key_id: Option<String>,
    /// The database's clock minus ours, in milliseconds (PostgreSQL only).
    pub clock_skew_ms: Option<i64>,
}

fn known(migrator: &sqlx::migrate::Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Looks at the database `url` names (see [`crate::open`]); a SQLite file that does not exist is
/// an error, not created.
pub async fn inspect(url: &str) -> StoreResult<Inspection> {
    let master = "SELECT value FROM server_keys WHERE name = $1";
    match crate::sqlite_path(url) {
        Some(path) => {
            if !path.is_file() {
                return Err(StoreError::Unavailable(format!(
                    "there is no database at {}; `countersign serve` creates it",
                    path.display()
                )));
            }
            let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .read_only(true)
                .connect()
                .await
                .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
            let applied = applied_sqlite(&mut conn).await?;
            let master_key_id = if applied > 0 {
                sqlx::query_scalar(master).bind(crate::secrets::MASTER_KEY_ID).fetch_optional(&mut conn).await?
            } else {
                None
            };
            let _ = conn.close().await;
            Ok(Inspection {
                backend: "sqlite",
                schema: applied,
                known: known(&crate::sqlite::MIGRATOR),
                master_key_id,
                clock_skew_ms: None,
            })
        }
        None => {
            let options = sqlx::postgres::PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::Unavailable(format!("invalid PostgreSQL URL: {e}")))?;
            let (host, port) = (options.get_host().to_owned(), options.get_port());
            let mut conn = sqlx::PgConnection::connect_with(&options)
                .await
                .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL at {host}:{port}: {e}")))?;
            let before = countersign_core::Timestamp::now().as_micros();
            let theirs: i64 = sqlx::query_scalar("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint")
                .fetch_one(&mut conn)
                .await?;
            let after = countersign_core::Timestamp::now().as_micros();
            let skew = (theirs - (before + after) / 2) / 1000;
            let has_table =
                |name: &'static str| sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL").bind(name);
            let applied = if has_table("_sqlx_migrations").fetch_one(&mut conn).await? {
                sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
                    .fetch_one(&mut conn)
                    .await?
            } else {
                0
            };
            let master_key_id = if has_table("server_keys").fetch_one(&mut conn).await? {
                sqlx::query_scalar(master).bind(crate::secrets::MASTER_KEY_ID).fetch_optional(&mut conn).await?
            } else {
                None
            };
            let _ = conn.close().await;
            Ok(Inspection {
                backend: "postgres",
                schema: applied,
                known: known(&crate::postgres::MIGRATOR),
                master_key_id,
                clock_skew_ms: Some(skew),
            })
        }
    }
}

async fn applied_sqlite(conn: &mut sqlx::SqliteConnection) -> StoreResult<i64> {
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'")
            .fetch_optional(&mut *conn)
            .await?;
    if exists.is_none() {
        return Ok(0);
    }
    Ok(sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut *conn)
        .await?)
}
