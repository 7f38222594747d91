//! Parsing: rules from the tokens of each line, with the errors that say how to fix a line and
//! the warnings about rules that are no boundary.

use super::tokens::{Token, is_operator, tokenize};
use super::{Action, Condition, Glob, Rule, Rules, RulesError, RulesWarning, Test};
use serde_json::Value;

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
}

impl Rule {
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
}
