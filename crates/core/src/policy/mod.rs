//! Policies: server-side rules that decide a request before anyone is asked. In layers: `parse`
//! reads and checks a policy file, `condition` compiles and runs the CEL `when` conditions, `eval`
//! picks the rule that decides a request.
//!
//! A policy is a TOML file of `[[rule]]` tables, in order; the first rule that matches a request
//! decides, and a request no rule matches is asked as it would be without a policy:
//!
//! ```toml
//! [[rule]]
//! name  = "small refunds"
//! match = { fn = "refund*" }               # globs on fn and run_id, and the request's kind
//! when  = "args.amount < 100 && args.currency == 'USD'"   # a CEL condition over the call
//! action = "approve"                       # approve | deny | ask
//!
//! [[rule]]
//! name = "large refunds"
//! match = { fn = "refund*" }
//! when = "args.amount >= 10000"
//! action = "ask"
//! approvers = { group = "finance", count = 2 }     # two distinct people of the group
//! separation_of_duties = true              # whoever owns the requesting key may not approve
//! expire_after = "4h"
//! on_expire = "deny"                       # deny | approve
//! escalate = [ { after = "30m", to = { email = "lead@example.com" } },
//!              { after = "2h",  to = { slack = "C0FINANCE" } } ]
//!
//! [[rule]]
//! name = "never"
//! match = { fn = "drop_*" }
//! action = "deny"
//! message = "dropping tables is never allowed from an agent"
//! ```
//!
//! `match` takes `fn` (a glob on the function name; a question's is ""), `run_id` (a glob) and
//! `kind` (`function_call` or `human_contact`); without `match` a rule matches every request. Globs:
//! `*` any run of characters (`/` included), `?` one character, `[abc]` / `[!abc]` a class.
//!
//! `when` is a CEL expression over `fn`, `args` (the kwargs; `{}` for a question), `run_id`, `kind`,
//! `channel` (the request's contact channel: `email`, `slack`, `sms`, `whatsapp`, or "") and `msg`
//! (the question; "" for a function call). It must give a bool. Fail-safe: a condition that cannot
//! be evaluated (a missing argument, a type mismatch, a result that is not a bool) does not match
//! an `approve` rule and does match a `deny` or `ask` rule, so an odd request is never waved
//! through; the error is reported in [`Evaluation::errors`].
//!
//! Only an `ask` rule waits for people, so only it takes `approvers`, `separation_of_duties`,
//! `expire_after`, `on_expire` and `escalate`. `message` is what the agent is told on `deny` and a
//! comment recorded with the decision on `approve`; on `ask` it documents the rule for its readers.

mod condition;
mod eval;
mod parse;
#[cfg(test)]
mod tests;

use crate::RequestKind;
use condition::Condition;
use glob::Pattern;
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// Longest policy file accepted, in bytes.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;
/// Most rules a policy may hold.
pub const MAX_RULES: usize = 1000;
/// Longest `when` condition, in bytes.
pub const MAX_WHEN_BYTES: usize = 4 * 1024;
/// Longest rule name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Most approvers a quorum may ask for.
pub const MAX_APPROVERS: u32 = 100;
/// Longest wait a policy may set (`expire_after`, an escalation's `after`): 365 days.
pub const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Checks a group's name: 1 to 100 letters, digits, `-`, `_` or `.`.
pub fn check_group_name(name: &str) -> Result<(), crate::Invalid> {
    if name.is_empty() || name.len() > 100 || !name.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c)) {
        return Err(crate::Invalid::new(
            ".",
            format!("group name {name:?}: use 1 to 100 letters, digits, '-', '_' or '.'"),
        ));
    }
    Ok(())
}

/// A parsed policy: its rules in order, and the text they were read from.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    rules: Vec<PolicyRule>,
    text: String,
}

/// What a rule does with the requests it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyAction {
    /// Decide the request as approved at once, without asking anyone.
    Approve,
    /// Refuse the request at once, without asking anyone.
    Deny,
    /// Ask people, as the rule says (approvers, expiry, escalation).
    Ask,
}

impl PolicyAction {
    /// The word that spells this action in a policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
            Self::Ask => "ask",
        }
    }
}

/// What becomes of an `ask` request nobody decided before it expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnExpire {
    /// The request is denied (the default: silence is not consent).
    #[default]
    Deny,
    /// The request is approved.
    Approve,
}

impl OnExpire {
    /// The word that spells this outcome in a policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deny => "deny",
            Self::Approve => "approve",
        }
    }
}

/// Who must approve an `ask` request: `count` distinct people, of `group` when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approvers {
    /// The group the approvers must belong to; `None` for anyone who may decide.
    pub group: Option<String>,
    /// How many distinct people must approve (1 to [`MAX_APPROVERS`]).
    pub count: u32,
}

/// One step of an escalation ladder: who to notify once a request has waited `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LadderStep {
    /// How long after the request was made.
    pub after: Duration,
    /// Who to notify.
    pub to: StepTarget,
}

/// Where an escalation step goes: an email address, a Slack channel or user, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTarget {
    /// An email address (lower-cased).
    pub email: Option<String>,
    /// A Slack channel or user id.
    pub slack: Option<String>,
}

