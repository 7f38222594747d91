//! Request events: everything that happens to a request, typed, with the one JSON form the event
//! log stores and the audit export shows, and the per-project hash chain that seals them.
//!
//! An event's JSON form is written once, when it happens, and never re-serialized: its hash covers
//! the stored bytes, so anyone holding the export can re-verify a chain without this code.

use crate::governance::Governance;
use crate::webhook::EventType;
use crate::{Actor, Decision, RequestKind, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;

/// What happened to a request. More kinds will follow (a vote cast, an expiry, a cancellation, an
/// execution); code matching on this must leave room for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// An agent asked.
    Created,
    /// A human (or a key) decided; the request is no longer pending.
    Decided,
    /// Someone asked again, louder, while it was pending.
    Escalated,
    /// A person voted toward the request's quorum (it stays pending until enough approve).
    Voted,
    /// The agent reported the approved call's execution: started, finished or failed.
    Executed,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 5] = [Self::Created, Self::Decided, Self::Escalated, Self::Voted, Self::Executed];

    /// The kind's name, as stored (`created`, `decided`, `escalated`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Decided => "decided",
            Self::Escalated => "escalated",
            Self::Voted => "voted",
            Self::Executed => "executed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What an event says, by kind.
#[derive(Debug, Clone)]
pub enum EventBody {
    /// The request as the agent sent it, and the terms of the policy rule that matched it (a
    /// rule that decided at creation, or one that set a quorum, a deadline or a ladder).
    Created { run_id: String, spec: Box<RawValue>, policy: Option<Governance> },
    /// The decision and who made it.
    Decided { decision: Decision, actor: Actor },
    /// The escalation as recorded on the request (with `escalated_at` and `escalated_by`).
    Escalated { escalation: Value },
    /// A vote toward the quorum.
    Voted { vote: crate::Vote },
    /// The agent's report on running the approved call.
    Executed { report: crate::execution::ExecutionReport },
}

impl EventBody {
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Created { .. } => EventKind::Created,
            Self::Decided { .. } => EventKind::Decided,
            Self::Escalated { .. } => EventKind::Escalated,
            Self::Voted { .. } => EventKind::Voted,
            Self::Executed { .. } => EventKind::Executed,
        }
    }
}

impl PartialEq for EventBody {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Created { run_id: a, spec: x, policy: p }, Self::Created { run_id: b, spec: y, policy: q }) => {
                a == b && x.get() == y.get() && p == q
            }
            (Self::Decided { decision: a, actor: x }, Self::Decided { decision: b, actor: y }) => a == b && x == y,
            (Self::Escalated { escalation: a }, Self::Escalated { escalation: b }) => a == b,
            (Self::Voted { vote: a }, Self::Voted { vote: b }) => a == b,
            (Self::Executed { report: a }, Self::Executed { report: b }) => a == b,
            _ => false,
        }
    }
}

/// One thing that happened to one request of one project.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestEvent {
    pub project_id: String,
    pub request_kind: RequestKind,
    pub call_id: String,
    pub at: Timestamp,
    pub body: EventBody,
}

/// The stored JSON form of a decision: `outcome` says which, the other fields as it needs.
#[derive(Serialize, Deserialize)]
struct DecisionJson<'a> {
    outcome: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    comment: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    response: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    option: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    updated_kwargs: Option<&'a RawValue>,
}

/// The stored JSON form of an event: fields in this order, the spec and edited arguments
/// byte for byte as the agent and the human sent them. Unknown fields are ignored (a newer
/// version may add some).
#[derive(Serialize, Deserialize)]
struct EventJson<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    request_kind: Cow<'a, str>,
    #[serde(borrow)]
    project_id: Cow<'a, str>,
    #[serde(borrow)]
    call_id: Cow<'a, str>,
    /// Microseconds since the Unix epoch.
    at_us: i64,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    run_id: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    spec: Option<&'a RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<Governance>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    decision: Option<DecisionJson<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    actor: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    escalation: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vote: Option<crate::Vote>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    execution: Option<crate::execution::ExecutionReport>,
}

/// Why stored event bytes are not an event this version can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a request event: {0}")]
pub struct BadEvent(String);

