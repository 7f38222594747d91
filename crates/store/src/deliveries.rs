//! The outbound channels: webhook endpoints, the one delivery queue of every channel, and a
//! project's email settings. The [`Deliveries`] trait, and [`impl_deliveries`], which implements
//! it for both backends with the queries of [`crate::webhooks`], [`crate::queue`] and
//! [`crate::emails`].

use crate::{Attempt, AttemptOutcome, Claimed, Delivery, StoreResult};
use crate::{NewWebhookEndpoint, WebhookEndpoint};
use async_trait::async_trait;
use countersign_core::api_key::KeyHash;
use countersign_core::event::Stamp;
use countersign_core::route::Channel;
use countersign_core::{Project, RequestKind, Timestamp};

/// Webhook endpoints, the deliveries queued for them (routed from the event log), and email.
#[async_trait]
pub trait Deliveries: Send + Sync {
    /// Adds a webhook endpoint, logging `webhook_added` with who added it.
    async fn add_webhook(&self, new: &NewWebhookEndpoint, stamp: &Stamp) -> StoreResult<WebhookEndpoint>;
    /// An active endpoint.
    async fn webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>>;
    /// Active endpoints, of one project or of all, oldest first.
    async fn webhooks(&self, project_id: Option<&str>) -> StoreResult<Vec<WebhookEndpoint>>;
    /// Removes an endpoint (logging `webhook_removed`); its pending deliveries are marked failed.
    /// Returns it, if it existed.
    async fn remove_webhook(&self, id: &str, stamp: &Stamp) -> StoreResult<Option<WebhookEndpoint>>;
    /// An endpoint's deliveries, newest first.
    async fn deliveries(&self, endpoint_id: &str, limit: u32) -> StoreResult<Vec<Delivery>>;
    /// One delivery, of any channel.
    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>>;
    /// A delivery's attempts, oldest first.
    async fn attempts(&self, delivery_id: &str) -> StoreResult<Vec<Attempt>>;
    /// Claims up to `limit` due deliveries of `channel` for one attempt each, until
    /// `lease_until`; no other worker (of any instance) claims them meanwhile.
    async fn claim_deliveries(
        &self,
        channel: Channel,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<Claimed>>;
    /// Records attempts of claimed deliveries, all in one transaction; per attempt, `false` if its
    /// claim had lapsed (nothing recorded for it).
    async fn finish_attempts(&self, attempts: &[(Claimed, AttemptOutcome)]) -> StoreResult<Vec<bool>>;
    /// Schedules a webhook delivery for another attempt now (whatever its status), unless its
    /// endpoint was removed.
    async fn redeliver(&self, id: &str, stamp: &Stamp) -> StoreResult<Option<Delivery>>;
    /// When the next pending delivery of `channel` is due, if any.
    async fn next_delivery_due(&self, channel: Channel) -> StoreResult<Option<Timestamp>>;

    /// Sets (or clears) a project's default email address; `false` if there is no such project.
    async fn set_default_email(&self, project_id: &str, address: Option<&str>, stamp: &Stamp) -> StoreResult<bool>;
    /// A project's default email address.
    async fn default_email(&self, project_id: &str) -> StoreResult<Option<String>>;

    /// The first email found among these Message-IDs (a reply's In-Reply-To and References).
    async fn email_by_message_ids(&self, ids: &[String]) -> StoreResult<Option<Delivery>>;
    /// The emails of one request, oldest first.
    async fn emails_of(&self, project_id: &str, kind: RequestKind, call_id: &str) -> StoreResult<Vec<Delivery>>;
    /// The deliveries of one request on one channel, oldest first.
    async fn deliveries_of(
        &self,
        channel: Channel,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
    ) -> StoreResult<Vec<Delivery>>;
    /// Sets (or, with `None`, removes) the hash of a project's inbound-email secret, replacing
    /// any earlier one; `false` if there is no such project.
    async fn set_inbound_email_secret(&self, project_id: &str, hash: Option<&KeyHash>) -> StoreResult<bool>;
    /// The project whose inbound-email secret has this hash.
    async fn project_by_inbound_email_secret(&self, hash: &KeyHash) -> StoreResult<Option<Project>>;
}

/// Implements [`Deliveries`] for a backend's store (a struct with a `pool: sqlx::Pool<$db>`).
/// The delivery claims and attempt records run on the pool field `$claims`; `$skip_locked` and
/// `$relaxed` go to [`crate::queue::queue_queries`].
macro_rules! impl_deliveries {
    ($store:ty, $db:ty, claims: $claims:ident, skip_locked: $skip_locked:literal, relaxed: $relaxed:literal) => {
        const _: () = {
            use crate::{
                Attempt, AttemptOutcome, Claimed, Deliveries, Delivery, NewWebhookEndpoint, Projects, StoreResult,
                WebhookEndpoint,
            };
            use countersign_core::api_key::KeyHash;
            use countersign_core::event::{ProjectEventBody, Stamp};
            use countersign_core::route::Channel;
            use countersign_core::{Project, RequestKind, Timestamp};

            mod hooks {
                crate::webhooks::webhook_queries!(sqlx::Pool<$db>, <$db as sqlx::Database>::Connection);
            }

            mod mail {
                crate::emails::email_queries!(sqlx::Pool<$db>);
            }

            mod queue {
                crate::queue::queue_queries!(sqlx::Pool<$db>, $skip_locked, $relaxed);
            }

            #[async_trait::async_trait]
            impl Deliveries for $store {
                async fn add_webhook(&self, new: &NewWebhookEndpoint, stamp: &Stamp) -> StoreResult<WebhookEndpoint> {
                    let mut tx = self.begin_change().await?;
                    let id = hooks::add(&mut tx, &self.keyring, new).await?;
                    let body = ProjectEventBody::WebhookAdded {
                        endpoint: id.clone(),
                        url: new.url.clone(),
                        events: new.events.iter().map(|e| e.as_str().to_owned()).collect(),
                    };
                    Self::log_change(&mut tx, &[stamp.event(&new.project_id, body)]).await?;
                    tx.commit().await?;
                    hooks::endpoint(&self.pool, &self.keyring, &id)
                        .await?
                        .ok_or_else(|| crate::StoreError::Internal(format!("webhook {id} vanished after insert")))
                }

                async fn webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
                    hooks::endpoint(&self.pool, &self.keyring, id).await
                }

                async fn webhooks(&self, project_id: Option<&str>) -> StoreResult<Vec<WebhookEndpoint>> {
                    hooks::list(&self.pool, &self.keyring, project_id).await
                }

                async fn remove_webhook(&self, id: &str, stamp: &Stamp) -> StoreResult<Option<WebhookEndpoint>> {
                    let mut tx = self.begin_change().await?;
                    let removed = hooks::remove(&mut tx, &self.keyring, id).await?;
                    if let Some(e) = &removed {
                        let body = ProjectEventBody::WebhookRemoved { endpoint: e.id.clone(), url: e.url.clone() };
                        Self::log_change(&mut tx, &[stamp.event(&e.project_id, body)]).await?;
                    }
                    tx.commit().await?;
                    Ok(removed)
                }

                async fn deliveries(&self, endpoint_id: &str, limit: u32) -> StoreResult<Vec<Delivery>> {
                    queue::of_target(&self.pool, endpoint_id, limit).await
                }

                async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
                    queue::delivery(&self.pool, id).await
                }

                async fn attempts(&self, delivery_id: &str) -> StoreResult<Vec<Attempt>> {
                    queue::attempts(&self.pool, delivery_id).await
                }

                async fn claim_deliveries(
                    &self,
                    channel: Channel,
                    now: Timestamp,
                    lease_until: Timestamp,
                    limit: u32,
                ) -> StoreResult<Vec<Claimed>> {
                    queue::claim(&self.$claims, channel, now, lease_until, limit).await
                }

                async fn finish_attempts(&self, attempts: &[(Claimed, AttemptOutcome)]) -> StoreResult<Vec<bool>> {
                    queue::finish(&self.$claims, attempts).await
                }

                async fn redeliver(&self, id: &str, stamp: &Stamp) -> StoreResult<Option<Delivery>> {
                    let mut tx = self.begin_change().await?;
                    let queued = sqlx::query(
                        "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, lease = NULL, lease_until = NULL \
                         WHERE id = $2 AND channel = 'webhook' \
                         AND target IN (SELECT id FROM webhook_endpoints WHERE disabled_at IS NULL)",
                    )
                    .bind(stamp.at.as_micros())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if queued > 0 {
                        let (project_id, target): (String, String) =
                            sqlx::query_as("SELECT project_id, target FROM deliveries WHERE id = $1")
                                .bind(id)
                                .fetch_one(&mut *tx)
                                .await?;
                        let body = ProjectEventBody::WebhookRedelivered { endpoint: target, delivery: id.to_owned() };
                        Self::log_change(&mut tx, &[stamp.event(&project_id, body)]).await?;
                    }
                    tx.commit().await?;
                    queue::delivery(&self.pool, id).await
                }

                async fn next_delivery_due(&self, channel: Channel) -> StoreResult<Option<Timestamp>> {
                    queue::next_due(&self.pool, channel).await
                }

                async fn set_default_email(
                    &self,
                    project_id: &str,
                    address: Option<&str>,
                    stamp: &Stamp,
                ) -> StoreResult<bool> {
                    let mut tx = self.begin_change().await?;
                    // Logged only when it changes.
                    let done = sqlx::query(
                        "UPDATE projects SET default_email = $1 WHERE id = $2 AND default_email IS DISTINCT FROM $1",
                    )
                    .bind(address)
                    .bind(project_id)
                    .execute(&mut *tx)
                    .await?;
                    let changed = done.rows_affected() == 1;
                    let found = changed
                        || sqlx::query("SELECT 1 FROM projects WHERE id = $1")
                            .bind(project_id)
                            .fetch_optional(&mut *tx)
                            .await?
                            .is_some();
                    if changed {
                        let detail = match address {
                            Some(a) => format!("default address {a}"),
                            None => "no default address".to_owned(),
                        };
                        let body = ProjectEventBody::ConnectionSet { channel: "email".into(), detail };
                        Self::log_change(&mut tx, &[stamp.event(project_id, body)]).await?;
                    }
                    tx.commit().await?;
                    Ok(found)
                }

                async fn default_email(&self, project_id: &str) -> StoreResult<Option<String>> {
                    mail::default_email(&self.pool, project_id).await
                }

                async fn email_by_message_ids(&self, ids: &[String]) -> StoreResult<Option<Delivery>> {
                    queue::first_of(&self.pool, Channel::Email, ids).await
                }

                async fn emails_of(
                    &self,
                    project_id: &str,
                    kind: RequestKind,
                    call_id: &str,
                ) -> StoreResult<Vec<Delivery>> {
                    queue::of_request(&self.pool, Channel::Email, project_id, kind, call_id).await
                }

                async fn deliveries_of(
                    &self,
                    channel: Channel,
                    project_id: &str,
                    kind: RequestKind,
                    call_id: &str,
                ) -> StoreResult<Vec<Delivery>> {
                    queue::of_request(&self.pool, channel, project_id, kind, call_id).await
                }

                async fn set_inbound_email_secret(
                    &self,
                    project_id: &str,
                    hash: Option<&KeyHash>,
                ) -> StoreResult<bool> {
                    mail::set_inbound_email_secret(&self.pool, project_id, hash.map(|h| &h.0[..])).await
                }

                async fn project_by_inbound_email_secret(&self, hash: &KeyHash) -> StoreResult<Option<Project>> {
                    match mail::project_id_by_inbound_email_secret(&self.pool, &hash.0[..]).await? {
                        Some(id) => self.project_by_id(&id).await,
                        None => Ok(None),
                    }
                }
            }
        };
    };
}
pub(crate) use impl_deliveries;
