//! The rules of `countersign mcp gate`: which tool calls of a downstream MCP server need a human.
//!
//! A rules file holds one rule per line; blank lines and `#` comments are ignored:
//!
//! ```text
//! # ACTION TOOL-GLOB [when CONDITION [and CONDITION]...]
//! allow write_file when path ~ "/tmp/scratch/*"
//! ask   write_file
//! ask   edit_file
//! deny  move_file when source ~ "/etc/*"
//! ask   run_sql when query ~* "*drop *" and database == "production"
//! ask   transfer when amount > 100
//! ```
//!
//! The first rule whose tool glob matches the tool's name and whose conditions all hold decides:
//! `ask` asks a human, `allow` forwards the call at once, `deny` refuses it without asking. A call
//! that no rule matches is forwarded at once.
//!
//! Globs: `*` any run of characters (`/` included), `?` one character, `[abc]` / `[a-z]` / `[!abc]`
//! a class. A condition is `ARGUMENT OPERATOR VALUE` or `ARGUMENT exists`. `ARGUMENT` names a tool
//! argument; dots reach into objects and arrays (`options.force`, `edits.0.newText`). `VALUE` is
//! JSON: a string in double quotes, a number, `true`, `false` or `null`. Operators: `==` and `!=`
//! (JSON equality; text equal to a number's or boolean's JSON counts as equal), `<` `<=` `>` `>=`
//! (numbers; numeric text compares as a number), `~` and `!~` (the argument matches, or does not
//! match, a glob; numbers and booleans match as their JSON text), `~*` and `!~*` (the same,
//! ignoring case). `!=`, `!~` and `!~*` hold when the argument is missing. When the glob is an
//! absolute path (`/...`), an absolute path argument is first normalised (`.`, `..`, `//`), so that
//! `/notes/scratch/../secret` does not pass for a file in `scratch`.
//!
//! Fail-safe: an argument of a type the operator cannot compare (an object for `~`, text that is
//! not a number for `>`) makes the condition hold for `ask` and `deny` rules and fail for `allow`
//! rules, so an odd call is asked rather than waved through.
//!
//! Warnings: a rule that loads but is no boundary is reported by [`Rules::warnings`] (the CLI
//! prints them at load, naming the line): a condition whose glob is a path but not an absolute one
//! (`path ~ "scratch/*"`, `"~/notes/*"`: matched against the text as written, so `..` is not
//! resolved and `scratch/../../etc/passwd` matches, while the same file written another way does
//! not), and a negation (`!=`, `!~`, `!~*`) in an `allow` rule on an argument the rule does not
//! otherwise require (it holds, and the call is allowed, when the argument is missing).

use glob::{MatchOptions, Pattern};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// What a rule does with the calls it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ask a human first; forward the call (with the human's edits) when approved.
    Ask,
    /// Forward the call at once.
    Allow,
    /// Refuse the call without asking.
    Deny,
}

impl Action {
    /// The word that spells this action in a rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Ask => "ask",
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// An ordered list of rules; the first that matches a call decides.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    warnings: Vec<RulesWarning>,
}

/// A rule that loads but is likely not the boundary it looks like: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesWarning {
    /// The file's name as given.
    pub source: String,
    /// The 1-based line.
    pub line: usize,
    /// What is wrong with the rule, and what to write instead.
    pub message: String,
}

impl fmt::Display for RulesWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.source, self.line, self.message)
    }
}

/// One rule: an action for the calls of the tools matching a glob, under conditions.
#[derive(Debug, Clone)]
pub struct Rule {
    /// What to do with a matching call.
    pub action: Action,
    /// The tool-name glob as written.
    pub tools: String,
    matcher: Glob,
    conditions: Vec<Condition>,
    /// Where the rule was written: `FILE:LINE`, or how it was given (`--ask`).
    pub origin: String,
    /// The rule as written (without its comment).
    pub text: String,
}

#[derive(Debug, Clone)]
struct Condition {
    path: Vec<String>,
    test: Test,
    /// The condition as written, for warnings.
    text: String,
}

#[derive(Debug, Clone)]
enum Test {
    Exists,
    Equals(Value),
    NotEquals(Value),
    Less(f64),
    LessOrEqual(f64),
    Greater(f64),
    GreaterOrEqual(f64),
    Matches(Glob),
    NotMatches(Glob),
}

