//! The HumanLayer wire types, as the released SDKs send and expect them.
//!
//! Incoming specs are validated by deserializing into these types, but stored as the JSON the client
//! sent, so that every field (including `state` and unknown ones) round-trips exactly. Unknown fields
//! are ignored, as the SDKs require.

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// A JSON object whose contents are opaque to Countersign (`kwargs`, `state`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpaqueObject;

impl<'de> Deserialize<'de> for OpaqueObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = OpaqueObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OpaqueObject, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(OpaqueObject)
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// Where and how to reach the human.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ContactChannel {
    pub slack: Option<SlackContactChannel>,
    pub sms: Option<SmsContactChannel>,
    pub whatsapp: Option<SmsContactChannel>,
    pub email: Option<EmailContactChannel>,
}

/// A Slack channel or user.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct SlackContactChannel {
    pub channel_or_user_id: String,
    pub context_about_channel_or_user: Option<String>,
    pub bot_token: Option<String>,
    pub allowed_responder_ids: Option<Vec<String>>,
    pub experimental_slack_blocks: Option<bool>,
    pub thread_ts: Option<String>,
}

/// A phone number for SMS or WhatsApp.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct SmsContactChannel {
    pub phone_number: String,
    pub context_about_user: Option<String>,
}

/// An email address, with threading and template options.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EmailContactChannel {
    pub address: String,
    pub context_about_user: Option<String>,
    pub additional_recipients: Option<Vec<EmailRecipient>>,
    pub subject: Option<String>,
    pub references_message_id: Option<String>,
    pub in_reply_to_message_id: Option<String>,
    pub experimental_subject_line: Option<String>,
    pub experimental_references_message_id: Option<String>,
    pub experimental_in_reply_to_message_id: Option<String>,
    pub template: Option<String>,
}

/// One more recipient of an email.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EmailRecipient {
    pub address: String,
    pub context_about_user: Option<String>,
    /// `to`, `cc` or `bcc`.
    pub field: Option<RecipientField>,
}

/// How an additional recipient is addressed.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecipientField {
    To,
    Cc,
    Bcc,
}

/// A canned answer: a reject option on approvals, a response option on questions.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ResponseOption {
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    /// Text submitted as the comment or response when the option is chosen.
    pub prompt_fill: Option<String>,
    /// When true the human may edit `prompt_fill` before submitting.
    pub interactive: Option<bool>,
}

/// What the agent wants to call.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct FunctionCallSpec {
    #[serde(rename = "fn")]
    pub fn_name: String,
    #[schema(value_type = Object)]
    pub kwargs: OpaqueObject,
    pub channel: Option<ContactChannel>,
    pub reject_options: Option<Vec<ResponseOption>>,
    /// Opaque agent state, echoed back verbatim.
    #[schema(value_type = Option<Object>)]
    pub state: Option<OpaqueObject>,
}

/// What the agent asks the human.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct HumanContactSpec {
    pub msg: String,
    pub subject: Option<String>,
    pub channel: Option<ContactChannel>,
    pub response_options: Option<Vec<ResponseOption>>,
    /// Opaque agent state, echoed back verbatim.
    #[schema(value_type = Option<Object>)]
    pub state: Option<OpaqueObject>,
}

/// Body of `POST /function_calls`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct FunctionCallCreate {
    pub run_id: String,
    pub call_id: String,
    pub spec: FunctionCallSpec,
}

/// Body of `POST /contact_requests`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct HumanContactCreate {
    pub run_id: String,
    pub call_id: String,
    pub spec: HumanContactSpec,
}

/// Body of `POST /agent/function_calls/{call_id}/respond`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct FunctionCallRespond {
    /// `true` approves, `false` rejects; required.
    pub approved: Option<bool>,
    /// Optional on approval; the rejection reason otherwise (`""` when absent).
    pub comment: Option<String>,
    /// The chosen reject option, when rejecting with one.
    pub reject_option_name: Option<String>,
    /// Approve with these arguments instead of the agent's (an object; only with `approved: true`).
    #[schema(value_type = Option<Object>)]
    pub updated_kwargs: Option<serde_json::Value>,
}

/// Body of `POST /agent/human_contacts/{call_id}/respond`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct HumanContactRespond {
    /// The human's answer; must not be empty unless a response option supplies it.
    pub response: Option<String>,
    pub response_option_name: Option<String>,
}

/// Body of the `escalate_email` endpoints.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EscalationBody {
    pub escalation_msg: String,
    pub additional_recipients: Option<Vec<EmailRecipient>>,
    pub channel: Option<ContactChannel>,
}

/// Status of a function call; `approved: null` means pending.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FunctionCallStatus {
    pub requested_at: Option<String>,
    pub responded_at: Option<String>,
    pub approved: Option<bool>,
    pub comment: Option<String>,
    pub reject_option_name: Option<String>,
    pub slack_message_ts: Option<String>,
    /// Who decided, and through which channel.
    #[schema(value_type = Option<Object>)]
    pub user_info: Option<serde_json::Value>,
    /// The arguments the human approved, when they edited them (`spec.kwargs` stays as sent).
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_kwargs: Option<Box<serde_json::value::RawValue>>,
    /// The decision's signed receipt (a JWS; see `GET /.well-known/countersign/keys.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
}

/// Status of a human contact; `response: null` means pending.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HumanContactStatus {
    pub requested_at: Option<String>,
    pub responded_at: Option<String>,
    pub response: Option<String>,
    pub response_option_name: Option<String>,
    /// Who answered, and through which channel.
    #[schema(value_type = Option<Object>)]
    pub user_info: Option<serde_json::Value>,
    /// The answer's signed receipt (a JWS; see `GET /.well-known/countersign/keys.json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
}

/// An approval request as returned by the API.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FunctionCall {
    pub run_id: String,
    pub call_id: String,
    #[schema(value_type = FunctionCallSpec)]
    pub spec: serde_json::Value,
    pub status: FunctionCallStatus,
    /// Escalations recorded on this call, oldest first (absent when none).
    #[schema(value_type = Option<Vec<Object>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalations: Option<Vec<serde_json::Value>>,
}

/// A question to a human as returned by the API.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HumanContact {
    pub run_id: String,
    pub call_id: String,
    #[schema(value_type = HumanContactSpec)]
    pub spec: serde_json::Value,
    pub status: HumanContactStatus,
    /// Escalations recorded on this contact, oldest first (absent when none).
    #[schema(value_type = Option<Vec<Object>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalations: Option<Vec<serde_json::Value>>,
}
