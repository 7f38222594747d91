//! The SMS and WhatsApp channel's state: a project's Twilio connection, the short codes requests
//! were sent with to each number, the numbers that replied STOP, the inbound messages already
//! acted on, and people's phone numbers. The [`Sms`] trait, and [`impl_sms`], which implements it
//! for both backends with one SQL text.

use crate::StoreResult;
use async_trait::async_trait;
use countersign_core::event::Stamp;
use countersign_core::{RequestKind, Timestamp};

/// A project's connection to a Twilio account. The auth token is never shown back.
#[derive(Clone, PartialEq, Eq)]
pub struct TwilioConnection {
    pub project_id: String,
    /// `AC...`.
    pub account_sid: String,
    /// Authenticates every send, and signs every inbound webhook (`X-Twilio-Signature`).
    pub auth_token: String,
    /// The SMS sender, E.164 (`+15550001111`).
    pub from: String,
    /// The WhatsApp sender, E.164 without the `whatsapp:` prefix; without it nothing is sent by
    /// WhatsApp.
    pub whatsapp_from: Option<String>,
    pub connected_at: Timestamp,
}

impl std::fmt::Debug for TwilioConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioConnection")
            .field("project_id", &self.project_id)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<secret>")
            .field("from", &self.from)
            .field("whatsapp_from", &self.whatsapp_from)
            .finish()
    }
}

/// How a text message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Medium {
    Sms,
    Whatsapp,
}

impl Medium {
    /// The name stored, and the channel's name in decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "sms",
            Self::Whatsapp => "whatsapp",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Sms, Self::Whatsapp].into_iter().find(|m| m.as_str() == s)
    }
}

/// The code a request was sent to one number with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsCode {
    pub project_id: String,
    pub kind: RequestKind,
    pub call_id: String,
    pub medium: Medium,
    pub phone: String,
    pub code: String,
    pub created_at: Timestamp,
}

/// What setting a person's phone number did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneSet {
    Done,
    /// No person has that email.
    NoSuchPerson,
    /// Another person has that number already (their email).
    Taken(String),
}

/// Twilio connections, request codes, opt-outs, inbound replay protection and people's numbers.
#[async_trait]
pub trait Sms: Send + Sync {
    /// Connects a project (replacing an earlier connection).
    async fn set_twilio_connection(&self, connection: &TwilioConnection, stamp: &Stamp) -> StoreResult<()>;
    /// A project's connection.
    async fn twilio_connection(&self, project_id: &str) -> StoreResult<Option<TwilioConnection>>;
    /// The connections that send from this number (SMS or WhatsApp sender), oldest first.
    async fn twilio_connections_to(&self, number: &str) -> StoreResult<Vec<TwilioConnection>>;
    /// Every project's connection, oldest first.
    async fn twilio_connections(&self) -> StoreResult<Vec<TwilioConnection>>;
    /// Disconnects a project; `false` if it was not connected.
    async fn remove_twilio_connection(&self, project_id: &str, stamp: &Stamp) -> StoreResult<bool>;

    /// The code of a request for one number: the one it was given before, or a new one, unique
    /// among the codes of that number's pending requests (handed out in turn from a counter per
    /// number that starts at `start`, 1000 to 9999).
    async fn sms_code(
        &self,
        request: (&str, RequestKind, &str),
        medium: Medium,
        phone: &str,
        start: u16,
        now: Timestamp,
    ) -> StoreResult<String>;
    /// The codes of the pending requests sent to this number by this medium, in these projects,
    /// oldest first.
    async fn open_sms_codes(&self, phone: &str, medium: Medium, projects: &[String]) -> StoreResult<Vec<SmsCode>>;
    /// The newest request sent to this number by this medium with this code, pending or not.
    async fn sms_code_lookup(
        &self,
        phone: &str,
        medium: Medium,
        code: &str,
        projects: &[String],
    ) -> StoreResult<Option<SmsCode>>;

