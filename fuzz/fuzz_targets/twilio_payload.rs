//! Twilio's inbound webhook (`POST /twilio/inbound`): the form body parsed as
//! `channels/sms/inbound.rs::inbound` parses it (`serde_urlencoded` into pairs, at most 100
//! fields), then its `Body` field, trimmed, through `sms::keyword` and `sms::parse_reply`. The
//! handler has no pure function of its own to call (the rest needs the store).
#![no_main]

use countersign_core::sms;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(fields) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(data) else { return };
    if fields.len() > 100 {
        return;
    }
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let _ = field("To");
    let _ = field("MessageSid");
    let _ = field("From").unwrap_or_default().trim_start().starts_with("whatsapp:");
    let text = field("Body").unwrap_or_default().trim();
    let _ = sms::keyword(text);
    let _ = sms::parse_reply(text, |code| code == "1234");
});
