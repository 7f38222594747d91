//! Which channels an event goes out on. Every delivery (a webhook POST, an email, a Slack post or
//! update) is routed from the event log by these rules, in Rust, in the transaction that writes
//! (SQLite) or seals (PostgreSQL) the event.

use crate::event::{EventBody, EventKind, RequestEvent};
use serde_json::Value;

/// A way out for an event: every delivery in the one delivery queue is for one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// A signed POST to a project's webhook endpoint.
    Webhook,
    /// An email over SMTP.
    Email,
    /// A Slack message: posted, updated after the decision, answered in its thread on escalation.
    Slack,
    /// A text message through Twilio, by SMS or WhatsApp: the new request, with its reply code.
    Sms,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 4] = [Self::Webhook, Self::Email, Self::Slack, Self::Sms];

    /// The name stored with a delivery.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Email => "email",
            Self::Slack => "slack",
            Self::Sms => "sms",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// Delivered (a webhook answered 2xx, an email was accepted by the SMTP server).
    Delivered,
    /// Given up on: no more attempts.
    Failed,
}

impl DeliveryStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed].into_iter().find(|c| c.as_str() == s)
    }
}

/// One delivery an event asks for: its channel and, for a webhook, the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    pub channel: Channel,
    /// The webhook endpoint's id; `None` for email and Slack (their recipients are worked out
    /// when sent).
    pub target: Option<&'a str>,
}

impl Route<'_> {
    /// The delivery's id: the `webhook-id` of a webhook, the Message-ID of an email. Derived from
    /// the event and the target (see [`delivery_key`]), so routing an event again gives the same.
    pub fn delivery_id(&self, salt: &str, event: &RequestEvent, escalations: i64) -> String {
        match (self.channel, self.target) {
            (_, Some(endpoint)) => format!("msg_{}", delivery_key(salt, event, escalations, endpoint)),
            (Channel::Slack, None) => format!("slk_{}", delivery_key(salt, event, escalations, "slack")),
            (Channel::Sms, None) => format!("sms_{}", delivery_key(salt, event, escalations, "sms")),
            (_, None) => format!("<{}@countersign>", delivery_key(salt, event, escalations, self.channel.as_str())),
        }
    }
}

/// Every delivery of `event`: one per webhook endpoint of its project that subscribed to it
/// (`endpoints`: id and subscribed event names), its email (see [`email_for`]) and its Slack
/// message (see [`slack_for`]); `spec` is [`SpecChannels::of_event`], which a caller may have
/// read already.
pub fn routes<'a>(
    event: &RequestEvent,
    spec: SpecChannels,
    endpoints: &'a [(String, Vec<String>)],
    project: ProjectChannels,
) -> Vec<Route<'a>> {
    if event.kind() == EventKind::Executed {
        // An execution report is for the audit log only.
        return Vec::new();
    }
    if event.kind() == EventKind::Voted {
        // A vote reaches no webhook or email; it updates the request's Slack messages.
        return slack_for(event, spec.slack, project)
            .map(|_| Route { channel: Channel::Slack, target: None })
            .into_iter()
            .collect();
    }
    let mut out: Vec<Route<'a>> = endpoints
        .iter()
        .filter(|(_, events)| webhook_wants(events, event))
        .map(|(id, _)| Route { channel: Channel::Webhook, target: Some(id.as_str()) })
        .collect();
    if email_for(event, spec.email, project).is_some() {
        out.push(Route { channel: Channel::Email, target: None });
    }
    if slack_for(event, spec.slack, project).is_some() {
        out.push(Route { channel: Channel::Slack, target: None });
    }
    if sms_for(event, spec.sms) {
        out.push(Route { channel: Channel::Sms, target: None });
    }
    out
}

/// Whether an event sends a text message: a new request addressed to a phone number by SMS or
/// WhatsApp (the project's Twilio connection is looked up when it is sent; a project without one
/// fails the delivery, with the reason in its log).
pub fn sms_for(event: &RequestEvent, spec: Addressing) -> bool {
    matches!(event.body, EventBody::Created { .. }) && spec == Addressing::Addressed
}

/// What a Slack delivery does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlackPurpose {
    /// Posts the new request, with its buttons.
    Post,
    /// Updates the request's messages to show the decision (buttons gone).
    Update,
    /// Answers in the request's thread, and posts to the escalation's own Slack target if any.
    Escalation,
}

