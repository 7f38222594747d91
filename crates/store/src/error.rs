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
    let Some(code) = err.code() else { return false };
    // SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6) and their extended codes, after busy_timeout.
    // PostgreSQL: connection exceptions (08...), shutdown or start-up in progress (57P..),
    // insufficient resources (53...), serialization failures and deadlocks (40001, 40P01).
    matches!(code.as_ref(), "5" | "6" | "517" | "262" | "40001" | "40P01")
        || code.starts_with("08")
        || code.starts_with("57P")
        || code.starts_with("53")
}

/// Shorthand for storage results.
pub type StoreResult<T> = Result<T, StoreError>;
