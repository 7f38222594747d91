//! Slack Block Kit rendering: the message of a request (pending, with its buttons, or decided,
//! with its outcome), the thread reply announcing an escalation, and the modal of a rejection or an
//! answer. Pure: no I/O.
//!
//! Whatever the agent sent, the result stays within Slack's documented limits: texts are cut at
//! char boundaries (with a link to the inbox when something is left out), and every text from the
//! agent or a decider is escaped for mrkdwn, so it can never mention, link or ping.

use countersign_core::decision::Via;
use countersign_core::wire::ResponseOption;
use countersign_core::{
    Actor, Decision, DecisionChannel, Ending, Outcome, RequestKind, RequestRecord, Timestamp, Vote,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// Most blocks in a message.
pub const MAX_BLOCKS: usize = 50;
/// Longest text of a section or a context element.
pub const MAX_TEXT: usize = 3000;
/// Longest `value` of a button.
pub const MAX_BUTTON_VALUE: usize = 2000;
/// Most elements in an actions block.
pub const MAX_ACTIONS: usize = 25;
/// Most options shown as buttons; with more, they are offered in one `static_select` instead.
pub const MAX_OPTION_BUTTONS: usize = 5;
/// Most options in a `static_select`.
pub const MAX_SELECT_OPTIONS: usize = 100;

/// Longest `text` of a button, of a select's option, or of its description.
const MAX_LABEL: usize = 75;
/// Longest text of one of a section's `fields`.
const MAX_FIELD: usize = 2000;
/// Most `fields` in a section.
const MAX_FIELDS: usize = 10;
/// Longest title, submit or close text of a modal.
const MAX_MODAL_TITLE: usize = 24;
/// Longest `private_metadata` of a modal.
const MAX_PRIVATE_METADATA: usize = 3000;
/// Longest text a modal's input accepts (and so its initial value).
const MAX_INPUT: usize = 3000;
/// How much of the question a modal recalls.
const MAX_RECALL: usize = 500;
/// Most voters a message names (more are counted: a quorum's line stays within a context's text).
const MAX_VOTERS: usize = 10;
/// The `block_id` of the actions block.
const ACTIONS_BLOCK: &str = "cs_actions";

/// The `action_id`s of the interactive elements, on which the inbound side dispatches.
///
/// The option buttons' `action_id`s are [`REJECT_OPTION`](action::REJECT_OPTION) or
/// [`RESPOND_OPTION`](action::RESPOND_OPTION) followed by `:` and the option's index (an actions
/// block needs them unique), so the inbound side matches them by prefix; the others are exactly
/// these constants.
pub mod action {
    /// The Approve button of an approval.
    pub const APPROVE: &str = "cs_approve";
    /// The Reject button of an approval (opens the reject modal).
    pub const REJECT: &str = "cs_reject";
    /// Prefix of a reject option's button: `cs_reject_option:<index>`.
    pub const REJECT_OPTION: &str = "cs_reject_option";
    /// The Answer button of a question (opens the answer modal).
    pub const ANSWER: &str = "cs_answer";
    /// Prefix of a response option's button: `cs_respond_option:<index>`.
    pub const RESPOND_OPTION: &str = "cs_respond_option";
    /// The Claim button ("I am looking at this").
    pub const CLAIM: &str = "cs_claim";
    /// The select offering the options when there are too many for buttons; its options' values
    /// are the options' indexes.
    pub const OPTION_SELECT: &str = "cs_option_select";
}

/// The `callback_id`s of the modals.
pub mod callback {
    /// The modal of a rejection (an approval's Reject or a reject option).
    pub const REJECT: &str = "cs_reject_modal";
    /// The modal of an answer (a question's Answer or an interactive response option).
    pub const ANSWER: &str = "cs_answer_modal";
}

/// The `block_id` of the modal's text input.
pub const INPUT_BLOCK: &str = "cs_input";
/// The `action_id` of the modal's text input.
pub const INPUT_ACTION: &str = "text";

/// Which request an element or a modal is about, and which option (an index into
/// [`RequestRecord::options`]) when it is about one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRef {
    /// The request's project.
    #[serde(rename = "p")]
    pub project_id: String,
    /// [`RequestKind::as_str`]: `function_call` or `human_contact`.
    #[serde(rename = "k")]
    pub kind: String,
    /// The request's `call_id`.
    #[serde(rename = "c")]
    pub call_id: String,
    /// The option's index in [`RequestRecord::options`], for an option's button.
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub option: Option<usize>,
}

impl ActionRef {
    /// The reference to `record`, and to its option `option` if given.
    pub fn of(record: &RequestRecord, option: Option<usize>) -> Self {
        Self {
            project_id: record.project_id.clone(),
            kind: record.kind.as_str().to_owned(),
            call_id: record.call_id.clone(),
            option,
        }
    }

    /// Compact JSON, as carried in a button's `value`.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads [`ActionRef::encode`]'s text back; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// What a modal's `private_metadata` carries: the request, and where its message is (the
/// channel and the message's `ts`), to update it once decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModalMeta {
    /// The request (and option) the modal decides.
    pub r: ActionRef,
    /// The channel of the request's message, when the modal was opened from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The `ts` of the request's message, when the modal was opened from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
}

impl ModalMeta {
    /// Compact JSON, as carried in the modal's `private_metadata`.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads [`ModalMeta::encode`]'s text back; `None` for anything else.
    pub fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// Someone's claim on a pending request: they are looking at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<'a> {
    /// Who, as mrkdwn the caller trusts (e.g. `<@U123>`): shown as given, not escaped (only cut to
    /// 500 chars).
    pub by: &'a str,
    /// Since when.
    pub at: Timestamp,
}

/// A Slack message: what `chat.postMessage` or `chat.update` sends.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The notification and fallback text: plain words (agent text escaped, mentions as
    /// `<@U…>`), at most [`MAX_TEXT`] chars.
    pub text: String,
    /// The Block Kit blocks.
    pub blocks: Vec<Value>,
}

/// The message of a request as it stands: pending (its content, the terms of the policy rule
/// that governs it with its quorum's progress from `votes`, an optional claim line and the
/// buttons) or decided (its content and the outcome with its votes, no buttons, no claim).
///
/// Every button's `value` is [`ActionRef::of`] the request (and the option, for an option's
/// button), encoded; the value is left out if it would pass [`MAX_BUTTON_VALUE`], which ids within
/// the API's limits never do. The select offered for many options carries only the option's index
/// (a select option's value holds 150 chars at most): the request is named by the values of the
/// other buttons of the same actions block.
pub fn request_message(record: &RequestRecord, inbox_url: &str, claim: Option<&Claim<'_>>, votes: &[Vote]) -> Message {
    let spec = Shown::of(record);
    let options = record.options();
    let mut blocks = vec![section(asker(record, &spec))];
    match record.kind {
        RequestKind::FunctionCall => blocks.extend(arguments(&spec, inbox_url)),
        RequestKind::HumanContact => blocks.push(section(question(&spec, inbox_url))),
    }
    match &record.outcome {
        Some(outcome) => {
            blocks.extend(outcome_blocks(outcome, &options, inbox_url));
            blocks.push(context(request_line(record, inbox_url)));
        }
        None => {
            blocks.push(context(request_line(record, inbox_url)));
            blocks.extend(terms_lines(record, votes).into_iter().map(context));
            if let Some(claim) = claim {
                let by = truncate(claim.by, 500);
                blocks.push(context(format!(":eyes: {by} is looking at this (since {})", date(claim.at))));
            }
            blocks.extend(action_blocks(record, &options, inbox_url));
        }
    }
    blocks.truncate(MAX_BLOCKS);
    Message { text: truncate(&fallback(record, &spec), MAX_TEXT), blocks }
}

