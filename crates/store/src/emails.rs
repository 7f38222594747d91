//! The email outbox (rows routed from the event log, like webhook deliveries) and the
//! server-wide keys; queries both backends share.

use countersign_core::{RequestKind, Timestamp};

/// An email to send, or sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailMessage {
    /// The Message-ID, with its angle brackets.
    pub id: String,
    pub project_id: String,
    pub kind: RequestKind,
    pub call_id: String,
    /// `request` or `escalation`.
    pub purpose: String,
    /// For an escalation, which one (1 = the first).
    pub event_seq: u32,
    pub status: String,
    pub attempts: u32,
    /// Everyone it went to, once sent.
    pub recipients: Vec<String>,
    pub last_error: Option<String>,
}

/// An email claimed by one worker.
#[derive(Debug, Clone)]
pub struct ClaimedEmail {
    pub message: EmailMessage,
    pub lease: String,
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EmailRow {
    id: String,
    project_id: String,
    kind: String,
    call_id: String,
    purpose: String,
    event_seq: i64,
    status: String,
    attempts: i64,
    recipients: Option<String>,
    last_error: Option<String>,
}

impl From<EmailRow> for EmailMessage {
    fn from(r: EmailRow) -> Self {
        Self {
            id: r.id,
            project_id: r.project_id,
            kind: RequestKind::parse(&r.kind).unwrap_or(RequestKind::FunctionCall),
            call_id: r.call_id,
            purpose: r.purpose,
            event_seq: u32::try_from(r.event_seq).unwrap_or(0),
            status: r.status,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            recipients: r.recipients.and_then(|r| serde_json::from_str(&r).ok()).unwrap_or_default(),
            last_error: r.last_error,
        }
    }
}

/// When an email is sent or given up on.
pub(crate) fn next_of(sent: bool, retry_at: Option<Timestamp>) -> (&'static str, Option<i64>) {
    match (sent, retry_at) {
        (true, _) => ("sent", None),
        (false, Some(at)) => ("pending", Some(at.as_micros())),
        (false, None) => ("failed", None),
    }
}

macro_rules! email_columns {
    () => {
        "id, project_id, kind, call_id, purpose, event_seq, status, attempts, recipients, last_error"
    };
}
pub(crate) use email_columns;

/// Defines the email and server-key queries over one pool type (see `webhook_queries`).
macro_rules! email_queries {
    ($pool:ty, $skip_locked:literal) => {
        use crate::StoreResult;
        use crate::emails::{ClaimedEmail, EmailMessage, EmailRow, email_columns, next_of};
        use countersign_core::Timestamp;

        pub(super) async fn claim(
            pool: &$pool,
            now: Timestamp,
            lease_until: Timestamp,
            limit: u32,
        ) -> StoreResult<Vec<ClaimedEmail>> {
            let lease = countersign_core::session::random_text(24);
            let rows: Vec<EmailRow> = sqlx::query_as(concat!(
                "UPDATE email_messages SET lease = $1, lease_until = $2 WHERE id IN (SELECT id FROM email_messages \
                 WHERE status = 'pending' AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
                 ORDER BY next_attempt_at LIMIT $4 ",
                $skip_locked,
                ") RETURNING ",
                email_columns!()
            ))
            .bind(&lease)
            .bind(lease_until.as_micros())
            .bind(now.as_micros())
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(|r| ClaimedEmail { message: r.into(), lease: lease.clone() }).collect())
        }

        pub(super) async fn finish(
            pool: &$pool,
            claimed: &ClaimedEmail,
            recipients: &[String],
            error: Option<&str>,
            retry_at: Option<Timestamp>,
        ) -> StoreResult<bool> {
            let (status, next) = next_of(error.is_none(), retry_at);
            let recipients = serde_json::to_string(recipients).expect("strings serialize");
            let done = sqlx::query(
                "UPDATE email_messages SET status = $1, attempts = attempts + 1, next_attempt_at = $2, lease = NULL, \
                 lease_until = NULL, recipients = $3, last_error = $4, \
                 sent_at = CASE WHEN $1 = 'sent' THEN $5 ELSE sent_at END WHERE id = $6 AND lease = $7",
            )
            .bind(status)
            .bind(next)
            .bind(recipients)
            .bind(error)
            .bind(Timestamp::now().as_micros())
            .bind(&claimed.message.id)
            .bind(&claimed.lease)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        pub(super) async fn by_message_ids(pool: &$pool, ids: &[String]) -> StoreResult<Option<EmailMessage>> {
            for id in ids {
                let row: Option<EmailRow> =
                    sqlx::query_as(concat!("SELECT ", email_columns!(), " FROM email_messages WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(pool)
                        .await?;
                if let Some(row) = row {
                    return Ok(Some(row.into()));
                }
            }
            Ok(None)
        }

        pub(super) async fn of_request(pool: &$pool, project_id: &str, kind: &str, call_id: &str) -> StoreResult<Vec<EmailMessage>> {
            let rows: Vec<EmailRow> = sqlx::query_as(concat!(
                "SELECT ",
                email_columns!(),
                " FROM email_messages WHERE project_id = $1 AND kind = $2 AND call_id = $3 ORDER BY created_at"
            ))
            .bind(project_id)
            .bind(kind)
            .bind(call_id)
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        pub(super) async fn next_due(pool: &$pool) -> StoreResult<Option<Timestamp>> {
            let row: Option<(Option<i64>,)> = sqlx::query_as(
                "SELECT MIN(COALESCE(CASE WHEN lease_until > next_attempt_at THEN lease_until END, next_attempt_at)) \
                 FROM email_messages WHERE status = 'pending'",
            )
            .fetch_optional(pool)
            .await?;
            Ok(row.and_then(|(at,)| at).map(Timestamp::from_micros))
        }

        pub(super) async fn set_default_email(pool: &$pool, project_id: &str, address: Option<&str>) -> StoreResult<bool> {
            let done = sqlx::query("UPDATE projects SET default_email = $1 WHERE id = $2")
                .bind(address)
                .bind(project_id)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        pub(super) async fn default_email(pool: &$pool, project_id: &str) -> StoreResult<Option<String>> {
            let row: Option<(Option<String>,)> =
                sqlx::query_as("SELECT default_email FROM projects WHERE id = $1").bind(project_id).fetch_optional(pool).await?;
            Ok(row.and_then(|(a,)| a))
        }

        pub(super) async fn set_inbound_email_secret(pool: &$pool, project_id: &str, hash: Option<&[u8]>) -> StoreResult<bool> {
            let done = sqlx::query("UPDATE projects SET inbound_email_secret_hash = $1 WHERE id = $2")
                .bind(hash)
                .bind(project_id)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        pub(super) async fn project_id_by_inbound_email_secret(pool: &$pool, hash: &[u8]) -> StoreResult<Option<String>> {
            let row: Option<(String,)> = sqlx::query_as("SELECT id FROM projects WHERE inbound_email_secret_hash = $1")
                .bind(hash)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|(id,)| id))
        }


        pub(super) async fn server_key(pool: &$pool, name: &str, fresh: &str) -> StoreResult<String> {
            sqlx::query("INSERT INTO server_keys (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .bind(fresh)
                .bind(Timestamp::now().as_micros())
                .execute(pool)
                .await?;
            let (value,): (String,) =
                sqlx::query_as("SELECT value FROM server_keys WHERE name = $1").bind(name).fetch_one(pool).await?;
            Ok(value)
        }
    };
}
pub(crate) use email_queries;
