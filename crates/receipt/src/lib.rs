//! Approval receipts: what a human (or a policy) decided about one exact function call, signed
//! by the server, so that where the call runs anyone can check that what is about to run is what
//! was approved.
//!
//! - The statement ([`Claims`]) names the request, the function, the SHA-256 of the arguments in
//!   RFC 8785 (JCS) canonical JSON ([`args_sha256`]), the decision, the SHA-256 of the comment,
//!   who decided and when, the policy rule if one decided, and the signing key's id.
//! - The envelope is a JWS in compact serialization (RFC 7515) with `alg: EdDSA` over Ed25519
//!   (RFC 8037): `BASE64URL(header) . BASE64URL(payload) . BASE64URL(signature)`, the header and
//!   the payload being JCS canonical JSON. Public keys are published as JWKs (`kty: OKP`,
//!   `crv: Ed25519`).
//! - [`verify`] checks the signature with the key the header names among the published ones, and
//!   [`Claims::check_args`] that the arguments about to run are the approved ones.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The JWS algorithm of every receipt.
pub const ALGORITHM: &str = "EdDSA";
/// The JWS `typ` of a receipt.
pub const TYPE: &str = "countersign-receipt";
/// The version of [`Claims`] this crate writes.
pub const VERSION: u32 = 1;
/// Longest receipt [`verify`] reads.
pub const MAX_RECEIPT_BYTES: usize = 64 * 1024;

/// Why a receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Not three base64url parts with a JSON header and payload, or too long.
    #[error("not a receipt: {0}")]
    Malformed(String),
    /// The header names another algorithm or type.
    #[error("not a Countersign receipt: {0}")]
    Unsupported(String),
    /// No published key has the id the receipt names.
    #[error("signed with key {0}, which is not among the published keys")]
    UnknownKey(String),
    /// The signature does not match the header and payload (tampered, or another key's).
    #[error("the signature does not verify: the receipt was altered or not signed by key {0}")]
    BadSignature(String),
    /// The arguments about to run are not those approved.
    #[error(
        "the arguments differ from the approved ones (SHA-256 of their canonical JSON is {actual}, the receipt says {approved})"
    )]
    ArgsMismatch { approved: String, actual: String },
    /// The receipt is about another call.
    #[error("the receipt is for {receipt}, not for {expected}")]
    OtherCall { receipt: String, expected: String },
    /// The decision was not an approval.
    #[error("the receipt records {0}, not an approval")]
    NotApproved(String),
}

/// What a receipt states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// [`VERSION`].
    pub v: u32,
    /// The project's name.
    pub project: String,
    /// `function_call` or `human_contact`.
    pub kind: String,
    pub call_id: String,
    pub run_id: String,
    /// The function (function calls only).
    #[serde(rename = "fn", default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Hex SHA-256 of the JCS form of the arguments that may run (the edited ones when a person
    /// edited them); function calls only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_sha256: Option<String>,
    /// `approved`, `rejected`, `answered`, `expired` or `cancelled`.
    pub decision: String,
    /// Hex SHA-256 of the comment (or a question's answer), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment_sha256: Option<String>,
    /// Who decided, as the request's `status.user_info`.
    pub decided_by: Value,
    /// When, RFC 3339 in UTC.
    pub decided_at: String,
    /// The policy rule that decided or set the terms, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The signing key's id (also in the header).
    pub kid: String,
}

impl Claims {
    /// Checks that the receipt approved a call of `kind`/`call_id` and that `args` are the
    /// arguments it approved.
    pub fn check_call(&self, kind: &str, call_id: &str, args: &Value) -> Result<(), ReceiptError> {
        if self.kind != kind || self.call_id != call_id {
            return Err(ReceiptError::OtherCall {
                receipt: format!("{} {:?}", self.kind, self.call_id),
                expected: format!("{kind} {call_id:?}"),
            });
        }
        if self.decision != "approved" {
            return Err(ReceiptError::NotApproved(self.decision.clone()));
        }
        self.check_args(args)
    }

