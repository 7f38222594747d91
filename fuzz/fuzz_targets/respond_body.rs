//! `Intent::from_respond` on a respond body (`POST /function_calls/{id}/respond`,
//! `POST /contact_requests/{id}/respond`) for both kinds, then `RequestRecord::parse_decision`
//! against a pending request with options. Input that is not JSON is skipped.
#![no_main]

use countersign_core::{Intent, NewRequest, RequestKind, RequestRecord, Timestamp, json_depth};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::LazyLock;

/// The server's default `limits.max_json_depth`, checked before a JSON body is parsed.
const MAX_JSON_DEPTH: usize = 64;

fn record(kind: RequestKind, body: &str) -> RequestRecord {
    let new = NewRequest::parse(kind, body.as_bytes()).expect("the sample request parses");
    RequestRecord::new("p", new, Timestamp::from_micros(1_700_000_000_000_000))
}

static RECORDS: LazyLock<[RequestRecord; 2]> = LazyLock::new(|| {
    [
        record(
            RequestKind::FunctionCall,
            r#"{"run_id":"r","call_id":"c1","spec":{"fn":"send","kwargs":{"to":"a@b.c"},
               "reject_options":[{"name":"later","title":"Later","prompt_fill":"not now"}]}}"#,
        ),
        record(
            RequestKind::HumanContact,
            r#"{"run_id":"r","call_id":"c2","spec":{"msg":"Which?",
               "response_options":[{"name":"a","title":"A"},{"name":"b","prompt_fill":"B","interactive":true}]}}"#,
        ),
    ]
});

fuzz_target!(|data: &[u8]| {
    if json_depth::check(data, MAX_JSON_DEPTH).is_err() {
        return;
    }
    let Ok(body) = serde_json::from_slice::<Value>(data) else { return };
    for kind in [RequestKind::FunctionCall, RequestKind::HumanContact] {
        if let Ok(intent) = Intent::from_respond(kind, &body) {
            let _ = intent.trimmed();
        }
    }
    for record in RECORDS.iter() {
        let _ = record.parse_decision(&body);
    }
});