/// A compiled glob; `ignore_case` lower-cases both sides (all of Unicode, not only ASCII).
#[derive(Debug, Clone)]
struct Glob {
    /// The glob as written.
    text: String,
    pattern: Pattern,
    ignore_case: bool,
    /// The glob is an absolute path: absolute path arguments are normalised before matching.
    absolute: bool,
}

impl Glob {
    fn new(pattern: &str, ignore_case: bool) -> Result<Self, String> {
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
fn normalize_path(text: &str) -> Cow<'_, str> {
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

/// A rules file that cannot be read as rules, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesError {
    /// The file's name as given.
    pub source: String,
    /// The 1-based line.
    pub line: usize,
    /// The line as written.
    pub text: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}\n  {} | {}", self.source, self.line, self.message, self.line, self.text.trim_end())
    }
}

impl std::error::Error for RulesError {}

impl Rules {
    /// Parses a rules file; `source` names it in errors (`gate.rules:3: ...`).
    pub fn parse(source: &str, text: &str) -> Result<Self, RulesError> {
        let mut rules = Vec::new();
        let mut warnings = Vec::new();
        for (index, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
            let error = |message: String| RulesError {
                source: source.to_owned(),
                line: index + 1,
                text: line.to_owned(),
                message,
            };
            let tokens = tokenize(line).map_err(error)?;
            if tokens.is_empty() {
                continue;
            }
            let mut rule = Rule::from_tokens(&tokens, format!("{source}:{}", index + 1)).map_err(error)?;
            rule.text = tokens.iter().map(Token::written).collect::<Vec<_>>().join(" ");
            for message in rule.warnings() {
                warnings.push(RulesWarning { source: source.to_owned(), line: index + 1, message });
            }
            rules.push(rule);
        }
        Ok(Self { rules, warnings })
    }

    /// The rules that load but are likely not the boundary they look like (see the module's
    /// documentation), in file order; empty when every rule is sound.
    pub fn warnings(&self) -> &[RulesWarning] {
        &self.warnings
    }

    /// Every call is asked: what the gate does without rules.
    pub fn ask_everything() -> Self {
        Self { rules: vec![Rule::ask("*", "default").expect("`*` is a valid glob")], warnings: Vec::new() }
    }

    /// Adds `rule` after the existing rules.
    pub fn push(&mut self, rule: Rule) {
        self.rules.push(rule);
    }

    /// The rules in order.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// True when there are no rules (every call is allowed).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

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
    /// `ask GLOB` with no conditions, e.g. from `--ask GLOB`.
    pub fn ask(tools: &str, origin: impl Into<String>) -> Result<Self, String> {
        Ok(Self {
            action: Action::Ask,
            tools: tools.to_owned(),
            matcher: Glob::new(tools, false)?,
            conditions: Vec::new(),
            origin: origin.into(),
            text: format!("ask {tools}"),
        })
    }

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

    fn from_tokens(tokens: &[Token], origin: String) -> Result<Self, String> {
        let action = match tokens[0].word() {
            Some("ask") => Action::Ask,
            Some("allow") => Action::Allow,
            Some("deny") => Action::Deny,
            _ => return Err(format!("unknown action {}; a rule starts with ask, allow or deny", tokens[0])),
        };
        let tools = match tokens.get(1) {
            Some(Token::Word(tools)) if tools != "when" => tools.clone(),
            Some(Token::Quoted(tools)) => tools.clone(),
            _ => {
                return Err(format!(
                    "`{}` needs a tool name or glob, e.g. `{} write_file`",
                    action.as_str(),
                    action.as_str()
                ));
            }
        };
        let matcher = Glob::new(&tools, false)?;
        let mut conditions = Vec::new();
        let mut rest = &tokens[2..];
        if let Some(first) = rest.first() {
            if first.word() != Some("when") {
                return Err(format!("expected `when` or the end of the line after the tool glob, found {first}"));
            }
            rest = &rest[1..];
            loop {
                let (mut condition, used) = Condition::parse(rest)?;
                condition.text = rest[..used].iter().map(Token::written).collect::<Vec<_>>().join(" ");
                conditions.push(condition);
                rest = &rest[used..];
                match rest.first() {
                    None => break,
                    Some(token) if token.word() == Some("and") => rest = &rest[1..],
                    Some(token) => {
                        return Err(format!(
                            "expected `and` or the end of the line after a condition, found {token} (for `or`, write another rule)"
                        ));
                    }
                }
            }
        }
        Ok(Self { action, tools, matcher, conditions, origin, text: String::new() })
    }

