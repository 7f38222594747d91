//! Parsing: a policy file's TOML into rules, checked key by key, so that every mistake is reported
//! at its line and column with what is allowed instead.

use super::condition::{Condition, ConditionError};
use super::{
    Approvers, LadderStep, MAX_APPROVERS, MAX_NAME_CHARS, MAX_POLICY_BYTES, MAX_RULES, MAX_WAIT, MAX_WHEN_BYTES,
    OnExpire, Policy, PolicyAction, PolicyError, PolicyRule, StepTarget,
};
use crate::{Email, RequestKind};
use glob::Pattern;
use std::collections::HashMap;
use std::time::Duration;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A value of the file, with where it was written.
type Item<'i> = Spanned<DeValue<'i>>;

/// A mistake at a byte offset of the policy's text.
struct Mistake {
    offset: usize,
    message: String,
}

type Checked<T> = Result<T, Mistake>;

fn mistake<T>(offset: usize, message: impl Into<String>) -> Checked<T> {
    Err(Mistake { offset, message: message.into() })
}

const RULE_KEYS: [&str; 10] = [
    "name",
    "match",
    "when",
    "action",
    "message",
    "approvers",
    "separation_of_duties",
    "expire_after",
    "on_expire",
    "escalate",
];
/// The keys that only mean something to a rule that waits for people.
const ASK_ONLY_KEYS: [&str; 5] = ["approvers", "separation_of_duties", "expire_after", "on_expire", "escalate"];

impl Policy {
    /// Parses and checks a policy file; `source` names it in errors (`policy.toml:3:1: ...`).
    pub fn parse(source: &str, text: &str) -> Result<Self, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::whole(
                source,
                format!("the policy is {} bytes; the limit is {MAX_POLICY_BYTES} (256 KiB)", text.len()),
            ));
        }
        let rules = read(text).map_err(|m| PolicyError::at(source, text, m.offset, m.message))?;
        Ok(Self { rules, text: text.to_owned() })
    }
}

fn read(text: &str) -> Checked<Vec<PolicyRule>> {
    let document = DeTable::parse(text).map_err(|error| Mistake {
        offset: error.span().map_or(0, |span| span.start),
        message: format!("not valid TOML: {}", error.message().trim_end()),
    })?;
    let mut rules = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (key, value) in in_file_order(document.get_ref()) {
        if key.get_ref() != "rule" {
            return mistake(
                key.span().start,
                format!("unknown key `{key}`; a policy holds only rules, each under a `[[rule]]` header"),
            );
        }
        let DeValue::Array(items) = value.get_ref() else {
            return mistake(value.span().start, "write each rule under a `[[rule]]` header (two brackets)");
        };
        for item in items.iter() {
            if rules.len() == MAX_RULES {
                return mistake(item.span().start, format!("too many rules; a policy holds at most {MAX_RULES}"));
            }
            let (rule, name_offset) = read_rule(text, item)?;
            if let Some(line) = names.insert(rule.name.clone(), rule.line) {
                return mistake(
                    name_offset,
                    format!("the rule on line {line} is also named `{}`; rule names must be unique", rule.name),
                );
            }
            rules.push(rule);
        }
    }
    Ok(rules)
}