impl SlackPurpose {
    /// The name logged with the delivery.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Post => "post",
            Self::Update => "update",
            Self::Escalation => "escalation",
        }
    }

    /// What the Slack delivery of an event of this type does (it is queued with the event's type).
    pub fn of(event: crate::webhook::EventType) -> Self {
        let name = event.as_str();
        if name.ends_with(".escalated") {
            Self::Escalation
        } else if name.ends_with(".completed") || name.ends_with(".voted") {
            Self::Update
        } else {
            Self::Post
        }
    }
}

/// The Slack delivery of an event, if any: a new request addressed to Slack (or naming no channel
/// in a project with a default Slack channel) is posted; a decision in a project connected to
/// Slack updates the request's messages (nothing to do when it was not posted); an escalation is
/// answered in the thread when the project is connected, and posted to its own Slack target when
/// it names one.
pub fn slack_for(event: &RequestEvent, spec: Addressing, project: ProjectChannels) -> Option<SlackPurpose> {
    match &event.body {
        EventBody::Created { .. } => match spec {
            Addressing::Addressed => Some(SlackPurpose::Post),
            Addressing::NoChannel if project.default_slack => Some(SlackPurpose::Post),
            Addressing::NoChannel | Addressing::Elsewhere => None,
        },
        EventBody::Decided { .. } => project.slack.then_some(SlackPurpose::Update),
        EventBody::Escalated { escalation } => {
            let own = escalation.pointer("/channel/slack").is_some_and(|s| s.is_object());
            (project.slack || own).then_some(SlackPurpose::Escalation)
        }
        EventBody::Voted { .. } => project.slack.then_some(SlackPurpose::Update),
        EventBody::Executed { .. } => None,
    }
}

/// Why an email is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmailPurpose {
    /// The request itself, to the human asked.
    Request,
    /// An escalation of it.
    Escalation,
}

impl EmailPurpose {
    /// The name logged with the message.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Escalation => "escalation",
        }
    }

    /// Why the email of an event of this type is sent (it is queued with the event's type).
    pub fn of(event: crate::webhook::EventType) -> Self {
        if event.as_str().ends_with(".escalated") { Self::Escalation } else { Self::Request }
    }
}

/// What routing needs to know about the event's project.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectChannels {
    /// The project has a default email address (for requests that name no channel).
    pub default_email: bool,
    /// The project is connected to Slack.
    pub slack: bool,
    /// The project has a default Slack channel (for requests that name no channel).
    pub default_slack: bool,
}

impl ProjectChannels {
    /// As a small integer (stored nowhere; the stores' routing queries compute it).
    pub fn bits(self) -> i64 {
        i64::from(self.default_email) | (i64::from(self.slack) << 1) | (i64::from(self.default_slack) << 2)
    }

    /// From [`Self::bits`].
    pub fn from_bits(bits: i64) -> Self {
        Self { default_email: bits & 1 != 0, slack: bits & 2 != 0, default_slack: bits & 4 != 0 }
    }
}

/// True when a webhook endpoint subscribed to `events` (webhook event names) gets this event.
pub fn webhook_wants(events: &[String], event: &RequestEvent) -> bool {
    let name = event.webhook_event().as_str();
    events.iter().any(|e| e == name)
}

/// Whether a new request's spec addresses one channel (read once, when it is created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// Its channel is this one, with an address (an email address; a Slack channel or user,
    /// where `""` means the project's default channel).
    Addressed,
    /// It names no channel at all.
    NoChannel,
    /// It names another channel (or this one without an address).
    Elsewhere,
}

/// What a new request's spec says about each channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecChannels {
    pub email: Addressing,
    pub slack: Addressing,
    /// A phone number by SMS or by WhatsApp.
    pub sms: Addressing,
}

impl SpecChannels {
    /// What an event's spec says (only a creation carries one).
    pub fn of_event(event: &RequestEvent) -> Self {
        match &event.body {
            // A request a policy rule decided at creation asks no person.
            EventBody::Created { policy: Some(policy), .. } if policy.decided_at_creation() => Self::NOBODY,
            EventBody::Created { spec, .. } => Self::of(spec.get()),
            _ => Self::NOBODY,
        }
    }

    /// Addresses no channel.
    pub const NOBODY: Self =
        Self { email: Addressing::Elsewhere, slack: Addressing::Elsewhere, sms: Addressing::Elsewhere };

