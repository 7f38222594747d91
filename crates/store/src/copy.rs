//! Copies a whole SQLite database into an empty PostgreSQL one (`countersign migrate`): every
//! table, row for row, in one PostgreSQL transaction, with the row counts checked before it
//! commits. Values keep their bytes: key hashes (so keys keep working), sealed secrets (their
//! associated data names table, column and row, which stay the same), event bodies and hashes
//! (so the audit chains verify and keep their heads).
//!
//! Columns are copied by name, typed by the PostgreSQL schema; a table or column of one database
//! that the other lacks stops the copy before it writes, so a future migration cannot be copied
//! half.

use crate::{StoreError, StoreResult};
use futures::TryStreamExt;
use sqlx::postgres::{PgArguments, PgPool};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Arguments, ConnectOptions, Connection, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The tables copied: every table of the schema but the migration bookkeeping.
fn copied(name: &str) -> bool {
    !name.starts_with("_sqlx") && !name.starts_with("sqlite_")
}

/// One table's column, as PostgreSQL types it.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BigInt,
    Int,
    SmallInt,
    Bool,
    Text,
    Bytes,
}

impl Kind {
    fn of(pg_type: &str) -> Option<Self> {
        Some(match pg_type {
            "bigint" => Self::BigInt,
            "integer" => Self::Int,
            "smallint" => Self::SmallInt,
            "boolean" => Self::Bool,
            "text" | "character varying" => Self::Text,
            "bytea" => Self::Bytes,
            _ => return None,
        })
    }
}

/// How many rows of each table were copied.
pub type Copied = Vec<(String, u64)>;

/// Copies the SQLite database at `from` (at the current schema, not in use) into the PostgreSQL
/// database `to` (at the current schema, every table empty).
pub async fn sqlite_to_postgres(from: &Path, to: &str) -> StoreResult<Copied> {
    let target =
        PgPool::connect(to).await.map_err(|e| StoreError::Unavailable(format!("cannot connect to {to}: {e}")))?;
    let result = copy(from, &target).await;
    target.close().await;
    result
}

async fn copy(from: &Path, target: &PgPool) -> StoreResult<Copied> {
    let mut source = sqlx::sqlite::SqliteConnectOptions::new().filename(from).read_only(true).connect().await?;
    let refuse = |what: String| StoreError::Internal(what);
    let source_tables: BTreeSet<String> =
        sqlx::query_scalar::<_, String>("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut source)
            .await?
            .into_iter()
            .filter(|t| copied(t))
            .collect();
    let order = tables_in_dependency_order(target).await?;
    let target_tables: BTreeSet<String> = order.iter().cloned().collect();
    if source_tables != target_tables {
        let only_source: Vec<_> = source_tables.difference(&target_tables).collect();
        let only_target: Vec<_> = target_tables.difference(&source_tables).collect();
        return Err(refuse(format!(
            "the two schemas differ (tables only in SQLite: {only_source:?}; only in PostgreSQL: {only_target:?}); \
             start each with this release once so both are at its schema"
        )));
    }
    // One read transaction: the copy is one consistent snapshot of the source.
    sqlx::query("BEGIN").execute(&mut source).await?;
    let mut tx = target.begin().await?;
    let mut copied = Vec::new();
    for table in &order {
        let columns = pg_columns(&mut tx, table).await?;
        let source_columns: BTreeSet<String> = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
            "SELECT name FROM pragma_table_info('{table}')"
        )))
        .fetch_all(&mut source)
        .await?
        .into_iter()
        .collect();
        let target_columns: BTreeSet<String> = columns.iter().map(|c| c.name.clone()).collect();
        if source_columns != target_columns {
            return Err(refuse(format!(
                "table {table}: the columns differ (SQLite {source_columns:?}, PostgreSQL {target_columns:?})"
            )));
        }
        let already: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&mut *tx)
            .await?;
        if already > 0 {
            return Err(refuse(format!(
                "the PostgreSQL database already holds data ({already} rows in {table}); migrate into a new, empty database"
            )));
        }
        let n = copy_table(&mut source, &mut tx, table, &columns).await?;
        let landed: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&mut *tx)
            .await?;
        if landed as u64 != n {
            return Err(refuse(format!("table {table}: {n} rows read but {landed} in PostgreSQL")));
        }
        copied.push((table.clone(), n));
    }
    // Identity columns go on from the highest id copied.
    let identities: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND is_identity = 'YES'",
    )
    .fetch_all(&mut *tx)
    .await?;
    for (table, column) in identities {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), GREATEST((SELECT MAX({column}) FROM {table}), 1), \
             (SELECT MAX({column}) FROM {table}) IS NOT NULL)"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let _ = sqlx::query("COMMIT").execute(&mut source).await;
    let _ = source.close().await;
    Ok(copied)
}

