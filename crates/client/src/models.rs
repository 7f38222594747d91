//! The HumanLayer API objects, as serde types.
//!
//! Every struct keeps the fields it does not know in `extra`, so a spec or channel sent by a newer
//! server (or built by hand) round-trips unchanged. Absent options are not serialized.

use crate::Error;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A JSON object (`kwargs`, unknown fields).
pub type JsonObject = Map<String, Value>;

/// What an agent wants to call, to be approved by a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallSpec {
    /// The function's name, as the human will see it.
    #[serde(rename = "fn")]
    pub fn_name: String,
    /// The arguments, as a JSON object.
    pub kwargs: JsonObject,
    /// Where to reach the human; the project's default channel when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ContactChannel>,
    /// Canned reasons the human may pick when rejecting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_options: Option<Vec<ResponseOption>>,
    /// Opaque agent state, echoed back verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
    /// Fields this SDK does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl FunctionCallSpec {
    /// A spec for `fn_name` with these arguments.
    pub fn new(fn_name: impl Into<String>, kwargs: JsonObject) -> Self {
        Self {
            fn_name: fn_name.into(),
            kwargs,
            channel: None,
            reject_options: None,
            state: None,
            extra: JsonObject::new(),
        }
    }

    /// A spec whose kwargs are `args` serialized; `args` must serialize to a JSON object.
    pub fn from_args(fn_name: impl Into<String>, args: &impl Serialize) -> Result<Self, Error> {
        let fn_name = fn_name.into();
        let kwargs = to_object(args).map_err(|why| Error::Arguments(format!("arguments of {fn_name}: {why}")))?;
        Ok(Self::new(fn_name, kwargs))
    }

    /// Sets the channel.
    pub fn channel(mut self, channel: ContactChannel) -> Self {
        self.channel = Some(channel);
        self
    }

    /// Adds a reject option.
    pub fn reject_option(mut self, option: ResponseOption) -> Self {
        self.reject_options.get_or_insert_with(Vec::new).push(option);
        self
    }

    /// Sets the opaque state.
    pub fn state(mut self, state: Value) -> Self {
        self.state = Some(state);
        self
    }
}

/// An approval request as the server returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// Groups the calls of one agent run.
    pub run_id: String,
    /// The request's id, chosen by the client.
    pub call_id: String,
    /// What was asked.
    pub spec: FunctionCallSpec,
    /// The decision so far; `approved: None` means pending.
    #[serde(default)]
    pub status: Option<FunctionCallStatus>,
    /// Email escalations recorded on the call, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalations: Option<Vec<Value>>,
    /// Fields this SDK does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl FunctionCall {
    /// `Some(true)` approved, `Some(false)` rejected, `None` pending.
    pub fn approved(&self) -> Option<bool> {
        self.status.as_ref().and_then(|s| s.approved)
    }
}

/// The state of an approval request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallStatus {
    /// When it was created (RFC 3339).
    #[serde(default)]
    pub requested_at: Option<String>,
    /// When it was decided (RFC 3339).
    #[serde(default)]
    pub responded_at: Option<String>,
    /// `None` while pending.
    #[serde(default)]
    pub approved: Option<bool>,
    /// The human's words; always a string on a rejection.
    #[serde(default)]
    pub comment: Option<String>,
    /// The reject option the human picked.
    #[serde(default)]
    pub reject_option_name: Option<String>,
    /// The Slack message of the request, when delivered there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_message_ts: Option<String>,
    /// Who decided, and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_info: Option<UserInfo>,
    /// The arguments as the human edited them before approving; run with these when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_kwargs: Option<JsonObject>,
    /// Countersign's signed receipt of the decision (a JWS over the exact call; see
    /// [`Client::verify_approval`](crate::Client::verify_approval)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// Fields this SDK does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

/// Who made a decision or gave an answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserInfo {
    /// `web`, `cli`, `api` or `email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The person's email, when a person with an account decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The person's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The displayable prefix of the API key that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Fields this SDK does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

/// A question for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HumanContactSpec {
    /// The question.
    pub msg: String,
    /// A subject line (email).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Where to reach the human; the project's default channel when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ContactChannel>,
    /// Canned answers the human may pick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_options: Option<Vec<ResponseOption>>,
    /// Opaque agent state, echoed back verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
    /// Fields this SDK does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl HumanContactSpec {
    /// A question with nothing else set.
    pub fn new(msg: impl Into<String>) -> Self {
        Self {
            msg: msg.into(),
            subject: None,
            channel: None,
            response_options: None,
            state: None,
            extra: JsonObject::new(),
        }
    }

    /// Sets the subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets the channel.
    pub fn channel(mut self, channel: ContactChannel) -> Self {
        self.channel = Some(channel);
        self
    }

    /// Adds a response option.
    pub fn response_option(mut self, option: ResponseOption) -> Self {
        self.response_options.get_or_insert_with(Vec::new).push(option);
        self
    }

    /// Sets the opaque state.
    pub fn state(mut self, state: Value) -> Self {
        self.state = Some(state);
        self
    }
}

