//! The installation's receipt signing key as the server uses it: made on first start (one for
//! all instances on one database), re-read at most every [`REFRESH`] so a rotation by the CLI or
//! another instance is picked up, and the public keys published as a JWK set.

use countersign_core::Timestamp;
use countersign_receipt::{ALGORITHM, KeyPair};
use countersign_store::{SigningKey, Store, StoreResult};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the current key is used before it is read again.
pub const REFRESH: Duration = Duration::from_secs(5);

/// A new key pair, as stored, starting to sign at `at`.
pub fn new_key(at: Timestamp) -> SigningKey {
    let pair = KeyPair::from_secret(&countersign_core::session::random_bytes32());
    SigningKey {
        kid: pair.kid().to_owned(),
        algorithm: ALGORITHM.to_owned(),
        secret: pair.secret(),
        public_key: pair.public().key,
        valid_from: at,
        valid_until: None,
    }
}

/// The JWK set of every key (current and rotated out), each with `valid_from` and, for a
/// rotated-out one, `valid_until` (RFC 3339).
pub fn jwks(keys: &[SigningKey]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| {
            let mut jwk = countersign_receipt::PublicKey { kid: k.kid.clone(), key: k.public_key }.jwk();
            jwk["valid_from"] = json!(k.valid_from.to_string());
            jwk["valid_until"] = json!(k.valid_until.map(|t| t.to_string()));
            jwk
        })
        .collect();
    json!({ "keys": keys })
}

/// Signs receipts with the current key.
pub struct Signer {
    store: Arc<dyn Store>,
    current: Mutex<(Instant, KeyPair)>,
}

impl Signer {
    /// Makes sure the installation has a key (creating one on first start) and loads it.
    pub async fn start(store: Arc<dyn Store>) -> StoreResult<Self> {
        let key = store.ensure_signing_key(&new_key(Timestamp::now())).await?;
        tracing::info!(kid = %key.kid, "receipts are signed with this key");
        Ok(Self { store, current: Mutex::new((Instant::now(), KeyPair::from_secret(&key.secret))) })
    }

    /// The current key (re-read when older than [`REFRESH`]; on a read error, the one held).
    pub async fn key(&self) -> KeyPair {
        let (read_at, pair) = self.current.lock().expect("the signer's lock is never poisoned").clone();
        if read_at.elapsed() < REFRESH {
            return pair;
        }
        match self.store.current_signing_key().await {
            Ok(Some(stored)) => {
                let fresh = KeyPair::from_secret(&stored.secret);
                if fresh.kid() != pair.kid() {
                    tracing::info!(kid = %fresh.kid(), "the receipt signing key was rotated; signing with the new one");
                }
                *self.current.lock().expect("the signer's lock is never poisoned") = (Instant::now(), fresh.clone());
                fresh
            }
            Ok(None) | Err(_) => pair,
        }
    }
}
