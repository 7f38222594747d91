//! Composing the email of a request or of an escalation: recipients (to, cc, bcc), subject,
//! threading headers, and a text and HTML body with the action links (or the agent's Jinja2
//! template, rendered with minijinja).

use super::links::LinkAction;
use crate::html::escape;
use countersign_core::wire::{EmailContactChannel, RecipientField};
use countersign_core::{RequestKind, RequestRecord};
use serde::Deserialize;
use serde_json::{Value, json};

/// Why an email has no recipient (an escalation of a request that reaches only Slack).
pub const NOBODY: &str = "nobody to send the email to";

/// Where the email goes and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub subject: String,
    pub in_reply_to: Option<String>,
    pub references: Option<String>,
    pub text: String,
    pub html: String,
}

impl Composed {
    /// Every address the email goes to.
    pub fn recipients(&self) -> Vec<String> {
        self.to.iter().chain(&self.cc).chain(&self.bcc).map(|a| a.to_lowercase()).collect()
    }
}

/// The links of one email, by action.
pub struct Links {
    /// The page of the request, with every action.
    pub view: String,
    pub of: Vec<(LinkAction, String)>,
}

#[derive(Deserialize)]
struct EscalationFields {
    escalation_msg: Option<String>,
    additional_recipients: Option<Vec<countersign_core::wire::EmailRecipient>>,
    channel: Option<countersign_core::wire::ContactChannel>,
}

/// The email channel of a request: its own, else (when it names no channel) the project's default
/// address.
pub fn channel_of(record: &RequestRecord, project_default: Option<&str>) -> Option<EmailContactChannel> {
    match record.channel() {
        Some(channel) => channel.email,
        None => project_default.map(|address| EmailContactChannel {
            address: address.to_owned(),
            context_about_user: None,
            additional_recipients: None,
            subject: None,
            references_message_id: None,
            in_reply_to_message_id: None,
            experimental_subject_line: None,
            experimental_references_message_id: None,
            experimental_in_reply_to_message_id: None,
            template: None,
        }),
    }
}

/// The agent's template of an email's HTML part, with its variables, to render (see
/// `super::render`): bounded, and off the async threads.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub source: String,
    /// `event`, `type` and `urls`.
    pub context: Value,
}

/// Composes the email for `record` on `channel` (see [`channel_of`]); `escalation` is the
/// escalation's stored record when the email announces one. With the agent's template, the HTML
/// part is left empty and the template returned, for the caller to render into it.
pub fn compose(
    record: &RequestRecord,
    channel: Option<EmailContactChannel>,
    escalation: Option<&Value>,
    links: &Links,
) -> Result<(Composed, Option<Template>), String> {
    let escalation: Option<EscalationFields> = match escalation {
        Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| format!("unreadable escalation: {e}"))?),
        None => None,
    };
    let mut composed = Composed {
        to: Vec::new(),
        cc: Vec::new(),
        bcc: Vec::new(),
        subject: String::new(),
        in_reply_to: None,
        references: None,
        text: String::new(),
        html: String::new(),
    };
    let mut add = |address: &str, field: Option<RecipientField>| {
        let address = address.trim().to_owned();
        if address.is_empty() {
            return;
        }
        match field.unwrap_or(RecipientField::To) {
            RecipientField::To => composed.to.push(address),
            RecipientField::Cc => composed.cc.push(address),
            RecipientField::Bcc => composed.bcc.push(address),
        }
    };
    let mut template = channel.as_ref().and_then(|c| c.template.clone());
    match &escalation {
        None => {
            let Some(email) = &channel else { return Err("the request has no email channel".into()) };
            add(&email.address, None);
            for r in email.additional_recipients.iter().flatten() {
                add(&r.address, r.field);
            }
        }
        Some(esc) => {
            let esc_email = esc.channel.as_ref().and_then(|c| c.email.as_ref());
            if let Some(e) = esc_email {
                add(&e.address, None);
                template = e.template.clone().or(template);
            }
            for r in esc.additional_recipients.iter().flatten() {
                add(&r.address, r.field);
            }
            if esc_email.is_none()
                && esc.additional_recipients.as_ref().is_none_or(|r| r.is_empty())
                && let Some(email) = &channel
            {
                add(&email.address, None);
            }
        }
    }
    if composed.to.is_empty() && composed.cc.is_empty() && composed.bcc.is_empty() {
        return Err(NOBODY.into());
    }
    let summary = record.summary();
    let subject = channel.as_ref().and_then(|c| c.experimental_subject_line.clone().or_else(|| c.subject.clone()));
    let default_subject = match record.kind {
        RequestKind::FunctionCall => format!("Approval needed: {summary}"),
        RequestKind::HumanContact => format!("Question: {summary}"),
    };
    let subject = subject.filter(|s| !s.trim().is_empty()).unwrap_or(default_subject);
    composed.subject = match &escalation {
        Some(_) => format!("Escalated: {subject}"),
        None => subject,
    };
    composed.in_reply_to = channel
        .as_ref()
        .and_then(|c| c.experimental_in_reply_to_message_id.clone().or_else(|| c.in_reply_to_message_id.clone()));
    composed.references = channel
        .as_ref()
        .and_then(|c| c.experimental_references_message_id.clone().or_else(|| c.references_message_id.clone()));

    let escalation_msg = escalation.as_ref().and_then(|e| e.escalation_msg.clone()).unwrap_or_default();
    let event: Value = serde_json::from_slice(&record.to_json()).map_err(|e| e.to_string())?;
    composed.text = text_body(record, &event, &escalation_msg, links);
    let template = match template {
        Some(source) => Some(Template { context: template_context(record, event, links), source }),
        None => {
            composed.html = html_body(record, &event, &escalation_msg, links);
            None
        }
    };
    Ok((composed, template))
}

