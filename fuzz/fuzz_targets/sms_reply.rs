//! An SMS or WhatsApp reply's text: `sms::keyword`, `sms::parse_reply` (with a code that is and
//! one that is not pending), `sms::verb_of` on its words, and `sms::segments`.
#![no_main]

use countersign_core::sms;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    let _ = sms::keyword(body);
    let _ = sms::parse_reply(body, |code| code == "1234");
    let _ = sms::parse_reply(body, |_| false);
    for word in body.split_whitespace().take(4) {
        let _ = sms::verb_of(word);
    }
    let _ = sms::segments(body);
});
