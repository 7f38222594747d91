//! The view of one request, as the inbox's detail pane and the email link page show it: what was
//! asked, the highlighted JSON, the options, and how it ended.

use super::json::highlight;
use super::segment;
use crate::services::requests::{actor_name, describe};
use countersign_core::{Decision, RequestKind, RequestRecord, Timestamp};

/// The URL of a request's page in the web inbox.
pub fn href(project: &str, record: &RequestRecord) -> String {
    let kind = match record.kind {
        RequestKind::FunctionCall => "approval",
        RequestKind::HumanContact => "question",
    };
    format!("/r/{}/{kind}/{}", segment(project), segment(&record.call_id))
}

/// `2026-11-25 14:03:07 UTC`.
pub fn short_time(at: Timestamp) -> String {
    let text = at.to_rfc3339();
    format!("{} UTC", text.get(..19).unwrap_or(&text).replace('T', " "))
}

/// `Approval` or `Question`.
pub fn kind_label(kind: RequestKind) -> &'static str {
    match kind {
        RequestKind::FunctionCall => "Approval",
        RequestKind::HumanContact => "Question",
    }
}

/// An option a human may pick.
pub struct OptionView {
    pub name: String,
    pub label: String,
    pub description: String,
    pub fill: String,
    pub interactive: bool,
}

/// How a request ended.
pub struct OutcomeView {
    pub status: &'static str,
    pub by: String,
    pub channel: &'static str,
    pub at: String,
    /// The comment or the answer.
    pub text: String,
    pub option: String,
    /// The edited arguments the approval ran with, highlighted; empty when unedited.
    pub edited_html: String,
}

impl OutcomeView {
    pub fn of(record: &RequestRecord, max_render_bytes: usize) -> Option<Self> {
        let outcome = record.outcome.as_ref()?;
        let edited_html = match &outcome.decision {
            Decision::Approved { updated_kwargs: Some(edited), .. } => highlight(edited, max_render_bytes),
            _ => String::new(),
        };
        let (text, option) = match &outcome.decision {
            Decision::Approved { comment, .. } => (comment.clone().unwrap_or_default(), None),
            Decision::Rejected { comment, option } => (comment.clone(), option.clone()),
            Decision::Answered { response, option } => (response.clone(), option.clone()),
            Decision::Ended { comment, .. } => (comment.clone(), None),
        };
        Some(Self {
            status: describe(record),
            by: actor_name(&outcome.decided_by),
            channel: outcome.decided_by.channel.as_str(),
            at: short_time(outcome.responded_at),
            text,
            option: option.unwrap_or_default(),
            edited_html,
        })
    }
}

/// Everything the detail view shows about one request.
pub struct Detail {
    pub href: String,
    pub project: String,
    pub is_approval: bool,
    pub kind_label: &'static str,
    pub title: String,
    pub msg: String,
    pub call_id: String,
    pub run_id: String,
    pub run_href: String,
    pub asked: String,
    pub kwargs_html: String,
    /// The arguments as indented JSON text, for the edit box.
    pub kwargs_text: String,
    pub state_html: String,
    pub channel_html: String,
    pub options: Vec<OptionView>,
    pub escalations: usize,
    pub outcome: Option<OutcomeView>,
    /// Shown above the forms, e.g. "Already decided by ...".
    pub notice: String,
    /// A validation error of the last submission.
    pub error: String,
    pub csrf: String,
    /// Who said they are looking at it (a claim, e.g. from Slack), while pending.
    pub claimed: String,
}

/// How a claim is shown in the inbox: `by X via slack at T` (a Slack mention as "Slack user U...").
pub fn claim_text(claim: &countersign_store::RequestClaim) -> String {
    let by = match claim.by.strip_prefix("<@").and_then(|rest| rest.strip_suffix('>')) {
        Some(user) => format!("Slack user {user}"),
        None => claim.by.clone(),
    };
    format!("{by} via {} at {}", claim.channel, short_time(claim.at))
}

impl Detail {
    /// The view of one request; its highlighted JSON takes at most about `max_render_bytes`
    /// (`limits.max_page_render_bytes`) in all, cut with a note beyond that.
    pub fn new(project: &str, record: &RequestRecord, csrf: &str, max_render_bytes: usize) -> Self {
        let field = |name: &str, share: usize| {
            record.spec_field(name).map(|raw| highlight(raw.get(), max_render_bytes / share)).unwrap_or_default()
        };
        let text = |name: &str| {
            record.spec_field(name).and_then(|raw| serde_json::from_str::<String>(raw.get()).ok()).unwrap_or_default()
        };
        let options = record
            .options()
            .into_iter()
            .map(|o| OptionView {
                label: o.title.clone().unwrap_or_else(|| o.name.clone()),
                description: o.description.clone().unwrap_or_default(),
                fill: o.prompt_fill.clone().unwrap_or_default(),
                interactive: o.interactive.unwrap_or(false),
                name: o.name,
            })
            .collect();
        Self {
            href: href(project, record),
            project: project.to_owned(),
            is_approval: record.kind == RequestKind::FunctionCall,
            kind_label: kind_label(record.kind),
            title: record.summary(),
            msg: text("msg"),
            call_id: record.call_id.clone(),
            run_id: record.run_id.clone(),
            run_href: format!("/history?run={}", segment(&record.run_id)),
            asked: short_time(record.requested_at),
            kwargs_html: field("kwargs", 2),
            // The edit box holds the whole value or nothing: an edit of a cut value would lose data.
            kwargs_text: record
                .spec_field("kwargs")
                .filter(|raw| raw.get().len() <= max_render_bytes / 8)
                .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok())
                .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
                .unwrap_or_default(),
            state_html: field("state", 8),
            channel_html: field("channel", 8),
            options,
            escalations: record.escalations.len(),
            outcome: OutcomeView::of(record, max_render_bytes / 8),
            notice: String::new(),
            error: String::new(),
            csrf: csrf.to_owned(),
            claimed: String::new(),
        }
    }
}
