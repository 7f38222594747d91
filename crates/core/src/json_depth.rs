//! How deeply a JSON text nests, found in one pass over its bytes without parsing it, so a limit
//! can be checked before anything recursive (a parser, a template, SQLite's JSON functions) sees
//! the document.

/// The deepest nesting of arrays and objects in `text` (0 for a scalar). Malformed text is
/// measured as far as its brackets go; parsing it later reports what is wrong.
pub fn depth(text: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// `Ok` when `text` nests at most `max` levels deep, else a sentence saying so.
pub fn check(text: &[u8], max: usize) -> Result<(), String> {
    let found = depth(text);
    if found > max {
        Err(format!("nests {found} levels deep; the limit is {max} (max_json_depth in the configuration)"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_brackets_outside_strings() {
        assert_eq!(depth(b"1"), 0);
        assert_eq!(depth(b"{}"), 1);
        assert_eq!(depth(br#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(depth(br#"{"a":"[[[[{{{{"}"#), 1);
        assert_eq!(depth(br#"{"a":"\"[[[","b":[]}"#), 2);
        assert_eq!(depth(br#"["\\",[]]"#), 2);
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(depth(deep.as_bytes()), 10_000);
    }

    #[test]
    fn check_names_the_limit() {
        assert!(check(b"[[1]]", 2).is_ok());
        let err = check(b"[[[1]]]", 2).unwrap_err();
        assert!(err.contains("3 levels") && err.contains("limit is 2"), "{err}");
    }
}
