//! Email links: each carries a token bound to one request and one action, signed with a key all
//! instances share (stored in the database) and expiring. The decision itself happens once at
//! most, so a used link can only show what was decided.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use countersign_core::{RequestKind, Timestamp};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

/// How long a link works.
pub const LINK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// What a link may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkAction {
    Approve,
    Reject,
    Answer,
}

impl LinkAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Answer => "answer",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "approve" => Some(Self::Approve),
            "reject" => Some(Self::Reject),
            "answer" => Some(Self::Answer),
            _ => None,
        }
    }
}

/// What a valid link names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub project_id: String,
    pub kind: RequestKind,
    pub call_id: String,
    pub action: LinkAction,
    pub expires: Timestamp,
}

/// Why a link is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkError {
    /// Not made by this server (or altered).
    Forged,
    /// Made by this server, but too old.
    Expired,
}

/// Signs and checks link tokens.
pub struct LinkSigner {
    key: Vec<u8>,
}

impl LinkSigner {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(payload);
        mac
    }

    /// A token for `action` on one request, valid until `expires`.
    pub fn token(
        &self,
        project_id: &str,
        kind: RequestKind,
        call_id: &str,
        action: LinkAction,
        expires: Timestamp,
    ) -> String {
        let payload = format!(
            "{project_id}\n{}\n{call_id}\n{}\n{}",
            kind.as_str(),
            action.as_str(),
            expires.as_micros() / 1_000_000
        );
        let tag = self.mac(payload.as_bytes()).finalize().into_bytes();
        format!("{}.{}", B64.encode(payload), B64.encode(tag))
    }

    /// Checks a token (the tag in constant time) and its expiry.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Claims, LinkError> {
        let (payload, tag) = token.split_once('.').ok_or(LinkError::Forged)?;
        let payload = B64.decode(payload).map_err(|_| LinkError::Forged)?;
        let tag = B64.decode(tag).map_err(|_| LinkError::Forged)?;
        self.mac(&payload).verify_slice(&tag).map_err(|_| LinkError::Forged)?;
        let text = String::from_utf8(payload).map_err(|_| LinkError::Forged)?;
        let parts: Vec<&str> = text.split('\n').collect();
        let [project_id, kind, call_id, action, expires] = parts[..] else { return Err(LinkError::Forged) };
        let claims = Claims {
            project_id: project_id.to_owned(),
            kind: RequestKind::parse(kind).ok_or(LinkError::Forged)?,
            call_id: call_id.to_owned(),
            action: LinkAction::parse(action).ok_or(LinkError::Forged)?,
            expires: Timestamp::from_micros(expires.parse::<i64>().map_err(|_| LinkError::Forged)? * 1_000_000),
        };
        if claims.expires < now {
            return Err(LinkError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_request_and_action_and_expire() {
        let signer = LinkSigner::new(b"k1");
        let now = Timestamp::from_micros(1_000_000_000_000);
        let later = now.plus(Duration::from_secs(60));
        let token = signer.token("p", RequestKind::FunctionCall, "c|1", LinkAction::Approve, later);
        let claims = signer.verify(&token, now).unwrap();
        assert_eq!((claims.call_id.as_str(), claims.action), ("c|1", LinkAction::Approve));
        assert_eq!(signer.verify(&token, later.plus(Duration::from_secs(2))), Err(LinkError::Expired));
        assert_eq!(LinkSigner::new(b"k2").verify(&token, now), Err(LinkError::Forged));
        // Changing the action (or anything) breaks the tag.
        let (payload, tag) = token.split_once('.').unwrap();
        let text = String::from_utf8(B64.decode(payload).unwrap()).unwrap().replace("approve", "reject");
        assert_eq!(signer.verify(&format!("{}.{tag}", B64.encode(text)), now), Err(LinkError::Forged));
        assert_eq!(signer.verify("garbage", now), Err(LinkError::Forged));
    }
}
