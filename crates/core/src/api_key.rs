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
