//! The request lifecycle as the API sees it: create, read, wait, decide, escalate. Handlers stay
//! thin and call these; storage and the in-memory view are kept in step here and nowhere else.

use crate::error::{ApiError, ApiResult};
use crate::limits::Limits;
use crate::services::live::{LiveEntry, LiveRequests, RequestKey, Reservation};
use crate::services::policies;
use axum::http::StatusCode;
use bytes::Bytes;
use countersign_core::{
    Actor, Decision, Escalation, Fields, Intent, Invalid, NewRequest, Outcome, RequestKind, RequestRecord, Timestamp,
};
use countersign_store::{Change, Created, Feed, Page, PageRequest, Store};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The longest a long-poll may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Request operations over a store, with the pending ones mirrored in memory.
pub struct Requests {
    store: Arc<dyn Store>,
    live: LiveRequests,
    closing: watch::Sender<bool>,
    /// Subscribed at construction, before [`Requests::warm`] reads, so no change slips between.
    feed: std::sync::Mutex<Option<tokio::sync::broadcast::Receiver<Feed>>>,
    /// Projects whose pending requests changed, for the live inboxes.
    inbox: tokio::sync::broadcast::Sender<InboxChange>,
    /// Poked after every committed change, which may have queued webhooks or emails: one per
    /// worker, so that each gets the permit.
    written: std::sync::Mutex<Vec<Arc<tokio::sync::Notify>>>,
    limits: Limits,
    /// The projects' policies, applied to every create.
    pub policies: crate::services::policies::Policies,
    /// Signs the receipt of every decided request shown.
    signer: Arc<crate::services::receipts::Signer>,
}

/// The answer to a create whose `call_id` already exists: the stored request (`json`) when the
/// create repeats it, a conflict otherwise.
fn replayed(new: &NewRequest, existing: &RequestRecord, json: Bytes) -> ApiResult<Bytes> {
    if new.same_as(existing) {
        Ok(json)
    } else {
        Err(ApiError::conflict(format!(
            "a {} with call_id {:?} already exists with a different run_id or spec; use a new call_id",
            existing.kind.noun(),
            existing.call_id
        )))
    }
}

/// A project's pending requests changed: one was created, decided or escalated, here or (on a
/// shared database) by another instance. Carries no content, so listeners re-read what their
/// reader may see.
#[derive(Debug, Clone)]
pub struct InboxChange {
    pub project_id: Arc<str>,
}

impl Requests {
    /// A service over `store`; call [`Requests::warm`] before serving.
    pub fn new(store: Arc<dyn Store>, limits: Limits, signer: Arc<crate::services::receipts::Signer>) -> Self {
        let feed = std::sync::Mutex::new(store.changes());
        let inbox = tokio::sync::broadcast::channel(1024).0;
        let written = std::sync::Mutex::new(Vec::new());
        Self {
            store,
            live: LiveRequests::default(),
            closing: watch::channel(false).0,
            feed,
            inbox,
            written,
            limits,
            policies: Default::default(),
            signer,
        }
    }

    /// The HumanLayer JSON of a request; a decided one carries its signed receipt
    /// (`status.receipt`).
    pub async fn json(&self, record: &RequestRecord) -> Bytes {
        let receipt = match record.receipt_claims() {
            Some(claims) => Some(self.signer.key().await.sign(&claims)),
            None => None,
        };
        Bytes::from(record.to_json_with_receipt(receipt.as_deref()))
    }

    /// Changes to pending requests, as they happen.
    pub fn watch_inbox(&self) -> tokio::sync::broadcast::Receiver<InboxChange> {
        self.inbox.subscribe()
    }

    /// Ends when the server starts shutting down (for long-lived streams).
    pub async fn closed(&self) {
        let _ = self.closing.subscribe().wait_for(|c| *c).await;
    }

    /// Tells the project's open inboxes to refresh (a change or a claim changed what they show).
    /// The delivery workers are not woken here: the store announces the deliveries a change
    /// queued (`Feed::Queued`) once they are committed, and most changes queue none.
    pub fn notify_inbox(&self, project_id: &str) {
        let _ = self.inbox.send(InboxChange { project_id: project_id.into() });
    }

