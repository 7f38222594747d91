//! What the admin pages show, and their askama templates. Templates escape every value.

use super::super::views::Chrome;
use askama::Template;
use countersign_store::AuditEvent;
use serde_json::Value;

/// The frame around a project's admin pages: the project, the tab shown.
pub struct Frame {
    pub project: String,
    /// `keys`, `people`, `webhooks`, `channels`, `policy` or `audit`.
    pub tab: &'static str,
}

/// What the last form did: a notice, or an error.
#[derive(Default)]
pub struct Flash {
    pub notice: String,
    pub error: String,
}

pub struct ProjectRow {
    pub name: String,
    pub created: String,
    pub keys: usize,
    pub people: usize,
    pub webhooks: usize,
}

#[derive(Template)]
#[template(path = "admin/projects.html")]
pub struct ProjectsPage {
    pub chrome: Chrome,
    pub rows: Vec<ProjectRow>,
    pub flash: Flash,
}

pub struct KeyRow {
    pub id: String,
    pub prefix: String,
    pub name: String,
    pub scopes: String,
    pub owner: String,
    pub created: String,
    /// When it was revoked; empty while active.
    pub revoked: String,
}

#[derive(Template)]
#[template(path = "admin/keys.html")]
pub struct KeysPage {
    pub chrome: Chrome,
    pub frame: Frame,
    pub rows: Vec<KeyRow>,
    pub flash: Flash,
    /// A key just created, shown this once.
    pub secret: String,
}

pub struct PersonRow {
    pub email: String,
    pub phone: String,
    pub role: &'static str,
    /// `active`, `invited` (no password yet) or `disabled`.
    pub state: &'static str,
    pub enabled: bool,
    /// The admin looking.
    pub me: bool,
}

pub struct GroupRow {
    pub name: String,
    pub members: Vec<String>,
}

#[derive(Template)]
#[template(path = "admin/people.html")]
pub struct PeoplePage {
    pub chrome: Chrome,
    pub frame: Frame,
    pub rows: Vec<PersonRow>,
    pub groups: Vec<GroupRow>,
    pub flash: Flash,
    /// A new person's one-time set-password link, shown once.
    pub link: String,
}

pub struct EndpointRow {
    pub id: String,
    pub url: String,
    pub events: String,
    pub format: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "admin/webhooks.html")]
pub struct WebhooksPage {
    pub chrome: Chrome,
    pub frame: Frame,
    pub rows: Vec<EndpointRow>,
    pub flash: Flash,
    /// A new endpoint's signing secret, shown once.
    pub secret: String,
    /// The event names an endpoint can subscribe to.
    pub events: Vec<&'static str>,
}

pub struct AttemptRow {
    pub at: String,
    pub code: String,
    pub error: String,
    pub latency_ms: u64,
}

pub struct DeliveryRow {
    pub id: String,
    pub event: String,
    pub call_id: String,
    pub created: String,
    pub status: String,
    pub attempts: Vec<AttemptRow>,
}

#[derive(Template)]
#[template(path = "admin/webhook.html")]
pub struct WebhookLogPage {
    pub chrome: Chrome,
    pub frame: Frame,
    pub id: String,
    pub url: String,
    pub rows: Vec<DeliveryRow>,
    pub flash: Flash,
}

pub struct SlackView {
    pub workspace: String,
    pub channel: String,
    pub connected: String,
}

pub struct TwilioView {
    pub account: String,
    pub from: String,
    pub whatsapp: String,
    pub connected: String,
}

#[derive(Template)]
#[template(path = "admin/channels.html")]
pub struct ChannelsPage {
    pub chrome: Chrome,
    pub frame: Frame,
    /// The SMTP URL with its password masked; empty when email is off.
    pub smtp: String,
    pub from: String,
    pub default_email: String,
    pub me: String,
    pub phone: String,
    pub slack: Option<SlackView>,
    pub twilio: Option<TwilioView>,
    pub flash: Flash,
}

/// The policy editor's state: the text, what saving or testing it said.
#[derive(Default)]
pub struct PolicyState {
    pub text: String,
    pub version: String,
    pub notice: String,
    pub error: String,
    /// Where the error is (1-based; 0 when about the whole file).
    pub error_line: usize,
    pub error_column: usize,
    pub error_text: String,
    pub function: String,
    pub args: String,
    pub owner: String,
    pub tested: bool,
    pub test_rule: String,
    pub test_action: String,
    pub test_outcome: String,
    pub test_error: String,
}

