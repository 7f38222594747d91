//! Online backups of the SQLite database, their restore, and the lock that tells a database in
//! use by a server from one at rest.
//!
//! A backup is `VACUUM INTO` a new file: one read transaction, so it is a consistent snapshot of
//! every commit made before it began (and so of every write acknowledged before it began), taken
//! while the server goes on serving; the copy is then synced and renamed into place, so a backup
//! file at its final name is always whole. A restore checks the file, refuses while a server
//! holds the database's lock, moves any existing database aside (never deleting it), and puts
//! the copy in place with the same sync-then-rename.

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Why a backup or restore did not happen; the message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BackupError(pub String);

impl BackupError {
    fn io(what: &str, path: &Path, err: io::Error) -> Self {
        Self(format!("{what} {}: {err}", path.display()))
    }

    fn sql(what: &str, path: &Path, err: sqlx::Error) -> Self {
        Self(format!("{what} {}: {err}", path.display()))
    }
}

/// What a backup or restore copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Bytes of the database file written.
    pub bytes: u64,
    /// Requests (approvals and questions) in it.
    pub requests: i64,
    /// Events in its audit log.
    pub events: i64,
    /// The newest migration applied to it.
    pub schema_version: i64,
    /// The id of the master key its secrets are encrypted with (see [`crate::secrets`]).
    pub master_key_id: Option<String>,
}

/// The lock a server holds on its SQLite database for as long as it runs: an exclusive `flock`
/// on `<database>.lock`. The kernel drops it when the process ends, however it ends.
#[derive(Debug)]
pub struct LiveLock {
    _file: File,
}

impl LiveLock {
    /// Takes the lock of the database at `db`, or says that a server holds it.
    pub fn acquire(db: &Path) -> Result<Self, BackupError> {
        let path = lock_path(db);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| BackupError::io("cannot create", dir, e))?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| BackupError::io("cannot open the lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(BackupError(format!(
                "the database {} is in use by a running `countersign serve` (it holds {}); stop that server first",
                db.display(),
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(BackupError::io("cannot lock", &path, e)),
        }
    }
}

fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    db.with_file_name(name)
}

/// `<path><suffix>` beside `path`.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

async fn open_read_only(path: &Path) -> Result<SqliteConnection, BackupError> {
    if !path.is_file() {
        return Err(BackupError(format!("there is no database file at {}", path.display())));
    }
    SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| BackupError::sql("cannot open", path, e))
}

/// Checks that `path` is a whole Countersign database no newer than this binary, and counts it.
async fn inspect(path: &Path) -> Result<Summary, BackupError> {
    let mut conn = open_read_only(path).await?;
    let not_ours =
        |e: sqlx::Error| BackupError(format!("{} is not a Countersign database (or is damaged): {e}", path.display()));
    let (check,): (String,) = sqlx::query_as("PRAGMA quick_check").fetch_one(&mut conn).await.map_err(not_ours)?;
    if check != "ok" {
        return Err(BackupError(format!("{} is damaged: {check}", path.display())));
    }
    let (schema_version,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut conn)
            .await
            .map_err(not_ours)?;
    let known = super::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    if schema_version > known {
        return Err(BackupError(format!(
            "{} was made by a newer Countersign (schema {schema_version}; this one knows up to {known}); \
             use that release or a newer one",
            path.display()
        )));
    }
    let (requests,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM requests").fetch_one(&mut conn).await.map_err(not_ours)?;
    let events = if schema_version >= 10 {
        sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM events").fetch_one(&mut conn).await.map_err(not_ours)?.0
    } else {
        0
    };
    let master_key_id: Option<String> = sqlx::query_scalar("SELECT value FROM server_keys WHERE name = $1")
        .bind(crate::secrets::MASTER_KEY_ID)
        .fetch_optional(&mut conn)
        .await
        .map_err(not_ours)?;
    let _ = conn.close().await;
    let bytes = std::fs::metadata(path).map_err(|e| BackupError::io("cannot read", path, e))?.len();
    Ok(Summary { bytes, requests, events, schema_version, master_key_id })
}

/// Syncs `file`'s data and the directory entry that names it.
fn sync_file_and_dir(file: &Path) -> Result<(), BackupError> {
    File::open(file).and_then(|f| f.sync_all()).map_err(|e| BackupError::io("cannot sync", file, e))?;
    sync_dir_of(file)
}

fn sync_dir_of(file: &Path) -> Result<(), BackupError> {
    crate::sync_dir_of(file).map_err(|e| BackupError::io("cannot sync the directory of", file, e))
}

/// Writes a consistent copy of the database at `db` to the new file `dest`, while a server may be
/// using it. `dest` must not exist.
pub async fn backup(db: &Path, dest: &Path) -> Result<Summary, BackupError> {
    if dest.exists() {
        return Err(BackupError(format!("{} already exists; choose a new file name", dest.display())));
    }
    let partial = with_suffix(dest, ".partial");
    let _ = std::fs::remove_file(&partial);
    let mut conn = open_read_only(db).await?;
    let target = partial.to_str().ok_or_else(|| BackupError(format!("{} is not UTF-8", partial.display())))?;
    let copied = sqlx::query("VACUUM INTO ?").bind(target).execute(&mut conn).await;
    let _ = conn.close().await;
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(BackupError(format!("cannot write the backup {}: {e}", partial.display())));
    }
    let finished = async {
        // A backup holds what the database holds: readable by its owner only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| BackupError::io("cannot restrict", &partial, e))?;
        }
        sync_file_and_dir(&partial)?;
        let summary = inspect(&partial).await?;
        std::fs::rename(&partial, dest).map_err(|e| BackupError::io("cannot rename the backup to", dest, e))?;
        sync_dir_of(dest)?;
        Ok(summary)
    };
    let result = finished.await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// What [`restore`] did with the database it replaced.
