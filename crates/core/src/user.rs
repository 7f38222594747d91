//! People who decide: accounts with a role, their projects, and passwords hashed with argon2.

use crate::{Invalid, Timestamp};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::fmt;

/// Shortest accepted password.
pub const MIN_PASSWORD_LEN: usize = 10;

/// A validated, lower-cased email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Parses an address: one `@`, something before it, a dotted domain after, no spaces.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let email = raw.trim().to_lowercase();
        let valid = match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
                    && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            None => false,
        };
        if !valid || email.len() > 254 {
            return Err(Invalid::new("email", format!("{raw:?} is not an email address")));
        }
        Ok(Self(email))
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Decides requests and manages the projects' people.
    Admin,
    /// Decides requests of their projects.
    Approver,
}

impl Role {
    /// Parses `admin` or `approver`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "admin" => Ok(Self::Admin),
            "approver" => Ok(Self::Approver),
            _ => Err(Invalid::new("role", format!("{s:?} is not a role: use admin or approver"))),
        }
    }

    /// The name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Approver => "approver",
        }
    }
}

/// A stored person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub role: Role,
    /// Names of the projects the person belongs to, sorted.
    pub projects: Vec<String>,
    /// False until a password is set.
    pub has_password: bool,
    pub created_at: Timestamp,
    pub disabled_at: Option<Timestamp>,
}

/// Hashes a password with argon2id and a random salt (PHC string format).
pub fn hash_password(password: &str) -> Result<String, Invalid> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(Invalid::new("password", format!("must be at least {MIN_PASSWORD_LEN} characters")));
    }
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| Invalid::new("password", format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Invalid::new("password", format!("cannot be hashed: {e}")))
}

/// Checks a password against a stored hash (argon2 compares in constant time).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_and_lower_cased() {
        assert_eq!(Email::parse(" Ada@Example.COM ").unwrap().as_str(), "ada@example.com");
        for bad in ["", "ada", "@example.com", "ada@example", "ada@.com", "a da@example.com", "a@b@c.com"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("wrong horse battery", &hash));
        assert_ne!(hash, hash_password("correct horse battery").unwrap(), "salted");
        assert_eq!(hash_password("short").unwrap_err().field, "password");
    }
}