impl PolicyState {
    /// The editor's lines, numbered, with the error's line marked.
    pub fn numbered(&self) -> Vec<(usize, &str, bool)> {
        self.text.lines().enumerate().map(|(i, line)| (i + 1, line, i + 1 == self.error_line)).collect()
    }
}

#[derive(Template)]
#[template(path = "admin/policy.html")]
pub struct PolicyPage {
    pub chrome: Chrome,
    pub frame: Frame,
    pub p: PolicyState,
}

/// One event of the audit log.
pub struct AuditRow {
    pub seq: u64,
    pub at: String,
    pub kind: String,
    pub by: String,
    pub call_id: String,
    /// The rest of the event, as compact JSON (cut short).
    pub detail: String,
    pub hash: String,
}

/// Longest detail shown per event.
const DETAIL_CHARS: usize = 400;

impl AuditRow {
    /// The event types the filter offers.
    pub const TYPES: [&'static str; 20] = [
        "created",
        "decided",
        "escalated",
        "voted",
        "executed",
        "policy_set",
        "group_changed",
        "project_created",
        "key_created",
        "key_revoked",
        "person_added",
        "person_removed",
        "person_phone_set",
        "password_link_issued",
        "webhook_added",
        "webhook_removed",
        "webhook_redelivered",
        "connection_set",
        "connection_removed",
        "connection_tested",
    ];

    pub fn of(e: &AuditEvent) -> Self {
        let mut body: Value = serde_json::from_str(&e.body).unwrap_or(Value::Null);
        let text = |v: Option<Value>| match v {
            Some(Value::String(s)) => s,
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let map = body.as_object_mut();
        let (kind, by, call_id, at) = match map {
            Some(map) => {
                let kind = text(map.remove("type"));
                let actor = map.get("actor").cloned();
                let by = match map.remove("by") {
                    Some(by) => text(Some(by)),
                    None => actor
                        .as_ref()
                        .and_then(|a| a.get("email").or(a.get("api_key")).or(a.get("channel")).cloned())
                        .map(|v| text(Some(v)))
                        .unwrap_or_default(),
                };
                map.remove("project_id");
                let call_id = text(map.remove("call_id"));
                let at = map.remove("at_us").and_then(|v| v.as_i64()).map(countersign_core::Timestamp::from_micros);
                (kind, by, call_id, at)
            }
            None => (String::new(), String::new(), String::new(), None),
        };
        let mut detail = body.to_string();
        if detail.chars().count() > DETAIL_CHARS {
            detail = detail.chars().take(DETAIL_CHARS).collect::<String>() + "…";
        }
        Self {
            seq: e.seq,
            at: at.unwrap_or(e.sealed_at).to_rfc3339()[..19].replace('T', " "),
            kind,
            by,
            call_id,
            detail,
            hash: e.hash.to_hex()[..12].to_owned(),
        }
    }

    /// Kept by the filters: the type exactly, `by` and the text as case-blind substrings.
    pub fn matches(&self, filter: &AuditFilter) -> bool {
        let has = |hay: &str, needle: &str| needle.is_empty() || hay.to_lowercase().contains(needle);
        (filter.kind.is_empty() || self.kind == filter.kind)
            && has(&self.by, &filter.by)
            && (filter.q.is_empty() || has(&self.detail, &filter.q) || has(&self.call_id, &filter.q))
    }
}

/// The audit log's filters, trimmed, lower-cased and cut to [`AuditFilter::MAX_CHARS`] once.
pub struct AuditFilter {
    pub kind: String,
    pub by: String,
    pub q: String,
}

impl AuditFilter {
    /// The longest filter text used.
    pub const MAX_CHARS: usize = 200;

    pub fn new(kind: &str, by: &str, q: &str) -> Self {
        let norm = |s: &str| s.trim().chars().take(Self::MAX_CHARS).collect::<String>().to_lowercase();
        Self { kind: kind.trim().to_owned(), by: norm(by), q: norm(q) }
    }
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
pub struct AuditPage {
    pub chrome: Chrome,
    pub frame: Frame,
    pub kind: String,
    pub by: String,
    pub q: String,
    pub types: Vec<&'static str>,
    pub rows: Vec<AuditRow>,
    /// Sealed events in the chain.
    pub count: u64,
    /// Events committed but not sealed yet.
    pub unsealed: u64,
    pub flash: Flash,
}
