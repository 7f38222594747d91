//! Which channels an event goes out on. Every delivery (a webhook POST, an email) is routed from
//! the event log by these rules, in Rust, after the change that caused it committed.

use crate::event::{EventBody, EventKind, RequestEvent};
use serde_json::Value;

/// Why an email is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmailPurpose {
    /// The request itself, to the human asked.
    Request,
    /// An escalation of it.
    Escalation,
}

impl EmailPurpose {
    /// The name stored with the message.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Escalation => "escalation",
        }
    }
}

/// What routing needs to know about the event's project.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProjectChannels {
    /// The project has a default email address (for requests that name no channel).
    pub default_email: bool,
}

/// True when a webhook endpoint subscribed to `events` (webhook event names) gets this event.
pub fn webhook_wants(events: &[String], event: &RequestEvent) -> bool {
    let name = event.webhook_event().as_str();
    events.iter().any(|e| e == name)
}

/// What a new request's spec says about email (read once, when it is created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecEmail {
    /// Its channel is email, with an address.
    Addressed,
    /// It names no channel at all.
    NoChannel,
    /// It names another channel (or an email channel without an address).
    Elsewhere,
}

impl SpecEmail {
    /// Reads a spec's `channel`.
    pub fn of(spec: &str) -> Self {
        let channel = serde_json::from_str::<Value>(spec)
            .ok()
            .and_then(|spec| spec.get("channel").cloned())
            .unwrap_or(Value::Null);
        if !channel.pointer("/email/address").unwrap_or(&Value::Null).is_null() {
            Self::Addressed
        } else if channel.is_null() {
            Self::NoChannel
        } else {
            Self::Elsewhere
        }
    }
}

/// The email an event of this kind sends, if any: a new request whose channel is email (or that
/// names no channel, in a project with a default email), and every escalation (its recipients are
/// worked out when it is sent: the escalation's own channel, its additional recipients, or the
/// request's email). `spec` matters only for a creation.
pub fn email_for(kind: EventKind, spec: SpecEmail, project: ProjectChannels) -> Option<EmailPurpose> {
    match kind {
        EventKind::Created => match spec {
            SpecEmail::Addressed => Some(EmailPurpose::Request),
            SpecEmail::NoChannel if project.default_email => Some(EmailPurpose::Request),
            SpecEmail::NoChannel | SpecEmail::Elsewhere => None,
        },
        EventKind::Escalated => Some(EmailPurpose::Escalation),
        _ => None,
    }
}

/// The email this event sends, if any (see [`email_for`]).
pub fn email_wants(event: &RequestEvent, project: ProjectChannels) -> Option<EmailPurpose> {
    let spec = match &event.body {
        EventBody::Created { spec, .. } => SpecEmail::of(spec.get()),
        _ => SpecEmail::Elsewhere,
    };
    email_for(event.kind(), spec, project)
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
            body: EventBody::Created { run_id: "r".into(), spec: RawValue::from_string(spec.to_string()).unwrap() },
        }
    }

    fn with(event: &RequestEvent, body: EventBody) -> RequestEvent {
        RequestEvent { body, ..event.clone() }
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
        let default = ProjectChannels { default_email: true };
        let addressed =
            created(RequestKind::FunctionCall, json!({"fn": "f", "channel": {"email": {"address": "a@x"}}}));
        let slack =
            created(RequestKind::FunctionCall, json!({"fn": "f", "channel": {"slack": {"channel_or_user_id": "C"}}}));
        let unaddressed = created(RequestKind::HumanContact, json!({"msg": "?"}));
        let null_channel = created(RequestKind::HumanContact, json!({"msg": "?", "channel": null}));
        let null_address =
            created(RequestKind::FunctionCall, json!({"fn": "f", "channel": {"email": {"address": null}}}));
        assert_eq!(email_wants(&addressed, none), Some(EmailPurpose::Request));
        assert_eq!(email_wants(&unaddressed, default), Some(EmailPurpose::Request));
        assert_eq!(email_wants(&null_channel, default), Some(EmailPurpose::Request));
        assert_eq!(email_wants(&unaddressed, none), None);
        assert_eq!(email_wants(&slack, default), None, "a request naming another channel is not emailed");
        assert_eq!(email_wants(&null_address, default), None);
        let escalated = with(&slack, EventBody::Escalated { escalation: json!({"escalation_msg": "!"}) });
        assert_eq!(email_wants(&escalated, none), Some(EmailPurpose::Escalation));
        let decided = with(
            &addressed,
            EventBody::Decided {
                decision: Decision::Rejected { comment: "no".into(), option: None },
                actor: Actor::api_key("k"),
            },
        );
        assert_eq!(email_wants(&decided, default), None);
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
}