/// One `[[rule]]` table, and where its name is written.
fn read_rule(text: &str, item: &Item<'_>) -> Checked<(PolicyRule, usize)> {
    let header = item.span().start;
    let fields = table("rule", item)?;
    check_keys(fields, &RULE_KEYS)?;
    let (name, name_offset) = match entry(fields, "name") {
        Some((_, value)) => (read_name(value)?, value.span().start),
        None => return mistake(header, "this rule has no `name`; add e.g. `name = \"small refunds\"`"),
    };
    let action = match entry(fields, "action") {
        Some((_, value)) => match string("action", value)? {
            "approve" => PolicyAction::Approve,
            "deny" => PolicyAction::Deny,
            "ask" => PolicyAction::Ask,
            other => {
                return mistake(value.span().start, format!("unknown action `{other}`; expected approve, deny or ask"));
            }
        },
        None => {
            return mistake(
                header,
                format!("rule `{name}` has no `action`; add `action = \"approve\"`, \"deny\" or \"ask\""),
            );
        }
    };
    if action != PolicyAction::Ask
        && let Some((key, offset)) = ASK_ONLY_KEYS.iter().find_map(|key| Some((key, entry(fields, key)?.0)))
    {
        return mistake(
            offset,
            format!(
                "`{key}` is for `ask` rules only (only an `ask` rule waits for people); this rule's action is `{}`",
                action.as_str()
            ),
        );
    }
    let mut rule = PolicyRule {
        name,
        line: text[..header].matches('\n').count() + 1,
        fn_glob: None,
        run_id_glob: None,
        kind: None,
        when: None,
        action,
        message: None,
        approvers: None,
        separation_of_duties: false,
        expire_after: None,
        on_expire: OnExpire::Deny,
        escalate: Vec::new(),
        fn_pattern: None,
        run_id_pattern: None,
        condition: None,
    };
    if let Some((_, value)) = entry(fields, "match") {
        let selector = table("match", value)?;
        check_keys(selector, &["fn", "run_id", "kind"])?;
        if let Some((_, value)) = entry(selector, "fn") {
            let (text, pattern) = glob("fn", value)?;
            (rule.fn_glob, rule.fn_pattern) = (Some(text), Some(pattern));
        }
        if let Some((_, value)) = entry(selector, "run_id") {
            let (text, pattern) = glob("run_id", value)?;
            (rule.run_id_glob, rule.run_id_pattern) = (Some(text), Some(pattern));
        }
        if let Some((_, value)) = entry(selector, "kind") {
            let kind = string("kind", value)?;
            rule.kind = Some(RequestKind::parse(kind).ok_or_else(|| Mistake {
                offset: value.span().start,
                message: format!("unknown kind `{kind}`; expected function_call or human_contact"),
            })?);
        }
    }
    if let Some((_, value)) = entry(fields, "when") {
        let when = string("when", value)?;
        rule.condition = Some(read_condition(text, value, when)?);
        rule.when = Some(when.to_owned());
    }
    if let Some((_, value)) = entry(fields, "message") {
        rule.message = Some(string("message", value)?.to_owned());
    }
    if let Some((_, value)) = entry(fields, "approvers") {
        rule.approvers = Some(read_approvers(value)?);
    }
    if let Some((_, value)) = entry(fields, "separation_of_duties") {
        let DeValue::Boolean(separate) = value.get_ref() else {
            return mistake(value.span().start, wrong_type("separation_of_duties", "true or false", value));
        };
        rule.separation_of_duties = *separate;
    }
    if let Some((_, value)) = entry(fields, "expire_after") {
        rule.expire_after = Some(duration("expire_after", value)?);
    }
    if let Some((_, value)) = entry(fields, "on_expire") {
        rule.on_expire = match string("on_expire", value)? {
            "deny" => OnExpire::Deny,
            "approve" => OnExpire::Approve,
            other => {
                return mistake(value.span().start, format!("unknown on_expire `{other}`; expected deny or approve"));
            }
        };
    }
    if let Some((_, value)) = entry(fields, "escalate") {
        rule.escalate = read_ladder(value)?;
    }
    Ok((rule, name_offset))
}

fn read_name(value: &Item<'_>) -> Checked<String> {
    let name = string("name", value)?;
    let at = value.span().start;
    if name.trim().is_empty() {
        return mistake(at, "`name` is empty; give the rule a name people will recognise, e.g. \"small refunds\"");
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return mistake(
            at,
            format!("`name` is {} characters long; the limit is {MAX_NAME_CHARS}", name.chars().count()),
        );
    }
    if name.chars().any(char::is_control) {
        return mistake(at, "`name` must be one line of text, without control characters");
    }
    Ok(name.to_owned())
}

