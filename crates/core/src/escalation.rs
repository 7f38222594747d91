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
    /// additional recipients, or the request's own email or Slack channel.
    pub fn parse(body: Value, request: &RequestRecord, by: &str, at: Timestamp) -> Result<Self, Invalid> {
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
            || has_slack(&request_channel);
        if !reachable {
            return Err(Invalid::new(
                "channel",
                "nobody to escalate to: give channel.email.address, channel.slack.channel_or_user_id or \
                 additional_recipients, or create the request with an email or Slack channel",
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
