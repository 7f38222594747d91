//! `Rules::parse` on a gate rules file's text; rules that parse then give `Rules::verdict` and
//! `Rules::action` on fixed sample calls.
#![no_main]

use countersign_core::rules::Rules;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use std::sync::LazyLock;

static CALLS: LazyLock<Vec<(&'static str, Map<String, Value>)>> = LazyLock::new(|| {
    let object = |v: Value| v.as_object().cloned().unwrap();
    vec![
        ("Bash", object(json!({"command": "rm -rf /tmp/x", "timeout": 30}))),
        ("Write", object(json!({"file_path": "/etc/passwd", "content": "x"}))),
        ("mcp__github__create_issue", object(json!({"title": "T", "labels": ["a"], "n": 1.5, "draft": false}))),
        ("", Map::new()),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(rules) = Rules::parse("gate.rules", text) else { return };
    let _ = rules.warnings();
    for (tool, arguments) in CALLS.iter() {
        let _ = rules.verdict(tool, arguments);
        let _ = rules.action(tool, arguments);
    }
});