fn link(links: &Links, action: LinkAction) -> &str {
    links.of.iter().find(|(a, _)| *a == action).map_or(links.view.as_str(), |(_, url)| url.as_str())
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

fn text_body(record: &RequestRecord, event: &Value, escalation_msg: &str, links: &Links) -> String {
    let mut out = String::new();
    if !escalation_msg.is_empty() {
        out.push_str(&format!("Escalated: {escalation_msg}\n\n"));
    }
    match record.kind {
        RequestKind::FunctionCall => {
            out.push_str(&format!(
                "An agent wants to call {} with these arguments:\n\n{}\n\n",
                event["spec"]["fn"].as_str().unwrap_or_default(),
                pretty(&event["spec"]["kwargs"])
            ));
            out.push_str(&format!("Approve: {}\n", link(links, LinkAction::Approve)));
            out.push_str(&format!("Reject (with a comment or an option): {}\n\n", link(links, LinkAction::Reject)));
            out.push_str(
                "Or reply to this email: \"approve\" on the first line approves; \"reject\" followed by your \
                 reason rejects.\n",
            );
        }
        RequestKind::HumanContact => {
            out.push_str(&format!("An agent asks:\n\n{}\n\n", event["spec"]["msg"].as_str().unwrap_or_default()));
            out.push_str(&format!("Answer: {}\n\n", link(links, LinkAction::Answer)));
            out.push_str("Or reply to this email with your answer.\n");
        }
    }
    out.push_str(&format!("\nRun {} · call {}\n", record.run_id, record.call_id));
    out
}

fn html_body(record: &RequestRecord, event: &Value, escalation_msg: &str, links: &Links) -> String {
    let mut out = String::from("<!doctype html><html><body style=\"font-family: sans-serif\">");
    if !escalation_msg.is_empty() {
        out.push_str(&format!("<p><strong>Escalated:</strong> {}</p>", escape(escalation_msg)));
    }
    let button = |url: &str, label: &str, color: &str| {
        format!(
            "<a href=\"{}\" style=\"display:inline-block;padding:8px 16px;margin-right:8px;background:{color};color:#fff;\
             text-decoration:none;border-radius:4px\">{label}</a>",
            escape(url)
        )
    };
    match record.kind {
        RequestKind::FunctionCall => {
            out.push_str(&format!(
                "<p>An agent wants to call <code>{}</code> with:</p><pre style=\"background:#f6f7f9;padding:8px\">{}</pre><p>",
                escape(event["spec"]["fn"].as_str().unwrap_or_default()),
                escape(&pretty(&event["spec"]["kwargs"]))
            ));
            out.push_str(&button(link(links, LinkAction::Approve), "Approve", "#1f7a3d"));
            out.push_str(&button(link(links, LinkAction::Reject), "Reject", "#b3261e"));
            out.push_str("</p><p>Or reply: <em>approve</em> on the first line approves; <em>reject</em> and your reason rejects.</p>");
        }
        RequestKind::HumanContact => {
            out.push_str(&format!(
                "<p>An agent asks:</p><blockquote style=\"white-space:pre-wrap\">{}</blockquote><p>",
                escape(event["spec"]["msg"].as_str().unwrap_or_default())
            ));
            out.push_str(&button(link(links, LinkAction::Answer), "Answer", "#2453c7"));
            out.push_str("</p><p>Or reply to this email with your answer.</p>");
        }
    }
    out.push_str(&format!(
        "<p style=\"color:#5d6677;font-size:12px\">Run {} · call {}</p></body></html>",
        escape(&record.run_id),
        escape(&record.call_id)
    ));
    out
}

/// The variables of the agent's template: `event`, `type` and `urls`.
fn template_context(record: &RequestRecord, event: Value, links: &Links) -> Value {
    let kind = match record.kind {
        RequestKind::FunctionCall => "v1beta2.function_call",
        RequestKind::HumanContact => "v1beta2.human_contact",
    };
    let urls = json!({
        "base_url": links.view,
        "approve": link(links, LinkAction::Approve),
        "reject": link(links, LinkAction::Reject),
        "answer": link(links, LinkAction::Answer),
    });
    json!({"event": event, "type": kind, "urls": urls})
}
