//! What a request's `channel.slack` asks for (HumanLayer's `SlackContactChannel`, as the released
//! SDKs send it).

use countersign_core::RequestRecord;
use serde::Deserialize;

/// A request's Slack contact channel, read from its spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlackTarget {
    /// The channel or user to post to; `None` for none or `""` (the project's default channel).
    pub channel: Option<String>,
    /// A token that overrides the project's.
    pub bot_token: Option<String>,
    /// Post as a reply in this thread.
    pub thread_ts: Option<String>,
    /// Only these Slack users may decide (`None`: anyone in the channel).
    pub allowed_responder_ids: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Spec {
    channel: Option<ChannelSpec>,
}

#[derive(Deserialize)]
struct ChannelSpec {
    slack: Option<SlackSpec>,
}

#[derive(Deserialize)]
struct SlackSpec {
    channel_or_user_id: Option<String>,
    bot_token: Option<String>,
    thread_ts: Option<String>,
    allowed_responder_ids: Option<Vec<String>>,
}

impl SlackTarget {
    /// The request's Slack channel (all `None` when it names none, or names it oddly).
    pub fn of(record: &RequestRecord) -> Self {
        let spec: Option<Spec> = serde_json::from_str(record.spec.get()).ok();
        let Some(slack) = spec.and_then(|s| s.channel).and_then(|c| c.slack) else { return Self::default() };
        let present = |s: Option<String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        Self {
            channel: present(slack.channel_or_user_id),
            bot_token: present(slack.bot_token),
            thread_ts: present(slack.thread_ts),
            allowed_responder_ids: slack.allowed_responder_ids,
        }
    }

    /// True when `user` may decide: anyone, or one of the allowed responders.
    pub fn allows(&self, user: &str) -> bool {
        self.allowed_responder_ids.as_ref().is_none_or(|ids| ids.iter().any(|id| id == user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use countersign_core::{NewRequest, RequestKind, Timestamp};
    use serde_json::json;

    fn record(spec: serde_json::Value) -> RequestRecord {
        let spec = serde_json::value::RawValue::from_string(spec.to_string()).unwrap();
        let new = NewRequest { kind: RequestKind::FunctionCall, call_id: "c".into(), run_id: "r".into(), spec };
        RequestRecord::new("p", new, Timestamp::from_micros(1))
    }

    #[test]
    fn the_slack_channel_is_read_as_the_sdks_send_it() {
        let t = SlackTarget::of(&record(json!({"fn": "f", "channel": {"slack": {
            "channel_or_user_id": " C1 ", "bot_token": "xoxb-own", "thread_ts": "1.2",
            "allowed_responder_ids": ["UA"], "context_about_channel_or_user": "ops", "experimental_slack_blocks": true
        }}})));
        assert_eq!(t.channel.as_deref(), Some("C1"));
        assert_eq!(t.bot_token.as_deref(), Some("xoxb-own"));
        assert_eq!(t.thread_ts.as_deref(), Some("1.2"));
        assert!(t.allows("UA") && !t.allows("UB"));
        // Python sends every field, null when unset; "" means the project's default channel.
        let t = SlackTarget::of(&record(json!({"channel": {"slack": {"channel_or_user_id": "", "bot_token": null,
            "thread_ts": null, "allowed_responder_ids": null}, "email": null, "sms": null, "whatsapp": null}})));
        assert_eq!(t, SlackTarget::default());
        assert!(t.allows("anyone"));
        assert_eq!(SlackTarget::of(&record(json!({"channel": {"email": {"address": "a@x"}}}))), SlackTarget::default());
        assert_eq!(SlackTarget::of(&record(json!({"channel": {"slack": 3}}))), SlackTarget::default());
        assert!(
            !SlackTarget::of(&record(
                json!({"channel": {"slack": {"channel_or_user_id": "C", "allowed_responder_ids": []}}})
            ))
            .allows("UA")
        );
    }
}
