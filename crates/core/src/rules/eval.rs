//! Evaluation: which rule decides a call, from the call's tool name and arguments.

use super::{Action, Condition, Glob, Rule, Rules, Test};
use glob::{MatchOptions, Pattern};
use serde_json::{Map, Value};
use std::borrow::Cow;

impl Rules {
    /// The rule that decides a call of `tool` with `arguments`; `None` when none matches (allowed).
    pub fn verdict(&self, tool: &str, arguments: &Map<String, Value>) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.selects(tool, arguments))
    }

    /// The action for a call: its rule's, or `allow` when no rule matches.
    pub fn action(&self, tool: &str, arguments: &Map<String, Value>) -> Action {
        self.verdict(tool, arguments).map_or(Action::Allow, |rule| rule.action)
    }
}

impl Rule {
    /// True when the rule's tool glob matches the name (whatever the arguments).
    pub fn names(&self, tool: &str) -> bool {
        self.matcher.is_match(tool)
    }

    /// True when the rule selects this call. A condition that cannot compare the argument's type
    /// holds for `ask` and `deny` rules and fails for `allow` rules (fail-safe).
    pub fn selects(&self, tool: &str, arguments: &Map<String, Value>) -> bool {
        let incomparable_holds = self.action != Action::Allow;
        self.names(tool) && self.conditions.iter().all(|c| c.eval(arguments).unwrap_or(incomparable_holds))
    }
}

impl Glob {
    pub(super) fn new(pattern: &str, ignore_case: bool) -> Result<Self, String> {
        let folded = if ignore_case { pattern.to_lowercase() } else { pattern.to_owned() };
        let compiled = Pattern::new(&folded).map_err(|e| format!("bad glob \"{pattern}\": {}", e.msg))?;
        Ok(Self { text: pattern.to_owned(), pattern: compiled, ignore_case, absolute: pattern.starts_with('/') })
    }

    fn is_match(&self, text: &str) -> bool {
        let text = if self.absolute { normalize_path(text) } else { Cow::Borrowed(text) };
        let text = if self.ignore_case { Cow::Owned(text.to_lowercase()) } else { text };
        self.pattern.matches_with(&text, MatchOptions::new())
    }
}
/// Resolves `.`, `..` and repeated `/` in an absolute path, lexically (symlinks are not followed);
/// other text is returned as it is.
pub(super) fn normalize_path(text: &str) -> Cow<'_, str> {
    if !text.starts_with('/') {
        return Cow::Borrowed(text);
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    let mut normal = format!("/{}", parts.join("/"));
    if text.ends_with('/') && !parts.is_empty() {
        normal.push('/');
    }
    Cow::Owned(normal)
}
impl Condition {
    /// Whether the condition holds; `None` when the argument is there but of a type the
    /// operator cannot compare.
    fn eval(&self, arguments: &Map<String, Value>) -> Option<bool> {
        let Some(value) = lookup(arguments, &self.path) else {
            return Some(matches!(self.test, Test::NotEquals(_) | Test::NotMatches(_)));
        };
        let number = || match value {
            Value::Number(n) => n.as_f64(),
            Value::String(text) => text.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
            _ => None,
        };
        let text = || match value {
            Value::String(text) => Some(Cow::Borrowed(text.as_str())),
            Value::Number(_) | Value::Bool(_) => Some(Cow::Owned(value.to_string())),
            _ => None,
        };
        Some(match &self.test {
            Test::Exists => true,
            Test::Equals(expected) => json_equal(value, expected),
            Test::NotEquals(expected) => !json_equal(value, expected),
            Test::Less(n) => number()? < *n,
            Test::LessOrEqual(n) => number()? <= *n,
            Test::Greater(n) => number()? > *n,
            Test::GreaterOrEqual(n) => number()? >= *n,
            Test::Matches(glob) => glob.is_match(&text()?),
            Test::NotMatches(glob) => !glob.is_match(&text()?),
        })
    }
}
/// JSON equality where numbers compare by value (`1` equals `1.0`, integers exactly), and text
/// equals a number or boolean whose JSON it spells (`"250"` equals `250`), as lenient servers
/// would read it.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i128(), y.as_i128()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::String(text), other @ (Value::Number(_) | Value::Bool(_)))
        | (other @ (Value::Number(_) | Value::Bool(_)), Value::String(text)) => {
            serde_json::from_str::<Value>(text.trim())
                .is_ok_and(|parsed| !parsed.is_string() && json_equal(&parsed, other))
        }
        _ => a == b,
    }
}

/// The argument at a dotted path: object keys, or array indexes for arrays.
fn lookup<'a>(arguments: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut value = arguments.get(first)?;
    for part in rest {
        value = match value {
            Value::Object(map) => map.get(part)?,
            Value::Array(items) if part.bytes().all(|b| b.is_ascii_digit()) => {
                items.get(part.parse::<usize>().ok()?)?
            }
            _ => return None,
        };
    }
    Some(value)
}
