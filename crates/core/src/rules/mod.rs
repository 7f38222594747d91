//! Rules: which tool calls need a human. `countersign mcp gate` reads them for a downstream MCP
//! server, and server-side policies will use them next. In layers: `tokens` splits a line,
//! `parse` builds rules from tokens (and finds the ones that are no boundary), `eval` decides
//! calls.
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

mod eval;
mod parse;
#[cfg(test)]
mod tests;
mod tokens;

use glob::Pattern;
use serde_json::Value;
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
}