/// The reply posted in the request's thread when it is escalated; `escalation` is the stored
/// escalation (`escalation_msg`, `escalated_by`, `escalated_at`).
pub fn escalation_reply(record: &RequestRecord, escalation: &Value, inbox_url: &str) -> Message {
    let by = escalation["escalated_by"].as_str().filter(|s| !s.trim().is_empty()).unwrap_or("someone");
    let msg = escalation["escalation_msg"].as_str().unwrap_or_default();
    let head = format!(":rotating_light: *Escalated* by {}: ", escaped(by, 200));
    let blocks = vec![
        section(fitted(&head, msg, "", false, inbox_url)),
        context(format!("{} · {}", code(&record.summary(), 200), link(inbox_url, "Open in the inbox"))),
    ];
    let text =
        format!("Escalated by {}: {} ({})", escaped(by, 200), escaped(msg, 2000), escaped(&record.summary(), 200));
    Message { text: truncate(&text, MAX_TEXT), blocks }
}

/// The modal (a `views.open` `view`) that rejects an approval or answers a question.
///
/// With `option` (an index into [`RequestRecord::options`]), the modal says which option is being
/// chosen and its input starts with the option's `prompt_fill`. A rejection needs a comment unless
/// it has an option (the option alone rejects); an answer always needs its text. The
/// `private_metadata` is `meta` encoded (left empty if it would pass Slack's 3000 chars, which ids
/// within the API's limits never do).
pub fn modal(record: &RequestRecord, option: Option<usize>, meta: &ModalMeta) -> Value {
    let spec = Shown::of(record);
    let options = record.options();
    let chosen = option.and_then(|i| options.get(i).map(|o| (i, o)));
    let (callback_id, title, submit, label) = match record.kind {
        RequestKind::FunctionCall => (callback::REJECT, "Reject", "Reject", "Comment"),
        RequestKind::HumanContact => (callback::ANSWER, "Answer", "Send", "Your answer"),
    };
    let mut recall = match record.kind {
        RequestKind::FunctionCall => format!("Rejecting {} (run {}).", function(&spec), code(&record.run_id, 200)),
        RequestKind::HumanContact => {
            let msg = spec.msg.as_deref().unwrap_or_default();
            format!("Answering run {}:\n{}", code(&record.run_id, 200), quoted(msg, MAX_RECALL))
        }
    };
    if let Some((i, o)) = chosen {
        let verb = match record.kind {
            RequestKind::FunctionCall => "Rejecting",
            RequestKind::HumanContact => "Answering",
        };
        recall.push_str(&format!("\n{verb} with: *{}*", escaped(&option_label(o, i), 200)));
        if let Some(description) = o.description.as_deref().filter(|d| !d.trim().is_empty()) {
            recall.push_str(&format!("\n{}", escaped(description, 300)));
        }
    }
    let mut element = Map::new();
    element.insert("type".into(), json!("plain_text_input"));
    element.insert("action_id".into(), json!(INPUT_ACTION));
    element.insert("multiline".into(), json!(true));
    if let Some(fill) = chosen.and_then(|(_, o)| o.prompt_fill.as_deref()).filter(|f| !f.is_empty()) {
        element.insert("initial_value".into(), json!(truncate(fill, MAX_INPUT)));
    }
    element.insert("max_length".into(), json!(MAX_INPUT));
    let optional = record.kind == RequestKind::FunctionCall && chosen.is_some();
    let metadata = Some(meta.encode()).filter(|m| m.chars().count() <= MAX_PRIVATE_METADATA).unwrap_or_default();
    json!({
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": metadata,
        "title": plain(title, MAX_MODAL_TITLE),
        "submit": plain(submit, MAX_MODAL_TITLE),
        "close": plain("Cancel", MAX_MODAL_TITLE),
        "blocks": [
            section(recall),
            {
                "type": "input",
                "block_id": INPUT_BLOCK,
                "label": plain(label, MAX_LABEL),
                "element": element,
                "optional": optional,
            },
        ],
    })
}

/// Escapes text for mrkdwn: `&`, `<` and `>` become `&amp;`, `&lt;` and `&gt;`, as Slack documents,
/// so that it shows as written and cannot link, mention or ping.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match entity(c, false) {
            Some(e) => out.push_str(e),
            None => out.push(c),
        }
    }
    out
}

/// Cuts text to at most `max` chars (not bytes), ending with "…" when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    if max > 0 {
        out.push('…');
    }
    out
}

/// The parts of a spec that a message shows, read leniently: any of them may be missing or of
/// another type than the API asks for.
#[derive(Default)]
struct Shown {
    fn_name: Option<String>,
    /// The arguments, parsed, or their JSON text when they do not parse (nesting too deep).
    kwargs: Option<Result<Value, String>>,
    msg: Option<String>,
    subject: Option<String>,
    /// `channel.slack.experimental_slack_blocks`: show the arguments as fields.
    slack_blocks: bool,
}

impl Shown {
    fn of(record: &RequestRecord) -> Self {
        #[derive(Deserialize)]
        struct Fields<'a> {
            #[serde(rename = "fn", borrow)]
            fn_name: Option<&'a RawValue>,
            #[serde(borrow)]
            kwargs: Option<&'a RawValue>,
            #[serde(borrow)]
            msg: Option<&'a RawValue>,
            #[serde(borrow)]
            subject: Option<&'a RawValue>,
            #[serde(borrow)]
            channel: Option<&'a RawValue>,
        }
        // Each field is parsed on its own, so one that cannot be read (say, arguments nested
        // deeper than the parser goes) does not hide the others.
        let Ok(fields) = serde_json::from_str::<Fields<'_>>(record.spec.get()) else { return Self::default() };
        let string = |raw: Option<&RawValue>| raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok());
        let channel = fields.channel.and_then(|r| serde_json::from_str::<Value>(r.get()).ok()).unwrap_or_default();
        Self {
            fn_name: string(fields.fn_name),
            kwargs: fields
                .kwargs
                .filter(|r| r.get() != "null")
                .map(|r| serde_json::from_str::<Value>(r.get()).map_err(|_| r.get().to_owned())),
            msg: string(fields.msg),
            subject: string(fields.subject),
            slack_blocks: channel["slack"]["experimental_slack_blocks"] == json!(true),
        }
    }
}

/// Who asks, and for what.
fn asker(record: &RequestRecord, spec: &Shown) -> String {
    match record.kind {
        RequestKind::FunctionCall => {
            format!("Agent run {} wants to run {}", code(&record.run_id, 200), function(spec))
        }
        RequestKind::HumanContact => format!("Agent run {} asks:", code(&record.run_id, 200)),
    }
}

/// The function's name in code, or words saying there is none.
fn function(spec: &Shown) -> String {
    match spec.fn_name.as_deref().filter(|f| !f.trim().is_empty()) {
        Some(name) => code(name, 500),
        None => "_an unnamed function_".to_owned(),
    }
}

/// The blocks showing an approval's arguments: fields when the agent asked for Slack blocks and
/// the arguments are a non-empty object, else a JSON code block.
fn arguments(spec: &Shown, inbox_url: &str) -> Vec<Value> {
    match &spec.kwargs {
        None => vec![section("_No arguments._".to_owned())],
        Some(Ok(Value::Object(args))) if spec.slack_blocks && !args.is_empty() => fields(args, inbox_url),
        Some(Ok(value)) => vec![section(code_block("", value, inbox_url))],
        Some(Err(text)) => vec![section(fitted("```\n", text, "\n```", false, inbox_url))],
    }
}

/// A JSON value, pretty-printed, in a code block under `head`, cut to fit a section.
fn code_block(head: &str, value: &Value, inbox_url: &str) -> String {
    let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
    fitted(&format!("{head}```\n"), &pretty, "\n```", false, inbox_url)
}

/// The arguments as a section's fields (`*name*` over the value), with a line for those left out.
fn fields(args: &Map<String, Value>, inbox_url: &str) -> Vec<Value> {
    let shown: Vec<Value> = args
        .iter()
        .take(MAX_FIELDS)
        .map(|(name, value)| {
            let name = format!("*{}*\n", escaped(name, 200));
            let value = match value {
                Value::String(s) => s.clone(),
                other => serde_json::to_string(other).unwrap_or_default(),
            };
            let room = MAX_FIELD - name.chars().count();
            let value = if value.trim().is_empty() { "_(empty)_".to_owned() } else { escaped(&value, room) };
            mrkdwn(&format!("{name}{value}"), MAX_FIELD)
        })
        .collect();
    let mut blocks = vec![json!({"type": "section", "fields": shown})];
    if args.len() > MAX_FIELDS {
        let more = args.len() - MAX_FIELDS;
        blocks.push(context(format!("…and {more} more: {}", link(inbox_url, "in the inbox"))));
    }
    blocks
}

