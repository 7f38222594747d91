//! People who decide: accounts with a role, their projects, and passwords hashed with argon2.

use crate::{Invalid, Timestamp};
use argon2::password_hash::{self, Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Argon2, Block, Params};
use std::fmt;
use std::sync::Mutex;

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
    let argon = Argon2::default();
    let cannot = |e: password_hash::Error| Invalid::new("password", format!("cannot be hashed: {e}"));
    let output = compute(&argon, password, salt.as_salt(), Params::DEFAULT_OUTPUT_LEN).map_err(cannot)?;
    let hash = PasswordHash {
        algorithm: argon2::Algorithm::default().ident(),
        version: Some(argon2::Version::default().into()),
        params: ParamsString::try_from(&Params::default()).map_err(cannot)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Checks a password against a stored hash (with the hash's own parameters; the outputs are
/// compared in constant time).
pub fn verify_password(password: &str, hash: &str) -> bool {
    let verified = || -> password_hash::Result<bool> {
        let parsed = PasswordHash::new(hash)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Ok(false);
        };
        let algorithm = argon2::Algorithm::try_from(parsed.algorithm)?;
        let version = parsed.version.map(argon2::Version::try_from).transpose()?.unwrap_or_default();
        let argon = Argon2::new(algorithm, version, Params::try_from(&parsed)?);
        // `Output`'s equality is constant-time.
        Ok(compute(&argon, password, salt, expected.len())? == expected)
    };
    verified().unwrap_or(false)
}

/// argon2's working memory (19 MiB with the default parameters), kept for the next hash instead
/// of freed: the allocator would otherwise keep each freed buffer resident in its own thread
/// arena (measured: +19 MiB a login, up to ~300 MiB). At most as many buffers exist as hashes
/// ever ran at once, which the server caps (`max_concurrent_password_hashes`).
static MEMORY: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Runs argon2 over a buffer from [`MEMORY`] (grown if a stored hash asks for more), wiped
/// before it goes back.
fn compute(argon: &Argon2<'_>, password: &str, salt: Salt<'_>, output_len: usize) -> password_hash::Result<Output> {
    let mut salt_buf = [0u8; Salt::MAX_LENGTH];
    let salt = salt.decode_b64(&mut salt_buf)?;
    let blocks = argon.params().block_count();
    let kept = MEMORY.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
    let mut memory = kept.unwrap_or_default();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let output = Output::init_with(output_len, |out| {
        argon.hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..blocks]).map_err(Into::into)
    });
    memory.iter_mut().for_each(|block| *block = Block::default());
    MEMORY.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(memory);
    output
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

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_hasher_in_both_directions() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let salt = SaltString::encode_b64(b"sixteen byte slt").unwrap();
        // Stored before memory reuse (the crate's own hasher), and with other parameters.
        for params in [Params::default(), Params::new(4096, 3, 2, Some(24)).unwrap()] {
            let theirs = Argon2::from(params).hash_password(b"correct horse battery", &salt).unwrap().to_string();
            assert!(verify_password("correct horse battery", &theirs), "{theirs}");
            assert!(!verify_password("correct horse batterz", &theirs), "{theirs}");
        }
        let ours = hash_password("correct horse battery").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse battery", &parsed).is_ok());
        assert!(!verify_password("correct horse battery", "not a hash"));
        assert!(!verify_password("correct horse battery", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ"));
    }
}