impl RequestEvent {
    /// The creation of a new request.
    pub fn created(request: &crate::RequestRecord) -> Self {
        Self {
            project_id: request.project_id.clone(),
            request_kind: request.kind,
            call_id: request.call_id.clone(),
            at: request.requested_at,
            body: EventBody::Created {
                run_id: request.run_id.clone(),
                spec: request.spec.clone(),
                policy: request.policy.clone(),
            },
        }
    }

    /// A decision on a pending request.
    pub fn decided(project_id: &str, request_kind: RequestKind, call_id: &str, outcome: &crate::Outcome) -> Self {
        Self {
            project_id: project_id.to_owned(),
            request_kind,
            call_id: call_id.to_owned(),
            at: outcome.responded_at,
            body: EventBody::Decided { decision: outcome.decision.clone(), actor: outcome.decided_by.clone() },
        }
    }

    /// An escalation of a pending request, recorded at `at`.
    pub fn escalated(
        project_id: &str,
        request_kind: RequestKind,
        call_id: &str,
        escalation: &crate::Escalation,
        at: Timestamp,
    ) -> Self {
        Self {
            project_id: project_id.to_owned(),
            request_kind,
            call_id: call_id.to_owned(),
            at,
            body: EventBody::Escalated { escalation: escalation.record.clone() },
        }
    }

    /// The event's kind.
    pub fn kind(&self) -> EventKind {
        self.body.kind()
    }

    /// The webhook event it is delivered as.
    /// (A vote's, `*.voted`, reaches no webhook endpoint: see [`crate::route::routes`].)
    pub fn webhook_event(&self) -> EventType {
        let what = match self.kind() {
            EventKind::Created => "created",
            EventKind::Decided => "completed",
            EventKind::Escalated => "escalated",
            EventKind::Voted => "voted",
            EventKind::Executed => "executed",
        };
        EventType::of(self.request_kind, what).expect("every request kind has every event")
    }

    /// A vote toward a quorum.
    pub fn voted(
        project_id: &str,
        request_kind: RequestKind,
        call_id: &str,
        vote: &crate::Vote,
        at: Timestamp,
    ) -> Self {
        Self {
            project_id: project_id.to_owned(),
            request_kind,
            call_id: call_id.to_owned(),
            at,
            body: EventBody::Voted { vote: vote.clone() },
        }
    }

    /// The agent's report on running an approved call, recorded at `at`.
    pub fn executed(
        project_id: &str,
        request_kind: RequestKind,
        call_id: &str,
        report: &crate::execution::ExecutionReport,
        at: Timestamp,
    ) -> Self {
        Self {
            project_id: project_id.to_owned(),
            request_kind,
            call_id: call_id.to_owned(),
            at,
            body: EventBody::Executed { report: report.clone() },
        }
    }