/// The question: its subject in bold when there is one, then its text.
fn question(spec: &Shown, inbox_url: &str) -> String {
    let head = match spec.subject.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(subject) => format!("*{}*\n", escaped(subject.trim(), 300)),
        None => String::new(),
    };
    match spec.msg.as_deref().filter(|m| !m.trim().is_empty()) {
        Some(msg) => fitted(&head, msg, "", false, inbox_url),
        None => format!("{head}_The agent sent no question text._"),
    }
}

/// The context line of a request: its call id, when it was asked, and the inbox link.
fn request_line(record: &RequestRecord, inbox_url: &str) -> String {
    format!(
        "Call {} · requested {} · {}",
        code(&record.call_id, 200),
        date(record.requested_at),
        link(inbox_url, "Open in the inbox")
    )
}

/// The context lines of a pending request's policy terms: where its quorum stands (`1 of 2
/// approvals: ada@example.com`), and the rule with its deadline.
fn terms_lines(record: &RequestRecord, votes: &[Vote]) -> Vec<String> {
    let Some(terms) = &record.policy else { return Vec::new() };
    let mut lines = Vec::new();
    let needed = terms.needed();
    if terms.approvers.is_some() && needed > 1 {
        let approvals: Vec<&Vote> = votes.iter().filter(|v| v.approved).collect();
        let mut voters: Vec<String> = approvals.iter().take(MAX_VOTERS).map(|v| escaped(&v.voter, 200)).collect();
        if approvals.len() > MAX_VOTERS {
            voters.push(format!("and {} more", approvals.len() - MAX_VOTERS));
        }
        let mut line = format!(":ballot_box_with_check: {} of {needed} approvals", approvals.len());
        if !voters.is_empty() {
            line.push_str(&format!(": {}", voters.join(", ")));
        }
        if let Some(group) = terms.approvers.as_ref().and_then(|q| q.group.as_deref()) {
            line.push_str(&format!(" · from group “{}”", escaped(group, 200)));
        }
        lines.push(truncate(&line, MAX_TEXT));
    }
    let mut rule = Vec::new();
    if !terms.rule.is_empty() {
        rule.push(format!("Policy rule “{}”", escaped(&terms.rule, 200)));
    }
    if let Some(at) = terms.expires_at_us.map(Timestamp::from_micros) {
        let approves = terms.on_expire.as_deref() == Some("approve") && record.kind == RequestKind::FunctionCall;
        rule.push(format!(
            ":hourglass_flowing_sand: expires {}; then {}",
            date(at),
            if approves { "approved" } else { "denied" }
        ));
    }
    if !rule.is_empty() {
        lines.push(rule.join(" · "));
    }
    lines
}

/// The blocks of a decision: what it was, who made it, when, and their words.
fn outcome_blocks(outcome: &Outcome, options: &[ResponseOption], inbox_url: &str) -> Vec<Value> {
    let (what, option, words) = match &outcome.decision {
        Decision::Approved { comment, .. } => (":white_check_mark: *Approved*", None, comment.as_deref()),
        Decision::Rejected { comment, option } => (":x: *Rejected*", option.as_deref(), Some(comment.as_str())),
        Decision::Answered { response, option } => {
            (":speech_balloon: *Answered*", option.as_deref(), Some(response.as_str()))
        }
        Decision::Ended { ending: Ending::Expired, comment } => (":hourglass: *Expired*", None, Some(comment.as_str())),
        Decision::Ended { ending: Ending::Cancelled, comment } => {
            (":no_entry_sign: *Cancelled*", None, Some(comment.as_str()))
        }
    };
    let option = match option {
        Some(name) => {
            let label = options
                .iter()
                .enumerate()
                .find(|(_, o)| o.name == name)
                .map_or_else(|| name.to_owned(), |(i, o)| option_label(o, i));
            format!(" with “{}”", escaped(&label, 200))
        }
        None => String::new(),
    };
    let actor = &outcome.decided_by;
    let by = match &outcome.decision {
        Decision::Ended { ending: Ending::Expired, .. } => match actor.rule.as_deref() {
            Some(rule) => format!(" under policy rule “{}”", escaped(rule, 200)),
            None => String::new(),
        },
        Decision::Ended { ending: Ending::Cancelled, .. } if actor.channel == DecisionChannel::Api => {
            format!(" by the agent ({})", person(actor))
        }
        _ => format!(" by {}", who(actor)),
    };
    let head = format!("{what}{option}{by} at {}", date(outcome.responded_at));
    let text = match words.map(str::trim_end).filter(|w| !w.trim().is_empty()) {
        Some(words) => fitted(&format!("{head}\n"), words, "", true, inbox_url),
        None => head,
    };
    let mut blocks = vec![section(text)];
    if let Decision::Approved { updated_kwargs: Some(args), .. } = &outcome.decision {
        let head = "*It runs with these arguments instead:*\n";
        let text = match serde_json::from_str::<Value>(args) {
            Ok(value) => code_block(head, &value, inbox_url),
            Err(_) => fitted(&format!("{head}```\n"), args, "\n```", false, inbox_url),
        };
        blocks.push(section(text));
    }
    if let Some(votes) = actor.votes.as_deref().filter(|v| !v.is_empty()) {
        let mut voters: Vec<String> = votes
            .iter()
            .take(MAX_VOTERS)
            .map(|v| format!("{} ({})", escaped(&v.voter, 200), v.channel.as_str()))
            .collect();
        if votes.len() > MAX_VOTERS {
            voters.push(format!("and {} more", votes.len() - MAX_VOTERS));
        }
        blocks.push(context(truncate(&format!(":ballot_box_with_check: Approvals: {}", voters.join(", ")), MAX_TEXT)));
    }
    blocks
}

/// The person who decided (as a Slack mention when they decided in Slack) and the channel.
fn who(actor: &Actor) -> String {
    let via = match actor.channel {
        DecisionChannel::Web => "via web",
        DecisionChannel::Slack => "via Slack",
        DecisionChannel::Email if actor.via == Some(Via::InboundEmail) => "via an email reply",
        DecisionChannel::Email => "via email",
        DecisionChannel::Api => "via the API",
        DecisionChannel::Cli => "via the terminal",
        DecisionChannel::Sms => "via SMS",
        DecisionChannel::Whatsapp => "via WhatsApp",
        // "policy rule “X”" says it already.
        DecisionChannel::Policy => return person(actor),
    };
    format!("{} {via}", person(actor))
}

/// The person who decided, as mrkdwn: a Slack mention, their email, their API key, or "someone".
fn person(actor: &Actor) -> String {
    let slack_id = |id: &str| !id.is_empty() && id.len() <= 32 && id.chars().all(|c| c.is_ascii_alphanumeric());
    if let Some(id) = actor.slack_user_id.as_deref().filter(|id| !id.is_empty()) {
        if slack_id(id) { format!("<@{id}>") } else { escaped(id, 100) }
    } else if let Some(email) = actor.email.as_deref().filter(|e| !e.is_empty()) {
        escaped(email, 200)
    } else if let Some(key) = actor.api_key.as_deref().filter(|k| !k.is_empty()) {
        format!("API key {}", code(key, 100))
    } else if let Some(rule) = actor.rule.as_deref() {
        format!("policy rule “{}”", escaped(rule, 200))
    } else if actor.channel == DecisionChannel::Policy {
        "the policy".to_owned()
    } else {
        "someone".to_owned()
    }
}

