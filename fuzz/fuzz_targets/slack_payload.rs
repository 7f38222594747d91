//! Slack interactivity (`POST /slack/interactions`): the form body parsed as
//! `channels/slack/inbound.rs::interactions` parses it (`serde_urlencoded` pairs, the `payload`
//! field, `json_depth::check` at the default 64, `serde_json` into a Value), then the fields
//! `locate` and `Slacker::of` read. The handler has no pure function of its own to call (the rest
//! needs the store); the payload's signature check, `countersign_core::slack::verify`, is fuzzed
//! here too.
#![no_main]

use countersign_core::{RequestKind, json_depth, slack};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The input's first two lines as the `X-Slack-Request-Timestamp` and `X-Slack-Signature`
/// headers, then `slack::verify` on the rest as the body.
fn signature_check(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let (Some(timestamp), Some(signature), Some(body)) = (parts.next(), parts.next(), parts.next()) else { return };
    let (Ok(timestamp), Ok(signature)) = (std::str::from_utf8(timestamp), std::str::from_utf8(signature)) else {
        return;
    };
    let _ = slack::verify("secret", Some(timestamp), body, Some(signature), 1_700_000_000);
}

fuzz_target!(|data: &[u8]| {
    signature_check(data);
    let payload = serde_urlencoded::from_bytes::<Vec<(String, String)>>(data)
        .ok()
        .and_then(|fields| fields.into_iter().find(|(k, _)| k == "payload"));
    let Some((_, payload)) = payload else { return };
    if json_depth::check(payload.as_bytes(), 64).is_err() {
        return;
    }
    let Ok(payload) = serde_json::from_str::<Value>(&payload) else { return };
    let _ = payload.get("type").and_then(Value::as_str);
    let _ = payload.pointer("/container/channel_id").or(payload.pointer("/channel/id"));
    let _ = payload.pointer("/user/team_id").or(payload.pointer("/team/id")).and_then(Value::as_str);
    // `ActionRef::decode` and `ModalMeta::decode` are `serde_json::from_str` into small structs.
    if let Some(value) = payload.pointer("/actions/0/value").and_then(Value::as_str) {
        let _ = serde_json::from_str::<Value>(value);
    }
    if let Some(meta) = payload.pointer("/view/private_metadata").and_then(Value::as_str) {
        let _ = serde_json::from_str::<Value>(meta);
    }
    if let Some(kind) = payload.pointer("/actions/0/value/k").and_then(Value::as_str) {
        let _ = RequestKind::parse(kind);
    }
});