    /// The bytes stored for this event (and hashed into its chain).
    pub fn to_json<'a>(&'a self) -> String {
        let kwargs: Option<Box<RawValue>>;
        let mut json = EventJson {
            kind: self.kind().as_str().into(),
            request_kind: self.request_kind.as_str().into(),
            project_id: self.project_id.as_str().into(),
            call_id: self.call_id.as_str().into(),
            at_us: self.at.as_micros(),
            run_id: None,
            spec: None,
            policy: None,
            decision: None,
            actor: None,
            escalation: None,
            vote: None,
            execution: None,
        };
        match &self.body {
            EventBody::Created { run_id, spec, policy } => {
                json.run_id = Some(run_id.as_str().into());
                json.spec = Some(spec);
                json.policy = policy.clone();
            }
            EventBody::Decided { decision, actor } => {
                json.actor = Some(actor.clone());
                let text = |t: &'a String| Some(Cow::Borrowed(t.as_str()));
                json.decision = Some(match decision {
                    Decision::Approved { comment, updated_kwargs } => {
                        // Edits are JSON text checked when the human sent them; text that is not
                        // (written by hand into the database) is kept as a JSON string, never dropped.
                        kwargs = updated_kwargs.as_deref().map(|t| {
                            RawValue::from_string(t.to_owned())
                                .unwrap_or_else(|_| serde_json::value::to_raw_value(t).expect("a string serializes"))
                        });
                        DecisionJson {
                            outcome: "approved".into(),
                            comment: comment.as_ref().and_then(text),
                            response: None,
                            option: None,
                            updated_kwargs: kwargs.as_deref(),
                        }
                    }
                    Decision::Rejected { comment, option } => DecisionJson {
                        outcome: "rejected".into(),
                        comment: text(comment),
                        response: None,
                        option: option.as_ref().and_then(text),
                        updated_kwargs: None,
                    },
                    Decision::Answered { response, option } => DecisionJson {
                        outcome: "answered".into(),
                        comment: None,
                        response: text(response),
                        option: option.as_ref().and_then(text),
                        updated_kwargs: None,
                    },
                    Decision::Ended { ending, comment } => DecisionJson {
                        outcome: ending.as_str().into(),
                        comment: text(comment),
                        response: None,
                        option: None,
                        updated_kwargs: None,
                    },
                });
            }
            EventBody::Escalated { escalation } => json.escalation = Some(escalation.clone()),
            EventBody::Voted { vote } => json.vote = Some(vote.clone()),
            EventBody::Executed { report } => json.execution = Some(report.clone()),
        }
        serde_json::to_string(&json).expect("an event serializes")
    }

    /// Reads stored event bytes back.
    pub fn from_json(text: &str) -> Result<Self, BadEvent> {
        let bad = BadEvent;
        let json: EventJson<'_> = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let kind = EventKind::parse(&json.kind).ok_or_else(|| bad(format!("unknown type {:?}", json.kind)))?;
        let request_kind = RequestKind::parse(&json.request_kind)
            .ok_or_else(|| bad(format!("unknown request_kind {:?}", json.request_kind)))?;
        let missing = |field: &str| bad(format!("a {} event needs `{field}`", kind.as_str()));
        let body = match kind {
            EventKind::Created => EventBody::Created {
                run_id: json.run_id.ok_or_else(|| missing("run_id"))?.into_owned(),
                spec: json.spec.ok_or_else(|| missing("spec"))?.to_owned(),
                policy: json.policy,
            },
            EventKind::Decided => {
                let d = json.decision.ok_or_else(|| missing("decision"))?;
                let owned = |t: Option<Cow<'_, str>>| t.map(Cow::into_owned);
                let decision = match &*d.outcome {
                    "approved" => Decision::Approved {
                        comment: owned(d.comment),
                        updated_kwargs: d.updated_kwargs.map(|k| k.get().to_owned()),
                    },
                    "rejected" => Decision::Rejected {
                        comment: owned(d.comment).ok_or_else(|| missing("decision.comment"))?,
                        option: owned(d.option),
                    },
                    "answered" => Decision::Answered {
                        response: owned(d.response).ok_or_else(|| missing("decision.response"))?,
                        option: owned(d.option),
                    },
                    other => match crate::Ending::parse(other) {
                        Some(ending) => Decision::Ended {
                            ending,
                            comment: owned(d.comment).ok_or_else(|| missing("decision.comment"))?,
                        },
                        None => return Err(bad(format!("unknown decision outcome {other:?}"))),
                    },
                };
                EventBody::Decided { decision, actor: json.actor.ok_or_else(|| missing("actor"))? }
            }
            EventKind::Escalated => {
                EventBody::Escalated { escalation: json.escalation.ok_or_else(|| missing("escalation"))? }
            }
            EventKind::Voted => EventBody::Voted { vote: json.vote.ok_or_else(|| missing("vote"))? },
            EventKind::Executed => EventBody::Executed { report: json.execution.ok_or_else(|| missing("execution"))? },
        };
        Ok(Self {
            project_id: json.project_id.into_owned(),
            request_kind,
            call_id: json.call_id.into_owned(),
            at: Timestamp::from_micros(json.at_us),
            body,
        })
    }
}

/// A SHA-256 link of a hash chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// What the first event of a chain links to.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    /// Lower-case hex, as exported and printed in checkpoints.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({})", self.to_hex())
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Domain separation for chain hashes (a new version would get a new tag).
const CHAIN_TAG: &[u8] = b"countersign.event.v1\0";

