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
//! A condition is `ARGUMENT OPERATOR VALUE` or `ARGUMENT exists`. `ARGUMENT` names a tool argument;
//! dots reach into objects and arrays (`options.force`, `edits.0.newText`). `VALUE` is JSON: a
//! string in double quotes, a number, `true`, `false` or `null`. Operators: `==` and `!=` (JSON
//! equality), `<` `<=` `>` `>=` (numbers), `~` and `!~` (a string argument matches, or does not
//! match, a glob: `*` any text, `?` one character, `[abc]` a class, `{a,b}` alternatives), `~*` and
//! `!~*` (the same, ignoring case). `!=`, `!~` and `!~*` hold when the argument is missing.

use globset::{GlobBuilder, GlobMatcher};
use serde_json::{Map, Value};
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
}

/// One rule: an action for the calls of the tools matching a glob, under conditions.
#[derive(Debug, Clone)]
pub struct Rule {
    /// What to do with a matching call.
    pub action: Action,
    /// The tool-name glob as written.
    pub tools: String,
    matcher: GlobMatcher,
    conditions: Vec<Condition>,
    /// Where the rule was written: `FILE:LINE`, or how it was given (`--ask`).
    pub origin: String,
}

#[derive(Debug, Clone)]
struct Condition {
    path: Vec<String>,
    test: Test,
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
    Matches(GlobMatcher),
    NotMatches(GlobMatcher),
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

/// What the rules say about one call.
#[derive(Debug, Clone, Copy)]
pub struct Verdict<'a> {
    /// The action to take.
    pub action: Action,
    /// The rule that decided; `None` when no rule matched (the call is allowed).
    pub rule: Option<&'a Rule>,
}

impl Rules {
    /// Parses a rules file; `source` names it in errors (`gate.rules:3: ...`).
    pub fn parse(source: &str, text: &str) -> Result<Self, RulesError> {
        let mut rules = Vec::new();
        for (index, line) in text.lines().enumerate() {
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
            rules.push(Rule::from_tokens(&tokens, format!("{source}:{}", index + 1)).map_err(error)?);
        }
        Ok(Self { rules })
    }

    /// Every call is asked: what the gate does without rules.
    pub fn ask_everything() -> Self {
        Self { rules: vec![Rule::ask("*", "default").expect("`*` is a valid glob")] }
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

    /// What to do with a call of `tool` with `arguments`.
    pub fn verdict(&self, tool: &str, arguments: &Map<String, Value>) -> Verdict<'_> {
        match self.rules.iter().find(|rule| rule.selects(tool, arguments)) {
            Some(rule) => Verdict { action: rule.action, rule: Some(rule) },
            None => Verdict { action: Action::Allow, rule: None },
        }
    }
}

impl Rule {
    /// `ask GLOB` with no conditions, e.g. from `--ask GLOB`.
    pub fn ask(tools: &str, origin: impl Into<String>) -> Result<Self, String> {
        Ok(Self {
            action: Action::Ask,
            tools: tools.to_owned(),
            matcher: glob(tools, false)?,
            conditions: Vec::new(),
            origin: origin.into(),
        })
    }

    /// True when the rule's tool glob matches the name (whatever the arguments).
    pub fn names(&self, tool: &str) -> bool {
        self.matcher.is_match(tool)
    }

    /// True when the rule selects this call.
    pub fn selects(&self, tool: &str, arguments: &Map<String, Value>) -> bool {
        self.names(tool) && self.conditions.iter().all(|c| c.holds(arguments))
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
        let matcher = glob(&tools, false)?;
        let mut conditions = Vec::new();
        let mut rest = &tokens[2..];
        if let Some(first) = rest.first() {
            if first.word() != Some("when") {
                return Err(format!("expected `when` or the end of the line after the tool glob, found {first}"));
            }
            rest = &rest[1..];
            loop {
                let (condition, used) = Condition::parse(rest)?;
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
        Ok(Self { action, tools, matcher, conditions, origin })
    }
}

impl Condition {
    /// Parses one condition at the start of `tokens`; returns it and the tokens it used.
    fn parse(tokens: &[Token]) -> Result<(Self, usize), String> {
        let path = match tokens.first() {
            Some(Token::Word(word)) if !is_operator(word) => word,
            Some(token) => return Err(format!("expected an argument name after `when`/`and`, found {token}")),
            None => return Err("a condition is missing after `when`/`and`, e.g. `when path ~ \"/etc/*\"`".into()),
        };
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("`{}` is not an argument name", path.join(".")));
        }
        let operator = match tokens.get(1) {
            Some(Token::Word(op)) if op == "exists" => return Ok((Self { path, test: Test::Exists }, 2)),
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
            Value::String(pattern) => glob(pattern, ignore_case),
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
        Ok((Self { path, test }, 3))
    }

    fn holds(&self, arguments: &Map<String, Value>) -> bool {
        let value = lookup(arguments, &self.path);
        let number = || value.and_then(Value::as_f64);
        let text = || value.and_then(Value::as_str);
        match &self.test {
            Test::Exists => value.is_some(),
            Test::Equals(expected) => value.is_some_and(|v| json_equal(v, expected)),
            Test::NotEquals(expected) => !value.is_some_and(|v| json_equal(v, expected)),
            Test::Less(n) => number().is_some_and(|v| v < *n),
            Test::LessOrEqual(n) => number().is_some_and(|v| v <= *n),
            Test::Greater(n) => number().is_some_and(|v| v > *n),
            Test::GreaterOrEqual(n) => number().is_some_and(|v| v >= *n),
            Test::Matches(glob) => text().is_some_and(|s| glob.is_match(s)),
            Test::NotMatches(glob) => !text().is_some_and(|s| glob.is_match(s)),
        }
    }
}

fn is_operator(word: &str) -> bool {
    matches!(word, "==" | "!=" | "<" | "<=" | ">" | ">=" | "~" | "!~" | "~*" | "!~*")
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => x == y,
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
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

fn glob(pattern: &str, ignore_case: bool) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .case_insensitive(ignore_case)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|e| format!("bad glob \"{pattern}\": {}", e.kind()))
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
                if c.is_whitespace() || c == '"' {
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
        rules.verdict(tool, &args(arguments)).action
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
        assert_eq!(verdict.rule.unwrap().origin, "gate.rules:4");
        assert!(rules.verdict("read_file", &Map::new()).rule.is_none());
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
        assert_eq!(action(&rules, "transfer", json!({"amount": "250", "currency": "USD"})), Action::Allow);
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
            ("ask t when a..b exists", "not an argument name"),
        ];
        for (line, expected) in cases {
            let e = error(line);
            assert_eq!(e.line, 1, "{line}");
            assert!(e.message.contains(expected), "{line}: {e}");
        }
    }
}
