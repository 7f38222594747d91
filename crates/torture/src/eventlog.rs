//! The audit log as a second witness: `countersign audit export --jsonl` read back, counting the
//! `decided` events of each request (a request decided twice would show two).

use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

/// What the exported log says.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct EventLogTally {
    pub events: u64,
    pub created_events: u64,
    pub decided_events: u64,
    /// Requests with more than one `decided` event.
    pub requests_decided_twice: u64,
    /// Requests with more than one `created` event.
    pub requests_created_twice: u64,
    /// Lines that could not be read.
    pub unreadable_lines: u64,
}

impl EventLogTally {
    pub fn is_clean(&self) -> bool {
        self.requests_decided_twice == 0 && self.requests_created_twice == 0 && self.unreadable_lines == 0
    }
}

/// Counts the events of `audit export --jsonl` output.
pub fn tally(jsonl: &str, problems: &mut Vec<String>) -> EventLogTally {
    let mut tally = EventLogTally::default();
    let mut decided: HashMap<(String, String), u32> = HashMap::new();
    let mut created: HashMap<(String, String), u32> = HashMap::new();
    for line in jsonl.lines().filter(|l| !l.trim().is_empty()) {
        let Some(event) = serde_json::from_str::<Value>(line).ok().and_then(|v| event_of(&v)) else {
            tally.unreadable_lines += 1;
            continue;
        };
        tally.events += 1;
        let field = |name: &str| event.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
        let request = (field("request_kind"), field("call_id"));
        match field("type").as_str() {
            "decided" => {
                tally.decided_events += 1;
                *decided.entry(request).or_default() += 1;
            }
            "created" => {
                tally.created_events += 1;
                *created.entry(request).or_default() += 1;
            }
            _ => {}
        }
    }
    for (what, map, count) in [
        ("decided", &decided, &mut tally.requests_decided_twice),
        ("created", &created, &mut tally.requests_created_twice),
    ] {
        for ((kind, call_id), n) in map {
            if *n > 1 {
                *count += 1;
                problems.push(format!("audit log: {kind} {call_id} has {n} `{what}` events"));
            }
        }
    }
    tally
}

/// The `event` of an exported line: a JSON object, or its text.
fn event_of(line: &Value) -> Option<Value> {
    match line.get("event")? {
        Value::String(text) => serde_json::from_str(text).ok(),
        object @ Value::Object(_) => Some(object.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_decided_twice_shows_in_the_log() {
        let lines = [
            r#"{"seq":1,"event":{"type":"created","request_kind":"function_call","call_id":"a"}}"#,
            r#"{"seq":2,"event":{"type":"decided","request_kind":"function_call","call_id":"a"}}"#,
            r#"{"seq":3,"event":"{\"type\":\"decided\",\"request_kind\":\"function_call\",\"call_id\":\"a\"}"}"#,
            r#"{"seq":4,"event":{"type":"decided","request_kind":"human_contact","call_id":"a"}}"#,
            r#"{"seq":5,"event":{"type":"escalated","request_kind":"function_call","call_id":"a"}}"#,
            "not json",
        ]
        .join("\n");
        let mut problems = Vec::new();
        let t = tally(&lines, &mut problems);
        assert_eq!((t.events, t.created_events, t.decided_events), (5, 1, 3));
        assert_eq!((t.requests_decided_twice, t.unreadable_lines), (1, 1));
        assert!(!t.is_clean());
        assert_eq!(problems, vec!["audit log: function_call a has 2 `decided` events".to_owned()]);
    }
}