/// The hash of the event at position `seq` (1 for a chain's first event) with stored bytes
/// `event`, linked to the previous event's hash:
/// `SHA-256("countersign.event.v1\0" || seq as 8 bytes big-endian || prev || event)`.
pub fn chain_hash(seq: u64, prev: &ChainHash, event: &[u8]) -> ChainHash {
    let mut hasher = Sha256::new();
    hasher.update(CHAIN_TAG);
    hasher.update(seq.to_be_bytes());
    hasher.update(prev.0);
    hasher.update(event);
    ChainHash(hasher.finalize().into())
}

/// One sealed event as stored or exported: its chain position, bytes and links.
#[derive(Debug, Clone, Copy)]
pub struct Sealed<'a> {
    pub seq: u64,
    pub event: &'a [u8],
    pub prev: ChainHash,
    pub hash: ChainHash,
}

/// The head of a verified chain (what `audit head` prints as a checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Events in the chain (also the position of the last one).
    pub count: u64,
    pub head: ChainHash,
}

/// Where and why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// A position is missing: an event was removed (or the export skipped it).
    #[error("event {expected} is missing (the next one found is {found}): an event was removed")]
    Gap { expected: u64, found: u64 },
    /// A position repeats or goes back: an event was inserted or the rows were reordered.
    #[error("event {found} appears where {expected} should: an event was inserted or moved")]
    OutOfOrder { expected: u64, found: u64 },
    /// The event does not link to the one before it.
    #[error("event {seq} does not link to event {}: its previous hash is not that event's hash", seq - 1)]
    BadLink { seq: u64 },
    /// The event's bytes (or its recorded hash) were changed.
    #[error("event {seq} was changed: its hash does not match its contents")]
    BadHash { seq: u64 },
    /// The chain ends before the head the store recorded: its last events were removed.
    #[error("event {expected} is missing (the recorded head is event {recorded}): events were removed from the end")]
    Truncated { expected: u64, recorded: u64 },
    /// The chain's last event is not the head the store recorded when it sealed it.
    #[error("event {seq} is the last one, but the recorded head is event {recorded}: the chain's end was changed")]
    HeadMismatch { seq: u64, recorded: u64 },
    /// The chain is shorter than, or differs from, a checkpoint kept earlier.
    #[error("the chain does not contain the checkpoint ({count} events, head {head}): it was truncated or rewritten")]
    NotInCheckpoint { count: u64, head: ChainHash },
}

impl ChainBreak {
    /// The position the break is found at.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Gap { expected, .. } | Self::OutOfOrder { expected, .. } | Self::Truncated { expected, .. } => {
                *expected
            }
            Self::BadLink { seq } | Self::BadHash { seq } | Self::HeadMismatch { seq, .. } => *seq,
            Self::NotInCheckpoint { count, .. } => *count,
        }
    }
}

/// Checks a chain event by event, in position order, from its first event (for chains too long
/// to hold at once); [`verify_chain`] runs it over a whole chain.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    head: Checkpoint,
    checkpoint: Option<Checkpoint>,
    holds_checkpoint: bool,
}

impl ChainVerifier {
    /// A verifier for a chain that must still hold `checkpoint`, if one was kept.
    pub fn new(checkpoint: Option<Checkpoint>) -> Self {
        let holds_checkpoint = checkpoint.is_none_or(|c| c.count == 0 && c.head == ChainHash::GENESIS);
        Self { head: Checkpoint { count: 0, head: ChainHash::GENESIS }, checkpoint, holds_checkpoint }
    }

    /// Checks the next event.
    pub fn push(&mut self, sealed: Sealed<'_>) -> Result<(), ChainBreak> {
        let expected = self.head.count + 1;
        if sealed.seq > expected {
            return Err(ChainBreak::Gap { expected, found: sealed.seq });
        }
        if sealed.seq < expected {
            return Err(ChainBreak::OutOfOrder { expected, found: sealed.seq });
        }
        if sealed.prev != self.head.head {
            return Err(ChainBreak::BadLink { seq: sealed.seq });
        }
        if chain_hash(sealed.seq, &sealed.prev, sealed.event) != sealed.hash {
            return Err(ChainBreak::BadHash { seq: sealed.seq });
        }
        self.head = Checkpoint { count: sealed.seq, head: sealed.hash };
        if self.checkpoint == Some(self.head) {
            self.holds_checkpoint = true;
        }
        Ok(())
    }

