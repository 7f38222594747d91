//! The SMS and WhatsApp channel (sent through Twilio): counting a text's segments (GSM 03.38),
//! rendering a request as a short message, and reading the human's reply back.
//!
//! A message names its request by a 4-digit code, so the human can answer several pending
//! requests from one phone: `YES 4821`, `NO 4821 too much`, `2 4821`, `4821 blue`.

use crate::RequestKind;
use serde_json::Value;

/// How many segments a rendered message should fit in; the subject or arguments are shortened
/// to keep within it.
pub const MAX_SEGMENTS: usize = 2;

/// The fewest characters of the subject or arguments kept when a message is shortened.
const MIN_HEAD_CHARS: usize = 20;

/// Appended where the subject or arguments are cut (`…` is not GSM-7).
const ELLIPSIS: &str = "...";

/// How a text is encoded on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The GSM 03.38 7-bit alphabet: 160 units in one segment, 153 per segment when split.
    Gsm7,
    /// UCS-2 (UTF-16): 70 units in one segment, 67 per segment when split.
    Ucs2,
}

/// The size of a text as an SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    /// GSM-7 when every character is in the GSM 03.38 tables, else UCS-2.
    pub encoding: Encoding,
    /// Septets for GSM-7 (an extension character counts 2), UTF-16 code units for UCS-2.
    pub units: usize,
    /// How many messages the text is sent as (at least 1).
    pub segments: usize,
}

/// Counts the encoding, units and segments of `text`.
pub fn segments(text: &str) -> Segments {
    Tally::of(text).segments()
}

/// Units of `c` in GSM-7: 1 in the basic table, 2 in the extension table, `None` if absent.
fn gsm_units(c: char) -> Option<usize> {
    match c {
        'A'..='Z' | 'a'..='z' | '0'..='9' | ' ' | '\n' | '\r' => Some(1),
        '!' | '"' | '#' | '$' | '%' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | '-' | '.' | '/' | ':' | ';' | '<'
        | '=' | '>' | '?' | '@' | '_' => Some(1),
        '£' | '¥' | 'è' | 'é' | 'ù' | 'ì' | 'ò' | 'Ç' | 'Ø' | 'ø' | 'Å' | 'å' | 'Δ' | 'Φ' | 'Γ' | 'Λ' | 'Ω' | 'Π'
        | 'Ψ' | 'Σ' | 'Θ' | 'Ξ' | 'Æ' | 'æ' | 'ß' | 'É' | '¤' | '¡' | 'Ä' | 'Ö' | 'Ñ' | 'Ü' | '§' | '¿' | 'ä' | 'ö'
        | 'ñ' | 'ü' | 'à' => Some(1),
        '\u{0C}' | '^' | '{' | '}' | '\\' | '[' | '~' | ']' | '|' | '€' => Some(2),
        _ => None,
    }
}

/// Running counts of a text in both encodings, so a message can be measured piece by piece.
#[derive(Debug, Clone, Copy)]
struct Tally {
    gsm: bool,
    gsm_units: usize,
    utf16_units: usize,
}

impl Tally {
    const EMPTY: Self = Self { gsm: true, gsm_units: 0, utf16_units: 0 };

    fn of(text: &str) -> Self {
        let mut tally = Self::EMPTY;
        tally.add_str(text);
        tally
    }

    fn add(&mut self, c: char) {
        self.utf16_units += c.len_utf16();
        match gsm_units(c) {
            Some(n) => self.gsm_units += n,
            None => self.gsm = false,
        }
    }

    fn add_str(&mut self, text: &str) {
        text.chars().for_each(|c| self.add(c));
    }

    fn join(self, other: Self) -> Self {
        Self {
            gsm: self.gsm && other.gsm,
            gsm_units: self.gsm_units + other.gsm_units,
            utf16_units: self.utf16_units + other.utf16_units,
        }
    }

    fn segments(self) -> Segments {
        let (encoding, units, single, part) = if self.gsm {
            (Encoding::Gsm7, self.gsm_units, 160, 153)
        } else {
            (Encoding::Ucs2, self.utf16_units, 70, 67)
        };
        let segments = if units <= single { 1 } else { units.div_ceil(part) };
        Segments { encoding, units, segments }
    }

    fn fits(self) -> bool {
        self.segments().segments <= MAX_SEGMENTS
    }
}

