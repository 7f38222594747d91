//! API keys: generated once, shown once, stored only as a SHA-256 hash.
//!
//! Keys carry 190 bits of randomness, so a fast hash is the right tool (a password hash such as
//! argon2 protects low-entropy secrets and would cost every request milliseconds).

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every key starts with this, so leaked keys are easy to recognise and scan for.
pub const KEY_PREFIX: &str = "cs_";

/// A freshly generated key: the secret (to show once) and what may be stored.
#[derive(Debug)]
pub struct GeneratedKey {
    /// The full secret, e.g. `cs_3kF9...`; never stored or logged.
    pub secret: String,
    /// SHA-256 of the secret.
    pub hash: KeyHash,
    /// The first characters, safe to display in listings.
    pub display_prefix: String,
}

/// SHA-256 of a key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({}…)", &hex::encode(self.0)[..8])
    }
}

impl KeyHash {
    /// Hashes a presented key.
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Compares two hashes in constant time.
    pub fn matches(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// What a key may do. A key holds one or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Create requests, read them, wait for them, escalate them, list the pending ones.
    Agent,
    /// Decide requests (`respond`): the power of a human, for integrations that decide.
    Decide,
    /// Manage the project's webhooks (and, later, its audit log).
    Admin,
}

impl Scope {
    /// Every scope, as keys created without `--scope` hold them.
    pub const ALL: [Scope; 3] = [Scope::Agent, Scope::Decide, Scope::Admin];

    /// Name in storage, flags and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Decide => "decide",
            Self::Admin => "admin",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name.trim())
    }
}

/// A set of scopes, stored as their names joined by commas (`agent,decide,admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope.
    pub fn all() -> Self {
        Self::of(&Scope::ALL)
    }

    /// These scopes.
    pub fn of(scopes: &[Scope]) -> Self {
        Self(scopes.iter().fold(0, |bits, s| bits | (1 << *s as u8)))
    }

    /// True when `scope` is held.
    pub fn has(self, scope: Scope) -> bool {
        self.0 & (1 << scope as u8) != 0
    }

    /// The scopes held, in order.
    pub fn list(self) -> Vec<Scope> {
        Scope::ALL.into_iter().filter(|s| self.has(*s)).collect()
    }

    /// `agent,decide,admin`.
    pub fn to_text(self) -> String {
        self.list().iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
    }

    /// Parses stored text; unknown names are ignored (a newer server's scope grants nothing here).
    pub fn from_text(text: &str) -> Self {
        Self::of(&text.split(',').filter_map(Scope::parse).collect::<Vec<_>>())
    }
}

/// Generates a new random key.
pub fn generate() -> GeneratedKey {
    let random: String = rand::rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect();
    let secret = format!("{KEY_PREFIX}{random}");
    GeneratedKey { hash: KeyHash::of(&secret), display_prefix: secret[..KEY_PREFIX.len() + 6].to_owned(), secret }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_as_text() {
        assert_eq!(Scopes::all().to_text(), "agent,decide,admin");
        let agent = Scopes::of(&[Scope::Agent]);
        assert!(agent.has(Scope::Agent) && !agent.has(Scope::Decide) && !agent.has(Scope::Admin));
        assert_eq!(Scopes::from_text("admin, agent,unknown"), Scopes::of(&[Scope::Agent, Scope::Admin]));
        assert_eq!(Scopes::from_text(&Scopes::all().to_text()), Scopes::all());
    }

    #[test]
    fn keys_are_unique_and_hash_consistently() {
        let a = generate();
        let b = generate();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(KEY_PREFIX) && a.secret.len() == 35);
        assert!(KeyHash::of(&a.secret).matches(&a.hash));
        assert!(!a.hash.matches(&b.hash));
        assert!(a.secret.starts_with(&a.display_prefix));
    }
}
