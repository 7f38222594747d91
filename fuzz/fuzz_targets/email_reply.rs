//! An emailed reply (`POST /email/inbound`): the input is parsed as a MIME message with
//! `mail_parser` and read the way `channels/email/inbound.rs::receive` reads it (In-Reply-To and
//! References ids, the From address, the first text body), whose text goes to
//! `reply::strip_quoted` and `reply::intent` for both kinds. Input that is UTF-8 also goes to
//! those two directly.
#![no_main]

use countersign_core::{RequestKind, reply};
use libfuzzer_sys::fuzz_target;

fn read_text(text: &str) {
    let _ = reply::strip_quoted(text);
    for kind in [RequestKind::FunctionCall, RequestKind::HumanContact] {
        let _ = reply::intent(kind, text);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        read_text(text);
    }
    let Some(message) = mail_parser::MessageParser::default().parse(data) else { return };
    // As `receive` does (it keeps at most 64 ids).
    let mut ids: Vec<String> = Vec::new();
    for header in [message.in_reply_to(), message.references()] {
        let values: Vec<&str> = match (header.as_text_list(), header.as_text()) {
            (Some(list), _) => list.iter().map(|s| s.as_ref()).collect(),
            (None, Some(one)) => vec![one],
            _ => Vec::new(),
        };
        for id in values {
            let bare = id.trim().trim_start_matches('<').trim_end_matches('>');
            let id = format!("<{bare}>");
            if ids.len() < 64 && !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    let _from = message.from().and_then(|a| a.first()).and_then(|a| a.address()).map(str::to_lowercase);
    let text = message.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    read_text(&text);
});
