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
