//! What the inbox pages show: view models built from records, and the askama templates that
//! render them (the view of one request is shared with the email link page, in
//! [`crate::html::detail`]). Templates escape every value; only the JSON highlighter's output
//! (itself escaped) is inserted as markup.

use crate::html::detail::{Detail, OutcomeView, href, kind_label, quorum_progress, short_time};
use askama::Template;
use countersign_core::{RequestRecord, Vote};
use serde::Deserialize;

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
    /// `1/2` of a request whose rule asks several people; empty otherwise.
    pub progress: String,
    /// The person looking voted on it already.
    pub voted: bool,
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
            progress: String::new(),
            voted: false,
        }
    }

    /// Shows where the request's quorum stands, and whether `viewer` voted.
    pub fn show_votes(&mut self, record: &RequestRecord, votes: &[Vote], viewer: &str) {
        if let Some((approvals, needed)) = quorum_progress(record, votes) {
            self.progress = format!("{approvals}/{needed}");
            self.voted = votes.iter().any(|v| v.voter.eq_ignore_ascii_case(viewer));
        }
    }
}

/// The header's view of who is signed in.
pub struct Chrome {
    pub email: String,
    pub csrf: String,
    /// `inbox`, `history` or `admin`.
    pub nav: &'static str,
    /// The person may open the admin pages.
    pub admin: bool,
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