/// What a message asks about.
#[derive(Debug, Clone, Copy)]
pub struct Prompt<'a> {
    /// An approval (function call) or a question (human contact).
    pub kind: RequestKind,
    /// The function name of a call, or the text of a question.
    pub subject: &'a str,
    /// The call's kwargs (usually an object); not shown for a question.
    pub args: Option<&'a Value>,
    /// The request's 4-digit code, e.g. `4821`.
    pub code: &'a str,
    /// Titles of the reject options of a call, or of the response options of a question.
    pub options: &'a [String],
    /// The request's page in the web inbox.
    pub link: Option<&'a str>,
}

/// The message for `prompt`, e.g. `Approve refund(amount=5000, currency=USD)? Reply YES 4821 or
/// NO 4821 <reason>. Or reply 1 4821 for Too risky. https://...`.
///
/// If it would take more than [`MAX_SEGMENTS`] segments, only the subject or arguments are cut
/// (to no fewer than about 20 characters) and end in `...`; the instructions, options and link
/// are always whole.
pub fn render(prompt: &Prompt) -> String {
    let code = prompt.code;
    let (before, head, mut tail) = match prompt.kind {
        RequestKind::FunctionCall => {
            ("Approve ", call_text(prompt.subject, prompt.args), format!("? Reply YES {code} or NO {code} <reason>."))
        }
        RequestKind::HumanContact => {
            ("Question: ", flatten(prompt.subject.trim()), format!(" Reply {code} <your answer>."))
        }
    };
    if !prompt.options.is_empty() {
        let choices: Vec<String> = prompt
            .options
            .iter()
            .enumerate()
            .map(|(i, title)| format!("{} {code} for {}", i + 1, flatten(title.trim())))
            .collect();
        tail.push_str(" Or reply ");
        tail.push_str(&choices.join(", "));
        tail.push('.');
    }
    if let Some(link) = prompt.link.map(str::trim).filter(|l| !l.is_empty()) {
        tail.push(' ');
        tail.push_str(link);
    }
    let head = shorten(before, &head, &tail);
    format!("{before}{head}{tail}")
}

/// `name(key=value, ...)`: strings unquoted, other values as compact JSON, keys in order.
fn call_text(name: &str, args: Option<&Value>) -> String {
    let name = flatten(name.trim());
    let args = match args {
        None => return name,
        Some(Value::Object(map)) => map
            .iter()
            .map(|(key, value)| format!("{}={}", flatten(key), value_text(value)))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => value_text(other),
    };
    format!("{name}({args})")
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => flatten(s),
        other => other.to_string(),
    }
}

/// `text` on one line: each run of newlines, tabs and other line breaks becomes one space.
fn flatten(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_break = false;
    for c in text.chars() {
        if matches!(c, '\n' | '\r' | '\t' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}') {
            if !in_break {
                out.push(' ');
            }
            in_break = true;
        } else {
            out.push(c);
            in_break = false;
        }
    }
    out
}

/// `head`, cut and ended with `...` if `before + head + tail` takes more than [`MAX_SEGMENTS`].
fn shorten(before: &str, head: &str, tail: &str) -> String {
    let mut fixed = Tally::of(before);
    fixed.add_str(tail);
    if fixed.join(Tally::of(head)).fits() {
        return head.to_owned();
    }
    fixed.add_str(ELLIPSIS);
    let mut kept = Tally::EMPTY;
    let mut fit_end = 0;
    for (i, c) in head.char_indices() {
        kept.add(c);
        if !fixed.join(kept).fits() {
            break;
        }
        fit_end = i + c.len_utf8();
    }
    let min_end = head.char_indices().nth(MIN_HEAD_CHARS).map_or(head.len(), |(i, _)| i);
    if fit_end < min_end && head[min_end..].chars().count() <= ELLIPSIS.len() {
        // It does not fit anyway, and cutting would save nothing.
        return head.to_owned();
    }
    let end = cluster_start(head, fit_end.max(min_end));
    format!("{}{ELLIPSIS}", head[..end].trim_end())
}