/// Compiles a `when`, placing a mistake in it at its line and column in the file when the
/// condition is written there as it reads (no escapes), else at the start of the value.
fn read_condition(text: &str, value: &Item<'_>, when: &str) -> Checked<Condition> {
    let at = value.span().start;
    if when.trim().is_empty() {
        return mistake(at, "`when` is empty; remove it to match every request the rule's `match` selects");
    }
    if when.len() > MAX_WHEN_BYTES {
        return mistake(at, format!("`when` is {} bytes long; the limit is {MAX_WHEN_BYTES} (4 KiB)", when.len()));
    }
    Condition::compile(when).map_err(|ConditionError { position, message }| {
        let written = text[value.span()].find(when).map(|start| at + start);
        let offset = match (written, position) {
            (Some(start), Some((line, column))) => start + offset_in(when, line, column),
            _ => at,
        };
        Mistake { offset, message }
    })
}

/// The byte offset in `text` of the 1-based `line` and `column` (in characters), clamped to it.
fn offset_in(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text.split_inclusive('\n').take(line.saturating_sub(1)).map(str::len).sum();
    let rest = &text[line_start..];
    line_start + rest.char_indices().nth(column.saturating_sub(1)).map_or(rest.len(), |(i, _)| i)
}

fn read_approvers(value: &Item<'_>) -> Checked<Approvers> {
    let approvers = table("approvers", value)?;
    check_keys(approvers, &["group", "count"])?;
    let mut read = Approvers { group: None, count: 1 };
    if let Some((_, value)) = entry(approvers, "group") {
        let group = string("group", value)?;
        if group.trim().is_empty() {
            return mistake(
                value.span().start,
                "`group` is empty; name a group, or remove `group` to let anyone decide",
            );
        }
        read.group = Some(group.to_owned());
    }
    if let Some((_, value)) = entry(approvers, "count") {
        let DeValue::Integer(count) = value.get_ref() else {
            return mistake(value.span().start, wrong_type("count", "a whole number", value));
        };
        let count = i64::from_str_radix(count.as_str(), count.radix()).ok();
        read.count = match count.and_then(|c| u32::try_from(c).ok()) {
            Some(count @ 1..=MAX_APPROVERS) => count,
            _ => {
                return mistake(
                    value.span().start,
                    format!("`count` must be from 1 to {MAX_APPROVERS}: how many distinct people must approve"),
                );
            }
        };
    }
    Ok(read)
}

fn read_ladder(value: &Item<'_>) -> Checked<Vec<LadderStep>> {
    let DeValue::Array(steps) = value.get_ref() else {
        return mistake(
            value.span().start,
            wrong_type("escalate", "a list of steps such as [ { after = \"30m\", to = { email = \"...\" } } ]", value),
        );
    };
    let mut ladder: Vec<LadderStep> = Vec::new();
    for item in steps.iter() {
        let step = table("escalate step", item)?;
        check_keys(step, &["after", "to"])?;
        let Some((_, after_value)) = entry(step, "after") else {
            return mistake(item.span().start, "this step has no `after`; add e.g. `after = \"30m\"`");
        };
        let after = duration("after", after_value)?;
        if let Some(previous) = ladder.last().filter(|previous| previous.after >= after) {
            return mistake(
                after_value.span().start,
                format!(
                    "each step must come after the one before it: {} is not later than {}",
                    humantime::format_duration(after),
                    humantime::format_duration(previous.after)
                ),
            );
        }
        let Some((_, to)) = entry(step, "to") else {
            return mistake(
                item.span().start,
                "this step has no `to`; add e.g. `to = { email = \"lead@example.com\" }`",
            );
        };
        ladder.push(LadderStep { after, to: read_target(to)? });
    }
    Ok(ladder)
}