    /// Checks that `args` hash to the approved arguments' hash.
    pub fn check_args(&self, args: &Value) -> Result<(), ReceiptError> {
        let actual = args_sha256(args);
        match &self.args_sha256 {
            Some(approved) if *approved == actual => Ok(()),
            approved => {
                Err(ReceiptError::ArgsMismatch { approved: approved.clone().unwrap_or_else(|| "none".into()), actual })
            }
        }
    }
}

/// Hex SHA-256 of `value` in RFC 8785 canonical JSON.
pub fn args_sha256(value: &Value) -> String {
    hex::encode(Sha256::digest(canonical(value)))
}

/// Hex SHA-256 of a text (a comment).
pub fn text_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// RFC 8785 canonical JSON of a value.
pub fn canonical(value: &impl Serialize) -> Vec<u8> {
    serde_json_canonicalizer::to_vec(value).expect("JSON values and claims serialize")
}

/// A signing key: an Ed25519 secret and the id it is published under.
#[derive(Clone)]
pub struct KeyPair {
    kid: String,
    key: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").field("kid", &self.kid).field("secret", &"<secret>").finish()
    }
}

impl KeyPair {
    /// The key of a 32-byte Ed25519 secret; its id is derived from its public key.
    pub fn from_secret(secret: &[u8; 32]) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(secret);
        Self { kid: key_id(key.verifying_key().as_bytes()), key }
    }

    /// The 32-byte secret (to store).
    pub fn secret(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Its public key, to publish.
    pub fn public(&self) -> PublicKey {
        PublicKey { kid: self.kid.clone(), key: self.key.verifying_key().to_bytes() }
    }

    /// Signs `claims` (their `kid` is set to this key's): a compact JWS.
    pub fn sign(&self, claims: &Claims) -> String {
        let claims = Claims { kid: self.kid.clone(), ..claims.clone() };
        let header = json!({"alg": ALGORITHM, "kid": self.kid, "typ": TYPE});
        let signing_input = format!("{}.{}", B64.encode(canonical(&header)), B64.encode(canonical(&claims)));
        let signature = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(signature.to_bytes()))
    }
}

/// A published public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    pub key: [u8; 32],
}

impl PublicKey {
    /// As a JWK (`kty: OKP`, `crv: Ed25519`, `x`, `kid`, `alg`, `use: sig`).
    pub fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "alg": ALGORITHM, "use": "sig", "kid": self.kid, "x": B64.encode(self.key)})
    }

    /// From a JWK as [`Self::jwk`] writes it; `None` when it is not an Ed25519 public key.
    pub fn from_jwk(jwk: &Value) -> Option<Self> {
        if jwk.get("kty")? != "OKP" || jwk.get("crv")? != "Ed25519" {
            return None;
        }
        let x = B64.decode(jwk.get("x")?.as_str()?).ok()?;
        let key: [u8; 32] = x.try_into().ok()?;
        ed25519_dalek::VerifyingKey::from_bytes(&key).ok()?;
        Some(Self { kid: jwk.get("kid")?.as_str()?.to_owned(), key })
    }

    /// Every key of a JWK set (`{"keys": [...]}`) that [`Self::from_jwk`] reads.
    pub fn from_jwks(jwks: &Value) -> Vec<Self> {
        jwks.get("keys")
            .and_then(Value::as_array)
            .map(|keys| keys.iter().filter_map(Self::from_jwk).collect())
            .unwrap_or_default()
    }
}

/// The id of a public key: `cs-` and the first 16 hex digits of its SHA-256.
pub fn key_id(public: &[u8; 32]) -> String {
    format!("cs-{}", &hex::encode(Sha256::digest(public))[..16])
}

/// The key id a receipt's header names (without checking anything else), to pick a key.
pub fn kid_of(receipt: &str) -> Result<String, ReceiptError> {
    let header = header(receipt)?;
    header
        .get("kid")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ReceiptError::Malformed("no kid in the header".into()))
}

