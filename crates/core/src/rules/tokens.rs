//! Tokens: a rules line split into words and double-quoted strings.

use serde_json::Value;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    Word(String),
    Quoted(String),
}

impl Token {
    pub(super) fn word(&self) -> Option<&str> {
        match self {
            Token::Word(word) => Some(word),
            Token::Quoted(_) => None,
        }
    }

    /// The token as it would be written in a rules file.
    pub(super) fn written(&self) -> String {
        match self {
            Token::Word(word) => word.clone(),
            Token::Quoted(text) => Value::String(text.clone()).to_string(),
        }
    }

    /// The token as a JSON value: a quoted string, or a number, `true`, `false` or `null`.
    pub(super) fn value(&self) -> Result<Value, String> {
        match self {
            Token::Quoted(text) => Ok(Value::String(text.clone())),
            Token::Word(word) => match serde_json::from_str::<Value>(word) {
                Ok(value) if !value.is_object() && !value.is_array() => Ok(value),
                _ => Err(format!(
                    "`{word}` is not a value; write text in double quotes (\"{word}\"), or a number, true, false or null"
                )),
            },
        }
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Word(word) => write!(f, "`{word}`"),
            Token::Quoted(text) => write!(f, "{}", Value::String(text.clone())),
        }
    }
}

/// Splits a line into words and double-quoted strings (JSON escapes); `#` outside quotes starts
/// a comment.
pub(super) fn tokenize(line: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            break;
        } else if c == '"' {
            chars.next();
            let mut escaped = false;
            let mut end = None;
            for (i, c) in chars.by_ref() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or("a string is missing its closing double quote")?;
            let text: String = serde_json::from_str(&line[start..=end])
                .map_err(|e| format!("bad string {}: {e}", &line[start..=end]))?;
            tokens.push(Token::Quoted(text));
        } else {
            let mut end = line.len();
            while let Some(&(i, c)) = chars.peek() {
                if c.is_whitespace() || c == '"' || c == '#' {
                    end = i;
                    break;
                }
                chars.next();
            }
            tokens.push(Token::Word(line[start..end].to_owned()));
        }
    }
    Ok(tokens)
}

pub(super) fn is_operator(word: &str) -> bool {
    matches!(word, "==" | "!=" | "<" | "<=" | ">" | ">=" | "~" | "!~" | "~*" | "!~*")
}