#[derive(Debug)]
pub struct Restored {
    pub summary: Summary,
    /// Where the database that was there before now is, if there was one.
    pub moved_aside: Option<PathBuf>,
}

/// Puts the backup `from` in place as the database at `db`. Refuses while a server holds the
/// database; an existing database is moved aside (to `<db>.before-restore-<time>`) only with
/// `replace`, else refused.
pub async fn restore(from: &Path, db: &Path, replace: bool) -> Result<Restored, BackupError> {
    // A backup is one file; one with a WAL beside it is a live database, whose file alone is not
    // all of it.
    let wal = with_suffix(from, "-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Err(BackupError(format!(
            "{} has a write-ahead log beside it ({}): it is a database in use, not a backup; \
             make a backup of it with `countersign backup`",
            from.display(),
            wal.display()
        )));
    }
    let summary = inspect(from).await?;
    let _lock = LiveLock::acquire(db)?;
    let mut moved_aside = None;
    if db.exists() {
        if !replace {
            return Err(BackupError(format!(
                "a database already exists at {}; pass --replace to move it aside (it is kept, renamed) and restore",
                db.display()
            )));
        }
        // Fold its WAL into the file first, so the file moved aside holds every commit.
        let mut conn = SqliteConnectOptions::new()
            .filename(db)
            .busy_timeout(std::time::Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| BackupError::sql("cannot open", db, e))?;
        let (busy, log, checkpointed): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| BackupError::sql("cannot checkpoint", db, e))?;
        let _ = conn.close().await;
        // A checkpoint that could not finish leaves commits in the WAL: moving the file aside
        // without them would lose them.
        if busy != 0 || log != checkpointed {
            return Err(BackupError(format!(
                "{} is busy (another process has it open: {checkpointed} of {log} WAL frames folded in); \
                 stop what uses it and try again",
                db.display()
            )));
        }
        let stamp = stamp();
        let aside = with_suffix(db, &format!(".before-restore-{stamp}"));
        std::fs::rename(db, &aside).map_err(|e| BackupError::io("cannot move aside", db, e))?;
        moved_aside = Some(aside);
    }
    // A WAL or shared-memory file left beside the name would be replayed onto the restored file.
    for suffix in ["-wal", "-shm"] {
        let stale = with_suffix(db, suffix);
        match std::fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(BackupError::io("cannot remove", &stale, e)),
        }
    }
    let incoming = with_suffix(db, ".restoring");
    std::fs::copy(from, &incoming).map_err(|e| BackupError::io("cannot copy the backup to", &incoming, e))?;
    sync_file_and_dir(&incoming)?;
    std::fs::rename(&incoming, db).map_err(|e| BackupError::io("cannot rename the restored file to", db, e))?;
    sync_dir_of(db)?;
    Ok(Restored { summary, moved_aside })
}

/// `YYYYMMDDTHHMMSSZ` of now, for the name of a database moved aside.
fn stamp() -> String {
    countersign_core::Timestamp::now().to_rfc3339().replace(['-', ':'], "").chars().take(15).collect::<String>() + "Z"
}