    /// Reads a spec's `channel`.
    pub fn of(spec: &str) -> Self {
        let channel = serde_json::from_str::<Value>(spec)
            .ok()
            .and_then(|spec| spec.get("channel").cloned())
            .unwrap_or(Value::Null);
        let addressing = |pointer: &str| {
            if channel.pointer(pointer).is_some_and(Value::is_string) {
                Addressing::Addressed
            } else if channel.is_null() {
                Addressing::NoChannel
            } else {
                Addressing::Elsewhere
            }
        };
        let sms = match addressing("/sms/phone_number") {
            Addressing::Addressed => Addressing::Addressed,
            other => match addressing("/whatsapp/phone_number") {
                Addressing::Addressed => Addressing::Addressed,
                _ => other,
            },
        };
        Self { email: addressing("/email/address"), slack: addressing("/slack/channel_or_user_id"), sms }
    }
}

/// The email an event sends, if any: a new request whose channel is email (or that names no
/// channel, in a project with a default email), and every escalation (its recipients are worked
/// out when it is sent: the escalation's own channel, its additional recipients, or the request's
/// email) except one that names only a Slack target. `spec` matters only for a creation.
pub fn email_for(event: &RequestEvent, spec: Addressing, project: ProjectChannels) -> Option<EmailPurpose> {
    if let EventBody::Escalated { escalation } = &event.body {
        let slack_only = escalation.pointer("/channel/slack").is_some_and(Value::is_object)
            && escalation.pointer("/channel/email").is_none_or(Value::is_null)
            && escalation.get("additional_recipients").and_then(Value::as_array).is_none_or(Vec::is_empty);
        return (!slack_only).then_some(EmailPurpose::Escalation);
    }
    match event.kind() {
        EventKind::Created => match spec {
            Addressing::Addressed => Some(EmailPurpose::Request),
            Addressing::NoChannel if project.default_email => Some(EmailPurpose::Request),
            Addressing::NoChannel | Addressing::Elsewhere => None,
        },
        EventKind::Escalated => Some(EmailPurpose::Escalation),
        _ => None,
    }
}

