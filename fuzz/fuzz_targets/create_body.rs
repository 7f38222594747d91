//! `NewRequest::parse` on a create body (`POST /function_calls`, `POST /contact_requests`), for
//! both kinds; a body that parses is then made a record and read back as the server does.
#![no_main]

use countersign_core::policy::CallData;
use countersign_core::{NewRequest, RequestKind, RequestRecord, Timestamp, json_depth};
use libfuzzer_sys::fuzz_target;

/// The server's default `limits.max_json_depth`, checked before a JSON body is parsed.
const MAX_JSON_DEPTH: usize = 64;

fuzz_target!(|data: &[u8]| {
    if json_depth::check(data, MAX_JSON_DEPTH).is_err() {
        return;
    }
    for kind in [RequestKind::FunctionCall, RequestKind::HumanContact] {
        let Ok(new) = NewRequest::parse(kind, data) else { continue };
        let record = RequestRecord::new("p", new, Timestamp::from_micros(1_700_000_000_000_000));
        let _ = record.options();
        let _ = record.summary();
        let _ = record.channel();
        let _ = record.receipt_claims();
        let _ = record.to_json();
        let _ = CallData::of(&record);
    }
});