    /// The chain checked so far.
    pub fn head(&self) -> Checkpoint {
        self.head
    }

    /// The verified head, once every event was pushed; `recorded` is the head the store keeps
    /// (its count and hash), which a removed last event no longer matches.
    pub fn finish(self, recorded: Option<Checkpoint>) -> Result<Checkpoint, ChainBreak> {
        if let Some(recorded) = recorded
            && recorded != self.head
        {
            if recorded.count > self.head.count {
                return Err(ChainBreak::Truncated { expected: self.head.count + 1, recorded: recorded.count });
            }
            return Err(ChainBreak::HeadMismatch { seq: self.head.count, recorded: recorded.count });
        }
        match self.checkpoint {
            Some(c) if !self.holds_checkpoint => Err(ChainBreak::NotInCheckpoint { count: c.count, head: c.head }),
            _ => Ok(self.head),
        }
    }
}

/// Recomputes a whole chain from its first event, in position order; with a checkpoint kept
/// earlier, also checks that the chain still holds it (at its position, with its hash).
pub fn verify_chain<'a>(
    events: impl IntoIterator<Item = Sealed<'a>>,
    checkpoint: Option<Checkpoint>,
) -> Result<Checkpoint, ChainBreak> {
    let mut verifier = ChainVerifier::new(checkpoint);
    for sealed in events {
        verifier.push(sealed)?;
    }
    verifier.finish(None)
}

/// Something that happened to a project rather than to one of its requests (its policy, a group
/// of approvers, a key, a person, a webhook or a channel connection changed), logged in the same chain as the request events. Stored with
/// `request_kind` [`ProjectEvent::REQUEST_KIND`] and an empty `call_id`; it routes nowhere.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectEvent {
    pub project_id: String,
    pub at: Timestamp,
    /// Who made the change, as shown (a person's email, an API key's prefix, `cli`).
    pub by: String,
    pub body: ProjectEventBody,
}

/// What changed in a project.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ProjectEventBody {
    /// The policy file was set: its text, its SHA-256, and its rules' names in order.
    PolicySet { text: String, sha256: String, rules: Vec<String> },
    /// A group of approvers was created or its members changed: who is in it now.
    GroupChanged { group: String, members: Vec<String>, added: Vec<String>, removed: Vec<String> },
    /// The project was created (by a person in the admin pages, who joined it).
    ProjectCreated { name: String },
    /// An API key was created: its prefix (never the secret), name, scopes and owner.
    KeyCreated { key: String, name: Option<String>, scopes: Vec<String>, owner: Option<String> },
    /// An API key was revoked.
    KeyRevoked { key: String },
    /// A person was added to the project (created in it, or joined it) with this role.
    PersonAdded { email: String, role: String },
    /// A person left the project, or was disabled (`disabled`) and can no longer sign in.
    PersonRemoved { email: String, disabled: bool },
    /// A person's phone number (for SMS and WhatsApp) was set or, with `None`, removed.
    PersonPhoneSet { email: String, phone: Option<String> },
    /// A one-time link to set a person's password was issued (never the link itself).
    PasswordLinkIssued { email: String },
    /// A webhook endpoint was added: its id, URL and events.
    WebhookAdded { endpoint: String, url: String, events: Vec<String> },
    /// A webhook endpoint was removed.
    WebhookRemoved { endpoint: String, url: String },
    /// A webhook delivery was queued again by hand.
    WebhookRedelivered { endpoint: String, delivery: String },
    /// A channel connection (`slack`, `twilio`, `email`) was set; `detail` says what to, never a
    /// secret.
    ConnectionSet { channel: String, detail: String },
    /// A channel connection was removed.
    ConnectionRemoved { channel: String },
    /// A test message was sent through a channel: to whom, and what came of it.
    ConnectionTested { channel: String, target: String, outcome: String },
}

/// Who made an administrative change, and when: stamped on its [`ProjectEvent`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// As shown: a person's email, `API key cs_AbC123`, `cli` for the command line.
    pub by: String,
    pub at: Timestamp,
}

impl Stamp {
    /// `by`, now.
    pub fn now(by: impl Into<String>) -> Self {
        Self { by: by.into(), at: Timestamp::now() }
    }

