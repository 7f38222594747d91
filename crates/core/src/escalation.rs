//! Escalations: asking again, louder, by email or Slack, while a request is still pending.

use crate::wire::{ContactChannel, EscalationBody};
use crate::{Invalid, RequestRecord, Timestamp};
use serde_json::{Value, json};

/// A validated escalation, ready to be recorded on its request.
#[derive(Debug, Clone)]
pub struct Escalation {
    /// The escalation as the client sent it, plus `escalated_at` and `escalated_by`.
    pub record: Value,
}

impl Escalation {
    /// Validates an escalation body against the request it escalates.
    ///
    /// An escalation needs somebody to reach: the escalation's email or Slack channel, its
    /// additional recipients, the request's own email channel, or the request's Slack message
    /// (`in_slack`: the request is posted to Slack, so the escalation is answered in its thread).
    pub fn parse(
        body: Value,
        request: &RequestRecord,
        by: &str,
        at: Timestamp,
        in_slack: bool,
    ) -> Result<Self, Invalid> {
        let parsed: EscalationBody = serde_path_to_error::deserialize(&body).map_err(Invalid::from_serde)?;
        if parsed.escalation_msg.trim().is_empty() {
            return Err(Invalid::new("escalation_msg", "must not be empty"));
        }
        let has_email = |channel: &Option<ContactChannel>| {
            channel.as_ref().and_then(|c| c.email.as_ref()).is_some_and(|e| !e.address.trim().is_empty())
        };
        let has_slack = |channel: &Option<ContactChannel>| channel.as_ref().is_some_and(|c| c.slack.is_some());
        let request_channel: Option<ContactChannel> = request.channel();
        let has_recipients = parsed.additional_recipients.as_ref().is_some_and(|r| !r.is_empty());
        let reachable = has_email(&parsed.channel)
            || has_slack(&parsed.channel)
            || has_recipients
            || has_email(&request_channel)
            || in_slack;
        if !reachable {
            return Err(Invalid::new(
                "channel",
                "nobody to escalate to: give channel.email.address, channel.slack.channel_or_user_id or \
                 additional_recipients, or create the request with an email channel (or a Slack channel, \
                 in a project connected with `countersign slack connect`)",
            ));
        }
        let mut record = body;
        if let Value::Object(map) = &mut record {
            map.insert("escalated_at".into(), json!(at.to_rfc3339()));
            map.insert("escalated_by".into(), json!(by));
        }
        Ok(Self { record })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RequestKind;

    fn request(channel: Value) -> RequestRecord {
        let spec = json!({"fn": "f", "kwargs": {}, "channel": channel}).to_string();
        let spec = serde_json::value::RawValue::from_string(spec).unwrap();
        let new = crate::NewRequest { kind: RequestKind::FunctionCall, call_id: "c".into(), run_id: "r".into(), spec };
        RequestRecord::new("p", new, Timestamp::from_micros(1))
    }

    #[test]
    fn an_escalation_needs_an_email_or_a_slack_channel_that_can_be_posted_to() {
        let at = Timestamp::from_micros(2);
        let plain = json!({"escalation_msg": "anyone?"});
        let slacked = request(json!({"slack": {"channel_or_user_id": "C1"}}));
        assert!(Escalation::parse(plain.clone(), &slacked, "k", at, false).is_err(), "not posted anywhere");
        assert!(Escalation::parse(plain.clone(), &slacked, "k", at, true).is_ok(), "answered in the thread");
        let to_slack = json!({"escalation_msg": "!", "channel": {"slack": {"channel_or_user_id": "C2"}}});
        assert!(Escalation::parse(to_slack, &request(Value::Null), "k", at, false).is_ok());
        let emailed = request(json!({"email": {"address": "a@x"}}));
        let recorded = Escalation::parse(plain.clone(), &emailed, "key k", at, false).unwrap();
        assert_eq!(recorded.record["escalated_by"], "key k");
        let err = Escalation::parse(plain, &request(Value::Null), "k", at, false).unwrap_err();
        assert!(format!("{err:?}").contains("nobody to escalate to"), "{err:?}");
    }
}