impl From<&str> for HumanContactSpec {
    fn from(msg: &str) -> Self {
        Self::new(msg)
    }
}

impl From<String> for HumanContactSpec {
    fn from(msg: String) -> Self {
        Self::new(msg)
    }
}

/// A question as the server returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HumanContact {
    /// Groups the calls of one agent run.
    pub run_id: String,
    /// The question's id, chosen by the client.
    pub call_id: String,
    /// What was asked.
    pub spec: HumanContactSpec,
    /// The answer so far; `response: None` means pending.
    #[serde(default)]
    pub status: Option<HumanContactStatus>,
    /// Email escalations recorded on the question, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalations: Option<Vec<Value>>,
    /// Fields this SDK does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl HumanContact {
    /// The answer, once there is one.
    pub fn response(&self) -> Option<&str> {
        self.status.as_ref().and_then(|s| s.response.as_deref())
    }
}

/// The state of a question.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HumanContactStatus {
    /// When it was created (RFC 3339).
    #[serde(default)]
    pub requested_at: Option<String>,
    /// When it was answered (RFC 3339).
    #[serde(default)]
    pub responded_at: Option<String>,
    /// `None` while pending.
    #[serde(default)]
    pub response: Option<String>,
    /// The response option the human picked.
    #[serde(default)]
    pub response_option_name: Option<String>,
    /// Who answered, and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_info: Option<UserInfo>,
    /// Fields this SDK does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

/// A canned answer: a reject option of an approval, or a response option of a question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseOption {
    /// Unique within its list; reported back as `reject_option_name` / `response_option_name`.
    pub name: String,
    /// A short label for the human.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A longer explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The text submitted as the comment or response when the option is picked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_fill: Option<String>,
    /// Whether the human may edit `prompt_fill` before submitting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<bool>,
    /// Fields this SDK does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl ResponseOption {
    /// An option with only a name.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            title: None,
            description: None,
            prompt_fill: None,
            interactive: None,
            extra: JsonObject::new(),
        }
    }

    /// Sets the title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Sets the text submitted when the option is picked.
    pub fn prompt_fill(mut self, text: impl Into<String>) -> Self {
        self.prompt_fill = Some(text.into());
        self
    }

    /// Lets the human edit the text before submitting.
    pub fn interactive(mut self, interactive: bool) -> Self {
        self.interactive = Some(interactive);
        self
    }
}

/// Where and how to reach the human. Set one of the channels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactChannel {
    /// A Slack channel or user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackContactChannel>,
    /// A phone number, by SMS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<PhoneContactChannel>,
    /// A phone number, by WhatsApp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<PhoneContactChannel>,
    /// An email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailContactChannel>,
    /// Fields this SDK does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl ContactChannel {
    /// A channel that emails `address`.
    pub fn email(address: impl Into<String>) -> Self {
        Self { email: Some(EmailContactChannel::new(address)), ..Self::default() }
    }

    /// A channel that posts to a Slack channel or user id (`C123`, `U123`).
    pub fn slack(channel_or_user_id: impl Into<String>) -> Self {
        Self { slack: Some(SlackContactChannel::new(channel_or_user_id)), ..Self::default() }
    }
}

/// A Slack channel or user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlackContactChannel {
    /// A Slack id such as `C123456` or `U123456`.
    pub channel_or_user_id: String,
    /// Who is there, in words; used in the text the agent gets back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_about_channel_or_user: Option<String>,
    /// A custom bot token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_token: Option<String>,
    /// Only these Slack users may respond.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_responder_ids: Option<Vec<String>>,
    /// Use Slack blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experimental_slack_blocks: Option<bool>,
    /// Post as a reply in this thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_ts: Option<String>,
    /// Fields this SDK does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl SlackContactChannel {
    /// A Slack channel or user id.
    pub fn new(channel_or_user_id: impl Into<String>) -> Self {
        Self { channel_or_user_id: channel_or_user_id.into(), ..Self::default() }
    }
}

/// A phone number (SMS or WhatsApp).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhoneContactChannel {
    /// The number, in international format.
    pub phone_number: String,
    /// Who it is, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_about_user: Option<String>,
    /// Fields this SDK does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