/// `end`, moved back so the cut does not split a visible character: a base and its combining
/// marks, variation selectors or skin tones, an emoji joined by ZWJ, or a pair of flag letters.
fn cluster_start(text: &str, mut end: usize) -> usize {
    let is_flag_letter = |c: char| ('\u{1F1E6}'..='\u{1F1FF}').contains(&c);
    let extends = |c: char| {
        matches!(c, '\u{0300}'..='\u{036F}' | '\u{200D}' | '\u{20E3}' | '\u{FE00}'..='\u{FE0F}'
            | '\u{1F3FB}'..='\u{1F3FF}' | '\u{E0020}'..='\u{E007F}')
    };
    while let (Some(prev), Some(next)) = (text[..end].chars().next_back(), text[end..].chars().next()) {
        let odd_flag_letters = is_flag_letter(prev)
            && is_flag_letter(next)
            && text[..end].chars().rev().take_while(|&c| is_flag_letter(c)).count() % 2 == 1;
        if !(prev == '\u{200D}' || extends(next) || odd_flag_letters) {
            break;
        }
        end -= prev.len_utf8();
    }
    end
}

/// A whole-message keyword that Twilio acts on by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// STOP, STOPALL, UNSUBSCRIBE, CANCEL, END or QUIT: the number no longer receives messages.
    OptOut,
    /// START, UNSTOP or YES: the number receives messages again.
    OptIn,
    /// HELP or INFO.
    Help,
}

/// The keyword `body` is, if all of it (trimmed, any case) is one. A bare `YES` is an opt-in.
pub fn keyword(body: &str) -> Option<Keyword> {
    match body.trim().to_ascii_uppercase().as_str() {
        "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" => Some(Keyword::OptOut),
        "START" | "UNSTOP" | "YES" => Some(Keyword::OptIn),
        "HELP" | "INFO" => Some(Keyword::Help),
        _ => None,
    }
}

/// What a reply says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Approve (yes, y, approve, approved, ok, okay).
    Yes,
    /// Reject (no, n, reject, rejected, deny, denied).
    No,
    /// Choose the option with this number (1-based, as listed in the message).
    Option(usize),
}

/// A reply split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The request's code, if the reply names one.
    pub code: Option<String>,
    /// The verb, if the reply starts with one (before or after the code).
    pub verb: Option<Verb>,
    /// The rest, trimmed: a rejection's reason, a question's answer, or empty.
    pub text: String,
}

/// Punctuation ignored at the end of a verb or a code (`Yes!`, `No, too much`, `4821.`).
const TRAILING: [char; 4] = ['.', '!', ',', ':'];

/// The verb `word` is: a yes or no word (any case), or an option number from 1 to 99.
pub fn verb_of(word: &str) -> Option<Verb> {
    let word = word.trim_end_matches(TRAILING);
    if (1..=2).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_digit()) {
        return word.parse().ok().filter(|&n| n >= 1).map(Verb::Option);
    }
    match word.to_ascii_lowercase().as_str() {
        "yes" | "y" | "approve" | "approved" | "ok" | "okay" => Some(Verb::Yes),
        "no" | "n" | "reject" | "rejected" | "deny" | "denied" => Some(Verb::No),
        _ => None,
    }
}

/// The code `word` is: exactly 4 ASCII digits that `is_code` accepts.
fn code_of(word: &str, is_code: &impl Fn(&str) -> bool) -> Option<String> {
    let word = word.trim_end_matches(TRAILING);
    (word.len() == 4 && word.bytes().all(|b| b.is_ascii_digit()) && is_code(word)).then(|| word.to_owned())
}

