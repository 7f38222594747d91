//! The Slack channel's outbound side: one Slack delivery of one event. A new request is posted
//! (Block Kit, with its buttons); a decision made anywhere updates every message of the request
//! (`chat.update`: the outcome, the buttons gone); an escalation answers in the thread and posts
//! the request to the escalation's own Slack target. Posts are paced to about one per second per
//! channel (Slack's limit); a 429 waits its `Retry-After`.

use super::api::{SlackApi, SlackError};
use super::blocks::{self, Claim};
use super::spec::SlackTarget;
use crate::channels::Outbound;
use countersign_core::route::{Channel, SlackPurpose};
use countersign_core::webhook::retry_delay;
use countersign_core::{RequestRecord, Timestamp};
use countersign_store::{AttemptOutcome, Claimed, SlackConnection, SlackMessage, Store};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Slack's posting rate: about one message per second per channel.
pub const POST_INTERVAL: Duration = Duration::from_secs(1);
/// The longest an attempt waits for its channel's turn; longer, it is put off (not counted).
const MAX_PACING_WAIT: Duration = Duration::from_secs(3);

/// Why a delivery did not go out.
#[derive(Debug)]
enum Failure {
    /// Its channel's turn comes at this instant: put off, not counted as an attempt.
    Paced(Duration),
    /// Slack or the network said no.
    Slack(SlackError),
    /// Nothing can make it work (no token, no channel, the request is gone).
    Permanent(String),
    /// Worth trying again later.
    Transient(String),
}

impl From<SlackError> for Failure {
    fn from(e: SlackError) -> Self {
        Self::Slack(e)
    }
}

impl From<countersign_store::StoreError> for Failure {
    fn from(e: countersign_store::StoreError) -> Self {
        Self::Transient(format!("cannot read the store: {e}"))
    }
}

/// Posts and updates Slack messages.
pub struct SlackChannel {
    store: Arc<dyn Store>,
    api: SlackApi,
    /// The server's public base URL (links to the inbox).
    base: String,
    /// Per Slack channel, when its next post may go out.
    turns: Mutex<HashMap<String, Instant>>,
}

impl Outbound for SlackChannel {
    const CHANNEL: Channel = Channel::Slack;
    /// A few Web API calls of at most 10 s each, plus pacing.
    const LEASE: Duration = Duration::from_secs(60);
    /// Posts to different channels go out in parallel; one channel's posts are paced.
    const IN_FLIGHT: usize = 64;

    async fn attempt(&self, claimed: &Claimed) -> AttemptOutcome {
        let d = &claimed.delivery;
        let (at, started) = (Timestamp::now(), Instant::now());
        let result = self.deliver(claimed).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let purpose = SlackPurpose::of(d.event_type).as_str();
        let outcome = |delivered, error: Option<String>, retry_at, deferred| AttemptOutcome {
            at,
            status_code: None,
            error,
            latency_ms,
            delivered,
            retry_at,
            recipients: Vec::new(),
            deferred,
        };
        let retry = |wait: Duration| Some(Timestamp::now().plus(wait));
        let (reason, retry_at) = match result {
            Ok(()) => {
                tracing::info!(delivery = %d.id, call_id = %d.call_id, purpose, "slack message sent");
                return outcome(true, None, None, false);
            }
            Err(Failure::Paced(wait)) => return outcome(false, None, retry(wait), true),
            Err(Failure::Slack(e @ SlackError::RateLimited { retry_after })) => (e.to_string(), retry(retry_after)),
            Err(Failure::Slack(e)) if e.is_permanent() => (e.to_string(), None),
            Err(Failure::Slack(e)) => (e.to_string(), retry_delay(d.attempts + 1).and_then(retry)),
            Err(Failure::Transient(reason)) => (reason, retry_delay(d.attempts + 1).and_then(retry)),
            Err(Failure::Permanent(reason)) => (reason, None),
        };
        if retry_at.is_some() {
            tracing::info!(delivery = %d.id, call_id = %d.call_id, purpose, error = %reason, "slack message not sent; will retry");
        } else {
            tracing::warn!(delivery = %d.id, call_id = %d.call_id, purpose, error = %reason, "slack message failed for good; the request stays decidable elsewhere");
        }
        outcome(false, Some(reason), retry_at, false)
    }
}

