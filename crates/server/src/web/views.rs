//! What the pages show: view models built from records, and the askama templates that render
//! them. Templates escape every value; only the JSON highlighter's output (itself escaped) is
//! inserted as markup.

use super::json_html::highlight;
use crate::requests::{actor_name, describe};
use askama::Template;
use countersign_core::{Decision, RequestKind, RequestRecord, Timestamp};
use serde::Deserialize;

/// Percent-encodes a path segment (call ids may hold any character).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URL of a request's page.
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

/// A row of the pending list.
pub struct Item {
    pub href: String,
    pub project: String,
    pub kind_label: &'static str,
    pub summary: String,
    pub run_id: String,
    pub call_id: String,
    pub asked: String,
    pub asked_iso: String,
}

impl Item {
    pub fn new(project: &str, record: &RequestRecord) -> Self {
        Self {
            href: href(project, record),
            project: project.to_owned(),
            kind_label: kind_label(record.kind),
            summary: record.summary(),
            run_id: record.run_id.clone(),
            call_id: record.call_id.clone(),
            asked: short_time(record.requested_at),
            asked_iso: record.requested_at.to_rfc3339(),
        }
    }
}

fn kind_label(kind: RequestKind) -> &'static str {
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
        }
    }
}

/// The header's view of who is signed in.
pub struct Chrome {
    pub email: String,
    pub csrf: String,
    /// `inbox` or `history`.
    pub nav: &'static str,
    pub search: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub csrf: String,
    pub next: String,
    pub email: String,
    pub error: String,
}

#[derive(Template)]
#[template(path = "set_password.html")]
pub struct SetPasswordPage {
    pub token: String,
    pub error: String,
    pub done: bool,
}

#[derive(Template)]
#[template(path = "inbox.html")]
pub struct InboxPage {
    pub chrome: Chrome,
    pub items: Vec<Item>,
    pub total: u64,
    pub detail: Option<Detail>,
}

#[derive(Template)]
#[template(path = "list.html")]
pub struct ListFragment {
    pub items: Vec<Item>,
    pub total: u64,
}

#[derive(Template)]
#[template(path = "detail.html")]
pub struct DetailFragment {
    pub d: Detail,
}

/// A decided request in the history.
pub struct HistoryRow {
    pub href: String,
    pub project: String,
    pub kind_label: &'static str,
    pub summary: String,
    pub run_id: String,
    pub outcome: OutcomeView,
}

/// The history's filters, as in the query string.
#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub run: String,
    #[serde(default, rename = "fn")]
    pub function: String,
    #[serde(default)]
    pub by: String,
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub page: Option<u32>,
}

#[derive(Template)]
#[template(path = "history.html")]
pub struct HistoryPage {
    pub chrome: Chrome,
    pub filters: HistoryQuery,
    pub rows: Vec<HistoryRow>,
    pub total: u64,
    pub first: u64,
    pub last: u64,
    pub prev_href: String,
    pub next_href: String,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub title: String,
    pub message: String,
}