    /// Records that a number replied STOP (`true`) or START (`false`).
    async fn set_sms_opt_out(&self, phone: &str, medium: Medium, opted_out: bool, at: Timestamp) -> StoreResult<()>;
    /// Whether a number replied STOP (and not START since).
    async fn sms_opted_out(&self, phone: &str, medium: Medium) -> StoreResult<bool>;

    /// Remembers an inbound message; `false` if it was seen before (a replayed webhook). Forgets
    /// those received before `forget_before`.
    async fn first_twilio_message(
        &self,
        message_sid: &str,
        now: Timestamp,
        forget_before: Timestamp,
    ) -> StoreResult<bool>;

    /// Sets (or with `None` clears) a person's phone number (E.164).
    async fn set_user_phone(&self, email: &str, phone: Option<&str>, stamp: &Stamp) -> StoreResult<PhoneSet>;
    /// The person (id and email) with this phone number, if enabled.
    async fn user_by_phone(&self, phone: &str) -> StoreResult<Option<(String, String)>>;
    /// A person's phone number.
    async fn user_phone(&self, email: &str) -> StoreResult<Option<String>>;
}

/// Implements [`Sms`] for a backend's store (a struct with a `pool: sqlx::Pool<$db>`).
macro_rules! impl_sms {
    ($store:ty, $db:ty) => {
        const _: () = {
            use crate::sms::{Medium, PhoneSet, Sms, SmsCode, TwilioConnection};
            use crate::{StoreError, StoreResult};
            use countersign_core::event::{ProjectEventBody, Stamp};
            use countersign_core::{RequestKind, Timestamp};
            use sqlx::Row;

            const CONNECTION: &str = "SELECT project_id, account_sid, auth_token, from_number, whatsapp_from, \
                 connected_at FROM twilio_connections";
            const CODE: &str = "SELECT c.project_id, c.kind, c.call_id, c.medium, c.phone, c.code, c.created_at \
                 FROM sms_codes c JOIN requests r ON r.project_id = c.project_id AND r.kind = c.kind \
                 AND r.call_id = c.call_id";

            fn connection(
                ring: &crate::secrets::Keyring,
                row: &<$db as sqlx::Database>::Row,
            ) -> StoreResult<TwilioConnection> {
                let project_id: String = row.try_get("project_id")?;
                let place = crate::secrets::place("twilio_connections", "auth_token", &project_id);
                let auth_token = ring.open(&place, row.try_get("auth_token")?)?;
                Ok(TwilioConnection {
                    project_id,
                    account_sid: row.try_get("account_sid")?,
                    auth_token,
                    from: row.try_get("from_number")?,
                    whatsapp_from: row.try_get("whatsapp_from")?,
                    connected_at: Timestamp::from_micros(row.try_get("connected_at")?),
                })
            }

            fn code(row: &<$db as sqlx::Database>::Row) -> StoreResult<SmsCode> {
                let kind: String = row.try_get("kind")?;
                let medium: String = row.try_get("medium")?;
                Ok(SmsCode {
                    project_id: row.try_get("project_id")?,
                    kind: RequestKind::parse(&kind)
                        .ok_or_else(|| StoreError::Internal(format!("bad request kind {kind}")))?,
                    call_id: row.try_get("call_id")?,
                    medium: Medium::parse(&medium)
                        .ok_or_else(|| StoreError::Internal(format!("bad medium {medium}")))?,
                    phone: row.try_get("phone")?,
                    code: row.try_get("code")?,
                    created_at: Timestamp::from_micros(row.try_get("created_at")?),
                })
            }

            /// `$first, $first+1, ...` for `n` values.
            fn placeholders(first: usize, n: usize) -> String {
                (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
            }

            #[async_trait::async_trait]
            impl Sms for $store {
                async fn set_twilio_connection(&self, c: &TwilioConnection, stamp: &Stamp) -> StoreResult<()> {
                    let mut tx = self.begin_change().await?;
                    sqlx::query(
                        "INSERT INTO twilio_connections (project_id, account_sid, auth_token, from_number, \
                         whatsapp_from, connected_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (project_id) \
                         DO UPDATE SET account_sid = excluded.account_sid, auth_token = excluded.auth_token, \
                         from_number = excluded.from_number, whatsapp_from = excluded.whatsapp_from, \
                         connected_at = excluded.connected_at",
                    )
                    .bind(&c.project_id)
                    .bind(&c.account_sid)
                    .bind(
                        self.keyring.seal(
                            &crate::secrets::place("twilio_connections", "auth_token", &c.project_id),
                            &c.auth_token,
                        ),
                    )
                    .bind(&c.from)
                    .bind(&c.whatsapp_from)
                    .bind(c.connected_at.as_micros())
                    .execute(&mut *tx)
                    .await?;
                    let body = ProjectEventBody::ConnectionSet {
                        channel: "twilio".into(),
                        detail: format!(
                            "account {}, from {}{}",
                            c.account_sid,
                            c.from,
                            c.whatsapp_from.as_deref().map(|w| format!(", WhatsApp from {w}")).unwrap_or_default()
                        ),
                    };
                    Self::log_change(&mut tx, &[stamp.event(&c.project_id, body)]).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn twilio_connection(&self, project_id: &str) -> StoreResult<Option<TwilioConnection>> {
                    let sql = format!("{CONNECTION} WHERE project_id = $1");
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(project_id).fetch_optional(&self.pool).await?;
                    row.as_ref().map(|row| connection(&self.keyring, row)).transpose()
                }

                async fn twilio_connections(&self) -> StoreResult<Vec<TwilioConnection>> {
                    let sql = format!("{CONNECTION} ORDER BY connected_at");
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
                    rows.iter().map(|row| connection(&self.keyring, row)).collect()
                }

                async fn twilio_connections_to(&self, number: &str) -> StoreResult<Vec<TwilioConnection>> {
                    let sql =
                        format!("{CONNECTION} WHERE from_number = $1 OR whatsapp_from = $1 ORDER BY connected_at");
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(number).fetch_all(&self.pool).await?;
                    rows.iter().map(|row| connection(&self.keyring, row)).collect()
                }

                async fn remove_twilio_connection(&self, project_id: &str, stamp: &Stamp) -> StoreResult<bool> {
                    let mut tx = self.begin_change().await?;
                    let done = sqlx::query("DELETE FROM twilio_connections WHERE project_id = $1")
                        .bind(project_id)
                        .execute(&mut *tx)
                        .await?;
                    let removed = done.rows_affected() == 1;
                    if removed {
                        let body = ProjectEventBody::ConnectionRemoved { channel: "twilio".into() };
                        Self::log_change(&mut tx, &[stamp.event(project_id, body)]).await?;
                    }
                    tx.commit().await?;
                    Ok(removed)
                }

                async fn sms_code(
                    &self,
                    (project_id, kind, call_id): (&str, RequestKind, &str),
                    medium: Medium,
                    phone: &str,
                    start: u16,
                    now: Timestamp,
                ) -> StoreResult<String> {
                    const MINE: &str = "SELECT code FROM sms_codes WHERE project_id = $1 AND kind = $2 \
                         AND call_id = $3 AND medium = $4 AND phone = $5";
                    let mine = || {
                        sqlx::query_scalar::<_, String>(MINE)
                            .bind(project_id)
                            .bind(kind.as_str())
                            .bind(call_id)
                            .bind(medium.as_str())
                            .bind(phone)
                    };
                    if let Some(code) = mine().fetch_optional(&self.pool).await? {
                        return Ok(code);
                    }
                    // At most 9,000 codes per number: past as many pending requests, none is free.
                    for _ in 0..9_000 {
                        let next: i64 = sqlx::query_scalar(
                            "INSERT INTO sms_numbers (phone, next_code) VALUES ($1, $2) ON CONFLICT (phone) DO UPDATE \
                             SET next_code = CASE WHEN sms_numbers.next_code >= 9999 THEN 1000 \
                             ELSE sms_numbers.next_code + 1 END RETURNING next_code",
                        )
                        .bind(phone)
                        .bind(i64::from(start.clamp(1000, 9999)))
                        .fetch_one(&self.pool)
                        .await?;
                        let candidate = format!("{next:04}");
                        let taken: i64 = sqlx::query_scalar(
                            "SELECT count(*) FROM sms_codes c JOIN requests r ON r.project_id = c.project_id \
                             AND r.kind = c.kind AND r.call_id = c.call_id \
                             WHERE c.phone = $1 AND c.code = $2 AND r.responded_at IS NULL",
                        )
                        .bind(phone)
                        .bind(&candidate)
                        .fetch_one(&self.pool)
                        .await?;
                        if taken > 0 {
                            continue;
                        }
                        sqlx::query(
                            "INSERT INTO sms_codes (project_id, kind, call_id, medium, phone, code, created_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7) \
                             ON CONFLICT (project_id, kind, call_id, medium, phone) DO NOTHING",
                        )
                        .bind(project_id)
                        .bind(kind.as_str())
                        .bind(call_id)
                        .bind(medium.as_str())
                        .bind(phone)
                        .bind(&candidate)
                        .bind(now.as_micros())
                        .execute(&self.pool)
                        .await?;
                        // Another attempt may have given it one first: that one stands.
                        return mine()
                            .fetch_optional(&self.pool)
                            .await?
                            .ok_or_else(|| StoreError::Internal(format!("the code of {call_id} vanished")));
                    }
                    Err(StoreError::Internal(format!("no free code for {phone}: 9,000 requests to it are pending")))
                }

                async fn open_sms_codes(
                    &self,
                    phone: &str,
                    medium: Medium,
                    projects: &[String],
                ) -> StoreResult<Vec<SmsCode>> {
                    if projects.is_empty() {
                        return Ok(Vec::new());
                    }
                    let sql = format!(
                        "{CODE} WHERE c.phone = $1 AND c.medium = $2 AND r.responded_at IS NULL \
                         AND c.project_id IN ({}) ORDER BY c.created_at, c.code",
                        placeholders(3, projects.len())
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(phone).bind(medium.as_str());
                    for project in projects {
                        query = query.bind(project);
                    }
                    query.fetch_all(&self.pool).await?.iter().map(code).collect()
                }

                async fn sms_code_lookup(
                    &self,
                    phone: &str,
                    medium: Medium,
                    wanted: &str,
                    projects: &[String],
                ) -> StoreResult<Option<SmsCode>> {
                    if projects.is_empty() {
                        return Ok(None);
                    }
                    let sql = format!(
                        "{CODE} WHERE c.phone = $1 AND c.medium = $2 AND c.code = $3 AND c.project_id IN ({}) \
                         ORDER BY c.created_at DESC LIMIT 1",
                        placeholders(4, projects.len())
                    );
                    let mut query =
                        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(phone).bind(medium.as_str()).bind(wanted);
                    for project in projects {
                        query = query.bind(project);
                    }
                    query.fetch_optional(&self.pool).await?.as_ref().map(code).transpose()
                }

                async fn set_sms_opt_out(
                    &self,
                    phone: &str,
                    medium: Medium,
                    opted_out: bool,
                    at: Timestamp,
                ) -> StoreResult<()> {
                    let query = if opted_out {
                        sqlx::query(
                            "INSERT INTO sms_opt_outs (phone, medium, opted_out_at) VALUES ($1, $2, $3) \
                             ON CONFLICT (phone, medium) DO NOTHING",
                        )
                        .bind(phone)
                        .bind(medium.as_str())
                        .bind(at.as_micros())
                    } else {
                        sqlx::query("DELETE FROM sms_opt_outs WHERE phone = $1 AND medium = $2")
                            .bind(phone)
                            .bind(medium.as_str())
                    };
                    query.execute(&self.pool).await?;
                    Ok(())
                }

                async fn sms_opted_out(&self, phone: &str, medium: Medium) -> StoreResult<bool> {
                    let found: i64 =
                        sqlx::query_scalar("SELECT count(*) FROM sms_opt_outs WHERE phone = $1 AND medium = $2")
                            .bind(phone)
                            .bind(medium.as_str())
                            .fetch_one(&self.pool)
                            .await?;
                    Ok(found > 0)
                }

                async fn first_twilio_message(
                    &self,
                    message_sid: &str,
                    now: Timestamp,
                    forget_before: Timestamp,
                ) -> StoreResult<bool> {
                    sqlx::query("DELETE FROM twilio_inbound WHERE received_at < $1")
                        .bind(forget_before.as_micros())
                        .execute(&self.pool)
                        .await?;
                    let done = sqlx::query(
                        "INSERT INTO twilio_inbound (message_sid, received_at) VALUES ($1, $2) \
                         ON CONFLICT (message_sid) DO NOTHING",
                    )
                    .bind(message_sid)
                    .bind(now.as_micros())
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn set_user_phone(
                    &self,
                    email: &str,
                    phone: Option<&str>,
                    stamp: &Stamp,
                ) -> StoreResult<PhoneSet> {
                    let mut tx = self.begin_change().await?;
                    if let Some(phone) = phone {
                        let other: Option<String> =
                            sqlx::query_scalar("SELECT email FROM users WHERE phone = $1 AND email <> $2")
                                .bind(phone)
                                .bind(email)
                                .fetch_optional(&mut *tx)
                                .await?;
                        if let Some(other) = other {
                            return Ok(PhoneSet::Taken(other));
                        }
                    }
                    let Some((current,)): Option<(Option<String>,)> =
                        sqlx::query_as("SELECT phone FROM users WHERE email = $1")
                            .bind(email)
                            .fetch_optional(&mut *tx)
                            .await?
                    else {
                        return Ok(PhoneSet::NoSuchPerson);
                    };
                    if current.as_deref() == phone {
                        // Nothing changes, and nothing is logged.
                        return Ok(PhoneSet::Done);
                    }
                    sqlx::query("UPDATE users SET phone = $1 WHERE email = $2")
                        .bind(phone)
                        .bind(email)
                        .execute(&mut *tx)
                        .await?;
                    let projects: Vec<(String,)> = sqlx::query_as(crate::people::SELECT_PROJECT_IDS_OF_EMAIL)
                        .bind(email)
                        .fetch_all(&mut *tx)
                        .await?;
                    let body =
                        ProjectEventBody::PersonPhoneSet { email: email.to_owned(), phone: phone.map(str::to_owned) };
                    let events: Vec<_> = projects.iter().map(|(p,)| stamp.event(p, body.clone())).collect();
                    Self::log_change(&mut tx, &events).await?;
                    tx.commit().await?;
                    Ok(PhoneSet::Done)
                }

                async fn user_by_phone(&self, phone: &str) -> StoreResult<Option<(String, String)>> {
                    Ok(sqlx::query_as("SELECT id, email FROM users WHERE phone = $1 AND disabled_at IS NULL")
                        .bind(phone)
                        .fetch_optional(&self.pool)
                        .await?)
                }

                async fn user_phone(&self, email: &str) -> StoreResult<Option<String>> {
                    Ok(sqlx::query_scalar::<_, Option<String>>("SELECT phone FROM users WHERE email = $1")
                        .bind(email)
                        .fetch_optional(&self.pool)
                        .await?
                        .flatten())
                }
            }
        };
    };
}
pub(crate) use impl_sms;