    /// A new notification, poked when deliveries were queued (the store's `Feed::Queued`) or
    /// rescheduled: one per worker (a notification wakes one waiter, so two workers sharing one
    /// would leave the other asleep until its idle check).
    pub fn written(&self) -> Arc<tokio::sync::Notify> {
        let notify = Arc::new(tokio::sync::Notify::new());
        self.written.lock().expect("written lock").push(notify.clone());
        notify
    }

    /// Wakes the workers now (e.g. after a redelivery was scheduled).
    pub fn wake_workers(&self) {
        for worker in self.written.lock().expect("written lock").iter() {
            worker.notify_one();
        }
    }

    /// Turns true when the server starts shutting down.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Loads every pending request into memory; returns how many.
    pub async fn warm(&self) -> ApiResult<usize> {
        let pending = self.store.all_pending().await?;
        let n = pending.len();
        for record in pending {
            self.live.insert(record);
        }
        Ok(n)
    }

    /// Applies what other instances decide to the in-memory view, until shutdown; a no-op for
    /// backends with no change feed. Waiters on another instance's decision wake through this.
    pub async fn follow_changes(&self) {
        let Some(mut feed) = self.feed.lock().expect("feed lock").take() else { return };
        let mut closing = self.closing.subscribe();
        loop {
            let event = tokio::select! {
                event = feed.recv() => event,
                _ = closing.wait_for(|c| *c) => return,
            };
            match event {
                Ok(Feed::Created { project_id, .. }) => self.notify_inbox(&project_id),
                Ok(Feed::Queued) => self.wake_workers(),
                Ok(Feed::Changed { project_id, kind, call_id }) => {
                    self.notify_inbox(&project_id);
                    self.refresh(&RequestKey { project_id, kind, call_id }).await;
                }
                Ok(Feed::Resync) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let _ = self.inbox.send(InboxChange { project_id: "*".into() });
                    for key in self.live.keys() {
                        self.refresh(&key).await;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Re-reads a held request from the store: decided ones leave memory and wake their waiters,
    /// escalated ones are updated. Requests not held need nothing (reads of them go to the store).
    async fn refresh(&self, key: &RequestKey) {
        let Some(held) = self.live.get(key) else { return };
        match self.store.request(&key.project_id, key.kind, &key.call_id).await {
            Ok(Some(fresh)) if !fresh.is_pending() => self.live.complete(key, self.json(&fresh).await),
            Ok(Some(fresh)) if fresh.escalations.len() != held.meta().escalations.len() => self.live.update(fresh),
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, call_id = %key.call_id, "cannot refresh a request changed elsewhere"),
        }
    }

    /// Brings the in-memory view up to date after timers fired, from what they wrote (no
    /// read per request): expired requests leave it and wake their waiters, escalated ones are
    /// updated; the inboxes and delivery workers hear of it once per project.
    pub async fn timers_fired(&self, fired: &[countersign_store::Fired]) {
        use countersign_store::FiredChange;
        let now = Timestamp::now().as_micros();
        let mut projects = std::collections::HashSet::new();
        let mut latest_ms = 0;
        for f in fired.iter().filter(|f| f.applied) {
            let key = RequestKey { project_id: f.project_id.clone(), kind: f.kind, call_id: f.call_id.clone() };
            if let Some(entry) = self.live.get(&key) {
                let mut record = entry.record();
                match &f.change {
                    FiredChange::Decided(outcome) => {
                        record.outcome = Some(outcome.as_ref().clone());
                        self.live.complete(&key, self.json(&record).await);
                    }
                    // Applied once, however the view heard of it (an identical record, down to
                    // its `escalated_at`, is the same escalation).
                    FiredChange::Escalated(escalation) if !record.escalations.contains(escalation) => {
                        record.escalations.push(escalation.clone());
                        self.live.update(record);
                    }
                    FiredChange::Escalated(_) => {}
                    FiredChange::Nothing => {}
                }
            }
            latest_ms = latest_ms.max((now - f.due.as_micros()) / 1000);
            projects.insert(f.project_id.as_str());
            metrics::histogram!(crate::metrics::TIMER_LATENESS).record((now - f.due.as_micros()).max(0) as f64 / 1e6);
            match &f.change {
                FiredChange::Decided(outcome) => log_decision(&f.project_id, f.kind, &f.call_id, outcome),
                _ => tracing::debug!(kind = f.kind.noun(), call_id = %f.call_id, action = ?f.action, "timer fired"),
            }
        }
        for project_id in &projects {
            self.notify_inbox(project_id);
        }
        if !projects.is_empty() {
            let applied = fired.iter().filter(|f| f.applied).count();
            tracing::info!(fired = fired.len(), applied, late_ms = latest_ms, "timers fired");
        }
    }

    /// Ends every long-poll now (they answer with the current state); used at shutdown.
    pub fn close_waiters(&self) {
        self.closing.send_replace(true);
    }

    /// Creates a request, as the project's policy says: decided at once by a rule that approves
    /// or denies, or pending with the terms of the rule that asks (`owner`: the requesting key's
    /// owner, for separation of duties). Repeating an identical create returns the stored request
    /// (also when the project is at its pending limit); a different body under an existing
    /// `call_id` is a conflict and changes nothing.
    pub async fn create(&self, project_id: &str, new: NewRequest, owner: Option<&str>) -> ApiResult<Bytes> {
        let _room = match self.check_limits(project_id, &new) {
            Ok(room) => room,
            Err(refused) if refused.status() == StatusCode::TOO_MANY_REQUESTS => {
                return match self.store.request(project_id, new.kind, &new.call_id).await? {
                    Some(existing) => replayed(&new, &existing, self.json(&existing).await),
                    None => Err(refused),
                };
            }
            Err(refused) => return Err(refused),
        };
        let mut record = RequestRecord::new(project_id, new, Timestamp::now());
        let deadline = policies::agent_deadline(&record)?;
        let policy = self.policies.of(self.store.as_ref(), project_id).await?;
        let governed = policies::govern(policy.as_deref(), &record, owner, deadline);
        for (rule, error) in &governed.errors {
            tracing::debug!(rule, error, call_id = %record.call_id, "a policy condition could not be evaluated (fail-safe)");
        }
        record.outcome = governed.outcome;
        record.policy = governed.terms;
        // The delivery workers are not woken here: the store tells them when a create queued
        // deliveries (`Feed::Queued`), and most creates queue none.
        match self.store.create_request(&record).await? {
            Created::New if record.outcome.is_some() => {
                let json = self.json(&record).await;
                if let Some(outcome) = &record.outcome {
                    log_decision(project_id, record.kind, &record.call_id, outcome);
                }
                Ok(json)
            }
            Created::New => {
                let id = record.call_id.clone();
                let entry = self.live.insert(record);
                self.notify_inbox(project_id);
                tracing::debug!(kind = entry.meta().kind.noun(), call_id = %id, run_id = %entry.meta().run_id, "request created");
                Ok(entry.json)
            }
            Created::Existing(existing) => {
                let retry =
                    NewRequest { kind: record.kind, call_id: record.call_id, run_id: record.run_id, spec: record.spec };
                replayed(&retry, &existing, self.json(&existing).await)
            }
        }
    }

    /// Refuses a spec too big or too deep, and a create that would take its project past its
    /// pending limits, counting the creates in flight; the room it takes is held until the
    /// returned reservation is dropped. The counts are of what this instance holds (on a shared
    /// PostgreSQL, each instance bounds what it holds).
    fn check_limits(&self, project_id: &str, new: &NewRequest) -> ApiResult<Reservation<'_>> {
        let spec = new.spec.get();
        if spec.len() > self.limits.max_spec_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "spec is {} bytes; the limit is {} (max_spec_bytes in the configuration)",
                    spec.len(),
                    self.limits.max_spec_bytes
                ),
            ));
        }
        countersign_core::json_depth::check(spec.as_bytes(), self.limits.max_json_depth)
            .map_err(|why| Invalid::new("spec", why))?;
        let (max_count, max_bytes) = (self.limits.max_pending_per_project, self.limits.max_pending_bytes_per_project);
        self.live.reserve(project_id, spec.len() as u64, max_count, max_bytes).map_err(|usage| {
            let what = if usage.count >= max_count {
                format!(
                    "this project has {} pending requests, the most it may hold (max_pending_per_project)",
                    usage.count
                )
            } else {
                format!(
                    "this project's pending requests hold {} bytes; this one would pass the limit of {max_bytes} \
                     (max_pending_bytes_per_project)",
                    usage.bytes
                )
            };
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_pending",
                format!("{what}; decide or let some finish before creating more"),
            )
        })
    }

    /// The current JSON of a request.
    pub async fn get(&self, key: &RequestKey) -> ApiResult<Bytes> {
        match self.hold(key).await? {
            Held::Pending(entry) => Ok(entry.json),
            Held::Decided(json) => Ok(json),
        }
    }

    /// The in-memory entry of a pending request, loading it if another instance created it (so
    /// its next polls cost no read either), or the JSON of a decided one.
    async fn hold(&self, key: &RequestKey) -> ApiResult<Held> {
        if let Some(entry) = self.live.get(key) {
            return Ok(Held::Pending(entry));
        }
        let record = self.load(key).await?;
        if !record.is_pending() {
            return Ok(Held::Decided(self.json(&record).await));
        }
        // Hold it, then read again: a decision committed in between is not missed, since any
        // decision after the insert finds the entry (here, or through the change feed).
        let entry = self.live.insert(record);
        let fresh = self.load(key).await?;
        if !fresh.is_pending() {
            let json = self.json(&fresh).await;
            self.live.complete(key, json.clone());
            return Ok(Held::Decided(json));
        }
        Ok(Held::Pending(entry))
    }

    /// Answers as soon as the request is decided, or with its pending state after `wait`.
    pub async fn wait(&self, key: &RequestKey, wait: Duration) -> ApiResult<Bytes> {
        let entry = match self.hold(key).await? {
            Held::Pending(entry) => entry,
            Held::Decided(json) => return Ok(json),
        };
        let mut decided = entry.subscribe();
        let mut closing = self.closing.subscribe();
        let _open = crate::metrics::Open::new(crate::metrics::LONG_POLLS);
        let outcome = tokio::time::timeout(wait.min(MAX_WAIT), async {
            tokio::select! {
                res = decided.wait_for(Option::is_some) => res.ok().and_then(|v| v.clone()),
                _ = closing.wait_for(|c| *c) => None,
            }
        })
        .await;
        match outcome {
            Ok(Some(json)) => Ok(json),
            _ => self.get(key).await,
        }
    }

    /// Records a decision from a HumanLayer respond body; the first decision wins, later ones
    /// get 409 (before the body is even read, as HumanLayer answers).
    pub async fn respond(&self, key: &RequestKey, body: &Value, actor: Actor) -> ApiResult<Bytes> {
        let record = self.current(key).await?;
        if let Some(outcome) = &record.outcome {
            return Err(already_decided(&record, outcome));
        }
        let decision = record.parse_decision(body)?;
        self.record_decision(key, &record, decision, actor).await
    }

    /// Records what a decider asks for, checked against the request (errors name the fields as
    /// `fields` does); the first decision wins, later ones get 409 saying who decided what.
    pub async fn decide(&self, key: &RequestKey, intent: Intent, fields: &Fields, actor: Actor) -> ApiResult<Bytes> {
        let record = self.current(key).await?;
        if let Some(outcome) = &record.outcome {
            return Err(already_decided(&record, outcome));
        }
        let decision = record.decision(intent, fields)?;
        self.record_decision(key, &record, decision, actor).await
    }

    /// Cancels a pending request for the agent: it ends as `cancelled` with `reason` (or
    /// "cancelled by the agent") as what the SDKs see; a decided one is a 409.
    pub async fn cancel(&self, key: &RequestKey, reason: Option<String>, actor: Actor) -> ApiResult<Bytes> {
        let record = self.current(key).await?;
        if let Some(outcome) = &record.outcome {
            return Err(already_decided(&record, outcome));
        }
        let reason = reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
        if reason.as_ref().is_some_and(|r| r.chars().count() > 2000) {
            return Err(Invalid::new("reason", "is longer than 2000 characters").into());
        }
        let comment = reason.unwrap_or_else(|| "cancelled by the agent".to_owned());
        let decision = Decision::Ended { ending: countersign_core::Ending::Cancelled, comment };
        self.record_decision(key, &record, decision, actor).await
    }

    /// Records a validated decision on a pending record.
    pub async fn record_decision(
        &self,
        key: &RequestKey,
        record: &RequestRecord,
        decision: Decision,
        actor: Actor,
    ) -> ApiResult<Bytes> {
        let (decision, actor) = match &record.policy {
            Some(terms) => match self.apply_terms(key, record, terms, decision, actor).await? {
                Terms::Final(decision, actor) => (decision, *actor),
                Terms::Voted(json) => return Ok(json),
            },
            None => (decision, actor),
        };
        let mut decided = record.clone();
        decided.outcome = Some(Outcome { responded_at: Timestamp::now(), decision, decided_by: actor });
        let outcome = decided.outcome.as_ref().expect("just set");
        // The receipt is signed while the decision commits (the writer's fsync leaves this core
        // idle), so the waiting agent is not woken later for it; it is sent only once committed.
        let (change, json) =
            tokio::join!(self.store.decide(&key.project_id, key.kind, &key.call_id, outcome), self.json(&decided));
        match change? {
            Change::Done => {
                self.live.complete(key, json.clone());
                self.notify_inbox(&key.project_id);
                log_decision(&key.project_id, key.kind, &key.call_id, outcome);
                Ok(json)
            }
            Change::AlreadyDecided => {
                let fresh = self.load(key).await?;
                if let Some(outcome) = &fresh.outcome {
                    self.live.complete(key, self.json(&fresh).await);
                    return Err(already_decided(&fresh, outcome));
                }
                Err(ApiError::internal(format!("{} was reported decided but is pending", key.call_id)))
            }
            Change::NotFound => Err(not_found(key)),
        }
    }

    /// Checks a decision against the terms of the rule that governs the request: separation of
    /// duties (the key's owner may not approve), who may decide (the quorum's group), and the
    /// quorum itself: an approval is a vote until `count` distinct people approved; any one
    /// allowed rejection rejects at once.
    async fn apply_terms(
        &self,
        key: &RequestKey,
        record: &RequestRecord,
        terms: &countersign_core::governance::Governance,
        decision: Decision,
        actor: Actor,
    ) -> ApiResult<Terms> {
        use countersign_core::DecisionChannel;
        let judged = matches!(decision, Decision::Approved { .. } | Decision::Rejected { .. });
        if !judged || actor.channel == DecisionChannel::Policy {
            return Ok(Terms::Final(decision, Box::new(actor)));
        }
        let approving = matches!(decision, Decision::Approved { .. });
        let voter = actor.email.as_deref().map(str::to_lowercase);
        let rule = &terms.rule;
        let refused = |message: String| ApiError::new(StatusCode::FORBIDDEN, "forbidden_by_policy", message);
        if approving && terms.separation_of_duties && voter.is_some() && voter == terms.owner {
            return Err(refused(format!(
                "separation of duties (policy rule \"{rule}\"): {} owns the key that asked, so may not approve \
                 it; another person must",
                voter.unwrap_or_default()
            )));
        }
        let Some(quorum) = &terms.approvers else { return Ok(Terms::Final(decision, Box::new(actor))) };
        let Some(voter) = voter else {
            return Err(refused(format!(
                "policy rule \"{rule}\" needs {} from people{}: decide as a person (the inbox, the terminal, \
                 email or Slack), or with a key created with --owner",
                plural(quorum.count, "approval"),
                quorum.group.as_ref().map(|g| format!(" of group \"{g}\"")).unwrap_or_default()
            )));
        };
        if let Some(group) = &quorum.group {
            let members = self.store.group(&key.project_id, group).await?.map(|g| g.members).unwrap_or_default();
            if !members.contains(&voter) {
                return Err(refused(format!(
                    "policy rule \"{rule}\" lets only group \"{group}\" decide, and {voter} is not in it"
                )));
            }
        }
        if quorum.count <= 1 || !approving {
            // A single approval completes it; any allowed rejection rejects, with the votes so far.
            let votes = self.store.votes(&key.project_id, key.kind, &key.call_id).await?;
            let votes = (!votes.is_empty()).then_some(votes);
            return Ok(Terms::Final(decision, Box::new(Actor { votes, ..actor })));
        }
        if let Decision::Approved { updated_kwargs: Some(_), .. } = decision {
            return Err(ApiError::invalid(Invalid::new(
                "updated_kwargs",
                format!(
                    "policy rule \"{rule}\" needs several approvals, so the arguments cannot be edited; reject it with a comment instead"
                ),
            )));
        }
        let Decision::Approved { comment, .. } = &decision else { unreachable!("approving") };
        let now = Timestamp::now();
        let vote = countersign_core::Vote {
            voter: voter.clone(),
            approved: true,
            comment: comment.clone(),
            channel: actor.channel,
            at: now.to_rfc3339(),
        };
        let event = countersign_core::event::RequestEvent::voted(&key.project_id, key.kind, &key.call_id, &vote, now);
        match self.store.vote(&event, &vote).await? {
            countersign_store::Voted::Already(earlier) => Err(ApiError::conflict(format!(
                "{voter} already voted on {} {:?} ({} via {} at {}); each person votes once",
                key.kind.noun(),
                key.call_id,
                if earlier.approved { "approved" } else { "rejected" },
                earlier.channel.as_str(),
                earlier.at
            ))),
            countersign_store::Voted::NotPending => {
                let fresh = self.load(key).await?;
                match &fresh.outcome {
                    Some(outcome) => Err(already_decided(&fresh, outcome)),
                    None => Err(ApiError::internal("a vote found its request neither pending nor decided")),
                }
            }
            countersign_store::Voted::Recorded(votes) => {
                let approvals = votes.iter().filter(|v| v.approved).count() as u32;
                tracing::info!(call_id = %key.call_id, voter, approvals, needed = quorum.count, "vote recorded");
                if approvals >= quorum.count {
                    return Ok(Terms::Final(decision, Box::new(Actor { votes: Some(votes), ..actor })));
                }
                self.notify_inbox(&key.project_id);
                Ok(Terms::Voted(Bytes::from(record.to_json())))
            }
        }
    }

    /// Records an escalation on a pending request and returns the request.
    pub async fn escalate(&self, key: &RequestKey, body: Value, by: &str) -> ApiResult<Bytes> {
        let record = self.current(key).await?;
        if let Some(outcome) = &record.outcome {
            return Err(already_decided(&record, outcome));
        }
        let escalation = Escalation::parse(body, &record, by, Timestamp::now(), self.in_slack(&record).await?)?;
        match self.store.escalate(&key.project_id, key.kind, &key.call_id, &escalation).await? {
            Change::Done => {
                // Read back rather than append locally: concurrent escalations all show up.
                let escalated = self.load(key).await?;
                let json = Bytes::from(escalated.to_json());
                self.live.update(escalated);
                self.notify_inbox(&key.project_id);
                tracing::info!(kind = key.kind.noun(), call_id = %key.call_id, by, "request escalated");
                Ok(json)
            }
            Change::AlreadyDecided => {
                let fresh = self.load(key).await?;
                match &fresh.outcome {
                    Some(outcome) => Err(already_decided(&fresh, outcome)),
                    None => Err(ApiError::internal("escalation lost a race with nothing")),
                }
            }
            Change::NotFound => Err(not_found(key)),
        }
    }

    /// True when the request is posted to Slack (an escalation is then answered in its thread):
    /// addressed to Slack in a project connected to it (or with its own bot token), or naming no
    /// channel in a project with a default Slack channel.
    async fn in_slack(&self, record: &RequestRecord) -> ApiResult<bool> {
        use countersign_core::route::{Addressing, SpecChannels};
        let addressing = SpecChannels::of(record.spec.get()).slack;
        if addressing == Addressing::Elsewhere {
            return Ok(false);
        }
        let connection = self.store.slack_connection(&record.project_id).await?;
        Ok(match addressing {
            Addressing::Addressed => {
                connection.is_some()
                    || record
                        .channel()
                        .and_then(|c| c.slack)
                        .and_then(|s| s.bot_token)
                        .is_some_and(|t| !t.trim().is_empty())
            }
            _ => connection.is_some_and(|c| c.default_channel.is_some()),
        })
    }

    /// A page of a project's pending requests, oldest first.
    pub async fn pending(&self, project_id: &str, kind: RequestKind, page: &PageRequest) -> ApiResult<Page> {
        Ok(self.store.pending(project_id, kind, page).await?)
    }

    /// The freshest record: the in-memory one if pending, else the stored one.
    async fn current(&self, key: &RequestKey) -> ApiResult<RequestRecord> {
        match self.live.get(key) {
            Some(entry) => Ok(entry.record()),
            None => self.load(key).await,
        }
    }

    async fn load(&self, key: &RequestKey) -> ApiResult<RequestRecord> {
        self.store.request(&key.project_id, key.kind, &key.call_id).await?.ok_or_else(|| not_found(key))
    }
}