/// One rule of a policy, as written, with its compiled globs and condition.
#[derive(Debug, Clone)]
pub struct PolicyRule {
    /// The rule's name, unique in its policy.
    pub name: String,
    /// The 1-based line of the rule's `[[rule]]` header.
    pub line: usize,
    /// The glob on the function name, as written.
    pub fn_glob: Option<String>,
    /// The glob on the run id, as written.
    pub run_id_glob: Option<String>,
    /// The kind of request the rule is for; `None` for both.
    pub kind: Option<RequestKind>,
    /// The CEL condition, as written.
    pub when: Option<String>,
    /// What the rule does with a request it matches.
    pub action: PolicyAction,
    /// Told to the agent (deny), shown to approvers (ask), recorded with the decision (approve).
    pub message: Option<String>,
    /// Who must approve (ask only); `None` for one person who may decide.
    pub approvers: Option<Approvers>,
    /// Whoever owns the requesting API key may not approve (ask only).
    pub separation_of_duties: bool,
    /// How long the request may wait for people (ask only); `None` for as long as it takes.
    pub expire_after: Option<Duration>,
    /// What an expired request becomes (ask only).
    pub on_expire: OnExpire,
    /// Who to notify while the request waits, in order of `after` (ask only).
    pub escalate: Vec<LadderStep>,
    fn_pattern: Option<Pattern>,
    run_id_pattern: Option<Pattern>,
    condition: Option<Condition>,
}

/// What a policy sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// A function call or a question.
    pub kind: RequestKind,
    /// The function name; "" for a question.
    pub fn_name: &'a str,
    /// The kwargs object of a function call; `{}` for a question.
    pub args: &'a Value,
    /// The agent's run.
    pub run_id: &'a str,
    /// The name of the request's contact channel (`email`, `slack`, `sms`, `whatsapp`), or "".
    pub channel: &'a str,
    /// The question; "" for a function call.
    pub msg: &'a str,
}

/// A [`Call`]'s data read from a stored request, owned; [`CallData::call`] lends it out.
#[derive(Debug, Clone)]
pub struct CallData {
    /// See [`Call::kind`].
    pub kind: RequestKind,
    /// See [`Call::fn_name`].
    pub fn_name: String,
    /// See [`Call::args`].
    pub args: Value,
    /// See [`Call::run_id`].
    pub run_id: String,
    /// See [`Call::channel`].
    pub channel: &'static str,
    /// See [`Call::msg`].
    pub msg: String,
}

/// The outcome of evaluating a policy for one request.
#[derive(Debug, Clone)]
pub struct Evaluation<'p> {
    /// The rule that decides; `None` when no rule matched (the request is asked as usual).
    pub rule: Option<&'p PolicyRule>,
    /// Conditions that failed to evaluate on the way, as (rule name, what went wrong).
    pub errors: Vec<(String, String)>,
}

impl Evaluation<'_> {
    /// The deciding rule's action; `None` when no rule matched.
    pub fn action(&self) -> Option<PolicyAction> {
        self.rule.map(|rule| rule.action)
    }
}

/// A policy file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file's name as given.
    pub source: String,
    /// The 1-based line; 0 when the error is about the whole file.
    pub line: usize,
    /// The 1-based column, in characters; 0 when the error is about the whole file.
    pub column: usize,
    /// What is wrong, and what is allowed.
    pub message: String,
    /// The offending line as written ("" when the error is about the whole file).
    pub text: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.source, self.message);
        }
        write!(f, "{}:{}:{}: {}", self.source, self.line, self.column, self.message)?;
        write!(f, "\n  {} | {}", self.line, self.text.trim_end())
    }
}

impl std::error::Error for PolicyError {}

impl PolicyError {
    /// An error at byte `offset` of `text`, with its line and column worked out.
    fn at(source: &str, text: &str, offset: usize, message: String) -> Self {
        let offset = text.floor_char_boundary(offset);
        let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
        Self {
            source: source.to_owned(),
            line: text[..offset].matches('\n').count() + 1,
            column: text[start..offset].chars().count() + 1,
            message,
            text: text[start..end].trim_end_matches('\r').to_owned(),
        }
    }

    /// An error about the whole file.
    fn whole(source: &str, message: String) -> Self {
        Self { source: source.to_owned(), line: 0, column: 0, message, text: String::new() }
    }
}

impl Policy {
    /// The rules, in order.
    pub fn rules(&self) -> &[PolicyRule] {
        &self.rules
    }

    /// The policy's text exactly as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True when the policy has no rules (every request is asked as usual).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every group the rules name, once each, in order of first mention.
    pub fn groups(&self) -> Vec<&str> {
        let mut groups: Vec<&str> = Vec::new();
        for group in self.rules.iter().filter_map(|r| r.approvers.as_ref()?.group.as_deref()) {
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        groups
    }

    /// The rule named `name`.
    pub fn rule(&self, name: &str) -> Option<&PolicyRule> {
        self.rules.iter().find(|rule| rule.name == name)
    }
}
