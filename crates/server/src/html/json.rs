//! Readable, syntax-highlighted JSON for the pages: the agent's JSON text, re-indented and turned
//! into HTML spans (`j-key`, `j-str`, `j-num`, `j-lit`). Works on the text as sent, so numbers of
//! any size keep their spelling; everything the agent wrote is escaped, never interpreted.

use super::push_escaped;
use std::fmt::Write;

/// `token` escaped in a span of `class`, cut at `max_bytes` of output.
fn push_span(out: &mut String, class: &str, token: &str, max_bytes: usize) {
    let _ = write!(out, "<span class=\"{class}\">");
    push_escaped(out, token, max_bytes);
    out.push_str("</span>");
}

/// Deeper levels than this are printed at this indent: the output stays linear in the input
/// however deep the value nests (a depth-20,000 value would otherwise print 800 MB of spaces).
const MAX_INDENT: usize = 24;

/// Pretty-printed, highlighted HTML of valid JSON text (two-space indent), at most about
/// `max_bytes` long: a longer rendering is cut with a note saying so, and the value stays
/// readable in full through the API.
pub fn highlight(json: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(json.len().saturating_mul(2).min(max_bytes));
    let mut depth = 0usize;
    let mut chars = json.char_indices().peekable();
    // True right after `{` or `[`, to print empty containers as `{}` / `[]`.
    let mut just_opened = false;
    // The next string is an object key (after `{` or `,` inside an object).
    let mut stack: Vec<char> = Vec::new();
    let mut expect_key = false;
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth.min(MAX_INDENT) {
            out.push_str("  ");
        }
    };
    while let Some((start, c)) = chars.next() {
        if out.len() >= max_bytes {
            let _ = write!(
                out,
                "\n<span class=\"j-cut\">\u{2026} cut here: this value is {} bytes of JSON, more than a page \
                 shows (limits.max_page_render_bytes); read it in full through the API</span>",
                json.len()
            );
            break;
        }
        if c.is_whitespace() {
            continue;
        }
        let closing = c == '}' || c == ']';
        if just_opened && !closing {
            newline(&mut out, depth);
        }
        if closing {
            depth = depth.saturating_sub(1);
            stack.pop();
            if !just_opened {
                newline(&mut out, depth);
            }
            out.push(c);
            just_opened = false;
            continue;
        }
        just_opened = false;
        match c {
            '{' | '[' => {
                out.push(c);
                depth += 1;
                stack.push(c);
                just_opened = true;
                expect_key = c == '{';
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
                expect_key = stack.last() == Some(&'{');
            }
            ':' => out.push_str(": "),
            '"' => {
                let mut end = start + 1;
                let mut escaped = false;
                for (i, ch) in chars.by_ref() {
                    end = i + ch.len_utf8();
                    if escaped {
                        escaped = false;
                    } else if ch == '\\' {
                        escaped = true;
                    } else if ch == '"' {
                        break;
                    }
                }
                let class = if expect_key { "j-key" } else { "j-str" };
                expect_key = false;
                push_span(&mut out, class, &json[start..end], max_bytes);
            }
            _ => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, ch)) = chars.peek() {
                    if ch.is_whitespace() || matches!(ch, ',' | '}' | ']' | ':') {
                        break;
                    }
                    end = i + ch.len_utf8();
                    chars.next();
                }
                let token = &json[start..end];
                let class = if matches!(token, "true" | "false" | "null") { "j-lit" } else { "j-num" };
                push_span(&mut out, class, token, max_bytes);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indents_and_classes() {
        let html = highlight(r#"{"a":1e2,"b":[true,null,"x"],"c":{},"d":[]}"#, 1 << 20);
        assert_eq!(
            html,
            "{\n  <span class=\"j-key\">&quot;a&quot;</span>: <span class=\"j-num\">1e2</span>,\n  \
             <span class=\"j-key\">&quot;b&quot;</span>: [\n    <span class=\"j-lit\">true</span>,\n    \
             <span class=\"j-lit\">null</span>,\n    <span class=\"j-str\">&quot;x&quot;</span>\n  ],\n  \
             <span class=\"j-key\">&quot;c&quot;</span>: {},\n  <span class=\"j-key\">&quot;d&quot;</span>: []\n}"
        );
    }

    #[test]
    fn markup_in_strings_is_escaped() {
        let html = highlight(r#"{"<b>":"<script>alert(\"x\")</script>","n":123456789012345678901234567890}"#, 1 << 20);
        assert!(!html.contains("<script>") && !html.contains("<b>"));
        assert!(html.contains("&lt;script&gt;alert(\\&quot;x\\&quot;)&lt;/script&gt;"));
        assert!(html.contains("123456789012345678901234567890"));
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        let html = highlight(r#"["a\"b", "c\\"]"#, 1 << 20);
        assert!(html.contains("&quot;a\\&quot;b&quot;"));
        assert!(html.contains("&quot;c\\\\&quot;"));
    }

    #[test]
    fn deep_values_render_in_linear_size() {
        let depth = 20_000;
        let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let html = highlight(&json, usize::MAX);
        // Every line is indented at most MAX_INDENT levels: a newline, 2 * MAX_INDENT spaces and
        // the bracket (unbounded indents would print depth² = 400 M spaces here).
        assert!(html.len() <= json.len() * (2 * MAX_INDENT + 2), "{} bytes for {} of input", html.len(), json.len());
    }

    #[test]
    fn one_huge_string_is_cut_too() {
        let json = format!("{{\"k\":\"{}\",\"n\":{}}}", "<".repeat(1_000_000), "9".repeat(1_000_000));
        let html = highlight(&json, 4096);
        assert!(html.len() < 4096 + 512, "{}", html.len());
        assert!(html.contains("&lt;&lt;") && html.contains("cut here"), "{html}");
        assert_eq!(html.matches("<span").count(), html.matches("</span>").count(), "spans stay closed");
        // Cut in the last value too.
        let last = format!("[\"{}\"]", "x".repeat(100_000));
        assert!(highlight(&last, 4096).contains("cut here"));
    }

    #[test]
    fn long_values_are_cut_with_a_note() {
        let json = format!("[{}1]", "1,".repeat(100_000));
        let html = highlight(&json, 4096);
        assert!(html.len() < 4096 + 512, "{}", html.len());
        assert!(html.contains("cut here") && html.contains(&json.len().to_string()));
        assert!(!highlight("[1,2]", 4096).contains("cut here"));
    }
}
