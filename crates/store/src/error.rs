//! Storage errors: either the database cannot be reached right now, or something is broken.

/// What can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable, busy or shutting down; retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A bug or corruption: stored data did not have the expected shape, or a query failed.
    #[error("storage failure: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => Self::Unavailable(err.to_string()),
            sqlx::Error::Database(db) if is_transient(db.as_ref()) => Self::Unavailable(err.to_string()),
            _ => Self::Internal(err.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Self::Internal(format!("migration failed: {err}"))
    }
}

/// Errors that say "not now" rather than "wrong": worth a 503 and a retry.
fn is_transient(err: &dyn sqlx::error::DatabaseError) -> bool {
    err.code().is_some_and(|code| transient_code(&code))
}

fn transient_code(code: &str) -> bool {
    // SQLite's codes are numbers below 10,000 whose low byte is the primary code: SQLITE_BUSY (5)
    // and SQLITE_LOCKED (6) after busy_timeout, SQLITE_FULL (13: the disk is full) and
    // SQLITE_IOERR (10), with their extended codes. PostgreSQL's are five characters:
    // connection exceptions (08...), shutdown or start-up in progress (57P..), insufficient
    // resources such as a full disk (53...), serialization failures and deadlocks (40001, 40P01).
    if code.len() < 5 {
        return code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6 | 10 | 13));
    }
    matches!(code, "40001" | "40P01") || code.starts_with("08") || code.starts_with("57P") || code.starts_with("53")
}

/// Shorthand for storage results.
pub type StoreResult<T> = Result<T, StoreError>;

/// Passes a transaction's result through; when it failed, the pooled connection is closed
/// rather than reused. A write that failed for want of the database (a full disk, an I/O
/// error) can leave a SQLite connection holding the write lock, which would stop every later
/// writer until a restart; a closed connection holds nothing.
pub(crate) fn forget_on_error<DB: sqlx::Database, T>(
    conn: &mut sqlx::pool::PoolConnection<DB>,
    result: StoreResult<T>,
) -> StoreResult<T> {
    if result.is_err() {
        conn.close_on_drop();
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn not_now_is_told_from_wrong() {
        for code in ["5", "6", "517", "262", "13", "10", "778", "1290", "08006", "57P01", "53100", "40001", "40P01"] {
            assert!(super::transient_code(code), "{code} is worth a retry");
        }
        for code in ["1", "19", "2067", "787", "11", "23505", "42P01", "22P02", "XX000"] {
            assert!(!super::transient_code(code), "{code} is an error");
        }
    }
}