fn read_target(value: &Item<'_>) -> Checked<StepTarget> {
    let to = table("to", value)?;
    check_keys(to, &["email", "slack"])?;
    let mut target = StepTarget { email: None, slack: None };
    if let Some((_, value)) = entry(to, "email") {
        let email = string("email", value)?;
        let email = Email::parse(email).map_err(|_| Mistake {
            offset: value.span().start,
            message: format!("`{email}` is not an email address (like lead@example.com)"),
        })?;
        target.email = Some(email.as_str().to_owned());
    }
    if let Some((_, value)) = entry(to, "slack") {
        let slack = string("slack", value)?;
        if slack.is_empty() || slack.len() > 80 || slack.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return mistake(
                value.span().start,
                format!(
                    "`{slack}` is not a Slack channel or user id (like C0FINANCE or U024BE7LH: no spaces, at most 80 characters)"
                ),
            );
        }
        target.slack = Some(slack.to_owned());
    }
    if target.email.is_none() && target.slack.is_none() {
        return mistake(value.span().start, "`to` names nobody; give `email`, `slack` or both");
    }
    Ok(target)
}

/// A table's entries in the order they are written.
fn in_file_order<'t, 'i>(table: &'t DeTable<'i>) -> Vec<(&'t Spanned<std::borrow::Cow<'i, str>>, &'t Item<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// Refuses the first key (in file order) of `table` that is not `allowed`.
fn check_keys(table: &DeTable<'_>, allowed: &[&str]) -> Checked<()> {
    for (key, _) in in_file_order(table) {
        if allowed.contains(&key.get_ref().as_ref()) {
            continue;
        }
        let guess = allowed.iter().find(|known| edit_distance(known, key.get_ref()) <= 2);
        let guess = guess.map_or_else(String::new, |known| format!(" (did you mean `{known}`?)"));
        return mistake(
            key.span().start,
            format!("unknown key `{key}`{guess}; expected one of {}", allowed.join(", ")),
        );
    }
    Ok(())
}

/// The number of single-character edits between `a` and `b` (Levenshtein).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `key`'s entry in `table`: where the key is written, and its value.
fn entry<'t, 'i>(table: &'t DeTable<'i>, key: &str) -> Option<(usize, &'t Item<'i>)> {
    table.get_key_value(key).map(|(key, value)| (key.span().start, value))
}

fn wrong_type(key: &str, expected: &str, value: &Item<'_>) -> String {
    let found = value.get_ref().type_str();
    let article = if found.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("`{key}` must be {expected}, not {article} {found}")
}

fn string<'t>(key: &str, value: &'t Item<'_>) -> Checked<&'t str> {
    match value.get_ref() {
        DeValue::String(text) => Ok(text),
        _ => mistake(value.span().start, wrong_type(key, "text in quotes", value)),
    }
}

fn table<'t, 'i>(key: &str, value: &'t Item<'i>) -> Checked<&'t DeTable<'i>> {
    match value.get_ref() {
        DeValue::Table(table) => Ok(table),
        _ => mistake(value.span().start, wrong_type(key, "a table", value)),
    }
}

fn glob(key: &str, value: &Item<'_>) -> Checked<(String, Pattern)> {
    let text = string(key, value)?;
    let pattern = Pattern::new(text).map_err(|e| Mistake {
        offset: value.span().start,
        message: format!("bad glob `{text}` in `{key}`: {}", e.msg),
    })?;
    Ok((text.to_owned(), pattern))
}

/// A wait such as "30m", "4h", "1d" or "1h 30m": more than nothing, at most [`MAX_WAIT`].
fn duration(key: &str, value: &Item<'_>) -> Checked<Duration> {
    const EXAMPLES: &str = "\"30m\", \"4h\", \"1d\" or \"1h 30m\"";
    let DeValue::String(text) = value.get_ref() else {
        return mistake(
            value.span().start,
            wrong_type(key, &format!("a duration in quotes such as {EXAMPLES}"), value),
        );
    };
    let at = value.span().start;
    let wait = humantime::parse_duration(text).map_err(|e| Mistake {
        offset: at,
        message: format!("`{key}`: `{text}` is not a duration ({e}); write e.g. {EXAMPLES}"),
    })?;
    if wait.is_zero() {
        return mistake(at, format!("`{key}` must be more than 0s"));
    }
    if wait > MAX_WAIT {
        return mistake(at, format!("`{key}` is longer than 365 days, the limit"));
    }
    Ok(wait)
}
