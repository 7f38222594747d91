//! `Policy::parse` on a policy file's text; a policy that parses is then evaluated
//! (`Policy::evaluate`, with its CEL `when` conditions) against a fixed function call and a fixed
//! question, and `Policy::groups` is read.
#![no_main]

use countersign_core::RequestKind;
use countersign_core::policy::{Call, Policy};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use std::sync::LazyLock;

static ARGS: LazyLock<Value> =
    LazyLock::new(|| json!({"to": "a@example.com", "amount": 1200, "tags": ["x", "y"], "nested": {"ok": true}}));
static EMPTY: LazyLock<Value> = LazyLock::new(|| json!({}));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(policy) = Policy::parse("policy.toml", text) else { return };
    let _ = policy.groups();
    let calls = [
        Call {
            kind: RequestKind::FunctionCall,
            fn_name: "send_email",
            args: &ARGS,
            run_id: "run-1",
            channel: "email",
            msg: "",
        },
        Call {
            kind: RequestKind::HumanContact,
            fn_name: "",
            args: &EMPTY,
            run_id: "run-2",
            channel: "",
            msg: "Ship it?",
        },
    ];
    for call in &calls {
        let _ = policy.evaluate(call).action();
    }
});