/// The actions block of a pending request (and, when some options do not fit the select, a line
/// saying so).
fn action_blocks(record: &RequestRecord, options: &[ResponseOption], inbox_url: &str) -> Vec<Value> {
    let ours = |option| ActionRef::of(record, option).encode();
    let mut elements = Vec::new();
    let (option_action, placeholder) = match record.kind {
        RequestKind::FunctionCall => {
            elements.push(button("Approve", action::APPROVE, ours(None), Some("primary")));
            elements.push(button("Reject", action::REJECT, ours(None), Some("danger")));
            (action::REJECT_OPTION, "Reject with…")
        }
        RequestKind::HumanContact => (action::RESPOND_OPTION, "Answer with…"),
    };
    if options.len() <= MAX_OPTION_BUTTONS {
        for (i, o) in options.iter().enumerate() {
            elements.push(button(&option_label(o, i), &format!("{option_action}:{i}"), ours(Some(i)), None));
        }
    } else {
        let choices: Vec<Value> = options.iter().take(MAX_SELECT_OPTIONS).enumerate().map(select_option).collect();
        elements.push(json!({
            "type": "static_select",
            "action_id": action::OPTION_SELECT,
            "placeholder": plain(placeholder, MAX_LABEL),
            "options": choices,
        }));
    }
    if record.kind == RequestKind::HumanContact {
        elements.push(button("Answer", action::ANSWER, ours(None), Some("primary")));
    }
    elements.push(button("Claim", action::CLAIM, ours(None), None));
    elements.truncate(MAX_ACTIONS);
    let mut blocks = Vec::new();
    if options.len() > MAX_SELECT_OPTIONS {
        blocks.push(context(format!(
            "The list shows the first {MAX_SELECT_OPTIONS} of {} options; {}.",
            options.len(),
            link(inbox_url, "all of them are in the inbox")
        )));
    }
    blocks.push(json!({"type": "actions", "block_id": ACTIONS_BLOCK, "elements": elements}));
    blocks
}

/// A button; its value is left out when too long for Slack (see [`request_message`]).
fn button(text: &str, action_id: &str, value: String, style: Option<&str>) -> Value {
    let mut button = Map::new();
    button.insert("type".into(), json!("button"));
    button.insert("action_id".into(), json!(action_id));
    button.insert("text".into(), plain(text, MAX_LABEL));
    if value.chars().count() <= MAX_BUTTON_VALUE {
        button.insert("value".into(), json!(value));
    }
    if let Some(style) = style {
        button.insert("style".into(), json!(style));
    }
    Value::Object(button)
}

/// An option of the select: its label, its description if any, and its index as the value (a
/// select option's value holds 150 chars at most: no room for an [`ActionRef`]).
fn select_option((i, o): (usize, &ResponseOption)) -> Value {
    let mut choice = Map::new();
    choice.insert("text".into(), plain(&option_label(o, i), MAX_LABEL));
    choice.insert("value".into(), json!(i.to_string()));
    if let Some(description) = o.description.as_deref().filter(|d| !d.trim().is_empty()) {
        choice.insert("description".into(), plain(description, MAX_LABEL));
    }
    Value::Object(choice)
}

/// What an option is called: its title, else its name, else its position.
fn option_label(option: &ResponseOption, i: usize) -> String {
    let title = option.title.as_deref().filter(|t| !t.trim().is_empty());
    let name = Some(option.name.as_str()).filter(|n| !n.trim().is_empty());
    title.or(name).map_or_else(|| format!("Option {}", i + 1), |t| t.trim().to_owned())
}

/// The notification text of a request's message.
fn fallback(record: &RequestRecord, spec: &Shown) -> String {
    let run = escaped(&record.run_id, 100);
    let summary = escaped(&record.summary(), 200);
    match (&record.outcome, record.kind) {
        (None, RequestKind::FunctionCall) => {
            let name = spec.fn_name.as_deref().map_or_else(|| "a function".to_owned(), |f| escaped(f, 200));
            format!("Approval requested: {name} (run {run})")
        }
        (None, RequestKind::HumanContact) => format!("Question from run {run}: {summary}"),
        (Some(outcome), _) => {
            let what = match outcome.decision {
                Decision::Approved { .. } => "Approved",
                Decision::Rejected { .. } => "Rejected",
                Decision::Answered { .. } => "Answered",
                // Nobody decided: nobody to name.
                Decision::Ended { ending: Ending::Expired, .. } => return format!("Expired: {summary}"),
                Decision::Ended { ending: Ending::Cancelled, .. } => return format!("Cancelled: {summary}"),
            };
            format!("{what}: {summary} — by {}", person(&outcome.decided_by))
        }
    }
}

/// `head`, then `body` escaped (each line quoted, with `quote`), then `tail`, cut to fit in
/// [`MAX_TEXT`]; when the body is cut, a last line links to the inbox for the whole of it. `head`
/// and `tail` are mrkdwn, kept as given.
fn fitted(head: &str, body: &str, tail: &str, quote: bool, inbox_url: &str) -> String {
    let room = MAX_TEXT.saturating_sub(head.chars().count() + tail.chars().count());
    let (text, cut) = escape_cut(body, room, quote);
    if !cut {
        return truncate(&format!("{head}{text}{tail}"), MAX_TEXT);
    }
    let more = format!("\n… truncated: {}", link(inbox_url, "see the full request in the inbox"));
    let (text, _) = escape_cut(body, room.saturating_sub(more.chars().count()), quote);
    truncate(&format!("{head}{text}{tail}{more}"), MAX_TEXT)
}

/// Text escaped for mrkdwn, at most `max` chars.
fn escaped(text: &str, max: usize) -> String {
    escape_cut(text, max, false).0
}

/// Text escaped for mrkdwn and quoted (`>` before each line), at most `max` chars.
fn quoted(text: &str, max: usize) -> String {
    escape_cut(text.trim_end(), max, true).0
}

/// Text in inline code, escaped, the text at most `max` chars.
fn code(text: &str, max: usize) -> String {
    format!("`{}`", escaped(text, max))
}

/// What `c` becomes in mrkdwn, when not itself: an entity, or (quoting) a new quoted line.
fn entity(c: char, quote: bool) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        '\n' if quote => Some("\n> "),
        _ => None,
    }
}

/// Escapes `text` (quoting each line with `quote`) and cuts the result to at most `max` chars,
/// never inside an entity, ending with "…" when cut; says whether it cut.
fn escape_cut(text: &str, max: usize, quote: bool) -> (String, bool) {
    let width = |c: char| entity(c, quote).map_or(1, |e| e.chars().count());
    let lead = if quote { "> " } else { "" };
    let whole = lead.len() + text.chars().map(width).sum::<usize>();
    let cut = whole > max;
    let limit = if cut { max.saturating_sub(1) } else { max };
    let mut out = String::new();
    if lead.len() <= limit {
        out.push_str(lead);
        let mut used = lead.len();
        for c in text.chars() {
            used += width(c);
            if used > limit {
                break;
            }
            match entity(c, quote) {
                Some(e) => out.push_str(e),
                None => out.push(c),
            }
        }
    }
    if cut && max > 0 {
        out.push('…');
    }
    (out, cut)
}

/// A mrkdwn link to `url` showing `label` (mrkdwn, kept as given).
fn link(url: &str, label: &str) -> String {
    format!("<{}|{label}>", escape(url).replace('|', "%7C"))
}

/// A time, shown by Slack in the reader's own time zone (RFC 3339 UTC where it cannot).
fn date(at: Timestamp) -> String {
    let seconds = at.as_micros().div_euclid(1_000_000);
    format!("<!date^{seconds}^{{date_short_pretty}} at {{time}}|{}>", at.to_rfc3339())
}

/// A mrkdwn text object; never empty, at most `max` chars.
fn mrkdwn(text: &str, max: usize) -> Value {
    let text = if text.trim().is_empty() { " " } else { text };
    json!({"type": "mrkdwn", "text": truncate(text, max)})
}

/// A plain text object; never empty, at most `max` chars.
fn plain(text: &str, max: usize) -> Value {
    let text = if text.trim().is_empty() { "…" } else { text.trim() };
    json!({"type": "plain_text", "text": truncate(text, max)})
}

/// A section of mrkdwn text.
fn section(text: String) -> Value {
    json!({"type": "section", "text": mrkdwn(&text, MAX_TEXT)})
}

