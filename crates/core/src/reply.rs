//! Reading a human's emailed reply: the new text without the quoted history, and what it decides.

use crate::{Intent, Invalid, RequestKind};

/// The reply's own text: everything above the quoted history (`On ... wrote:`, `>` lines, an
/// `-----Original Message-----` block or a forwarded header), trimmed.
pub fn strip_quoted(text: &str) -> String {
    let mut kept = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        let lower = trimmed.to_ascii_lowercase();
        let quote_starts = trimmed.starts_with('>')
            || (lower.starts_with("on ") && lower.ends_with("wrote:"))
            || lower.starts_with("-----original message-----")
            || lower.starts_with("________________________________")
            || (lower.starts_with("from:") && !kept.is_empty());
        if quote_starts {
            break;
        }
        kept.push(line.trim_end());
    }
    kept.join("\n").trim().to_owned()
}

/// What a reply decides: for an approval, `approve`/`yes` on the first line approves (the rest is
/// the comment) and `reject`/`no` rejects with the rest as the comment; for a question the whole
/// text is the answer.
pub fn intent(kind: RequestKind, text: &str) -> Result<Intent, Invalid> {
    let text = strip_quoted(text);
    if text.is_empty() {
        return Err(Invalid::new("reply", "the reply is empty (only quoted text)"));
    }
    match kind {
        RequestKind::HumanContact => Ok(Intent::Answer { response: Some(text), option: None }),
        RequestKind::FunctionCall => {
            let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
            let word: String =
                first.trim().chars().take_while(|c| c.is_alphabetic()).collect::<String>().to_lowercase();
            let after_word = first.trim()[word.len()..].trim_start_matches([':', ',', '.', '!', '-', ' ']).trim();
            let comment =
                [after_word, rest.trim()].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join("\n");
            match word.as_str() {
                "approve" | "approved" | "yes" => {
                    Ok(Intent::Approve { comment: Some(comment).filter(|c| !c.is_empty()), updated_kwargs: None })
                }
                "reject" | "rejected" | "no" => Ok(Intent::Reject { comment: Some(comment), option: None }),
                _ => Err(Invalid::new(
                    "reply",
                    "the first line must start with approve (or yes) or reject (or no), followed by a comment",
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_history_is_cut() {
        let reply = "Blue, please.\n\nOn Tue, 3 Jun 2025 at 10:00, Countersign <a@b.c> wrote:\n> Which color?\n";
        assert_eq!(strip_quoted(reply), "Blue, please.");
        assert_eq!(strip_quoted("yes\n> quoted\nmore"), "yes");
        assert_eq!(strip_quoted("ok\n-----Original Message-----\nFrom: x"), "ok");
    }

    #[test]
    fn approvals_read_the_first_word() {
        let fc = RequestKind::FunctionCall;
        assert_eq!(intent(fc, "Approve\n> q").unwrap(), Intent::Approve { comment: None, updated_kwargs: None });
        assert_eq!(
            intent(fc, "yes, go ahead").unwrap(),
            Intent::Approve { comment: Some("go ahead".into()), updated_kwargs: None }
        );
        assert_eq!(
            intent(fc, "Reject\nnot above 100\n\nOn x wrote:\n> a").unwrap(),
            Intent::Reject { comment: Some("not above 100".into()), option: None }
        );
        assert_eq!(
            intent(fc, "no: too risky").unwrap(),
            Intent::Reject { comment: Some("too risky".into()), option: None }
        );
        assert_eq!(intent(fc, "maybe later").unwrap_err().field, "reply");
        assert_eq!(intent(fc, "> only quoted").unwrap_err().field, "reply");
        assert_eq!(
            intent(RequestKind::HumanContact, "teal\nOn Mon wrote:\n> which?").unwrap(),
            Intent::Answer { response: Some("teal".into()), option: None }
        );
    }
}