/// The tables of the PostgreSQL schema (but the migrations'), each after the tables it refers to.
async fn tables_in_dependency_order(target: &PgPool) -> StoreResult<Vec<String>> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name",
    )
    .fetch_all(target)
    .await?;
    let references: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c \
         JOIN pg_namespace n ON n.oid = c.connamespace WHERE c.contype = 'f' AND n.nspname = current_schema()",
    )
    .fetch_all(target)
    .await?;
    let mut needs: BTreeMap<String, BTreeSet<String>> =
        tables.iter().filter(|t| copied(t)).map(|t| (t.clone(), BTreeSet::new())).collect();
    for (table, referenced) in references {
        if table != referenced
            && let Some(set) = needs.get_mut(&table)
        {
            set.insert(referenced);
        }
    }
    let mut order = Vec::new();
    while !needs.is_empty() {
        let ready: Vec<String> = needs.iter().filter(|(_, n)| n.is_empty()).map(|(t, _)| t.clone()).collect();
        if ready.is_empty() {
            return Err(StoreError::Internal(format!("the tables' references form a cycle: {:?}", needs.keys())));
        }
        for table in ready {
            needs.remove(&table);
            for n in needs.values_mut() {
                n.remove(&table);
            }
            order.push(table);
        }
    }
    Ok(order)
}

async fn pg_columns(tx: &mut sqlx::PgConnection, table: &str) -> StoreResult<Vec<Column>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *tx)
    .await?;
    rows.into_iter()
        .map(|(name, pg_type)| match Kind::of(&pg_type) {
            Some(kind) => Ok(Column { name, kind }),
            None => Err(StoreError::Internal(format!("{table}.{name}: cannot copy a column of type {pg_type}"))),
        })
        .collect()
}

/// Rows per INSERT: PostgreSQL takes at most 65,535 parameters per statement.
fn rows_per_insert(columns: usize) -> usize {
    (60_000 / columns.max(1)).clamp(1, 1000)
}

async fn copy_table(
    source: &mut SqliteConnection,
    tx: &mut sqlx::PgConnection,
    table: &str,
    columns: &[Column],
) -> StoreResult<u64> {
    let names = columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
    let overriding = if has_identity(tx, table).await? { " OVERRIDING SYSTEM VALUE" } else { "" };
    let per_insert = rows_per_insert(columns.len());
    // Streamed, a few hundred rows at a time: a million requests never sit in memory at once.
    let select = format!("SELECT {names} FROM {table}");
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(&mut *source);
    let mut copied = 0u64;
    let mut chunk: Vec<SqliteRow> = Vec::with_capacity(per_insert);
    loop {
        let next = rows.try_next().await?;
        let done = next.is_none();
        chunk.extend(next);
        if chunk.len() < per_insert && !done {
            continue;
        }
        if chunk.is_empty() {
            break;
        }
        let mut args = PgArguments::default();
        let mut tuples = Vec::with_capacity(chunk.len());
        let mut n = 0;
        for row in &chunk {
            let mut marks = Vec::with_capacity(columns.len());
            for (i, column) in columns.iter().enumerate() {
                n += 1;
                marks.push(format!("${n}"));
                bind(&mut args, row, i, column)
                    .map_err(|e| StoreError::Internal(format!("{table}.{}: {e}", column.name)))?;
            }
            tuples.push(format!("({})", marks.join(", ")));
        }
        let sql = format!("INSERT INTO {table} ({names}){overriding} VALUES {}", tuples.join(", "));
        sqlx::query_with(sqlx::AssertSqlSafe(sql), args).execute(&mut *tx).await?;
        copied += chunk.len() as u64;
        chunk.clear();
        if done {
            break;
        }
    }
    Ok(copied)
}

async fn has_identity(tx: &mut sqlx::PgConnection, table: &str) -> StoreResult<bool> {
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1 AND is_identity = 'YES'",
    )
    .bind(table)
    .fetch_one(&mut *tx)
    .await?
        > 0)
}

/// Binds column `i` of a SQLite row as the PostgreSQL type of `column`.
fn bind(args: &mut PgArguments, row: &SqliteRow, i: usize, column: &Column) -> Result<(), String> {
    let err = |e: sqlx::Error| e.to_string();
    let added = match column.kind {
        Kind::BigInt => args.add(row.try_get::<Option<i64>, _>(i).map_err(err)?),
        Kind::Int => {
            let v = row.try_get::<Option<i64>, _>(i).map_err(err)?;
            args.add(v.map(i32::try_from).transpose().map_err(|e| e.to_string())?)
        }
        Kind::SmallInt => {
            let v = row.try_get::<Option<i64>, _>(i).map_err(err)?;
            args.add(v.map(i16::try_from).transpose().map_err(|e| e.to_string())?)
        }
        Kind::Bool => args.add(row.try_get::<Option<i64>, _>(i).map_err(err)?.map(|v| v != 0)),
        Kind::Text => args.add(row.try_get::<Option<String>, _>(i).map_err(err)?),
        Kind::Bytes => args.add(row.try_get::<Option<Vec<u8>>, _>(i).map_err(err)?),
    };
    added.map_err(|e| e.to_string())
}
