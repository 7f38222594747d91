//! Signing in: session tokens (a browser cookie or a terminal's bearer token), the per-session
//! CSRF token, one-time set-password links, and the lockout after repeated failed logins.
//!
//! Every secret here is random (190 bits), so like API keys it is stored as a SHA-256 hash.

use crate::api_key::KeyHash;
use rand::Rng;
use rand::distr::Alphanumeric;
use std::time::Duration;

/// Prefix of session tokens, so they are told apart from API keys (`cs_`) at a glance.
pub const SESSION_PREFIX: &str = "cst_";
/// Prefix of set-password tokens.
pub const PASSWORD_TOKEN_PREFIX: &str = "csp_";

/// How long a browser session lasts without being used.
pub const WEB_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a terminal login lasts.
pub const CLI_SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long a set-password link works.
pub const PASSWORD_LINK_TTL: Duration = Duration::from_secs(72 * 3600);

/// Where a session was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// A browser, with a cookie and a CSRF token.
    Web,
    /// `countersign login`, with a bearer token.
    Cli,
}

impl SessionKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Cli => "cli",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "web" => Some(Self::Web),
            "cli" => Some(Self::Cli),
            _ => None,
        }
    }

    /// How long a session of this kind lives.
    pub fn ttl(self) -> Duration {
        match self {
            Self::Web => WEB_SESSION_TTL,
            Self::Cli => CLI_SESSION_TTL,
        }
    }
}

/// A new secret: the text to hand out once and the hash to store.
#[derive(Debug)]
pub struct Secret {
    pub text: String,
    pub hash: KeyHash,
}

impl Secret {
    /// A random secret with a recognisable prefix.
    pub fn generate(prefix: &str) -> Self {
        let text = format!("{prefix}{}", random_text(32));
        Self { hash: KeyHash::of(&text), text }
    }
}

/// 32 random bytes from the OS-seeded thread generator (a signing key's secret).
pub fn random_bytes32() -> [u8; 32] {
    rand::rng().random()
}

/// Random alphanumeric text (for CSRF tokens and secrets).
pub fn random_text(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// Compares two strings in constant time (CSRF tokens).
pub fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hashed() {
        let a = Secret::generate(SESSION_PREFIX);
        let b = Secret::generate(SESSION_PREFIX);
        assert!(a.text.starts_with("cst_") && a.text.len() == 36);
        assert_ne!(a.text, b.text);
        assert!(a.hash.matches(&KeyHash::of(&a.text)));
    }

    #[test]
    fn secret_comparison() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