    /// The event of `body` in `project_id`, stamped with who and when.
    pub fn event(&self, project_id: &str, body: ProjectEventBody) -> ProjectEvent {
        ProjectEvent { project_id: project_id.to_owned(), at: self.at, by: self.by.clone(), body }
    }
}

impl ProjectEvent {
    /// The `request_kind` column of project events.
    pub const REQUEST_KIND: &'static str = "project";

    /// The event's type, as stored (`policy_set`, `group_changed`, `key_created`, ...).
    pub fn kind_str(&self) -> &'static str {
        match self.body {
            ProjectEventBody::PolicySet { .. } => "policy_set",
            ProjectEventBody::GroupChanged { .. } => "group_changed",
            ProjectEventBody::ProjectCreated { .. } => "project_created",
            ProjectEventBody::KeyCreated { .. } => "key_created",
            ProjectEventBody::KeyRevoked { .. } => "key_revoked",
            ProjectEventBody::PersonAdded { .. } => "person_added",
            ProjectEventBody::PersonRemoved { .. } => "person_removed",
            ProjectEventBody::PersonPhoneSet { .. } => "person_phone_set",
            ProjectEventBody::PasswordLinkIssued { .. } => "password_link_issued",
            ProjectEventBody::WebhookAdded { .. } => "webhook_added",
            ProjectEventBody::WebhookRemoved { .. } => "webhook_removed",
            ProjectEventBody::WebhookRedelivered { .. } => "webhook_redelivered",
            ProjectEventBody::ConnectionSet { .. } => "connection_set",
            ProjectEventBody::ConnectionRemoved { .. } => "connection_removed",
            ProjectEventBody::ConnectionTested { .. } => "connection_tested",
        }
    }

    /// A policy change: `text` is the file as set.
    pub fn policy_set(project_id: &str, by: &str, at: Timestamp, text: &str, rules: Vec<String>) -> Self {
        let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
        Self {
            project_id: project_id.to_owned(),
            at,
            by: by.to_owned(),
            body: ProjectEventBody::PolicySet { text: text.to_owned(), sha256, rules },
        }
    }

    /// The bytes stored for this event (and hashed into its chain).
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Json<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            project_id: &'a str,
            at_us: i64,
            by: &'a str,
            #[serde(flatten)]
            body: Wrapped<'a>,
        }
        #[derive(Serialize)]
        enum Wrapped<'a> {
            #[serde(rename = "policy")]
            Policy(&'a ProjectEventBody),
            #[serde(rename = "group")]
            Group(&'a ProjectEventBody),
            #[serde(rename = "project")]
            Project(&'a ProjectEventBody),
            #[serde(rename = "key")]
            Key(&'a ProjectEventBody),
            #[serde(rename = "person")]
            Person(&'a ProjectEventBody),
            #[serde(rename = "webhook")]
            Webhook(&'a ProjectEventBody),
            #[serde(rename = "connection")]
            Connection(&'a ProjectEventBody),
        }
        use ProjectEventBody as B;
        let body = match &self.body {
            b @ B::PolicySet { .. } => Wrapped::Policy(b),
            b @ B::GroupChanged { .. } => Wrapped::Group(b),
            b @ B::ProjectCreated { .. } => Wrapped::Project(b),
            b @ (B::KeyCreated { .. } | B::KeyRevoked { .. }) => Wrapped::Key(b),
            b @ (B::PersonAdded { .. }
            | B::PersonRemoved { .. }
            | B::PersonPhoneSet { .. }
            | B::PasswordLinkIssued { .. }) => Wrapped::Person(b),
            b @ (B::WebhookAdded { .. } | B::WebhookRemoved { .. } | B::WebhookRedelivered { .. }) => {
                Wrapped::Webhook(b)
            }
            b @ (B::ConnectionSet { .. } | B::ConnectionRemoved { .. } | B::ConnectionTested { .. }) => {
                Wrapped::Connection(b)
            }
        };
        let json = Json {
            kind: self.kind_str(),
            project_id: &self.project_id,
            at_us: self.at.as_micros(),
            by: &self.by,
            body,
        };
        serde_json::to_string(&json).expect("an event serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DecisionChannel;
    use serde_json::json;

    fn event(call_id: &str, body: EventBody) -> RequestEvent {
        RequestEvent {
            project_id: "p1".into(),
            request_kind: RequestKind::FunctionCall,
            call_id: call_id.into(),
            at: Timestamp::from_micros(1_748_779_200_123_456),
            body,
        }
    }

    fn person() -> Actor {
        Actor { user_id: Some("u1".into()), email: Some("ada@example.com".into()), ..Actor::new(DecisionChannel::Web) }
    }

    fn every_kind() -> Vec<RequestEvent> {
        let spec = RawValue::from_string(r#"{"fn":"send","kwargs":{"n":1.50,"to":"x"}}"#.into()).unwrap();
        vec![
            event("c1", EventBody::Created { run_id: "r1".into(), spec, policy: None }),
            event("c1", EventBody::Escalated { escalation: json!({"escalation_msg": "louder", "escalated_by": "k"}) }),
            event(
                "c1",
                EventBody::Decided {
                    decision: Decision::Approved { comment: None, updated_kwargs: Some(r#"{"n": 2}"#.into()) },
                    actor: person(),
                },
            ),
            event(
                "c2",
                EventBody::Decided {
                    decision: Decision::Rejected { comment: "no".into(), option: Some("later".into()) },
                    actor: Actor::api_key("cs_abc"),
                },
            ),
            event(
                "c3",
                EventBody::Decided {
                    decision: Decision::Answered { response: "yes \"quoted\"\n".into(), option: None },
                    actor: person(),
                },
            ),
        ]
    }

    #[test]
    fn every_event_round_trips_through_its_json_form() {
        for e in every_kind() {
            let text = e.to_json();
            assert_eq!(RequestEvent::from_json(&text).unwrap(), e, "{text}");
            // Writing the read-back event gives the same bytes (what is hashed).
            assert_eq!(RequestEvent::from_json(&text).unwrap().to_json(), text);
        }
    }

    #[test]
    fn the_json_form_keeps_the_agents_bytes_and_names_the_event() {
        let events = every_kind();
        let created = events[0].to_json();
        assert_eq!(
            created,
            r#"{"type":"created","request_kind":"function_call","project_id":"p1","call_id":"c1","at_us":1748779200123456,"run_id":"r1","spec":{"fn":"send","kwargs":{"n":1.50,"to":"x"}}}"#
        );
        let approved = events[2].to_json();
        assert!(approved.contains(r#""decision":{"outcome":"approved","updated_kwargs":{"n": 2}}"#), "{approved}");
        assert!(approved.contains(r#""actor":{"channel":"web","user_id":"u1","email":"ada@example.com"}"#));
        assert_eq!(events[2].webhook_event(), EventType::FunctionCallCompleted);
        assert_eq!(events[1].webhook_event(), EventType::FunctionCallEscalated);
        assert_eq!(events[0].webhook_event(), EventType::FunctionCallCreated);
    }

    #[test]
    fn stored_bytes_that_are_no_event_are_refused_with_the_reason() {
        for (text, why) in [
            ("{", "EOF"),
            (r#"{"type":"voted","request_kind":"function_call","project_id":"p","call_id":"c","at_us":1}"#, "voted"),
            (r#"{"type":"created","request_kind":"function_call","project_id":"p","call_id":"c","at_us":1}"#, "run_id"),
            (r#"{"type":"decided","request_kind":"x","project_id":"p","call_id":"c","at_us":1}"#, "request_kind"),
        ] {
            let err = RequestEvent::from_json(text).unwrap_err();
            assert!(err.to_string().contains(why), "{text}: {err}");
        }
    }

    /// A chain of `n` events as stored: (seq, bytes, prev, hash).
    fn chain(n: u64) -> Vec<(u64, Vec<u8>, ChainHash, ChainHash)> {
        let mut prev = ChainHash::GENESIS;
        (1..=n)
            .map(|seq| {
                let bytes = format!(r#"{{"n":{seq}}}"#).into_bytes();
                let hash = chain_hash(seq, &prev, &bytes);
                let row = (seq, bytes, prev, hash);
                prev = hash;
                row
            })
            .collect()
    }

    fn verify(
        rows: &[(u64, Vec<u8>, ChainHash, ChainHash)],
        checkpoint: Option<Checkpoint>,
    ) -> Result<Checkpoint, ChainBreak> {
        verify_chain(
            rows.iter().map(|(seq, event, prev, hash)| Sealed { seq: *seq, event, prev: *prev, hash: *hash }),
            checkpoint,
        )
    }

    #[test]
    fn a_chain_verifies_and_every_tampering_is_found_at_its_position() {
        let rows = chain(5);
        let head = verify(&rows, None).unwrap();
        assert_eq!((head.count, head.head), (5, rows[4].3));
        assert_eq!(verify(&[], None).unwrap(), Checkpoint { count: 0, head: ChainHash::GENESIS });

        let mut changed = rows.clone();
        changed[2].1 = br#"{"n":99}"#.to_vec();
        assert_eq!(verify(&changed, None), Err(ChainBreak::BadHash { seq: 3 }));

        let mut removed = rows.clone();
        removed.remove(1);
        assert_eq!(verify(&removed, None), Err(ChainBreak::Gap { expected: 2, found: 3 }));

        // An inserted event, even with a correct hash of its own, breaks the next link.
        let mut inserted = rows.clone();
        let forged = br#"{"n":"forged"}"#.to_vec();
        let forged_hash = chain_hash(3, &rows[1].3, &forged);
        inserted.insert(2, (3, forged, rows[1].3, forged_hash));
        for row in inserted.iter_mut().skip(3) {
            row.0 += 1;
        }
        assert_eq!(verify(&inserted, None), Err(ChainBreak::BadLink { seq: 4 }));

        let mut duplicated = rows.clone();
        duplicated.insert(2, rows[1].clone());
        assert_eq!(verify(&duplicated, None), Err(ChainBreak::OutOfOrder { expected: 3, found: 2 }));

        // Rewriting the whole tail consistently is caught only by a checkpoint kept elsewhere.
        let checkpoint = verify(&rows, None).unwrap();
        assert_eq!(verify(&rows, Some(checkpoint)), Ok(checkpoint));
        assert_eq!(verify(&chain(7), Some(checkpoint)).unwrap().count, 7, "a longer chain still holds it");
        let truncated = verify(&rows[..3], Some(checkpoint)).unwrap_err();
        assert_eq!(truncated, ChainBreak::NotInCheckpoint { count: 5, head: checkpoint.head });
        let mut rewritten = chain(5);
        rewritten[4].1 = b"{}".to_vec();
        rewritten[4].3 = chain_hash(5, &rewritten[4].2, b"{}");
        assert!(matches!(verify(&rewritten, Some(checkpoint)), Err(ChainBreak::NotInCheckpoint { .. })));
    }

    #[test]
    fn a_removed_last_event_is_found_against_the_recorded_head() {
        let rows = chain(4);
        let recorded = Checkpoint { count: 4, head: rows[3].3 };
        let run = |rows: &[(u64, Vec<u8>, ChainHash, ChainHash)]| {
            let mut v = ChainVerifier::new(None);
            for (seq, event, prev, hash) in rows {
                v.push(Sealed { seq: *seq, event, prev: *prev, hash: *hash })?;
            }
            v.finish(Some(recorded))
        };
        assert_eq!(run(&rows), Ok(recorded));
        let err = run(&rows[..3]).unwrap_err();
        assert_eq!(err, ChainBreak::Truncated { expected: 4, recorded: 4 });
        assert_eq!(err.seq(), 4);
        let mut other = rows.clone();
        other[3].1 = b"{}".to_vec();
        other[3].3 = chain_hash(4, &other[3].2, b"{}");
        assert_eq!(run(&other), Err(ChainBreak::HeadMismatch { seq: 4, recorded: 4 }));
    }

    #[test]
    fn chain_hashes_are_the_documented_sha256() {
        let expected: [u8; 32] = Sha256::digest([CHAIN_TAG, &7u64.to_be_bytes(), &[0u8; 32], b"{}"].concat()).into();
        assert_eq!(chain_hash(7, &ChainHash::GENESIS, b"{}"), ChainHash(expected));
        let hash = chain_hash(1, &ChainHash::GENESIS, b"x");
        assert_eq!(ChainHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(ChainHash::from_hex("zz"), None);
    }
}