/// A context block of one mrkdwn line.
fn context(text: String) -> Value {
    json!({"type": "context", "elements": [mrkdwn(&text, MAX_TEXT)]})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Longest `value` of a select's option (ours are indexes, far below it).
    const MAX_OPTION_VALUE: usize = 150;
    const INBOX: &str = "https://cs.example.com/inbox/p1/function_call/c-1";
    const PROJECT: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    fn record(kind: RequestKind, spec: Value) -> RequestRecord {
        RequestRecord {
            project_id: PROJECT.to_owned(),
            kind,
            call_id: "c-1".to_owned(),
            run_id: "r-1".to_owned(),
            spec: RawValue::from_string(spec.to_string()).unwrap(),
            requested_at: Timestamp::from_micros(1_748_779_200_000_000),
            outcome: None,
            escalations: Vec::new(),
            policy: None,
        }
    }

    fn approval(spec: Value) -> RequestRecord {
        record(RequestKind::FunctionCall, spec)
    }

    fn question(spec: Value) -> RequestRecord {
        record(RequestKind::HumanContact, spec)
    }

    fn options(n: usize, title_len: usize) -> Value {
        let options: Vec<Value> = (0..n)
            .map(|i| {
                json!({
                    "name": format!("opt{i}"),
                    "title": format!("Title {i} {}", "é".repeat(title_len)),
                    "description": "d".repeat(title_len),
                    "prompt_fill": format!("fill {i}"),
                })
            })
            .collect();
        Value::Array(options)
    }

    fn decided(mut record: RequestRecord, decision: Decision, decided_by: Actor) -> RequestRecord {
        record.outcome =
            Some(Outcome { responded_at: Timestamp::from_micros(1_748_782_800_000_000), decision, decided_by });
        record
    }

    fn slack_actor() -> Actor {
        Actor {
            slack_user_id: Some("U123ABC".to_owned()),
            slack_team_id: Some("T1".to_owned()),
            ..Actor::new(DecisionChannel::Slack)
        }
    }

    fn email_actor() -> Actor {
        Actor {
            user_id: Some("u1".to_owned()),
            email: Some("ana@example.com".to_owned()),
            ..Actor::new(DecisionChannel::Web)
        }
    }

    /// Every text of the blocks, in order.
    fn texts(value: &Value) -> Vec<String> {
        let mut out = Vec::new();
        walk(value, &mut |v| {
            if let Some(text) = v.get("text").and_then(Value::as_str) {
                out.push(text.to_owned());
            }
        });
        out
    }

    fn all_text(blocks: &[Value]) -> String {
        texts(&Value::Array(blocks.to_vec())).join("\n")
    }

    fn walk(value: &Value, visit: &mut dyn FnMut(&Value)) {
        visit(value);
        match value {
            Value::Array(items) => items.iter().for_each(|v| walk(v, visit)),
            Value::Object(map) => map.values().for_each(|v| walk(v, visit)),
            _ => {}
        }
    }

    fn chars(value: &Value) -> usize {
        value.as_str().map_or(0, |s| s.chars().count())
    }

    fn actions(blocks: &[Value]) -> Vec<Value> {
        blocks
            .iter()
            .filter(|b| b["type"] == "actions")
            .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Checks every Block Kit limit the rendering promises to keep.
    fn check_limits(blocks: &[Value]) {
        assert!(blocks.len() <= MAX_BLOCKS, "{} blocks", blocks.len());
        let mut block_ids = Vec::new();
        for block in blocks {
            if let Some(id) = block["block_id"].as_str() {
                assert!(id.chars().count() <= 255);
                assert!(!block_ids.contains(&id), "block_id {id} twice");
                block_ids.push(id);
            }
            match block["type"].as_str().unwrap() {
                "section" => {
                    assert!(block.get("text").is_some() || block.get("fields").is_some());
                    if let Some(fields) = block["fields"].as_array() {
                        assert!(!fields.is_empty() && fields.len() <= MAX_FIELDS);
                        for field in fields {
                            assert!(chars(&field["text"]) <= MAX_FIELD, "field of {}", chars(&field["text"]));
                        }
                    }
                }
                "context" => {
                    let elements = block["elements"].as_array().unwrap();
                    assert!(!elements.is_empty() && elements.len() <= 10);
                }
                "actions" => {
                    let elements = block["elements"].as_array().unwrap();
                    assert!(!elements.is_empty() && elements.len() <= MAX_ACTIONS);
                    let mut ids = Vec::new();
                    for element in elements {
                        let id = element["action_id"].as_str().unwrap();
                        assert!(id.len() <= 255);
                        assert!(!ids.contains(&id), "action_id {id} twice");
                        ids.push(id);
                        match element["type"].as_str().unwrap() {
                            "button" => {
                                assert_eq!(element["text"]["type"], "plain_text");
                                assert!(chars(&element["text"]["text"]) <= MAX_LABEL);
                                assert!(chars(&element["value"]) <= MAX_BUTTON_VALUE);
                            }
                            "static_select" => {
                                assert!(chars(&element["placeholder"]["text"]) <= 150);
                                let options = element["options"].as_array().unwrap();
                                assert!(!options.is_empty() && options.len() <= MAX_SELECT_OPTIONS);
                                for option in options {
                                    assert!(chars(&option["text"]["text"]) <= MAX_LABEL);
                                    assert!(chars(&option["value"]) <= MAX_OPTION_VALUE);
                                    assert!(chars(&option["description"]["text"]) <= MAX_LABEL);
                                }
                            }
                            other => panic!("unexpected element {other}"),
                        }
                    }
                }
                "input" => {
                    assert!(chars(&block["label"]["text"]) <= 2000);
                    let element = &block["element"];
                    let max = element["max_length"].as_u64().unwrap() as usize;
                    assert!(max <= MAX_INPUT);
                    assert!(chars(&element["initial_value"]) <= max);
                }
                other => panic!("unexpected block {other}"),
            }
        }
        walk(&Value::Array(blocks.to_vec()), &mut |v| {
            if let Some(kind @ ("mrkdwn" | "plain_text")) = v["type"].as_str() {
                let text = v["text"].as_str().unwrap();
                assert!(!text.is_empty(), "empty {kind} text");
                assert!(text.chars().count() <= MAX_TEXT, "{kind} text of {} chars", text.chars().count());
            }
        });
    }

    fn check_message(message: &Message) {
        assert!(!message.text.is_empty() && message.text.chars().count() <= MAX_TEXT);
        check_limits(&message.blocks);
    }

    fn check_view(view: &Value) {
        for key in ["title", "submit", "close"] {
            assert!(chars(&view[key]["text"]) <= MAX_MODAL_TITLE && chars(&view[key]["text"]) > 0);
        }
        assert!(chars(&view["private_metadata"]) <= MAX_PRIVATE_METADATA);
        let blocks = view["blocks"].as_array().unwrap();
        assert!(blocks.len() <= 100);
        check_limits(blocks);
    }

    #[test]
    fn a_pending_approval_offers_approve_reject_each_option_and_claim() {
        let spec = json!({
            "fn": "refund",
            "kwargs": {"order": "A-1", "amount": 30},
            "reject_options": [{"name": "too_much", "title": "Too much"}, {"name": "wrong_order"}],
        });
        let message = request_message(&approval(spec), INBOX, None, &[]);
        check_message(&message);
        let elements = actions(&message.blocks);
        let ids: Vec<&str> = elements.iter().map(|e| e["action_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["cs_approve", "cs_reject", "cs_reject_option:0", "cs_reject_option:1", "cs_claim"]);
        assert_eq!(elements[0]["style"], "primary");
        assert_eq!(elements[1]["style"], "danger");
        assert_eq!(elements[2]["text"]["text"], "Too much");
        assert_eq!(elements[3]["text"]["text"], "wrong_order");
        let refs: Vec<ActionRef> =
            elements.iter().map(|e| ActionRef::decode(e["value"].as_str().unwrap()).unwrap()).collect();
        for r in &refs {
            assert_eq!((r.project_id.as_str(), r.kind.as_str(), r.call_id.as_str()), (PROJECT, "function_call", "c-1"));
        }
        let picked: Vec<Option<usize>> = refs.iter().map(|r| r.option).collect();
        assert_eq!(picked, [None, None, Some(0), Some(1), None]);
        let text = all_text(&message.blocks);
        assert!(text.contains("Agent run `r-1` wants to run `refund`"), "{text}");
        assert!(text.contains("```\n{\n  \"order\": \"A-1\",\n  \"amount\": 30\n}\n```"), "{text}");
        assert!(text.contains("Call `c-1`") && text.contains(&format!("<{INBOX}|Open in the inbox>")));
        assert_eq!(message.text, "Approval requested: refund (run r-1)");
    }

    #[test]
    fn more_than_five_options_are_offered_in_one_select() {
        let spec = json!({"fn": "f", "kwargs": {}, "reject_options": options(6, 3)});
        let message = request_message(&approval(spec), INBOX, None, &[]);
        check_message(&message);
        let elements = actions(&message.blocks);
        let ids: Vec<&str> = elements.iter().map(|e| e["action_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["cs_approve", "cs_reject", "cs_option_select", "cs_claim"]);
        let select = &elements[2];
        assert_eq!(select["placeholder"]["text"], "Reject with…");
        let values: Vec<&str> =
            select["options"].as_array().unwrap().iter().map(|o| o["value"].as_str().unwrap()).collect();
        assert_eq!(values, ["0", "1", "2", "3", "4", "5"]);

        let spec = json!({"msg": "Which?", "response_options": options(150, 1)});
        let message = request_message(&question(spec), INBOX, None, &[]);
        check_message(&message);
        let elements = actions(&message.blocks);
        assert_eq!(elements[0]["options"].as_array().unwrap().len(), MAX_SELECT_OPTIONS);
        assert!(all_text(&message.blocks).contains("first 100 of 150 options"));
    }

    #[test]
    fn a_pending_question_offers_options_answer_and_claim() {
        let spec = json!({
            "msg": "Ship it on Friday?",
            "subject": "Release",
            "response_options": [{"name": "yes"}, {"name": "no", "title": "No, wait"}],
        });
        let message = request_message(&question(spec), INBOX, None, &[]);
        check_message(&message);
        let elements = actions(&message.blocks);
        let ids: Vec<&str> = elements.iter().map(|e| e["action_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["cs_respond_option:0", "cs_respond_option:1", "cs_answer", "cs_claim"]);
        let second = ActionRef::decode(elements[1]["value"].as_str().unwrap()).unwrap();
        assert_eq!((second.kind.as_str(), second.option), ("human_contact", Some(1)));
        let text = all_text(&message.blocks);
        assert!(text.contains("Agent run `r-1` asks:") && text.contains("*Release*\nShip it on Friday?"), "{text}");
        assert_eq!(message.text, "Question from run r-1: Release");
    }

    #[test]
    fn a_huge_argument_is_cut_to_fit_with_a_link_to_the_inbox() {
        let spec = json!({"fn": "write", "kwargs": {"body": "<&>é".repeat(25_000)}});
        let message = request_message(&approval(spec.clone()), INBOX, None, &[]);
        check_message(&message);
        let args = message.blocks[1]["text"]["text"].as_str().unwrap();
        assert!(args.starts_with("```\n{\n  \"body\": \"&lt;&amp;&gt;é"), "{args}");
        assert!(args.ends_with(&format!("…\n```\n… truncated: <{INBOX}|see the full request in the inbox>")), "{args}");
        assert!(args.chars().count() > MAX_TEXT - 10, "uses the room it has");
        let before_dots = args.split("…\n```").next().unwrap();
        assert!(before_dots.ends_with(";") || before_dots.ends_with('é'), "never cuts an entity: {before_dots:?}");

        let mut done = approval(spec);
        done = decided(
            done,
            Decision::Approved {
                comment: Some("x".repeat(5000)),
                updated_kwargs: Some(format!("{{\"a\":\"{}\"}}", "y".repeat(5000))),
            },
            slack_actor(),
        );
        check_message(&request_message(&done, INBOX, None, &[]));
    }

    #[test]
    fn experimental_slack_blocks_show_the_arguments_as_fields() {
        let mut args = Map::new();
        for i in 0..12 {
            args.insert(format!("arg{i}"), json!(i));
        }
        args.insert("long".into(), json!("z".repeat(5000)));
        let spec = json!({"fn": "f", "kwargs": {"to": "ana@example.com", "n": 3, "long": "z".repeat(5000)},
                          "channel": {"slack": {"channel_or_user_id": "C1", "experimental_slack_blocks": true}}});
        let message = request_message(&approval(spec), INBOX, None, &[]);
        check_message(&message);
        let fields = message.blocks[1]["fields"].as_array().unwrap();
        assert_eq!(fields[0]["text"], "*to*\nana@example.com");
        assert_eq!(fields[1]["text"], "*n*\n3");
        assert_eq!(chars(&fields[2]["text"]), MAX_FIELD);

        let spec = json!({"fn": "f", "kwargs": args, "channel": {"slack": {"experimental_slack_blocks": true}}});
        let message = request_message(&approval(spec), INBOX, None, &[]);
        check_message(&message);
        assert_eq!(message.blocks[1]["fields"].as_array().unwrap().len(), MAX_FIELDS);
        assert_eq!(message.blocks[2]["elements"][0]["text"], format!("…and 3 more: <{INBOX}|in the inbox>"));

        let spec = json!({"fn": "f", "kwargs": {"a": 1}, "channel": {"slack": {"channel_or_user_id": "C1"}}});
        let message = request_message(&approval(spec), INBOX, None, &[]);
        assert!(message.blocks[1]["text"]["text"].as_str().unwrap().starts_with("```"), "a code block by default");
    }

    #[test]
    fn a_decided_request_shows_the_outcome_and_no_buttons() {
        let spec =
            json!({"fn": "refund", "kwargs": {"a": 1}, "reject_options": [{"name": "risky", "title": "Too risky"}]});
        let approved =
            decided(approval(spec.clone()), Decision::Approved { comment: None, updated_kwargs: None }, slack_actor());
        let claim = Claim { by: "<@U9>", at: Timestamp::from_micros(0) };
        let message = request_message(&approved, INBOX, Some(&claim), &[]);
        check_message(&message);
        assert!(actions(&message.blocks).is_empty());
        let text = all_text(&message.blocks);
        assert!(text.contains(":white_check_mark: *Approved* by <@U123ABC> via Slack at <!date^1748782800^"), "{text}");
        assert!(text.contains("|2025-06-01T13:00:00.000000Z>"), "{text}");
        assert!(!text.contains("looking at this"), "no claim line once decided");
        assert!(text.contains("wants to run `refund`"), "still shows what was asked");
        assert_eq!(message.text, "Approved: refund — by <@U123ABC>");

        let rejected = decided(
            approval(spec),
            Decision::Rejected { comment: "Not <today> & not\nby me".into(), option: Some("risky".into()) },
            email_actor(),
        );
        let message = request_message(&rejected, INBOX, None, &[]);
        check_message(&message);
        assert!(actions(&message.blocks).is_empty());
        let text = all_text(&message.blocks);
        assert!(text.contains(":x: *Rejected* with “Too risky” by ana@example.com via web at "), "{text}");
        assert!(text.contains("\n> Not &lt;today&gt; &amp; not\n> by me"), "{text}");

        let answered = decided(
            question(json!({"msg": "Which day?"})),
            Decision::Answered { response: "Friday".into(), option: None },
            Actor::api_key("cs_live_ab"),
        );
        let message = request_message(&answered, INBOX, None, &[]);
        check_message(&message);
        assert!(actions(&message.blocks).is_empty());
        let text = all_text(&message.blocks);
        assert!(text.contains(":speech_balloon: *Answered* by API key `cs_live_ab` via the API at "), "{text}");
        assert!(text.contains("\n> Friday"), "{text}");
        assert_eq!(message.text, "Answered: Which day? — by API key `cs_live_ab`");
    }

    #[test]
    fn the_claim_line_shows_only_while_pending() {
        let claim = Claim { by: "<@U9>", at: Timestamp::from_micros(1_748_779_260_000_000) };
        let pending = approval(json!({"fn": "f", "kwargs": {}}));
        let text = all_text(&request_message(&pending, INBOX, Some(&claim), &[]).blocks);
        assert!(text.contains(":eyes: <@U9> is looking at this (since <!date^1748779260^"), "{text}");
        assert!(!all_text(&request_message(&pending, INBOX, None, &[]).blocks).contains("looking at this"));
    }

    fn governed(
        mut record: RequestRecord,
        count: u32,
        group: Option<&str>,
        expires_at_us: Option<i64>,
    ) -> RequestRecord {
        record.policy = Some(countersign_core::governance::Governance {
            rule: "large refunds".into(),
            action: "ask".into(),
            approvers: Some(countersign_core::governance::Quorum { group: group.map(str::to_owned), count }),
            separation_of_duties: false,
            owner: None,
            expires_at_us,
            expire_after: None,
            on_expire: expires_at_us.map(|_| "deny".to_owned()),
            escalate: Vec::new(),
        });
        record
    }

    fn vote(voter: &str, channel: DecisionChannel) -> Vote {
        Vote { voter: voter.into(), approved: true, comment: None, channel, at: "2025-06-01T12:30:00Z".into() }
    }

    #[test]
    fn a_quorum_shows_its_progress_while_pending_and_its_votes_once_decided() {
        let pending =
            governed(approval(json!({"fn": "refund", "kwargs": {}})), 2, Some("finance"), Some(1_748_790_000_000_000));
        let message = request_message(&pending, INBOX, None, &[]);
        let text = all_text(&message.blocks);
        assert!(text.contains(":ballot_box_with_check: 0 of 2 approvals · from group “finance”"), "{text}");
        assert!(
            text.contains("Policy rule “large refunds” · :hourglass_flowing_sand: expires <!date^1748790000^"),
            "{text}"
        );
        assert!(text.contains("; then denied"), "{text}");
        let votes = [vote("ada@example.com", DecisionChannel::Web)];
        let message = request_message(&pending, INBOX, None, &votes);
        check_message(&message);
        let text = all_text(&message.blocks);
        assert!(text.contains("1 of 2 approvals: ada@example.com · from group “finance”"), "{text}");
        assert!(actions(&message.blocks).iter().any(|a| a["action_id"] == action::APPROVE), "still actionable");

        // Many voters stay within Slack's limits; markup in an address is escaped.
        let many: Vec<Vote> =
            (0..500).map(|i| vote(&format!("<!here>{i}@example.com"), DecisionChannel::Slack)).collect();
        let message = request_message(&governed(pending.clone(), 1000, None, None), INBOX, None, &many);
        check_message(&message);
        let text = all_text(&message.blocks);
        assert!(
            !text.contains("<!here>") && text.contains("500 of 1000 approvals: &lt;!here&gt;0@example.com"),
            "{text}"
        );
        assert!(text.contains("and 490 more"), "{text}");

        let votes =
            vec![vote("ada@example.com", DecisionChannel::Web), vote("bob@example.com", DecisionChannel::Slack)];
        let actor = Actor { votes: Some(votes), ..email_actor() };
        let done = decided(pending, Decision::Approved { comment: None, updated_kwargs: None }, actor);
        let message = request_message(&done, INBOX, None, &[]);
        check_message(&message);
        let text = all_text(&message.blocks);
        assert!(text.contains("Approvals: ada@example.com (web), bob@example.com (slack)"), "{text}");
        assert!(!text.contains("of 2 approvals"), "no progress line once decided: {text}");
        assert!(actions(&message.blocks).is_empty());
    }

    #[test]
    fn endings_and_policy_decisions_read_as_such() {
        let spec = json!({"fn": "refund", "kwargs": {}});
        let expired =
            Decision::Ended { ending: Ending::Expired, comment: "expired after 4h without a decision".into() };
        let message = request_message(
            &decided(approval(spec.clone()), expired, Actor::policy("refunds", None)),
            INBOX,
            None,
            &[],
        );
        let text = all_text(&message.blocks);
        assert!(text.contains(":hourglass: *Expired* under policy rule “refunds” at <!date^"), "{text}");
        assert!(text.contains("\n> expired after 4h without a decision"), "{text}");
        assert_eq!(message.text, "Expired: refund");

        let cancelled = Decision::Ended { ending: Ending::Cancelled, comment: "the user closed the ticket".into() };
        let message = request_message(
            &decided(approval(spec.clone()), cancelled, Actor::api_key("cs_live_ab")),
            INBOX,
            None,
            &[],
        );
        let text = all_text(&message.blocks);
        assert!(text.contains(":no_entry_sign: *Cancelled* by the agent (API key `cs_live_ab`) at "), "{text}");
        assert_eq!(message.text, "Cancelled: refund");

        let denied = Decision::Rejected { comment: "never from an agent".into(), option: None };
        let message = request_message(&decided(approval(spec), denied, Actor::policy("never", None)), INBOX, None, &[]);
        let text = all_text(&message.blocks);
        assert!(text.contains(":x: *Rejected* by policy rule “never” at <!date^"), "{text}");
        assert_eq!(message.text, "Rejected: refund — by policy rule “never”");
    }

    #[test]
    fn the_modal_prefills_the_option_and_names_the_request() {
        let spec = json!({"fn": "refund", "kwargs": {}, "reject_options": [
            {"name": "risky", "title": "Too risky", "prompt_fill": "Too risky because"}]});
        let record = approval(spec);
        let meta = ModalMeta { r: ActionRef::of(&record, Some(0)), channel: Some("C1".into()), ts: Some("1.2".into()) };
        let view = modal(&record, Some(0), &meta);
        check_view(&view);
        assert_eq!(view["type"], "modal");
        assert_eq!(view["callback_id"], callback::REJECT);
        assert_eq!(view["title"]["text"], "Reject");
        assert_eq!(ModalMeta::decode(view["private_metadata"].as_str().unwrap()), Some(meta.clone()));
        let input = &view["blocks"][1];
        assert_eq!(
            (input["block_id"].as_str(), input["element"]["action_id"].as_str()),
            (Some(INPUT_BLOCK), Some(INPUT_ACTION))
        );
        assert_eq!(input["element"]["initial_value"], "Too risky because");
        assert_eq!(input["optional"], true, "the option alone rejects");
        let recall = view["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(recall.contains("Rejecting `refund`") && recall.contains("Rejecting with: *Too risky*"), "{recall}");

        let plain_reject = modal(&record, None, &meta);
        check_view(&plain_reject);
        assert_eq!(plain_reject["blocks"][1]["optional"], false, "a rejection without option needs a comment");
        assert!(plain_reject["blocks"][1]["element"].get("initial_value").is_none());

        let ask = question(json!({"msg": "Which <day>?", "response_options": [
            {"name": "other", "prompt_fill": "I suggest ", "interactive": true}]}));
        let view = modal(&ask, Some(0), &ModalMeta { r: ActionRef::of(&ask, Some(0)), channel: None, ts: None });
        check_view(&view);
        assert_eq!(
            (view["callback_id"].as_str(), view["submit"]["text"].as_str()),
            (Some(callback::ANSWER), Some("Send"))
        );
        assert_eq!(view["blocks"][1]["element"]["initial_value"], "I suggest ");
        assert_eq!(view["blocks"][1]["optional"], false);
        assert!(view["blocks"][0]["text"]["text"].as_str().unwrap().contains("> Which &lt;day&gt;?"));
    }

    #[test]
    fn the_escalation_reply_says_who_and_why() {
        let record = approval(json!({"fn": "refund", "kwargs": {}}));
        let escalation = json!({"escalation_msg": "Still <waiting>", "escalated_by": "api key cs_1", "escalated_at": "2025-06-01T12:00:00Z"});
        let reply = escalation_reply(&record, &escalation, INBOX);
        check_message(&reply);
        let text = all_text(&reply.blocks);
        assert!(text.contains(":rotating_light: *Escalated* by api key cs_1: Still &lt;waiting&gt;"), "{text}");
        assert!(text.contains(&format!("<{INBOX}|Open in the inbox>")));
        assert_eq!(reply.text, "Escalated by api key cs_1: Still &lt;waiting&gt; (refund)");
        check_message(&escalation_reply(&record, &json!({"escalation_msg": "é".repeat(50_000)}), INBOX));
        check_message(&escalation_reply(&record, &json!(null), INBOX));
    }

    /// The texts Slack parses as mrkdwn.
    fn mrkdwn_texts(blocks: &[Value]) -> Vec<String> {
        let mut out = Vec::new();
        walk(&Value::Array(blocks.to_vec()), &mut |v| {
            if v["type"] == "mrkdwn" {
                out.push(v["text"].as_str().unwrap().to_owned());
            }
        });
        out
    }

    #[test]
    fn agent_text_cannot_mention_or_link() {
        let spec = json!({"fn": "<!channel>", "kwargs": {"<!here>": "<https://evil|x>"},
                          "reject_options": [{"name": "<!everyone>"}]});
        for blocks in [true, false] {
            let mut spec = spec.clone();
            spec["channel"] = json!({"slack": {"experimental_slack_blocks": blocks}});
            let message = request_message(&approval(spec), "https://x/?a=1&b=2|3", None, &[]);
            let texts = mrkdwn_texts(&message.blocks).join("\n");
            for raw in ["<!channel>", "<!here>", "<https://evil", "<!everyone>"] {
                assert!(!texts.contains(raw) && !message.text.contains(raw), "{raw} got through: {texts}");
            }
            assert!(texts.contains("<https://x/?a=1&amp;b=2%7C3|Open in the inbox>"), "{texts}");
            assert!(message.text.contains("&lt;!channel&gt;"));
        }
    }

    #[test]
    fn escape_replaces_the_three_characters_slack_names() {
        assert_eq!(escape("a & b < c > d"), "a &amp; b &lt; c &gt; d");
        assert_eq!(escape("*bold* `code` é"), "*bold* `code` é");
    }

    #[test]
    fn truncate_counts_chars_and_cuts_at_a_boundary() {
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo", 4), "hél…");
        assert_eq!(truncate("日本語テキスト", 3), "日本…");
        assert_eq!(truncate("🦀🦀🦀", 2), "🦀…");
        assert_eq!(truncate("abc", 1), "…");
        assert_eq!(truncate("abc", 0), "");
        assert_eq!(escape_cut("a&b", 4, false), ("a…".to_owned(), true), "never half an entity");
        assert_eq!(escape_cut("a\nb", 10, true), ("> a\n> b".to_owned(), false));
    }

    #[test]
    fn action_refs_and_modal_meta_round_trip() {
        let record = approval(json!({"fn": "f"}));
        let r = ActionRef::of(&record, Some(3));
        assert_eq!(r.encode(), format!("{{\"p\":\"{PROJECT}\",\"k\":\"function_call\",\"c\":\"c-1\",\"o\":3}}"));
        assert_eq!(ActionRef::decode(&r.encode()), Some(r.clone()));
        assert_eq!(
            ActionRef::of(&record, None).encode(),
            format!("{{\"p\":\"{PROJECT}\",\"k\":\"function_call\",\"c\":\"c-1\"}}")
        );
        assert_eq!(ActionRef::decode("not json"), None);
        assert_eq!(ModalMeta::decode("{}"), None);
        let meta = ModalMeta { r, channel: None, ts: None };
        assert_eq!(ModalMeta::decode(&meta.encode()), Some(meta));
    }

    #[test]
    fn awkward_specs_stay_within_every_limit() {
        let huge = "ü<&>".repeat(8_000);
        let specs = [
            json!({}),
            json!(null),
            json!([1, 2]),
            json!({"fn": 42, "kwargs": "not an object", "msg": ["x"]}),
            json!({"fn": "", "kwargs": null, "msg": "", "subject": "   "}),
            json!({"fn": huge, "kwargs": {huge.clone(): huge}, "msg": huge, "subject": huge}),
            json!({"fn": "f", "kwargs": [huge], "reject_options": options(1000, 100), "response_options": options(1000, 100)}),
            json!({"fn": "f", "kwargs": {}, "reject_options": options(5, 10_000), "response_options": options(5, 10_000)}),
            json!({"fn": "f", "kwargs": {"": "", "a": null, "b": huge}, "channel": {"slack": {"experimental_slack_blocks": true}}}),
            json!({"fn": "f", "kwargs": (0..500).map(|i| (format!("k{i}"), json!(huge.clone()))).collect::<Map<_, _>>(),
                   "channel": {"slack": {"experimental_slack_blocks": true}}}),
            json!({"reject_options": [{"name": "", "title": ""}, {"name": "   "}], "response_options": [{"name": ""}]}),
            json!({"reject_options": "nope", "response_options": 7, "channel": "slack"}),
            json!({"fn": "🦀".repeat(4000), "msg": "\n\n\n", "kwargs": {"deep": [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]}}),
        ];
        let nested = format!("{{\"fn\":\"f\",\"kwargs\":{}1{}}}", "[".repeat(300), "]".repeat(300));
        let long_id = "i".repeat(512);
        let claim = Claim { by: &"<@U1>".repeat(1000), at: Timestamp::from_micros(-1) };
        let actors =
            [slack_actor(), email_actor(), Actor::api_key("k"), Actor { api_key: None, ..Actor::api_key("k") }];
        let mut records = Vec::new();
        for kind in [RequestKind::FunctionCall, RequestKind::HumanContact] {
            for spec in specs.iter().map(Value::to_string).chain([nested.clone()]) {
                let mut r = record(kind, json!(null));
                r.spec = RawValue::from_string(spec).unwrap();
                records.push(r.clone());
                r.call_id = long_id.clone();
                r.run_id = "<>&\"\\".repeat(100);
                records.push(r);
            }
        }
        for record in &records {
            let message = request_message(record, INBOX, Some(&claim), &[]);
            check_message(&message);
            for (i, actor) in actors.iter().enumerate() {
                let decision = match (record.kind, i % 2) {
                    (RequestKind::FunctionCall, 0) => Decision::Approved {
                        comment: Some(huge.clone()),
                        updated_kwargs: Some(format!("{{\"x\":\"{}\"}}", "v".repeat(10_000))),
                    },
                    (RequestKind::FunctionCall, _) => {
                        Decision::Rejected { comment: huge.clone(), option: Some("opt999".into()) }
                    }
                    (RequestKind::HumanContact, _) => {
                        Decision::Answered { response: huge.clone(), option: Some("opt3".into()) }
                    }
                };
                check_message(&request_message(
                    &decided(record.clone(), decision, actor.clone()),
                    &"https://cs.example.com/".repeat(100),
                    None,
                    &[],
                ));
            }
            for option in [None, Some(0), Some(3), Some(999), Some(5000)] {
                let meta =
                    ModalMeta { r: ActionRef::of(record, option), channel: Some("C1".into()), ts: Some("1.2".into()) };
                let view = modal(record, option, &meta);
                check_view(&view);
                assert_eq!(ModalMeta::decode(view["private_metadata"].as_str().unwrap()), Some(meta));
            }
            check_message(&escalation_reply(record, &json!({"escalation_msg": huge, "escalated_by": huge}), INBOX));
        }
    }

    #[test]
    #[ignore = "writes example documents for slack_sdk's validator into $BLOCKS_OUT"]
    fn dump_examples() {
        let Some(dir) = std::env::var_os("BLOCKS_OUT") else { return };
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, value: Value| {
            std::fs::write(dir.join(name), serde_json::to_string_pretty(&value).unwrap()).unwrap();
        };
        let three = json!([
            {"name": "too_much", "title": "Too much money", "prompt_fill": "The amount is too high"},
            {"name": "wrong_customer", "title": "Wrong customer"},
            {"name": "later"},
        ]);
        let pending =
            approval(json!({"fn": "refund", "kwargs": {"order": "A-1", "amount": 30}, "reject_options": three}));
        write("a_pending_approval.json", json!({"blocks": request_message(&pending, INBOX, None, &[]).blocks}));

        let claim = Claim { by: "<@U123ABC>", at: Timestamp::from_micros(1_748_779_260_000_000) };
        let ask = question(
            json!({"msg": "Which region should we deploy to?", "subject": "Deploy", "response_options": options(8, 2)}),
        );
        write("b_pending_question.json", json!({"blocks": request_message(&ask, INBOX, Some(&claim), &[]).blocks}));

        let big = approval(json!({"fn": "write_file", "kwargs": {"path": "/tmp/x", "body": "<&>é".repeat(25_000)}}));
        let done = decided(
            big,
            Decision::Approved { comment: Some("Looks right".into()), updated_kwargs: None },
            slack_actor(),
        );
        write("c_decided_approval.json", json!({"blocks": request_message(&done, INBOX, None, &[]).blocks}));

        let meta =
            ModalMeta { r: ActionRef::of(&pending, Some(0)), channel: Some("C1".into()), ts: Some("1.2".into()) };
        write("d_reject_modal.json", json!({"view": modal(&pending, Some(0), &meta)}));
    }
}