fn header(receipt: &str) -> Result<Value, ReceiptError> {
    let first = receipt.split('.').next().unwrap_or_default();
    let bytes = B64.decode(first).map_err(|_| ReceiptError::Malformed("the header is not base64url".into()))?;
    serde_json::from_slice(&bytes).map_err(|_| ReceiptError::Malformed("the header is not JSON".into()))
}

/// What a receipt says it states, WITHOUT checking its signature: for showing a refused
/// receipt to people, never for deciding anything (use [`verify`]).
pub fn read_unverified(receipt: &str) -> Result<Claims, ReceiptError> {
    let payload = receipt.trim().split('.').nth(1).unwrap_or_default();
    let payload = B64.decode(payload).map_err(|_| ReceiptError::Malformed("the payload is not base64url".into()))?;
    serde_json::from_slice(&payload)
        .map_err(|e| ReceiptError::Malformed(format!("the payload is not a receipt's statement: {e}")))
}

/// Verifies a receipt with the published `keys`; what it states when the signature holds.
pub fn verify(receipt: &str, keys: &[PublicKey]) -> Result<Claims, ReceiptError> {
    let receipt = receipt.trim();
    if receipt.len() > MAX_RECEIPT_BYTES {
        return Err(ReceiptError::Malformed(format!("longer than {MAX_RECEIPT_BYTES} bytes")));
    }
    let parts: Vec<&str> = receipt.split('.').collect();
    let [head, payload, signature] = parts.as_slice() else {
        return Err(ReceiptError::Malformed("a compact JWS has three parts separated by dots".into()));
    };
    let header = header(receipt)?;
    if header.get("alg").and_then(Value::as_str) != Some(ALGORITHM) {
        return Err(ReceiptError::Unsupported(format!("alg {}", header.get("alg").unwrap_or(&Value::Null))));
    }
    if header.get("typ").and_then(Value::as_str) != Some(TYPE) {
        return Err(ReceiptError::Unsupported(format!("typ {}", header.get("typ").unwrap_or(&Value::Null))));
    }
    let kid = kid_of(receipt)?;
    let key = keys.iter().find(|k| k.kid == kid).ok_or_else(|| ReceiptError::UnknownKey(kid.clone()))?;
    let verifying =
        ed25519_dalek::VerifyingKey::from_bytes(&key.key).map_err(|_| ReceiptError::UnknownKey(kid.clone()))?;
    let signature = B64
        .decode(signature)
        .ok()
        .and_then(|s| ed25519_dalek::Signature::from_slice(&s).ok())
        .ok_or_else(|| ReceiptError::Malformed("the signature is not 64 base64url bytes".into()))?;
    let signing_input = format!("{head}.{payload}");
    verifying.verify(signing_input.as_bytes(), &signature).map_err(|_| ReceiptError::BadSignature(kid.clone()))?;
    let claims = read_unverified(&format!("{head}.{payload}"))?;
    if claims.kid != kid {
        return Err(ReceiptError::Malformed("the payload's kid differs from the header's".into()));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            v: VERSION,
            project: "billing".into(),
            kind: "function_call".into(),
            call_id: "c1".into(),
            run_id: "run-1".into(),
            function: Some("refund".into()),
            args_sha256: Some(args_sha256(&json!({"currency": "USD", "amount": 5000}))),
            decision: "approved".into(),
            comment_sha256: Some(text_sha256("fine")),
            decided_by: json!({"channel": "web", "email": "ada@example.com"}),
            decided_at: "2026-12-07T02:00:00.000000Z".into(),
            rule: None,
            kid: String::new(),
        }
    }

    #[test]
    fn arguments_hash_in_canonical_form() {
        // RFC 8785: keys sorted, no whitespace, numbers in their shortest form.
        assert_eq!(
            canonical(&json!({"b": 1, "a": [1.0, "x"], "c": {"z": null, "y": 1e21}})),
            br#"{"a":[1,"x"],"b":1,"c":{"y":1e+21,"z":null}}"#
        );
        assert_eq!(
            args_sha256(&json!({"amount": 5000, "currency": "USD"})),
            args_sha256(&json!({"currency": "USD", "amount": 5000}))
        );
        assert_ne!(args_sha256(&json!({"amount": 5000})), args_sha256(&json!({"amount": 5001})));
    }

    #[test]
    fn a_signed_receipt_verifies_and_states_what_was_signed() {
        let key = KeyPair::from_secret(&[7; 32]);
        let receipt = key.sign(&claims());
        assert_eq!(receipt.split('.').count(), 3);
        let stated = verify(&receipt, &[key.public()]).unwrap();
        assert_eq!(stated, Claims { kid: key.kid().to_owned(), ..claims() });
        assert!(stated.check_call("function_call", "c1", &json!({"currency": "USD", "amount": 5000})).is_ok());
        assert_eq!(receipt, key.sign(&claims()), "Ed25519 is deterministic");
        assert_eq!(kid_of(&receipt).unwrap(), key.kid());
        assert!(key.kid().starts_with("cs-") && key.kid().len() == 19);
    }

    #[test]
    fn tampering_another_key_and_other_arguments_are_refused() {
        let key = KeyPair::from_secret(&[7; 32]);
        let other = KeyPair::from_secret(&[8; 32]);
        let receipt = key.sign(&claims());
        // A payload changed after signing (here: another call id).
        let parts: Vec<&str> = receipt.split('.').collect();
        let mut forged = claims();
        forged.call_id = "c2".into();
        forged.kid = key.kid().to_owned();
        let tampered = format!("{}.{}.{}", parts[0], B64.encode(canonical(&forged)), parts[2]);
        assert_eq!(verify(&tampered, &[key.public()]), Err(ReceiptError::BadSignature(key.kid().to_owned())));
        // Signed by another key that claims this key's id.
        let impostor = other
            .sign(&claims())
            .replace(&B64.encode(canonical(&json!({"alg": ALGORITHM, "kid": other.kid(), "typ": TYPE}))), parts[0]);
        assert!(matches!(verify(&impostor, &[key.public()]), Err(ReceiptError::BadSignature(_))));
        // A key nobody published.
        assert_eq!(
            verify(&other.sign(&claims()), &[key.public()]),
            Err(ReceiptError::UnknownKey(other.kid().to_owned()))
        );
        // Other arguments, another call, a rejection.
        let stated = verify(&receipt, &[key.public()]).unwrap();
        assert!(matches!(
            stated.check_args(&json!({"currency": "USD", "amount": 50000})),
            Err(ReceiptError::ArgsMismatch { .. })
        ));
        assert!(matches!(stated.check_call("function_call", "c9", &json!({})), Err(ReceiptError::OtherCall { .. })));
        let rejected = key.sign(&Claims { decision: "rejected".into(), ..claims() });
        let rejected = verify(&rejected, &[key.public()]).unwrap();
        assert_eq!(
            rejected.check_call("function_call", "c1", &json!({"currency": "USD", "amount": 5000})),
            Err(ReceiptError::NotApproved("rejected".into()))
        );
        for bad in ["", "a.b", "a.b.c.d", "!!!.x.y"] {
            assert!(matches!(verify(bad, &[key.public()]), Err(ReceiptError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn public_keys_round_trip_as_jwks() {
        let key = KeyPair::from_secret(&[9; 32]);
        let jwks = json!({"keys": [key.public().jwk(), {"kty": "RSA", "n": "x"}]});
        assert_eq!(PublicKey::from_jwks(&jwks), vec![key.public()]);
        assert_eq!(KeyPair::from_secret(&key.secret()).public(), key.public());
        assert!(!format!("{key:?}").contains(&hex::encode(key.secret())));
    }
}
