//! The Slack channel's state: a project's connection to a Slack app, the messages posted for each
//! request, claims, and the signatures of inbound requests already acted on. The [`Slack`] trait,
//! and [`impl_slack`], which implements it for both backends with one SQL text.

use crate::StoreResult;
use async_trait::async_trait;
use countersign_core::event::Stamp;
use countersign_core::{RequestKind, Timestamp};

/// A project's connection to a Slack app. The token and secret are never shown back.
#[derive(Clone, PartialEq, Eq)]
pub struct SlackConnection {
    pub project_id: String,
    /// The bot token (`xoxb-...`) that posts and updates messages.
    pub bot_token: String,
    /// The app's signing secret, which verifies every inbound request; without it nothing from
    /// Slack is accepted for the project.
    pub signing_secret: Option<String>,
    /// Where requests that name no channel are posted.
    pub default_channel: Option<String>,
    /// The workspace and bot, as `auth.test` said when connected.
    pub team_id: Option<String>,
    pub team_name: Option<String>,
    pub bot_user_id: Option<String>,
    /// Only Slack users whose Slack email belongs to a person of the project may decide.
    pub require_known_users: bool,
    pub connected_at: Timestamp,
}

impl std::fmt::Debug for SlackConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConnection")
            .field("project_id", &self.project_id)
            .field("bot_token", &"<secret>")
            .field("signing_secret", &self.signing_secret.as_ref().map(|_| "<secret>"))
            .field("default_channel", &self.default_channel)
            .field("team_id", &self.team_id)
            .field("bot_user_id", &self.bot_user_id)
            .field("require_known_users", &self.require_known_users)
            .finish()
    }
}

/// A message posted to Slack for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackMessage {
    pub project_id: String,
    pub kind: RequestKind,
    pub call_id: String,
    /// The channel Slack answered with (a DM's `D...` id when posted to a user id).
    pub channel_id: String,
    pub ts: String,
    /// The delivery that posted it.
    pub delivery_id: String,
    pub posted_at: Timestamp,
}

/// Someone's claim on a request: "X is looking at this".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestClaim {
    /// Who, as shown (a name, an email, or a Slack mention such as `<@U123>`).
    pub by: String,
    /// Where it was claimed, e.g. `slack`.
    pub channel: String,
    pub at: Timestamp,
}

/// Slack connections, posted messages, claims and inbound replay protection.
#[async_trait]
pub trait Slack: Send + Sync {
    /// Connects a project (replacing an earlier connection).
    async fn set_slack_connection(&self, connection: &SlackConnection, stamp: &Stamp) -> StoreResult<()>;
    /// A project's connection.
    async fn slack_connection(&self, project_id: &str) -> StoreResult<Option<SlackConnection>>;
    /// Every connection (an app's URL verification is checked against each signing secret).
    async fn slack_connections(&self) -> StoreResult<Vec<SlackConnection>>;
    /// Disconnects a project; `false` if it was not connected.
    async fn remove_slack_connection(&self, project_id: &str, stamp: &Stamp) -> StoreResult<bool>;

    /// Records a posted message (again: no change).
    async fn record_slack_message(&self, message: &SlackMessage) -> StoreResult<()>;
    /// The messages posted for a request, oldest first.
    async fn slack_messages_of(
        &self,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
    ) -> StoreResult<Vec<SlackMessage>>;
    /// The message at this channel and ts, if it is one of ours.
    async fn slack_message_at(&self, channel_id: &str, ts: &str) -> StoreResult<Option<SlackMessage>>;
    /// True while the Slack post of a request's creation is still to be made (pending).
    async fn slack_post_pending(&self, project_id: &str, kind: RequestKind, call_id: &str) -> StoreResult<bool>;

    /// Records a claim on a request (replacing an earlier one).
    async fn claim_request(
        &self,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
        claim: &RequestClaim,
    ) -> StoreResult<()>;
    /// The claim on a request, if any.
    async fn request_claim(
        &self,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
    ) -> StoreResult<Option<RequestClaim>>;

    /// Remembers an inbound request's signature until `expires_at`; `false` if it was seen
    /// before (a replay). Forgets signatures that expired before `now`.
    async fn first_use_of_signature(&self, signature: &str, expires_at: Timestamp, now: Timestamp)
    -> StoreResult<bool>;
}

