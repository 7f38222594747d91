//! Projects: the unit of isolation. Every key, request and decision belongs to exactly one.

use crate::{Invalid, Timestamp};
use std::fmt;

/// A validated project name: 1-63 characters of `a-z`, `0-9`, `-` and `_`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProjectName(String);

impl ProjectName {
    /// Parses a name, explaining the rule when it is broken.
    pub fn parse(name: &str) -> Result<Self, Invalid> {
        let ok_start = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok_start || !ok_chars || name.len() > 63 {
            return Err(Invalid::new(
                "project",
                format!(
                    "{name:?} is not a valid project name: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
                ),
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stored project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// Stable identifier (UUID v7).
    pub id: String,
    /// Unique, human-chosen name.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        assert!(ProjectName::parse("default").is_ok());
        assert!(ProjectName::parse("team-a_2").is_ok());
        for bad in ["", "-x", "Upper", "has space", &"x".repeat(64)] {
            assert!(ProjectName::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