    /// Why this rule is likely not the boundary it looks like (one message per finding).
    fn warnings(&self) -> Vec<String> {
        let mut found = Vec::new();
        for condition in &self.conditions {
            let (Test::Matches(glob) | Test::NotMatches(glob)) = &condition.test else { continue };
            if glob.absolute || !glob.text.contains('/') {
                continue;
            }
            let (how, absolute) = match glob.text.strip_prefix('~') {
                Some(rest) => ("starts with `~`, which is not expanded", format!("/home/you{rest}")),
                None => ("is a relative path", format!("/absolute/path/to/{}", glob.text.trim_start_matches("./"))),
            };
            let example = match escape_example(&glob.text) {
                Some(example) => format!(" (\"{example}\" matches)"),
                None => String::new(),
            };
            found.push(format!(
                "`{}`: the glob {how}; it is matched against the argument's text as written, so `..` is not \
                 resolved{example} and the same file written as an absolute path does not match; for a \
                 boundary, write an absolute glob such as \"{absolute}\"",
                condition.text,
            ));
        }
        if self.action == Action::Allow {
            for condition in &self.conditions {
                if !matches!(condition.test, Test::NotEquals(_) | Test::NotMatches(_)) {
                    continue;
                }
                // Another condition of the rule that fails when the argument is missing makes it required.
                let required = self.conditions.iter().any(|other| {
                    other.path == condition.path && !matches!(other.test, Test::NotEquals(_) | Test::NotMatches(_))
                });
                if required {
                    continue;
                }
                let name = condition.path.join(".");
                found.push(format!(
                    "`{}` also holds when a call has no `{name}` argument, so this allow rule lets such calls \
                     through (and a tool may pick its own default for a missing `{name}`); write `{name} exists and {}` \
                     if the argument must be given",
                    condition.text, condition.text
                ));
            }
        }
        found
    }
}

/// An argument that a relative glob ending in `*` matches although it leaves the directory the
/// glob names (`scratch/*` → `scratch/../../etc/passwd`); `None` for other globs.
fn escape_example(glob: &str) -> Option<String> {
    let prefix = glob.strip_suffix('*')?;
    (!prefix.contains(['*', '?', '[']) && prefix.ends_with('/')).then(|| format!("{prefix}../../etc/passwd"))
}

impl Condition {
    /// Parses one condition at the start of `tokens`; returns it and the tokens it used.
    fn parse(tokens: &[Token]) -> Result<(Self, usize), String> {
        let path = match tokens.first() {
            Some(Token::Word(word)) if !is_operator(word) => word,
            Some(token) => return Err(format!("expected an argument name after `when`/`and`, found {token}")),
            None => return Err("a condition is missing after `when`/`and`, e.g. `when path ~ \"/etc/*\"`".into()),
        };
        if let Some(at) = path.find(['=', '<', '>', '~', '!']) {
            return Err(format!(
                "`{path}` is not an argument name; put spaces around operators, e.g. `{} {} ...`",
                &path[..at],
                path[at..].trim_end_matches(|c: char| !"=<>~!*".contains(c))
            ));
        }
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("`{}` is not an argument name", path.join(".")));
        }
        let operator = match tokens.get(1) {
            Some(Token::Word(op)) if op == "exists" => {
                return Ok((Self { path, test: Test::Exists, text: String::new() }, 2));
            }
            Some(Token::Word(op)) if is_operator(op) => op.as_str(),
            Some(token) => {
                return Err(format!("unknown operator {token}; use ==, !=, <, <=, >, >=, ~, !~, ~*, !~* or exists"));
            }
            None => {
                return Err(format!(
                    "`{}` needs an operator and a value, e.g. `{} == true`",
                    path.join("."),
                    path.join(".")
                ));
            }
        };
        let value = match tokens.get(2) {
            Some(token) => token.value()?,
            None => return Err(format!("`{operator}` needs a value after it")),
        };
        let number = |value: &Value| {
            value.as_f64().ok_or_else(|| format!("`{operator}` compares numbers; {value} is not a number"))
        };
        let pattern = |value: &Value, ignore_case: bool| match value {
            Value::String(pattern) => Glob::new(pattern, ignore_case),
            other => Err(format!("`{operator}` takes a glob in double quotes, not {other}")),
        };
        let test = match operator {
            "==" => Test::Equals(value),
            "!=" => Test::NotEquals(value),
            "<" => Test::Less(number(&value)?),
            "<=" => Test::LessOrEqual(number(&value)?),
            ">" => Test::Greater(number(&value)?),
            ">=" => Test::GreaterOrEqual(number(&value)?),
            "~" => Test::Matches(pattern(&value, false)?),
            "~*" => Test::Matches(pattern(&value, true)?),
            "!~" => Test::NotMatches(pattern(&value, false)?),
            _ => Test::NotMatches(pattern(&value, true)?),
        };
        Ok((Self { path, test, text: String::new() }, 3))
    }

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