/// The id of the delivery of one event to one target (an endpoint id, or `email`): 32 hex
/// digits of SHA-256 over a secret salt, the request and the event (kind, and for an escalation
/// which one), so the same event routed twice gives the same id, and ids stay unguessable.
pub fn delivery_key(salt: &str, event: &RequestEvent, escalations: i64, target: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in [
        salt,
        event.project_id.as_str(),
        event.request_kind.as_str(),
        event.call_id.as_str(),
        event.kind().as_str(),
        &escalations.to_string(),
        target,
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    // Each person votes once: the voter tells a request's votes apart.
    if let EventBody::Voted { vote } = &event.body {
        hasher.update(vote.voter.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Actor, Decision, RequestKind, Timestamp};
    use serde_json::json;
    use serde_json::value::RawValue;

    fn created(kind: RequestKind, spec: Value) -> RequestEvent {
        RequestEvent {
            project_id: "p".into(),
            request_kind: kind,
            call_id: "c".into(),
            at: Timestamp::from_micros(1),
            body: EventBody::Created {
                run_id: "r".into(),
                spec: RawValue::from_string(spec.to_string()).unwrap(),
                policy: None,
            },
        }
    }

    fn email_of(event: &RequestEvent, project: ProjectChannels) -> Option<EmailPurpose> {
        email_for(event, SpecChannels::of_event(event).email, project)
    }

    fn with(event: &RequestEvent, body: EventBody) -> RequestEvent {
        RequestEvent { body, ..event.clone() }
    }

    #[test]
    fn votes_reach_only_slack_and_each_voter_has_its_own_delivery() {
        let fc = created(RequestKind::FunctionCall, json!({"fn": "f", "channel": {"email": {"address": "a@x"}}}));
        let vote = |voter: &str| {
            let vote = crate::Vote {
                voter: voter.into(),
                approved: true,
                comment: None,
                channel: crate::DecisionChannel::Web,
                at: "2026-01-01T00:00:00Z".into(),
            };
            with(&fc, EventBody::Voted { vote })
        };
        let endpoints =
            vec![("e1".to_owned(), vec!["function_call.voted".to_owned(), "function_call.completed".to_owned()])];
        let all = ProjectChannels { default_email: true, slack: true, default_slack: true };
        let routed = routes(&vote("ada@x"), SpecChannels::NOBODY, &endpoints, all);
        assert_eq!(routed, vec![Route { channel: Channel::Slack, target: None }], "no webhook, no email");
        assert!(routes(&vote("ada@x"), SpecChannels::NOBODY, &endpoints, ProjectChannels::default()).is_empty());
        let slack = Route { channel: Channel::Slack, target: None };
        assert_ne!(slack.delivery_id("s", &vote("ada@x"), 0), slack.delivery_id("s", &vote("bob@x"), 0));
        assert_eq!(slack.delivery_id("s", &vote("ada@x"), 0), slack.delivery_id("s", &vote("ada@x"), 0));
        assert_eq!(SlackPurpose::of(vote("ada@x").webhook_event()), SlackPurpose::Update);
        assert!(crate::webhook::parse_events("function_call.voted").is_err(), "endpoints cannot subscribe to votes");
    }

    #[test]
    fn webhooks_get_the_events_they_subscribed_to_by_kind() {
        let fc = created(RequestKind::FunctionCall, json!({"fn": "f"}));
        let hc = created(RequestKind::HumanContact, json!({"msg": "?"}));
        let decided = with(
            &fc,
            EventBody::Decided {
                decision: Decision::Approved { comment: None, updated_kwargs: None },
                actor: Actor::api_key("k"),
            },
        );
        let escalated = with(&fc, EventBody::Escalated { escalation: json!({}) });
        let subscribed = vec!["function_call.completed".to_owned(), "human_contact.created".to_owned()];
        assert!(webhook_wants(&subscribed, &decided));
        assert!(webhook_wants(&subscribed, &hc));
        assert!(!webhook_wants(&subscribed, &fc), "function_call.created was not asked for");
        assert!(!webhook_wants(&subscribed, &escalated));
        assert!(!webhook_wants(&[], &decided));
    }

    #[test]
    fn email_goes_to_requests_addressed_by_email_or_to_the_projects_default() {
        let none = ProjectChannels::default();
        let default = ProjectChannels { default_email: true, ..Default::default() };
        let addressed =
            created(RequestKind::FunctionCall, json!({"fn": "f", "channel": {"email": {"address": "a@x"}}}));
        let slack =
            created(RequestKind::FunctionCall, json!({"fn": "f", "channel": {"slack": {"channel_or_user_id": "C"}}}));
        let unaddressed = created(RequestKind::HumanContact, json!({"msg": "?"}));
        let null_channel = created(RequestKind::HumanContact, json!({"msg": "?", "channel": null}));
        let null_address =
            created(RequestKind::FunctionCall, json!({"fn": "f", "channel": {"email": {"address": null}}}));
        assert_eq!(email_of(&addressed, none), Some(EmailPurpose::Request));
        assert_eq!(email_of(&unaddressed, default), Some(EmailPurpose::Request));
        assert_eq!(email_of(&null_channel, default), Some(EmailPurpose::Request));
        assert_eq!(email_of(&unaddressed, none), None);
        assert_eq!(email_of(&slack, default), None, "a request naming another channel is not emailed");
        assert_eq!(email_of(&null_address, default), None);
        let escalated = with(&slack, EventBody::Escalated { escalation: json!({"escalation_msg": "!"}) });
        assert_eq!(email_of(&escalated, none), Some(EmailPurpose::Escalation));
        let decided = with(
            &addressed,
            EventBody::Decided {
                decision: Decision::Rejected { comment: "no".into(), option: None },
                actor: Actor::api_key("k"),
            },
        );
        assert_eq!(email_of(&decided, default), None);
    }

    #[test]
    fn an_event_is_routed_to_each_subscribed_endpoint_and_its_email() {
        let e = created(RequestKind::FunctionCall, json!({"fn": "f", "channel": {"email": {"address": "a@x"}}}));
        let endpoints = vec![
            ("wh_1".to_owned(), vec!["function_call.created".to_owned()]),
            ("wh_2".to_owned(), vec!["function_call.completed".to_owned()]),
            ("wh_3".to_owned(), vec!["function_call.created".to_owned(), "human_contact.created".to_owned()]),
        ];
        let got = routes(&e, SpecChannels::of_event(&e), &endpoints, ProjectChannels::default());
        assert_eq!(
            got,
            vec![
                Route { channel: Channel::Webhook, target: Some("wh_1") },
                Route { channel: Channel::Webhook, target: Some("wh_3") },
                Route { channel: Channel::Email, target: None },
            ]
        );
        let ids: Vec<String> = got.iter().map(|r| r.delivery_id("salt", &e, 0)).collect();
        assert!(ids[0].starts_with("msg_") && ids[0] != ids[1], "{ids:?}");
        assert!(ids[2].starts_with('<') && ids[2].ends_with("@countersign>"), "{ids:?}");
        let decided = with(
            &e,
            EventBody::Decided {
                decision: Decision::Approved { comment: None, updated_kwargs: None },
                actor: Actor::api_key("k"),
            },
        );
        let got = routes(&decided, SpecChannels::of_event(&decided), &endpoints, ProjectChannels::default());
        assert_eq!(got, vec![Route { channel: Channel::Webhook, target: Some("wh_2") }]);
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        assert_eq!(EmailPurpose::of(crate::webhook::EventType::HumanContactEscalated), EmailPurpose::Escalation);
        assert_eq!(EmailPurpose::of(crate::webhook::EventType::FunctionCallCreated), EmailPurpose::Request);
    }

    #[test]
    fn a_delivery_key_is_the_same_for_the_same_event_and_differs_for_any_other() {
        let e = created(RequestKind::FunctionCall, json!({"fn": "f"}));
        let key = delivery_key("salt", &e, 0, "wh_1");
        assert_eq!(key.len(), 32);
        assert_eq!(key, delivery_key("salt", &e, 0, "wh_1"), "routing again gives the same id");
        let escalated = with(&e, EventBody::Escalated { escalation: json!({}) });
        let others = [
            delivery_key("other salt", &e, 0, "wh_1"),
            delivery_key("salt", &e, 0, "wh_2"),
            delivery_key("salt", &e, 0, "email"),
            delivery_key("salt", &escalated, 1, "wh_1"),
            delivery_key("salt", &escalated, 2, "wh_1"),
            delivery_key("salt", &RequestEvent { call_id: "c2".into(), ..e.clone() }, 0, "wh_1"),
        ];
        for (i, other) in others.iter().enumerate() {
            assert_ne!(&key, other, "case {i}");
        }
    }

    #[test]
    fn slack_posts_addressed_requests_updates_decisions_and_answers_escalations() {
        let none = ProjectChannels::default();
        let connected = ProjectChannels { slack: true, ..Default::default() };
        let with_default = ProjectChannels { slack: true, default_slack: true, ..Default::default() };
        let slack_of = |e: &RequestEvent, p| slack_for(e, SpecChannels::of_event(e).slack, p);
        let addressed =
            created(RequestKind::FunctionCall, json!({"fn": "f", "channel": {"slack": {"channel_or_user_id": "C1"}}}));
        let empty_id =
            created(RequestKind::FunctionCall, json!({"fn": "f", "channel": {"slack": {"channel_or_user_id": ""}}}));
        let unaddressed = created(RequestKind::HumanContact, json!({"msg": "?"}));
        let emailed = created(RequestKind::FunctionCall, json!({"fn": "f", "channel": {"email": {"address": "a@x"}}}));
        assert_eq!(slack_of(&addressed, none), Some(SlackPurpose::Post), "a per-request token needs no connection");
        assert_eq!(slack_of(&empty_id, connected), Some(SlackPurpose::Post));
        assert_eq!(slack_of(&unaddressed, with_default), Some(SlackPurpose::Post));
        assert_eq!(slack_of(&unaddressed, connected), None, "no default channel");
        assert_eq!(slack_of(&emailed, with_default), None);
        let decided = with(
            &addressed,
            EventBody::Decided {
                decision: Decision::Approved { comment: None, updated_kwargs: None },
                actor: Actor::api_key("k"),
            },
        );
        assert_eq!(slack_of(&decided, connected), Some(SlackPurpose::Update));
        assert_eq!(slack_of(&decided, none), None);
        let escalated = with(&emailed, EventBody::Escalated { escalation: json!({"escalation_msg": "!"}) });
        assert_eq!(slack_of(&escalated, connected), Some(SlackPurpose::Escalation));
        assert_eq!(slack_of(&escalated, none), None);
        let to_slack = with(
            &emailed,
            EventBody::Escalated { escalation: json!({"channel": {"slack": {"channel_or_user_id": "C2"}}}) },
        );
        assert_eq!(slack_of(&to_slack, none), Some(SlackPurpose::Escalation));
        let got = routes(&addressed, SpecChannels::of_event(&addressed), &[], none);
        assert_eq!(got, vec![Route { channel: Channel::Slack, target: None }]);
        assert!(got[0].delivery_id("salt", &addressed, 0).starts_with("slk_"));
        for p in [none, connected, with_default, ProjectChannels { default_email: true, ..with_default }] {
            assert_eq!(ProjectChannels::from_bits(p.bits()), p);
        }
        assert_eq!(SlackPurpose::of(crate::webhook::EventType::FunctionCallCompleted), SlackPurpose::Update);
        assert_eq!(SlackPurpose::of(crate::webhook::EventType::HumanContactCreated), SlackPurpose::Post);
        assert_eq!(SlackPurpose::of(crate::webhook::EventType::HumanContactEscalated), SlackPurpose::Escalation);
    }
}
