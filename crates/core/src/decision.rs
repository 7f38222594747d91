//! Decisions: what a human answered, who they were, and through which channel.

use crate::Timestamp;
use serde::{Deserialize, Serialize};

/// What the human decided. Once recorded it never changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The function call may run; with `updated_kwargs` (JSON object text), with those arguments
    /// instead of the agent's.
    Approved { comment: Option<String>, updated_kwargs: Option<String> },
    /// The function call must not run; `comment` is what the agent is told (never null).
    Rejected { comment: String, option: Option<String> },
    /// The human answered a question; `response` is never empty.
    Answered { response: String, option: Option<String> },
    /// Nobody decided: the request ended by itself (its deadline passed) or the agent withdrew it.
    /// `comment` is what the agent is told (the SDKs see a rejection, or this as the answer).
    Ended { ending: Ending, comment: String },
}

/// How a request ended without a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ending {
    /// Its deadline passed (the policy's `expire_after`, or the agent's `expires_at`).
    Expired,
    /// The agent cancelled it.
    Cancelled,
}

impl Ending {
    /// The name stored and shown: `expired`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Expired, Self::Cancelled].into_iter().find(|e| e.as_str() == s)
    }
}

/// Where a decision was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionChannel {
    /// Through the HTTP API with a project key (`/agent/.../respond`).
    Api,
    /// In the web inbox.
    Web,
    /// From the `countersign` terminal commands.
    Cli,
    /// A link in an email, or a reply to one.
    Email,
    /// A button, a modal or a thread reply in Slack.
    Slack,
    /// The project's policy: a rule decided at creation, or a deadline passed.
    Policy,
    /// A reply to a text message.
    Sms,
    /// A reply on WhatsApp.
    Whatsapp,
}

impl DecisionChannel {
    /// The channel's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Web => "web",
            Self::Cli => "cli",
            Self::Email => "email",
            Self::Slack => "slack",
            Self::Policy => "policy",
            Self::Sms => "sms",
            Self::Whatsapp => "whatsapp",
        }
    }
}

/// Who made a decision; returned to agents as `status.user_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Channel the decision came through.
    pub channel: DecisionChannel,
    /// Display prefix of the API key used, for API decisions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub api_key: Option<String>,
    /// The person's user id, when a person signed in.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user_id: Option<String>,
    /// The person's email, when a person signed in.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
    /// How the decision arrived, when the channel alone does not say (a reply by inbound email).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub via: Option<Via>,
    /// The Slack user who decided, for Slack decisions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub slack_user_id: Option<String>,
    /// Their Slack workspace (team), for Slack decisions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub slack_team_id: Option<String>,
    /// The number that replied (E.164), for SMS and WhatsApp decisions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub phone_number: Option<String>,
    /// The policy rule that decided, for policy decisions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rule: Option<String>,
    /// Why the policy decided when the rule alone does not say (an expiry that approves).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// Every vote cast toward the request's quorum, when its rule asked for one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub votes: Option<Vec<Vote>>,
}

/// One person's vote toward a quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The person's email, lower-cased.
    pub voter: String,
    pub approved: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comment: Option<String>,
    /// Where they voted.
    pub channel: DecisionChannel,
    /// When, RFC 3339.
    pub at: String,
}

/// How a decision arrived within its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// A reply to the email, forwarded by the project's inbound-mail service (authenticated by the
    /// project's inbound-email secret); `email` is the reply's `From:` address.
    InboundEmail,
    /// A kind this version does not know (recorded by a newer one).
    #[serde(other)]
    Other,
}

impl Actor {
    /// Someone on `channel`, with nothing else known yet (fill in the rest with `..`).
    pub fn new(channel: DecisionChannel) -> Self {
        Self {
            channel,
            api_key: None,
            user_id: None,
            email: None,
            via: None,
            slack_user_id: None,
            slack_team_id: None,
            phone_number: None,
            rule: None,
            reason: None,
            votes: None,
        }
    }

    /// A decision made through the API with the key whose display prefix is given.
    pub fn api_key(display_prefix: &str) -> Self {
        Self { api_key: Some(display_prefix.to_owned()), ..Self::new(DecisionChannel::Api) }
    }

    /// A decision of the policy's rule `rule`.
    pub fn policy(rule: &str, reason: Option<String>) -> Self {
        Self { rule: Some(rule.to_owned()), reason, ..Self::new(DecisionChannel::Policy) }
    }
}

/// A recorded decision: what, when and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub responded_at: Timestamp,
    pub decision: Decision,
    pub decided_by: Actor,
}
