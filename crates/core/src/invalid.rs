//! The one validation error of the domain: which field was wrong, and why.

use std::fmt;

/// Input that breaks a rule of the domain; `field` is a dotted path such as `spec.kwargs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// Dotted path of the offending field (`.` when the whole document is wrong).
    pub field: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl Invalid {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }

    /// Prefixes the field path, e.g. `kwargs` inside `spec` becomes `spec.kwargs`.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field == "." { parent.to_owned() } else { format!("{parent}.{}", self.field) };
        self
    }

    /// Turns a serde error with its path into an `Invalid`.
    pub fn from_serde(err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let field = err.path().to_string();
        let inner = err.into_inner();
        let syntax = inner.is_syntax() || inner.is_eof();
        let inner = inner.to_string();
        // serde_json appends " at line X column Y", meaningless for a Value-based parse.
        let message = match inner.find(" at line ") {
            Some(at) => inner[..at].to_owned(),
            None => inner,
        };
        if syntax {
            return Self { field: ".".into(), message: format!("the body is not valid JSON: {message}") };
        }
        // "missing field `x`" is reported at the parent; name the missing field itself.
        if let Some(name) = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
            let field = if field == "." { name.to_owned() } else { format!("{field}.{name}") };
            return Self { field, message: "is required".into() };
        }
        Self { field, message }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == "." { f.write_str(&self.message) } else { write!(f, "{}: {}", self.field, self.message) }
    }
}

impl std::error::Error for Invalid {}