/// Reads a reply. The code comes first or right after a leading verb; the verb comes first or
/// right after a leading code. `is_code` says whether 4 digits are the code of a pending request
/// of this sender, so an answer like `1200 is fine` is not mistaken for one.
pub fn parse_reply(body: &str, is_code: impl Fn(&str) -> bool) -> Reply {
    // The first two words, each with the byte offset where it ends.
    let words: Vec<(&str, usize)> =
        body.split_whitespace().take(2).map(|w| (w, w.as_ptr() as usize - body.as_ptr() as usize + w.len())).collect();
    let code_at = |i: usize| words.get(i).and_then(|&(w, _)| code_of(w, &is_code));
    let verb_at = |i: usize| words.get(i).and_then(|&(w, _)| verb_of(w));
    let (code, verb) = if let Some(code) = code_at(0) {
        (Some(code), verb_at(1))
    } else if let Some(verb) = verb_at(0) {
        (code_at(1), Some(verb))
    } else {
        (None, None)
    };
    let used = usize::from(code.is_some()) + usize::from(verb.is_some());
    let rest = match used {
        0 => body,
        n => &body[words[n - 1].1..],
    };
    Reply { code, verb, text: rest.trim().to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seg(encoding: Encoding, units: usize, segments: usize) -> Segments {
        Segments { encoding, units, segments }
    }

    #[test]
    fn gsm_text_counts_septets_with_extension_characters_as_two() {
        assert_eq!(segments(""), seg(Encoding::Gsm7, 0, 1));
        assert_eq!(segments("Hello @ £5 è_Δ?"), seg(Encoding::Gsm7, 15, 1));
        assert_eq!(segments("{}[]~|^\\€\u{0C}"), seg(Encoding::Gsm7, 20, 1));
        assert_eq!(segments(&"a".repeat(160)), seg(Encoding::Gsm7, 160, 1));
        assert_eq!(segments(&"a".repeat(161)), seg(Encoding::Gsm7, 161, 2));
        assert_eq!(segments(&"a".repeat(306)), seg(Encoding::Gsm7, 306, 2));
        assert_eq!(segments(&"a".repeat(307)), seg(Encoding::Gsm7, 307, 3));
        assert_eq!(segments(&"{".repeat(80)), seg(Encoding::Gsm7, 160, 1));
        assert_eq!(segments(&"{".repeat(81)), seg(Encoding::Gsm7, 162, 2));
    }

    #[test]
    fn other_text_counts_utf16_units() {
        assert_eq!(segments("ê"), seg(Encoding::Ucs2, 1, 1));
        assert_eq!(segments("`"), seg(Encoding::Ucs2, 1, 1));
        assert_eq!(segments("ok 😀"), seg(Encoding::Ucs2, 5, 1));
        assert_eq!(segments("…"), seg(Encoding::Ucs2, 1, 1));
        assert_eq!(segments(&"ж".repeat(70)), seg(Encoding::Ucs2, 70, 1));
        assert_eq!(segments(&"ж".repeat(71)), seg(Encoding::Ucs2, 71, 2));
        assert_eq!(segments(&"ж".repeat(134)), seg(Encoding::Ucs2, 134, 2));
        assert_eq!(segments(&"ж".repeat(135)), seg(Encoding::Ucs2, 135, 3));
        // One emoji turns a whole GSM text into UCS-2, and the extension characters count 1.
        assert_eq!(segments(&format!("{}😀", "{".repeat(68))), seg(Encoding::Ucs2, 70, 1));
    }

    fn call<'a>(args: &'a Value, options: &'a [String], link: Option<&'a str>) -> Prompt<'a> {
        Prompt { kind: RequestKind::FunctionCall, subject: "refund", args: Some(args), code: "4821", options, link }
    }

    fn titles(titles: &[&str]) -> Vec<String> {
        titles.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn a_function_call_names_the_call_and_how_to_answer() {
        let args = json!({"amount": 5000, "currency": "USD"});
        assert_eq!(
            render(&call(&args, &[], None)),
            "Approve refund(amount=5000, currency=USD)? Reply YES 4821 or NO 4821 <reason>."
        );
        let options = titles(&["Too risky", "Ask later"]);
        assert_eq!(
            render(&call(&args, &options, Some("https://cs.example/r/7"))),
            "Approve refund(amount=5000, currency=USD)? Reply YES 4821 or NO 4821 <reason>. \
             Or reply 1 4821 for Too risky, 2 4821 for Ask later. https://cs.example/r/7"
        );
        assert_eq!(
            render(&call(&args, &[], Some("https://cs.example/r/7"))),
            "Approve refund(amount=5000, currency=USD)? Reply YES 4821 or NO 4821 <reason>. https://cs.example/r/7"
        );
    }

    #[test]
    fn arguments_keep_their_order_and_non_strings_are_compact_json() {
        let args = json!({"z": "a\nb\tc", "a": [1, "x"], "m": {"k": null}, "b": true});
        let text = render(&call(&args, &[], None));
        assert!(text.starts_with(r#"Approve refund(z=a b c, a=[1,"x"], m={"k":null}, b=true)? Reply"#), "{text}");
        let prompt = Prompt { args: None, ..call(&args, &[], None) };
        assert!(render(&prompt).starts_with("Approve refund? Reply YES 4821"));
    }

    #[test]
    fn a_question_shows_its_text_and_options() {
        let options = titles(&["Yes", "No"]);
        let prompt = Prompt {
            kind: RequestKind::HumanContact,
            subject: "Ship\nthe release?",
            args: None,
            code: "4821",
            options: &options,
            link: Some("https://cs.example/r/8"),
        };
        assert_eq!(
            render(&prompt),
            "Question: Ship the release? Reply 4821 <your answer>. Or reply 1 4821 for Yes, 2 4821 for No. \
             https://cs.example/r/8"
        );
        assert_eq!(
            render(&Prompt { options: &[], link: None, ..prompt }),
            "Question: Ship the release? Reply 4821 <your answer>."
        );
    }

    #[test]
    fn a_long_argument_is_cut_to_fit_two_segments() {
        let args = json!({"note": "x".repeat(1000), "amount": 5});
        let options = titles(&["Too risky"]);
        let text = render(&call(&args, &options, Some("https://cs.example/r/7")));
        assert_eq!(segments(&text), seg(Encoding::Gsm7, 306, 2));
        assert!(text.starts_with("Approve refund(note=xxxx"), "{text}");
        assert!(
            text.ends_with(
                "xxx...? Reply YES 4821 or NO 4821 <reason>. Or reply 1 4821 for Too risky. https://cs.example/r/7"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_long_question_is_cut_too() {
        let subject = format!("{} end?", "Should we go ahead with it ".repeat(20));
        let prompt = Prompt {
            kind: RequestKind::HumanContact,
            subject: &subject,
            args: None,
            code: "4821",
            options: &[],
            link: None,
        };
        let text = render(&prompt);
        assert_eq!(segments(&text).segments, 2);
        assert!(text.starts_with("Question: Should we go ahead"));
        assert!(text.ends_with("... Reply 4821 <your answer>."), "{text}");
        // Cut at a space: the space is dropped before the dots.
        assert!(!text.contains(" ..."), "{text}");
    }

    #[test]
    fn non_gsm_arguments_are_counted_in_ucs2() {
        let args = json!({"note": "Überweisung für Łódź ".repeat(20)});
        let text = render(&call(&args, &[], None));
        let size = segments(&text);
        assert_eq!(size.encoding, Encoding::Ucs2);
        assert!(size.units <= 134 && size.units > 130, "{size:?}");
        assert!(text.ends_with("...? Reply YES 4821 or NO 4821 <reason>."), "{text}");

        // Short enough: not cut, though the whole message is UCS-2.
        let args = json!({"city": "Łódź"});
        assert_eq!(render(&call(&args, &[], None)), "Approve refund(city=Łódź)? Reply YES 4821 or NO 4821 <reason>.");
    }

    #[test]
    fn a_cut_never_splits_an_emoji() {
        let args = json!({"note": "👍🏽".repeat(100)});
        let text = render(&call(&args, &[], None));
        assert!(segments(&text).units <= 134);
        assert!(text.contains("👍🏽...?"), "{text}");
        let args = json!({"note": "ab👍".repeat(100)});
        let text = render(&call(&args, &[], None));
        assert!(segments(&text).units <= 134);
        assert!(text.contains("..."), "{text}");
    }

    #[test]
    fn long_options_keep_at_least_twenty_characters_of_the_subject() {
        let options = titles(&[&"o".repeat(150), &"p".repeat(150)]);
        let args = json!({"note": "n".repeat(100)});
        let text = render(&call(&args, &options, Some("https://cs.example/r/7")));
        assert!(segments(&text).segments > 2);
        // "refund(note=" and 8 more characters make the 20 kept.
        assert!(text.starts_with("Approve refund(note=nnnnnnnn...? Reply YES 4821"), "{text}");
        assert!(
            text.contains(&"o".repeat(150)) && text.ends_with(&format!("{}. https://cs.example/r/7", "p".repeat(150)))
        );
        // A subject only a little over the minimum is left whole.
        let subject = "s".repeat(MIN_HEAD_CHARS + 2);
        let prompt = Prompt { subject: &subject, args: None, ..call(&args, &options, None) };
        assert!(render(&prompt).starts_with(&format!("Approve {subject}? Reply")));
    }

    fn known(code: &str) -> bool {
        code == "4821"
    }

    fn reply(code: Option<&str>, verb: Option<Verb>, text: &str) -> Reply {
        Reply { code: code.map(str::to_owned), verb, text: text.to_owned() }
    }

    #[test]
    fn replies_name_a_verb_and_a_code_in_either_order() {
        assert_eq!(parse_reply("YES 4821", known), reply(Some("4821"), Some(Verb::Yes), ""));
        assert_eq!(parse_reply("4821 YES", known), reply(Some("4821"), Some(Verb::Yes), ""));
        assert_eq!(parse_reply("y 4821", known), reply(Some("4821"), Some(Verb::Yes), ""));
        assert_eq!(parse_reply("  Approved! ", known), reply(None, Some(Verb::Yes), ""));
        assert_eq!(parse_reply("approve", known), reply(None, Some(Verb::Yes), ""));
        assert_eq!(parse_reply("OK 4821.", known), reply(Some("4821"), Some(Verb::Yes), ""));
        assert_eq!(parse_reply("NO 4821 too much", known), reply(Some("4821"), Some(Verb::No), "too much"));
        assert_eq!(parse_reply("4821 no too much", known), reply(Some("4821"), Some(Verb::No), "too much"));
        assert_eq!(
            parse_reply("Denied.  Too MUCH,  really\nsorry ", known),
            reply(None, Some(Verb::No), "Too MUCH,  really\nsorry")
        );
        assert_eq!(parse_reply("No, not now", known), reply(None, Some(Verb::No), "not now"));
    }

    #[test]
    fn an_option_number_with_or_without_a_code() {
        assert_eq!(parse_reply("2 4821", known), reply(Some("4821"), Some(Verb::Option(2)), ""));
        assert_eq!(parse_reply("4821 2", known), reply(Some("4821"), Some(Verb::Option(2)), ""));
        assert_eq!(parse_reply("1", known), reply(None, Some(Verb::Option(1)), ""));
        assert_eq!(parse_reply("12.", known), reply(None, Some(Verb::Option(12)), ""));
        assert_eq!(parse_reply("0 4821", known), reply(None, None, "0 4821"));
        assert_eq!(parse_reply("100", known), reply(None, None, "100"));
    }

    #[test]
    fn without_a_verb_the_text_is_the_answer() {
        assert_eq!(parse_reply("4821 the answer is blue", known), reply(Some("4821"), None, "the answer is blue"));
        assert_eq!(parse_reply("blue", known), reply(None, None, "blue"));
        assert_eq!(parse_reply("  Dark  Blue ", known), reply(None, None, "Dark  Blue"));
        assert_eq!(parse_reply("4821", known), reply(Some("4821"), None, ""));
        assert_eq!(parse_reply("", known), reply(None, None, ""));
        // A code is only taken first or right after a leading verb.
        assert_eq!(parse_reply("blue 4821", known), reply(None, None, "blue 4821"));
    }

    #[test]
    fn digits_that_are_not_a_code_stay_in_the_text() {
        assert_eq!(parse_reply("1200 is fine", known), reply(None, None, "1200 is fine"));
        assert_eq!(parse_reply("yes 1200 is fine", known), reply(None, Some(Verb::Yes), "1200 is fine"));
        assert_eq!(parse_reply("48210 yes", known), reply(None, None, "48210 yes"));
        assert_eq!(parse_reply("1200 yes", |_| true), reply(Some("1200"), Some(Verb::Yes), ""));
    }

    #[test]
    fn verbs_ignore_case_and_trailing_punctuation() {
        assert_eq!(verb_of("YES!"), Some(Verb::Yes));
        assert_eq!(verb_of("Okay."), Some(Verb::Yes));
        assert_eq!(verb_of("n"), Some(Verb::No));
        assert_eq!(verb_of("Reject"), Some(Verb::No));
        assert_eq!(verb_of("99"), Some(Verb::Option(99)));
        assert_eq!(verb_of("00"), None);
        assert_eq!(verb_of("yess"), None);
        assert_eq!(verb_of("+1"), None);
    }

    #[test]
    fn keywords_are_the_whole_message() {
        for word in ["STOP", "stopall", "Unsubscribe", "cancel", "END", "quit", " stop\n"] {
            assert_eq!(keyword(word), Some(Keyword::OptOut), "{word}");
        }
        for word in ["START", "unstop", "Yes"] {
            assert_eq!(keyword(word), Some(Keyword::OptIn), "{word}");
        }
        assert_eq!(keyword("help"), Some(Keyword::Help));
        assert_eq!(keyword("INFO"), Some(Keyword::Help));
        assert_eq!(keyword("stop it"), None);
        assert_eq!(keyword("YES 4821"), None);
        assert_eq!(keyword(""), None);
    }
}