/// What the terms of a request's rule make of a decision.
enum Terms {
    /// Record it (with the votes, when a quorum completed).
    Final(Decision, Box<Actor>),
    /// A vote was recorded; the request stays pending (its JSON).
    Voted(Bytes),
}

fn plural(n: u32, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

/// A request as [`Requests::hold`] finds it.
enum Held {
    Pending(LiveEntry),
    Decided(Bytes),
}

fn not_found(key: &RequestKey) -> ApiError {
    ApiError::not_found(format!("no {} with call_id {:?} in this project", key.kind.noun(), key.call_id))
}

/// Who an actor is, for people: their email, else the API key's prefix.
pub fn actor_name(actor: &Actor) -> String {
    match (&actor.email, &actor.api_key) {
        (Some(email), _) => email.clone(),
        (None, Some(key)) => format!("API key {key}"),
        (None, None) => match (&actor.slack_user_id, &actor.rule) {
            (Some(user), _) => format!("Slack user {user}"),
            (None, _) if actor.phone_number.is_some() => actor.phone_number.clone().unwrap_or_default(),
            (None, Some(rule)) => format!("policy rule \"{rule}\""),
            (None, None) if actor.channel == countersign_core::DecisionChannel::Policy => "the policy".to_owned(),
            (None, None) => "someone".to_owned(),
        },
    }
}

fn already_decided(record: &RequestRecord, outcome: &Outcome) -> ApiError {
    let who = actor_name(&outcome.decided_by);
    ApiError::conflict(format!(
        "{} {:?} already has a response: {} by {} via {} at {}",
        record.kind.noun(),
        record.call_id,
        describe(record),
        who,
        outcome.decided_by.channel.as_str(),
        outcome.responded_at
    ))
}

/// `pending`, `approved`, `rejected` or `answered`.
pub fn describe(record: &RequestRecord) -> &'static str {
    record.outcome.as_ref().map_or("pending", |o| decision_word(&o.decision))
}

/// Logs a decision that was just stored (once: every way of deciding ends in a caller of this)
/// with who and how, and counts it for the metrics.
fn log_decision(project_id: &str, kind: RequestKind, call_id: &str, outcome: &Outcome) {
    let (decision, channel) = (decision_word(&outcome.decision), outcome.decided_by.channel.as_str());
    tracing::info!(
        project = %project_id,
        kind = kind.noun(),
        call_id = %call_id,
        decision,
        by = actor_name(&outcome.decided_by),
        channel,
        rule = outcome.decided_by.rule.as_deref().unwrap_or_default(),
        "request decided"
    );
    crate::metrics::decided(channel, decision);
}

/// `approved`, `rejected`, `answered`, `expired` or `cancelled`.
fn decision_word(decision: &Decision) -> &'static str {
    match decision {
        Decision::Approved { .. } => "approved",
        Decision::Rejected { .. } => "rejected",
        Decision::Answered { .. } => "answered",
        Decision::Ended { ending, .. } => ending.as_str(),
    }
}