impl SlackChannel {
    /// The channel, calling the Web API at `api`, linking to the inbox at `base`.
    pub fn new(store: Arc<dyn Store>, api: SlackApi, base: String) -> Self {
        Self { store, api, base, turns: Mutex::new(HashMap::new()) }
    }

    async fn deliver(&self, claimed: &Claimed) -> Result<(), Failure> {
        let d = &claimed.delivery;
        let record = self
            .store
            .request(&d.project_id, d.kind, &d.call_id)
            .await?
            .ok_or_else(|| Failure::Permanent("the request is gone".into()))?;
        let connection = self.store.slack_connection(&d.project_id).await?;
        let target = SlackTarget::of(&record);
        match SlackPurpose::of(d.event_type) {
            SlackPurpose::Post => {
                let channel = target
                    .channel
                    .clone()
                    .or_else(|| connection.as_ref().and_then(|c| c.default_channel.clone()))
                    .ok_or_else(|| {
                        Failure::Permanent(
                            "no Slack channel: the request names none and the project has no default channel \
                             (countersign slack connect --default-channel C...)"
                                .into(),
                        )
                    })?;
                let token = token(&target, connection.as_ref())?;
                self.post(&record, &d.id, &token, &channel, target.thread_ts.as_deref()).await
            }
            SlackPurpose::Update => self.update(&record, &target, connection.as_ref()).await,
            SlackPurpose::Escalation => {
                let seq = usize::try_from(d.event_seq).unwrap_or(0);
                let escalation = record
                    .escalations
                    .get(seq.saturating_sub(1))
                    .cloned()
                    .ok_or_else(|| Failure::Permanent("the escalation is missing".into()))?;
                self.escalate(&record, &d.id, &escalation, &target, connection.as_ref()).await
            }
        }
    }

    /// Posts the request (once per delivery: a retry after a post that was recorded does not post
    /// again), records the message, and brings it up to date if the request changed meanwhile.
    async fn post(
        &self,
        record: &RequestRecord,
        delivery_id: &str,
        token: &str,
        channel: &str,
        thread_ts: Option<&str>,
    ) -> Result<(), Failure> {
        let posted = self.store.slack_messages_of(&record.project_id, record.kind, &record.call_id).await?;
        if posted.iter().any(|m| m.delivery_id == delivery_id) {
            return Ok(());
        }
        let message = self.render(record).await?;
        let mut args =
            json!({"channel": channel, "text": message.text, "blocks": message.blocks, "unfurl_links": false});
        if let Some(ts) = thread_ts {
            args["thread_ts"] = json!(ts);
        }
        self.wait_turn(channel).await?;
        let answer =
            self.api.call("chat.postMessage", token, &args).await.inspect_err(|e| self.slow_down(channel, e))?;
        let (Some(channel_id), Some(ts)) =
            (answer.get("channel").and_then(Value::as_str), answer.get("ts").and_then(Value::as_str))
        else {
            return Err(Failure::Permanent("Slack's answer to chat.postMessage has no channel and ts".into()));
        };
        let message = SlackMessage {
            project_id: record.project_id.clone(),
            kind: record.kind,
            call_id: record.call_id.clone(),
            channel_id: channel_id.to_owned(),
            ts: ts.to_owned(),
            delivery_id: delivery_id.to_owned(),
            posted_at: Timestamp::now(),
        };
        self.store.record_slack_message(&message).await?;
        // Decided while it was being posted: the decision's update may have found no message yet.
        if let Some(fresh) = self.store.request(&record.project_id, record.kind, &record.call_id).await?
            && fresh.outcome.is_some()
            && record.outcome.is_none()
        {
            show(&self.api, token, &[(channel_id, ts)], &self.render(&fresh).await?).await?;
        }
        Ok(())
    }