/// An email address, with threading and template options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmailContactChannel {
    /// Where to send the request.
    pub address: String,
    /// Who it is, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_about_user: Option<String>,
    /// More recipients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_recipients: Option<Vec<EmailRecipient>>,
    /// The subject line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Threading: the `References` message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references_message_id: Option<String>,
    /// Threading: the `In-Reply-To` message id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to_message_id: Option<String>,
    /// A Jinja2 template for the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Fields this SDK does not know (including the `experimental_*` aliases).
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl EmailContactChannel {
    /// An email address.
    pub fn new(address: impl Into<String>) -> Self {
        Self { address: address.into(), ..Self::default() }
    }
}

/// One more recipient of an email.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EmailRecipient {
    /// The address.
    pub address: String,
    /// Who it is, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_about_user: Option<String>,
    /// `to`, `cc` or `bcc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Fields this SDK does not know.
    #[serde(flatten)]
    pub extra: JsonObject,
}

/// Serializes `value` and requires a JSON object.
pub(crate) fn to_object(value: &impl Serialize) -> Result<JsonObject, String> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("must serialize to a JSON object, not {}", kind(&other))),
        Err(e) => Err(e.to_string()),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_python_style_spec_round_trips_with_unknown_fields() {
        let sent = json!({
            "fn": "send_email",
            "kwargs": {"to": "a@b.c", "n": 1},
            "channel": {"slack": null, "sms": null, "whatsapp": null, "email": {
                "address": "boss@x.com", "experimental_subject_line": "Re: hi", "subject": "Re: hi"}},
            "reject_options": [{"name": "r1", "title": "T", "interactive": false, "color": "red"}],
            "state": {"step": 3},
            "future_field": [1, 2]
        });
        let spec: FunctionCallSpec = serde_json::from_value(sent).unwrap();
        assert_eq!(spec.channel.as_ref().unwrap().email.as_ref().unwrap().extra["experimental_subject_line"], "Re: hi");
        assert_eq!(spec.reject_options.as_ref().unwrap()[0].extra["color"], "red");
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["future_field"], json!([1, 2]));
        assert_eq!(back["state"], json!({"step": 3}));
        assert_eq!(
            back["channel"],
            json!({"email": {"address": "boss@x.com", "subject": "Re: hi",
            "experimental_subject_line": "Re: hi"}})
        );
    }

    #[test]
    fn a_minimal_spec_serializes_compactly() {
        let spec = FunctionCallSpec::new("f", JsonObject::new());
        assert_eq!(serde_json::to_string(&spec).unwrap(), r#"{"fn":"f","kwargs":{}}"#);
        assert_eq!(serde_json::to_string(&HumanContactSpec::new("q?")).unwrap(), r#"{"msg":"q?"}"#);
    }

    #[test]
    fn arguments_must_be_an_object() {
        let err = FunctionCallSpec::from_args("f", &[1, 2]).unwrap_err();
        assert_eq!(err.to_string(), "arguments of f: must serialize to a JSON object, not an array");
    }

    #[test]
    fn a_pending_call_has_no_decision() {
        let call: FunctionCall = serde_json::from_value(json!({
            "run_id": "r", "call_id": "c", "spec": {"fn": "f", "kwargs": {}},
            "status": {"requested_at": "2025-01-01T00:00:00Z", "responded_at": null, "approved": null,
                       "comment": null, "reject_option_name": null, "slack_message_ts": null, "user_info": null}
        }))
        .unwrap();
        assert_eq!(call.approved(), None);
        let without_status: FunctionCall =
            serde_json::from_value(json!({"run_id": "r", "call_id": "c", "spec": {"fn": "f", "kwargs": {}}})).unwrap();
        assert_eq!(without_status.approved(), None);
    }
}

/// Where the execution of an approved call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionState {
    /// Started, and no end reported (running, or the agent crashed).
    Started,
    Finished,
    Failed,
}

/// The execution of an approved call, as Countersign recorded it
/// (`/function_calls/{call_id}/execution`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    pub call_id: String,
    pub state: ExecutionState,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Who reported the start (`key cs_…`).
    pub started_by: String,
    /// When it finished or failed.
    #[serde(default)]
    pub ended_at: Option<String>,
    /// Hex SHA-256 of the result, if the agent reported one.
    #[serde(default)]
    pub result_sha256: Option<String>,
    /// What went wrong, for a failed one.
    #[serde(default)]
    pub error: Option<String>,
}

impl Execution {
    /// One line for people: `started at … by …, and never reported finished or failed`.
    pub fn describe(&self) -> String {
        let started = format!("started at {} by {}", self.started_at, self.started_by);
        match (self.state, &self.ended_at) {
            (ExecutionState::Started, _) | (_, None) => format!("{started}, and never reported finished or failed"),
            (ExecutionState::Finished, Some(at)) => format!("{started}, finished at {at}"),
            (ExecutionState::Failed, Some(at)) => format!("{started}, failed at {at}"),
        }
    }
}
