//! The gate's rules as a command line gives them (a file, then `--ask` globs), what they say about
//! one call, and which of them name no tool of the downstream server.

use super::downstream::DownstreamService;
use crate::Error;
use countersign_core::rules::{Rule, Rules};
use serde_json::{Map, Value};
use std::path::Path;

/// Reads the rules: the file, then the `ask` globs; without either, every call is asked. A file
/// that cannot be read, does not parse or holds no rules is an [`Error::Rules`].
pub fn load_rules(file: Option<&Path>, ask: &[String]) -> Result<Rules, Error> {
    let mut rules = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Rules(format!("cannot read the rules file {}: {e}", path.display())))?;
            Rules::parse(&path.display().to_string(), &text).map_err(|e| Error::Rules(e.to_string()))?
        }
        None => Rules::default(),
    };
    for glob in ask {
        let rule = Rule::ask(glob, "--ask").map_err(|e| Error::Rules(format!("--ask {glob}: {e}")))?;
        rules.push(rule);
    }
    match file {
        None if ask.is_empty() => rules = Rules::ask_everything(),
        Some(path) if rules.is_empty() => {
            return Err(Error::Rules(format!(
                "{} has no rules, so every call would be forwarded without asking; add rules (e.g. `ask *`), \
                 or leave out --rules to ask before every call",
                path.display()
            )));
        }
        _ => {}
    }
    Ok(rules)
}

/// The verdict on one call, e.g. `ask (gate.rules:3: ask write_file)`, followed by the warnings
/// about the deciding rule, if any.
pub fn explain(rules: &Rules, tool: &str, arguments: &Map<String, Value>) -> String {
    match rules.verdict(tool, arguments) {
        Some(rule) => {
            let mut text = format!("{} ({}: {})", rule.action.as_str(), rule.origin, rule.text);
            for warning in rules.warnings().iter().filter(|w| format!("{}:{}", w.source, w.line) == rule.origin) {
                text.push_str(&format!("\n  warning: {}", warning.message));
            }
            text
        }
        None => "allow (no rule matches; forwarded at once)".to_owned(),
    }
}

/// Logs the rules whose tool glob names none of the downstream server's tools (likely typos).
pub(super) async fn warn_about_unused_rules(service: &DownstreamService, rules: &Rules) {
    let Ok(tools) = service.peer().list_all_tools().await else { return };
    for rule in rules.iter() {
        if !tools.iter().any(|tool| rule.names(&tool.name)) {
            tracing::warn!(rule = %rule.origin, tools = %rule.tools, "this rule matches none of the downstream server's tools");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use countersign_core::rules::Action;

    #[test]
    fn no_rules_asks_everything_and_ask_flags_follow_the_file() {
        let empty = Map::new();
        assert_eq!(load_rules(None, &[]).unwrap().action("x", &empty), Action::Ask);
        let only = load_rules(None, &["write_*".into()]).unwrap();
        assert_eq!(only.action("write_file", &empty), Action::Ask);
        assert_eq!(only.action("read_file", &empty), Action::Allow);
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.rules");
        std::fs::write(&empty, "# nothing yet\n\n").unwrap();
        let err = load_rules(Some(&empty), &[]).unwrap_err();
        assert!(matches!(err, Error::Rules(_)), "{err:?}");
        assert!(err.to_string().contains("has no rules"), "{err}");
        assert!(load_rules(Some(&empty), &["write_file".into()]).is_ok());
        let err = load_rules(Some(Path::new("/nonexistent/gate.rules")), &[]).unwrap_err();
        assert!(matches!(err, Error::Rules(_)), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/gate.rules"), "{err}");
    }
}