/// Implements [`Slack`] for a backend's store (a struct with a `pool: sqlx::Pool<$db>`).
macro_rules! impl_slack {
    ($store:ty, $db:ty) => {
        const _: () = {
            use crate::slack::{RequestClaim, Slack, SlackConnection, SlackMessage};
            use crate::{StoreError, StoreResult};
            use countersign_core::event::{ProjectEventBody, Stamp};
            use countersign_core::{RequestKind, Timestamp};
            use sqlx::Row;

            const CONNECTION: &str = "SELECT project_id, bot_token, signing_secret, default_channel, team_id, \
                 team_name, bot_user_id, require_known_users, connected_at FROM slack_connections";
            const MESSAGE: &str =
                "SELECT channel_id, ts, project_id, kind, call_id, delivery_id, posted_at FROM slack_messages";

            fn connection(
                ring: &crate::secrets::Keyring,
                row: &<$db as sqlx::Database>::Row,
            ) -> StoreResult<SlackConnection> {
                use crate::secrets::place;
                let project_id: String = row.try_get("project_id")?;
                let bot_token = ring.open(&place("slack_connections", "bot_token", &project_id), row.try_get("bot_token")?)?;
                let signing_secret = ring.open_opt(
                    &place("slack_connections", "signing_secret", &project_id),
                    row.try_get("signing_secret")?,
                )?;
                Ok(SlackConnection {
                    project_id,
                    bot_token,
                    signing_secret,
                    default_channel: row.try_get("default_channel")?,
                    team_id: row.try_get("team_id")?,
                    team_name: row.try_get("team_name")?,
                    bot_user_id: row.try_get("bot_user_id")?,
                    require_known_users: row.try_get::<i64, _>("require_known_users")? != 0,
                    connected_at: Timestamp::from_micros(row.try_get("connected_at")?),
                })
            }

            fn message(row: &<$db as sqlx::Database>::Row) -> StoreResult<SlackMessage> {
                let kind: String = row.try_get("kind")?;
                Ok(SlackMessage {
                    channel_id: row.try_get("channel_id")?,
                    ts: row.try_get("ts")?,
                    project_id: row.try_get("project_id")?,
                    kind: RequestKind::parse(&kind)
                        .ok_or_else(|| StoreError::Internal(format!("bad request kind {kind}")))?,
                    call_id: row.try_get("call_id")?,
                    delivery_id: row.try_get("delivery_id")?,
                    posted_at: Timestamp::from_micros(row.try_get("posted_at")?),
                })
            }

            #[async_trait::async_trait]
            impl Slack for $store {
                async fn set_slack_connection(&self, c: &SlackConnection, stamp: &Stamp) -> StoreResult<()> {
                    let mut tx = self.begin_change().await?;
                    sqlx::query(
                        "INSERT INTO slack_connections (project_id, bot_token, signing_secret, default_channel, \
                         team_id, team_name, bot_user_id, require_known_users, connected_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (project_id) DO UPDATE SET \
                         bot_token = excluded.bot_token, signing_secret = excluded.signing_secret, \
                         default_channel = excluded.default_channel, team_id = excluded.team_id, \
                         team_name = excluded.team_name, bot_user_id = excluded.bot_user_id, \
                         require_known_users = excluded.require_known_users, connected_at = excluded.connected_at",
                    )
                    .bind(&c.project_id)
                    .bind(self.keyring.seal(&crate::secrets::place("slack_connections", "bot_token", &c.project_id), &c.bot_token))
                    .bind(c.signing_secret.as_ref().map(|secret| {
                        self.keyring.seal(&crate::secrets::place("slack_connections", "signing_secret", &c.project_id), secret)
                    }))
                    .bind(&c.default_channel)
                    .bind(&c.team_id)
                    .bind(&c.team_name)
                    .bind(&c.bot_user_id)
                    .bind(i64::from(c.require_known_users))
                    .bind(c.connected_at.as_micros())
                    .execute(&mut *tx)
                    .await?;
                    let detail = format!(
                        "workspace {}, default channel {}",
                        c.team_name.as_deref().or(c.team_id.as_deref()).unwrap_or("?"),
                        c.default_channel.as_deref().unwrap_or("none")
                    );
                    let body = ProjectEventBody::ConnectionSet { channel: "slack".into(), detail };
                    Self::log_change(&mut tx, &[stamp.event(&c.project_id, body)]).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn slack_connection(&self, project_id: &str) -> StoreResult<Option<SlackConnection>> {
                    let sql = format!("{CONNECTION} WHERE project_id = $1");
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(project_id).fetch_optional(&self.pool).await?;
                    row.as_ref().map(|row| connection(&self.keyring, row)).transpose()
                }

                async fn slack_connections(&self) -> StoreResult<Vec<SlackConnection>> {
                    let sql = format!("{CONNECTION} ORDER BY connected_at");
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
                    rows.iter().map(|row| connection(&self.keyring, row)).collect()
                }

                async fn remove_slack_connection(&self, project_id: &str, stamp: &Stamp) -> StoreResult<bool> {
                    let mut tx = self.begin_change().await?;
                    let done = sqlx::query("DELETE FROM slack_connections WHERE project_id = $1")
                        .bind(project_id)
                        .execute(&mut *tx)
                        .await?;
                    let removed = done.rows_affected() == 1;
                    if removed {
                        let body = ProjectEventBody::ConnectionRemoved { channel: "slack".into() };
                        Self::log_change(&mut tx, &[stamp.event(project_id, body)]).await?;
                    }
                    tx.commit().await?;
                    Ok(removed)
                }

                async fn record_slack_message(&self, m: &SlackMessage) -> StoreResult<()> {
                    sqlx::query(
                        "INSERT INTO slack_messages (channel_id, ts, project_id, kind, call_id, delivery_id, posted_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (channel_id, ts) DO NOTHING",
                    )
                    .bind(&m.channel_id)
                    .bind(&m.ts)
                    .bind(&m.project_id)
                    .bind(m.kind.as_str())
                    .bind(&m.call_id)
                    .bind(&m.delivery_id)
                    .bind(m.posted_at.as_micros())
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn slack_messages_of(
                    &self,
                    project_id: &str,
                    kind: RequestKind,
                    call_id: &str,
                ) -> StoreResult<Vec<SlackMessage>> {
                    let sql = format!(
                        "{MESSAGE} WHERE project_id = $1 AND kind = $2 AND call_id = $3 ORDER BY posted_at, ts"
                    );
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(project_id)
                        .bind(kind.as_str())
                        .bind(call_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(message).collect()
                }

                async fn slack_message_at(&self, channel_id: &str, ts: &str) -> StoreResult<Option<SlackMessage>> {
                    let sql = format!("{MESSAGE} WHERE channel_id = $1 AND ts = $2");
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(channel_id)
                        .bind(ts)
                        .fetch_optional(&self.pool)
                        .await?;
                    row.as_ref().map(message).transpose()
                }

                async fn slack_post_pending(
                    &self,
                    project_id: &str,
                    kind: RequestKind,
                    call_id: &str,
                ) -> StoreResult<bool> {
                    let (n,): (i64,) = sqlx::query_as(
                        "SELECT count(*) FROM deliveries WHERE project_id = $1 AND kind = $2 AND call_id = $3 \
                         AND channel = 'slack' AND event_type LIKE '%.created' AND status = 'pending'",
                    )
                    .bind(project_id)
                    .bind(kind.as_str())
                    .bind(call_id)
                    .fetch_one(&self.pool)
                    .await?;
                    Ok(n > 0)
                }

                async fn claim_request(
                    &self,
                    project_id: &str,
                    kind: RequestKind,
                    call_id: &str,
                    claim: &RequestClaim,
                ) -> StoreResult<()> {
                    sqlx::query(
                        "INSERT INTO request_claims (project_id, kind, call_id, claimed_by, channel, claimed_at) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (project_id, kind, call_id) DO UPDATE SET \
                         claimed_by = excluded.claimed_by, channel = excluded.channel, claimed_at = excluded.claimed_at",
                    )
                    .bind(project_id)
                    .bind(kind.as_str())
                    .bind(call_id)
                    .bind(&claim.by)
                    .bind(&claim.channel)
                    .bind(claim.at.as_micros())
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn request_claim(
                    &self,
                    project_id: &str,
                    kind: RequestKind,
                    call_id: &str,
                ) -> StoreResult<Option<RequestClaim>> {
                    let row: Option<(String, String, i64)> = sqlx::query_as(
                        "SELECT claimed_by, channel, claimed_at FROM request_claims \
                         WHERE project_id = $1 AND kind = $2 AND call_id = $3",
                    )
                    .bind(project_id)
                    .bind(kind.as_str())
                    .bind(call_id)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(row.map(|(by, channel, at)| RequestClaim { by, channel, at: Timestamp::from_micros(at) }))
                }

                async fn first_use_of_signature(
                    &self,
                    signature: &str,
                    expires_at: Timestamp,
                    now: Timestamp,
                ) -> StoreResult<bool> {
                    sqlx::query("DELETE FROM slack_replays WHERE expires_at < $1")
                        .bind(now.as_micros())
                        .execute(&self.pool)
                        .await?;
                    let done = sqlx::query(
                        "INSERT INTO slack_replays (signature, expires_at) VALUES ($1, $2) \
                         ON CONFLICT (signature) DO NOTHING",
                    )
                    .bind(signature)
                    .bind(expires_at.as_micros())
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }
            }
        };
    };
}
pub(crate) use impl_slack;