fn is_operator(word: &str) -> bool {
    matches!(word, "==" | "!=" | "<" | "<=" | ">" | ">=" | "~" | "!~" | "~*" | "!~*")
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

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
}

impl Token {
    fn word(&self) -> Option<&str> {
        match self {
            Token::Word(word) => Some(word),
            Token::Quoted(_) => None,
        }
    }

    /// The token as it would be written in a rules file.
    fn written(&self) -> String {
        match self {
            Token::Word(word) => word.clone(),
            Token::Quoted(text) => Value::String(text.clone()).to_string(),
        }
    }

    /// The token as a JSON value: a quoted string, or a number, `true`, `false` or `null`.
    fn value(&self) -> Result<Value, String> {
        match self {
            Token::Quoted(text) => Ok(Value::String(text.clone())),
            Token::Word(word) => match serde_json::from_str::<Value>(word) {
                Ok(value) if !value.is_object() && !value.is_array() => Ok(value),
                _ => Err(format!(
                    "`{word}` is not a value; write text in double quotes (\"{word}\"), or a number, true, false or null"
                )),
            },
        }
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(word) => write!(f, "`{word}`"),
            Token::Quoted(text) => write!(f, "{}", Value::String(text.clone())),
        }
    }
}

/// Splits a line into words and double-quoted strings (JSON escapes); `#` outside quotes starts
/// a comment.
fn tokenize(line: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            break;
        } else if c == '"' {
            chars.next();
            let mut escaped = false;
            let mut end = None;
            for (i, c) in chars.by_ref() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or("a string is missing its closing double quote")?;
            let text: String = serde_json::from_str(&line[start..=end])
                .map_err(|e| format!("bad string {}: {e}", &line[start..=end]))?;
            tokens.push(Token::Quoted(text));
        } else {
            let mut end = line.len();
            while let Some(&(i, c)) = chars.peek() {
                if c.is_whitespace() || c == '"' || c == '#' {
                    end = i;
                    break;
                }
                chars.next();
            }
            tokens.push(Token::Word(line[start..end].to_owned()));
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn action(rules: &Rules, tool: &str, arguments: Value) -> Action {
        rules.action(tool, &args(arguments))
    }

    #[test]
    fn the_first_matching_rule_decides_and_unmatched_calls_are_allowed() {
        let rules = Rules::parse(
            "gate.rules",
            "# scratch writes are fine\n\
             allow write_file when path ~ \"/tmp/scratch/*\"\n\
             \n\
             ask write_file   # everything else\n\
             ask edit_*\n\
             deny move_file when source ~ \"/etc/*\"\n",
        )
        .unwrap();
        assert_eq!(action(&rules, "write_file", json!({"path": "/tmp/scratch/a/b.txt"})), Action::Allow);
        assert_eq!(action(&rules, "write_file", json!({"path": "/home/ada/notes.txt"})), Action::Ask);
        assert_eq!(action(&rules, "edit_file", json!({})), Action::Ask);
        assert_eq!(action(&rules, "move_file", json!({"source": "/etc/passwd"})), Action::Deny);
        assert_eq!(action(&rules, "move_file", json!({"source": "/home/x"})), Action::Allow);
        assert_eq!(action(&rules, "read_file", json!({"path": "/etc/passwd"})), Action::Allow);
        let verdict = rules.verdict("write_file", &args(json!({"path": "/x"})));
        assert_eq!(verdict.unwrap().origin, "gate.rules:4");
        let verdict = rules.verdict("write_file", &args(json!({"path": "/tmp/scratch/x"})));
        assert_eq!(verdict.unwrap().text, "allow write_file when path ~ \"/tmp/scratch/*\"");
        assert!(rules.verdict("read_file", &Map::new()).is_none());
    }

    #[test]
    fn conditions_compare_json_numbers_globs_and_nested_arguments() {
        let rules = Rules::parse(
            "r",
            "ask transfer when amount > 100 and currency == \"USD\"\n\
             ask run_sql when query ~* \"*drop *\"\n\
             ask run_sql when options.force == true\n\
             ask edit_file when edits.0.newText exists\n\
             ask deploy when env != \"staging\"\n\
             ask tag when name !~ \"v*\"\n\
             ask retry when count <= 1.5 and count >= 1\n",
        )
        .unwrap();
        assert_eq!(action(&rules, "transfer", json!({"amount": 250, "currency": "USD"})), Action::Ask);
        assert_eq!(action(&rules, "transfer", json!({"amount": 250.0, "currency": "EUR"})), Action::Allow);
        assert_eq!(action(&rules, "transfer", json!({"amount": 100, "currency": "USD"})), Action::Allow);
        assert_eq!(
            action(&rules, "transfer", json!({"amount": "250", "currency": "USD"})),
            Action::Ask,
            "numeric text"
        );
        assert_eq!(action(&rules, "run_sql", json!({"query": "DROP TABLE users"})), Action::Ask);
        assert_eq!(action(&rules, "run_sql", json!({"query": "select 1"})), Action::Allow);
        assert_eq!(action(&rules, "run_sql", json!({"query": "x", "options": {"force": true}})), Action::Ask);
        assert_eq!(action(&rules, "edit_file", json!({"edits": [{"newText": "a"}]})), Action::Ask);
        assert_eq!(action(&rules, "edit_file", json!({"edits": []})), Action::Allow);
        assert_eq!(action(&rules, "deploy", json!({})), Action::Ask, "!= holds when the argument is missing");
        assert_eq!(action(&rules, "deploy", json!({"env": "staging"})), Action::Allow);
        assert_eq!(action(&rules, "tag", json!({"name": "v1.2"})), Action::Allow);
        assert_eq!(action(&rules, "tag", json!({"name": "latest"})), Action::Ask);
        assert_eq!(action(&rules, "retry", json!({"count": 1})), Action::Ask);
        assert_eq!(action(&rules, "retry", json!({"count": 2})), Action::Allow);
    }

    #[test]
    fn arguments_of_odd_types_are_asked_never_waved_through() {
        let rules = Rules::parse(
            "r",
            "allow transfer when amount <= 100\n\
             ask transfer\n\
             allow write_file when path ~ \"/srv/scratch/*\"\n\
             ask write_file\n\
             deny drop when table ~ \"prod_*\"\n",
        )
        .unwrap();
        assert_eq!(action(&rules, "transfer", json!({"amount": 5})), Action::Allow);
        assert_eq!(action(&rules, "transfer", json!({"amount": " 5 "})), Action::Allow, "numeric text is a number");
        assert_eq!(action(&rules, "transfer", json!({"amount": "five"})), Action::Ask);
        assert_eq!(action(&rules, "transfer", json!({"amount": [5]})), Action::Ask);
        assert_eq!(action(&rules, "transfer", json!({"amount": {"value": 5}})), Action::Ask);
        assert_eq!(action(&rules, "write_file", json!({"path": ["/srv/scratch/a"]})), Action::Ask);
        assert_eq!(action(&rules, "drop", json!({"table": {"name": "prod_users"}})), Action::Deny, "deny fails safe");
        assert_eq!(action(&rules, "drop", json!({"table": "dev_users"})), Action::Allow);
    }

    #[test]
    fn absolute_paths_are_normalised_before_matching_an_absolute_glob() {
        let rules = Rules::parse(
            "r",
            "allow write_file when path ~ \"/srv/scratch/*\"\n\
             ask write_file\n\
             deny move_file when source ~ \"/etc/*\"\n",
        )
        .unwrap();
        let write = |path: &str| action(&rules, "write_file", json!({"path": path}));
        assert_eq!(write("/srv/scratch/a/b.txt"), Action::Allow);
        assert_eq!(write("/srv/scratch/./a.txt"), Action::Allow);
        assert_eq!(write("/srv/scratch/../secret.txt"), Action::Ask);
        assert_eq!(write("/srv/scratch/a/../../../etc/passwd"), Action::Ask);
        assert_eq!(write("/srv//scratch/x"), Action::Allow);
        assert_eq!(write("srv/scratch/x"), Action::Ask, "a relative path never matches an absolute glob");
        let mv = |source: &str| action(&rules, "move_file", json!({"source": source}));
        assert_eq!(mv("//etc/passwd"), Action::Deny);
        assert_eq!(mv("/./etc/passwd"), Action::Deny);
        assert_eq!(mv("/tmp/../etc/shadow"), Action::Deny);
        assert_eq!(mv("/home/etc/x"), Action::Allow);
        assert_eq!(normalize_path("/a/b/"), "/a/b/");
        assert_eq!(normalize_path("/.."), "/");
        assert_eq!(normalize_path("a/../b"), "a/../b");
    }

    #[test]
    fn globs_work_on_characters_and_ignore_case_across_unicode() {
        let rules = Rules::parse(
            "r",
            "ask note when title ~* \"*été*\"\n\
             ask tag when name ~ \"caf?\"\n\
             ask copy when dest ~ \"C:\\\\Windows\\\\*\"\n\
             ask find when id ~ \"4*\"\n",
        )
        .unwrap();
        assert_eq!(action(&rules, "note", json!({"title": "Un ÉTÉ chaud"})), Action::Ask);
        assert_eq!(action(&rules, "note", json!({"title": "hiver"})), Action::Allow);
        assert_eq!(action(&rules, "tag", json!({"name": "café"})), Action::Ask, "? is one character");
        assert_eq!(action(&rules, "tag", json!({"name": "cafés"})), Action::Allow);
        assert_eq!(action(&rules, "copy", json!({"dest": "C:\\Windows\\system32"})), Action::Ask, "\\ is literal");
        assert_eq!(action(&rules, "find", json!({"id": 42})), Action::Ask, "numbers match as their JSON text");
    }

    #[test]
    fn equality_reads_numbers_exactly_and_text_as_lenient_servers_do() {
        let rules = Rules::parse(
            "r",
            "ask a when n == 9007199254740993\n\
             ask b when force == true\n\
             ask c when n == 1\n",
        )
        .unwrap();
        assert_eq!(action(&rules, "a", json!({"n": 9007199254740993u64})), Action::Ask);
        assert_eq!(action(&rules, "a", json!({"n": 9007199254740992u64})), Action::Allow);
        assert_eq!(action(&rules, "b", json!({"force": "true"})), Action::Ask);
        assert_eq!(action(&rules, "b", json!({"force": "false"})), Action::Allow);
        assert_eq!(action(&rules, "c", json!({"n": 1.0})), Action::Ask);
        assert_eq!(action(&rules, "c", json!({"n": "1"})), Action::Ask);
        assert_eq!(action(&rules, "c", json!({"n": "\"1\""})), Action::Allow);
    }

    #[test]
    fn comments_end_words_and_a_byte_order_mark_is_ignored() {
        let rules = Rules::parse("r", "\u{feff}ask write_file# the only rule\n").unwrap();
        assert_eq!(action(&rules, "write_file", json!({})), Action::Ask);
        let rules = Rules::parse("r", "ask edit when items.01 exists\n").unwrap();
        assert_eq!(action(&rules, "edit", json!({"items": [0, 1]})), Action::Ask);
        let rules = Rules::parse("r", "ask edit when items.+1 exists\n").unwrap();
        assert_eq!(action(&rules, "edit", json!({"items": [0, 1]})), Action::Allow, "only digits index arrays");
    }

    #[test]
    fn strings_take_json_escapes_and_hash_inside_quotes_is_not_a_comment() {
        let rules = Rules::parse("r", "ask post when body == \"a \\\"quoted\\\" #1\\n\"  # comment\n").unwrap();
        assert_eq!(action(&rules, "post", json!({"body": "a \"quoted\" #1\n"})), Action::Ask);
        assert_eq!(action(&rules, "post", json!({"body": "a"})), Action::Allow);
    }

    #[test]
    fn ask_everything_asks_for_every_tool() {
        let rules = Rules::ask_everything();
        assert_eq!(action(&rules, "anything", json!({})), Action::Ask);
        assert_eq!(action(&Rules::default(), "anything", json!({})), Action::Allow);
    }

    fn error(text: &str) -> RulesError {
        Rules::parse("gate.rules", text).unwrap_err()
    }

    #[test]
    fn errors_name_the_line_and_say_what_is_wrong() {
        let e = error("ask write_file\n\n  aks edit_file\n");
        assert_eq!(e.line, 3);
        assert!(e.to_string().starts_with("gate.rules:3: unknown action `aks`"), "{e}");
        assert!(e.to_string().contains("3 |   aks edit_file"), "{e}");

        let cases = [
            ("ask", "needs a tool name"),
            ("ask write_file if path == \"x\"", "expected `when`"),
            ("ask write_file when", "a condition is missing"),
            ("ask write_file when path", "needs an operator"),
            ("ask write_file when path = \"x\"", "unknown operator `=`"),
            ("ask write_file when path == x", "write text in double quotes"),
            ("ask write_file when path ~ 3", "takes a glob in double quotes"),
            ("ask write_file when size > \"big\"", "compares numbers"),
            ("ask write_file when path == \"x\" or path == \"y\"", "write another rule"),
            ("ask write_file when path == \"x", "closing double quote"),
            ("ask write_[file", "bad glob"),
            ("ask t when path~\"x\"", "put spaces around operators, e.g. `path ~ ...`"),
            ("ask t when n==1", "put spaces around operators, e.g. `n == ...`"),
            ("ask t when a..b exists", "not an argument name"),
        ];
        for (line, expected) in cases {
            let e = error(line);
            assert_eq!(e.line, 1, "{line}");
            assert!(e.message.contains(expected), "{line}: {e}");
        }
    }

    #[test]
    fn relative_globs_and_negations_that_allow_missing_arguments_are_warned_about() {
        let rules = Rules::parse(
            "rules.txt",
            "allow write_file when path ~ \"/srv/scratch/*\"\n\
             allow write_file when path ~ \"scratch/*\"\n\
             # a comment\n\
             allow deploy when env != \"production\"\n\
             allow deploy when env exists and env != \"production\"\n\
             ask deploy when env != \"staging\"\n\
             deny read_file when path ~* \"~/.ssh/*\"\n\
             allow tag when name !~ \"v*\" and force == false\n\
             ask run_sql when query ~* \"*drop *\"\n\
             ask *\n",
        )
        .unwrap();
        let warnings: Vec<(usize, &str)> = rules.warnings().iter().map(|w| (w.line, w.message.as_str())).collect();
        assert_eq!(warnings.iter().map(|w| w.0).collect::<Vec<_>>(), [2, 4, 7, 8], "{warnings:#?}");
        let [relative, negation, home, tag] = &warnings[..] else { unreachable!() };
        assert!(relative.1.starts_with("`path ~ \"scratch/*\"`: the glob is a relative path"), "{}", relative.1);
        assert!(relative.1.contains("\"scratch/../../etc/passwd\" matches"), "{}", relative.1);
        assert!(relative.1.contains("\"/absolute/path/to/scratch/*\""), "{}", relative.1);
        assert!(negation.1.starts_with("`env != \"production\"` also holds when a call has no `env` argument"));
        assert!(negation.1.contains("`env exists and env != \"production\"`"), "{}", negation.1);
        assert!(home.1.contains("starts with `~`, which is not expanded") && home.1.contains("\"/home/you/.ssh/*\""));
        assert!(tag.1.contains("no `name` argument"), "{}", tag.1);
        assert_eq!(rules.warnings()[0].to_string(), format!("rules.txt:2: {}", relative.1));
        // The claims hold: the relative glob passes a path out of its directory, and the negation
        // allows a call without the argument.
        assert_eq!(action(&rules, "write_file", json!({"path": "scratch/../../etc/passwd"})), Action::Allow);
        assert_eq!(action(&rules, "deploy", json!({})), Action::Allow);
        assert!(Rules::parse("r", "ask write_file\nallow x when a == 1\n").unwrap().warnings().is_empty());
        assert!(Rules::ask_everything().warnings().is_empty());
    }
}
