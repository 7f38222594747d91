//! What a human decided or answered, in the shape an agent uses it.

use crate::models::{FunctionCall, HumanContact, JsonObject, UserInfo};

/// A human's decision on a function call.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    /// Whether the function may run.
    pub approved: bool,
    /// The human's words (always a string on a rejection; maybe `None` on an approval).
    pub comment: Option<String>,
    /// The reject option the human picked, if any.
    pub reject_option_name: Option<String>,
    /// The arguments to run the function with: the human's edited arguments
    /// (`status.updated_kwargs`) when present, else the requested ones.
    pub kwargs: JsonObject,
    /// Who decided, and how.
    pub user_info: Option<UserInfo>,
    /// The whole decided request, as the server returned it.
    pub call: FunctionCall,
}

impl Approval {
    /// Reads a decided call; `None` while it is pending.
    pub fn from_call(call: FunctionCall) -> Option<Self> {
        let status = call.status.clone()?;
        let approved = status.approved?;
        let kwargs = status.updated_kwargs.clone().unwrap_or_else(|| call.spec.kwargs.clone());
        Some(Self {
            approved,
            comment: status.comment,
            reject_option_name: status.reject_option_name,
            kwargs,
            user_info: status.user_info,
            call,
        })
    }

    /// The function's name.
    pub fn fn_name(&self) -> &str {
        &self.call.spec.fn_name
    }

    /// True when the human approved with arguments different from the requested ones.
    pub fn kwargs_edited(&self) -> bool {
        self.kwargs != self.call.spec.kwargs
    }

    /// The text an LLM should see for a rejection, as the released Python SDK words it:
    /// `User denied {fn} with message: {comment}` (`User in {context} denied ...` when the request
    /// went to a Slack channel with a context).
    pub fn denial_message(&self) -> String {
        let comment = self.comment.as_deref().unwrap_or("");
        let context = self
            .call
            .spec
            .channel
            .as_ref()
            .and_then(|c| c.slack.as_ref())
            .and_then(|s| s.context_about_channel_or_user.as_deref());
        match context {
            Some(context) => format!("User in {context} denied {} with message: {comment}", self.fn_name()),
            None => format!("User denied {} with message: {comment}", self.fn_name()),
        }
    }

    /// The rejection as a [`Denied`]; `None` when approved.
    pub fn denied(&self) -> Option<Denied> {
        (!self.approved).then(|| Denied {
            message: self.denial_message(),
            fn_name: self.fn_name().to_owned(),
            comment: self.comment.clone().unwrap_or_default(),
            reject_option_name: self.reject_option_name.clone(),
            user_info: self.user_info.clone(),
            call_id: self.call.call_id.clone(),
        })
    }
}

/// A human rejected a function call: the function did not run.
///
/// [`Denied::message`] is the text to give back to the LLM in place of the function's result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Denied {
    message: String,
    /// The function that was not run.
    pub fn_name: String,
    /// The human's words (`""` when they gave none).
    pub comment: String,
    /// The reject option the human picked, if any.
    pub reject_option_name: Option<String>,
    /// Who rejected, and how.
    pub user_info: Option<UserInfo>,
    /// The rejected request.
    pub call_id: String,
}

impl Denied {
    /// `User denied {fn} with message: {comment}`: what the LLM should see.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A human's answer to a question.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The answer.
    pub response: String,
    /// The response option the human picked, if any.
    pub response_option_name: Option<String>,
    /// Who answered, and how.
    pub user_info: Option<UserInfo>,
    /// The whole answered question, as the server returned it.
    pub contact: HumanContact,
}

impl Answer {
    /// Reads an answered question; `None` while it is pending.
    pub fn from_contact(contact: HumanContact) -> Option<Self> {
        let status = contact.status.clone()?;
        Some(Self {
            response: status.response?,
            response_option_name: status.response_option_name,
            user_info: status.user_info,
            contact,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decided(status: serde_json::Value) -> Approval {
        let call = serde_json::from_value(json!({
            "run_id": "r", "call_id": "c1",
            "spec": {"fn": "send_email", "kwargs": {"to": "a@b.c", "body": "hi"}},
            "status": status
        }))
        .unwrap();
        Approval::from_call(call).expect("decided")
    }

    #[test]
    fn approved_without_edits_runs_with_the_requested_arguments() {
        let approval = decided(json!({"approved": true, "comment": null, "user_info": {"channel": "api"}}));
        assert!(approval.approved);
        assert_eq!(approval.kwargs, json!({"to": "a@b.c", "body": "hi"}).as_object().cloned().unwrap());
        assert!(!approval.kwargs_edited());
        assert!(approval.denied().is_none());
        assert_eq!(approval.user_info.unwrap().channel.as_deref(), Some("api"));
    }

    #[test]
    fn approved_with_edits_runs_with_the_updated_arguments() {
        let approval = decided(json!({"approved": true, "updated_kwargs": {"to": "b@b.c", "body": "hello"}}));
        assert_eq!(approval.kwargs, json!({"to": "b@b.c", "body": "hello"}).as_object().cloned().unwrap());
        assert!(approval.kwargs_edited());
        assert_eq!(approval.call.spec.kwargs["to"], "a@b.c", "the request itself is unchanged");
    }

    #[test]
    fn a_rejection_reads_like_the_python_sdk() {
        let approval = decided(json!({"approved": false, "comment": "not to them", "reject_option_name": "wrong"}));
        assert_eq!(approval.denial_message(), "User denied send_email with message: not to them");
        let denied = approval.denied().unwrap();
        assert_eq!(denied.message(), "User denied send_email with message: not to them");
        assert_eq!(denied.to_string(), denied.message());
        assert_eq!(denied.reject_option_name.as_deref(), Some("wrong"));
    }

    #[test]
    fn a_rejection_without_a_comment_has_an_empty_message() {
        let approval = decided(json!({"approved": false, "comment": null}));
        assert_eq!(approval.denial_message(), "User denied send_email with message: ");
    }

    #[test]
    fn a_slack_context_names_who_denied() {
        let call = serde_json::from_value(json!({
            "run_id": "r", "call_id": "c1",
            "spec": {"fn": "refund", "kwargs": {},
                     "channel": {"slack": {"channel_or_user_id": "C1", "context_about_channel_or_user": "the finance team"}}},
            "status": {"approved": false, "comment": "too much"}
        }))
        .unwrap();
        let approval = Approval::from_call(call).unwrap();
        assert_eq!(approval.denial_message(), "User in the finance team denied refund with message: too much");
    }

    #[test]
    fn pending_is_not_a_decision() {
        let call = serde_json::from_value(json!({
            "run_id": "r", "call_id": "c1", "spec": {"fn": "f", "kwargs": {}}, "status": {"approved": null}
        }))
        .unwrap();
        assert!(Approval::from_call(call).is_none());
        let contact = serde_json::from_value(json!({
            "run_id": "r", "call_id": "c1", "spec": {"msg": "?"}, "status": {"response": null}
        }))
        .unwrap();
        assert!(Answer::from_contact(contact).is_none());
    }
}