    /// Brings every message of the request up to date after its decision, or after a vote
    /// toward its quorum (still pending: the progress, and the buttons).
    async fn update(
        &self,
        record: &RequestRecord,
        target: &SlackTarget,
        connection: Option<&SlackConnection>,
    ) -> Result<(), Failure> {
        let messages = self.store.slack_messages_of(&record.project_id, record.kind, &record.call_id).await?;
        if messages.is_empty() {
            if self.store.slack_post_pending(&record.project_id, record.kind, &record.call_id).await? {
                return Err(Failure::Transient("the message is not posted yet; it is updated once it is".into()));
            }
            return Ok(()); // never posted to Slack: nothing to update
        }
        let token = token(target, connection)?;
        let places: Vec<(&str, &str)> = messages.iter().map(|m| (m.channel_id.as_str(), m.ts.as_str())).collect();
        show(&self.api, &token, &places, &self.render(record).await?).await?;
        // Decided while a vote's update was on its way: this update may have landed after the
        // decision's, so the decision is shown again (a pending message never hides it).
        if record.outcome.is_none()
            && let Some(fresh) = self.store.request(&record.project_id, record.kind, &record.call_id).await?
            && fresh.outcome.is_some()
        {
            show(&self.api, &token, &places, &self.render(&fresh).await?).await?;
        }
        Ok(())
    }

    /// Answers the escalation in the request's thread, and posts the request to the escalation's
    /// own Slack target (recorded, so later updates reach it too).
    async fn escalate(
        &self,
        record: &RequestRecord,
        delivery_id: &str,
        escalation: &Value,
        target: &SlackTarget,
        connection: Option<&SlackConnection>,
    ) -> Result<(), Failure> {
        let messages = self.store.slack_messages_of(&record.project_id, record.kind, &record.call_id).await?;
        let to =
            escalation.pointer("/channel/slack/channel_or_user_id").and_then(Value::as_str).filter(|c| !c.is_empty());
        if messages.is_empty() && to.is_none() {
            if self.store.slack_post_pending(&record.project_id, record.kind, &record.call_id).await? {
                return Err(Failure::Transient("the message is not posted yet; the escalation follows it".into()));
            }
            return Ok(());
        }
        let own_token =
            escalation.pointer("/channel/slack/bot_token").and_then(Value::as_str).filter(|t| !t.is_empty());
        let token = match own_token {
            Some(t) => t.to_owned(),
            None => token(target, connection)?,
        };
        if messages.iter().any(|m| m.delivery_id == delivery_id) {
            return Ok(()); // done before a crash: the escalation's post is recorded last
        }
        let inbox = self.inbox_url(record).await?;
        let reply = blocks::escalation_reply(record, escalation, &inbox);
        for (i, m) in messages.iter().enumerate() {
            let thread = if i == 0 { target.thread_ts.clone().unwrap_or_else(|| m.ts.clone()) } else { m.ts.clone() };
            let args =
                json!({"channel": m.channel_id, "thread_ts": thread, "text": reply.text, "blocks": reply.blocks});
            self.wait_turn(&m.channel_id).await?;
            self.api.call("chat.postMessage", &token, &args).await.inspect_err(|e| self.slow_down(&m.channel_id, e))?;
        }
        if let Some(to) = to {
            self.post(record, delivery_id, &token, to, None).await?;
        }
        Ok(())
    }

    async fn render(&self, record: &RequestRecord) -> Result<blocks::Message, Failure> {
        Ok(render(&self.store, &self.base, record).await?)
    }

    async fn inbox_url(&self, record: &RequestRecord) -> Result<String, Failure> {
        Ok(inbox_url(&self.store, &self.base, record).await?)
    }

