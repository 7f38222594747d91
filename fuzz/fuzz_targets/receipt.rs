//! Approval receipts: `verify` with a fixed key set (one key whose kid matches the seeds),
//! `read_unverified` and `kid_of` on the input as text, and `PublicKey::from_jwks` on the input
//! parsed as JSON (a published key set).
#![no_main]

use countersign_receipt::{KeyPair, PublicKey, kid_of, read_unverified, verify};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::LazyLock;

static KEYS: LazyLock<Vec<PublicKey>> =
    LazyLock::new(|| vec![KeyPair::from_secret(&[7; 32]).public(), KeyPair::from_secret(&[9; 32]).public()]);

fuzz_target!(|data: &[u8]| {
    if let Ok(receipt) = std::str::from_utf8(data) {
        let _ = verify(receipt, &KEYS);
        let _ = read_unverified(receipt);
        let _ = kid_of(receipt);
    }
    if let Ok(jwks) = serde_json::from_slice::<Value>(data) {
        for key in PublicKey::from_jwks(&jwks) {
            let _ = key.jwk();
        }
    }
});
