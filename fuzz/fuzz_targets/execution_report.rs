//! `ExecutionReport::parse` on the body of `POST /function_calls/{call_id}/execution`, parsed as
//! JSON first (input that is not JSON is skipped); a report that parses is described.
#![no_main]

use countersign_core::execution::ExecutionReport;
use countersign_core::json_depth;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if json_depth::check(data, 64).is_err() {
        return;
    }
    let Ok(body) = serde_json::from_slice::<Value>(data) else { return };
    let _ = ExecutionReport::parse(&body, "k");
});