    /// Waits for `channel`'s turn to post (at most [`MAX_PACING_WAIT`]; longer is put off).
    async fn wait_turn(&self, channel: &str) -> Result<(), Failure> {
        let wait = {
            let mut turns = self.turns.lock().expect("pacing lock");
            let now = Instant::now();
            if turns.len() > 10_000 {
                turns.retain(|_, at| *at > now);
            }
            let next = turns.get(channel).copied().filter(|at| *at > now).unwrap_or(now);
            let wait = next - now;
            if wait > MAX_PACING_WAIT {
                return Err(Failure::Paced(wait));
            }
            turns.insert(channel.to_owned(), next + POST_INTERVAL);
            wait
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// After a 429, holds the channel's posts until Slack's `Retry-After` has passed.
    fn slow_down(&self, channel: &str, error: &SlackError) {
        if let SlackError::RateLimited { retry_after } = error {
            let mut turns = self.turns.lock().expect("pacing lock");
            turns.insert(channel.to_owned(), Instant::now() + *retry_after);
        }
    }
}

/// The token to use: the request's own `bot_token`, else the project's.
fn token(target: &SlackTarget, connection: Option<&SlackConnection>) -> Result<String, Failure> {
    target.bot_token.clone().or_else(|| connection.map(|c| c.bot_token.clone())).ok_or_else(|| {
        Failure::Permanent(
            "no Slack bot token: connect the project (countersign slack connect) or send channel.slack.bot_token"
                .into(),
        )
    })
}

/// Replaces the messages at `places` (channel and ts) with `message` (`chat.update`).
async fn show(
    api: &SlackApi,
    token: &str,
    places: &[(&str, &str)],
    message: &blocks::Message,
) -> Result<(), SlackError> {
    for (channel, ts) in places {
        let args = json!({"channel": channel, "ts": ts, "text": message.text, "blocks": message.blocks});
        api.call("chat.update", token, &args).await?;
    }
    Ok(())
}

/// The request's message as it stands: pending (with its claim and, under a quorum, its votes so
/// far: a vote's update shows the progress and keeps the buttons) or decided.
pub(super) async fn render(
    store: &Arc<dyn Store>,
    base: &str,
    record: &RequestRecord,
) -> Result<blocks::Message, countersign_store::StoreError> {
    let inbox = inbox_url(store, base, record).await?;
    let (claim, votes) = match record.outcome {
        None => {
            let claim = store.request_claim(&record.project_id, record.kind, &record.call_id).await?;
            let quorum = record.policy.as_ref().is_some_and(|t| t.approvers.is_some() && t.needed() > 1);
            let votes = match quorum {
                true => store.votes(&record.project_id, record.kind, &record.call_id).await?,
                false => Vec::new(),
            };
            (claim, votes)
        }
        // A decision carries its votes.
        Some(_) => (None, Vec::new()),
    };
    let claim = claim.as_ref().map(|c| Claim { by: &c.by, at: c.at });
    Ok(blocks::request_message(record, &inbox, claim.as_ref(), &votes))
}

/// Shows the request as it stands on every message posted for it (after a claim), and again if
/// it was decided meanwhile (so a late claim never hides a decision).
pub(super) async fn refresh(
    store: &Arc<dyn Store>,
    api: &SlackApi,
    base: &str,
    record: &RequestRecord,
    token: &str,
) -> Result<(), String> {
    let mut record = record.clone();
    for _ in 0..2 {
        let messages = store
            .slack_messages_of(&record.project_id, record.kind, &record.call_id)
            .await
            .map_err(|e| e.to_string())?;
        let message = render(store, base, &record).await.map_err(|e| e.to_string())?;
        let places: Vec<(&str, &str)> = messages.iter().map(|m| (m.channel_id.as_str(), m.ts.as_str())).collect();
        show(api, token, &places, &message).await.map_err(|e| e.to_string())?;
        match store.request(&record.project_id, record.kind, &record.call_id).await.map_err(|e| e.to_string())? {
            Some(fresh) if fresh.outcome.is_some() && record.outcome.is_none() => record = fresh,
            _ => break,
        }
    }
    Ok(())
}

/// The request's page in the web inbox.
async fn inbox_url(
    store: &Arc<dyn Store>,
    base: &str,
    record: &RequestRecord,
) -> Result<String, countersign_store::StoreError> {
    let project = store.project_by_id(&record.project_id).await?;
    let name = project.map(|p| p.name.to_string()).unwrap_or_default();
    Ok(format!("{base}{}", crate::html::detail::href(&name, record)))
}
