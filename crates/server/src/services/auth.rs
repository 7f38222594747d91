//! API-key authentication: `Authorization: Bearer <key>`, checked against stored hashes.
//!
//! Verified keys are remembered for [`KEY_CACHE_TTL`] so that polls cost no database read; a key
//! revoked from another process (`countersign keys revoke`) stops working within that time.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use countersign_core::Project;
use countersign_core::api_key::{KeyHash, Scope, Scopes};
use countersign_store::Store;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long a verified key is trusted without asking the database again.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);

/// The authenticated caller of an API request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's project; everything the caller sees is scoped to it.
    pub project: Arc<Project>,
    /// Display prefix of the key used (safe to record and log).
    pub key_prefix: Arc<str>,
    /// What the key may do.
    pub scopes: Scopes,
    /// The person the key acts for, if it names one (separation of duties).
    pub owner: Option<Arc<str>>,
}

impl Caller {
    /// Who this key is in the audit log: `API key cs_AbC123`, now.
    pub fn stamp(&self) -> countersign_core::event::Stamp {
        countersign_core::event::Stamp::now(format!("API key {}", self.key_prefix))
    }

    /// `Ok` when the key holds `scope`, else a 403 naming the missing scope.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.has(scope) {
            return Ok(());
        }
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this API key ({}) lacks the `{}` scope (it has: {}); create a key with \
                 `countersign keys create --scope {}`",
                self.key_prefix,
                scope.as_str(),
                self.scopes.to_text(),
                scope.as_str()
            ),
        ))
    }
}

#[derive(Clone)]
struct Verified {
    caller: Caller,
    at: Instant,
}

/// Recently verified keys, by hash.
#[derive(Default)]
pub struct KeyCache {
    verified: RwLock<HashMap<KeyHash, Verified>>,
}

impl KeyCache {
    /// Checks a presented key; `None` when it is unknown or revoked.
    pub async fn verify(&self, store: &dyn Store, secret: &str) -> Result<Option<Caller>, ApiError> {
        let hash = KeyHash::of(secret);
        if let Some(hit) = self.verified.read().expect("key cache lock").get(&hash)
            && hit.at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(Some(hit.caller.clone()));
        }
        let found = store.authenticate(&hash).await?;
        let mut verified = self.verified.write().expect("key cache lock");
        match found {
            Some((key, project)) if key.project_id == project.id => {
                let caller = Caller {
                    project: Arc::new(project),
                    key_prefix: key.display_prefix.into(),
                    scopes: key.scopes,
                    owner: key.owner.map(Into::into),
                };
                verified.insert(hash, Verified { caller: caller.clone(), at: Instant::now() });
                Ok(Some(caller))
            }
            _ => {
                verified.remove(&hash);
                Ok(None)
            }
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing Authorization header; send `Authorization: Bearer <API key>`")
        })?;
        let value = header.to_str().map_err(|_| ApiError::unauthorized("Authorization header is not valid text"))?;
        let secret = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => return Err(ApiError::unauthorized("Authorization must use the Bearer scheme: `Bearer <API key>`")),
        };
        if secret.is_empty() {
            return Err(ApiError::unauthorized("empty API key; create one with `countersign keys create`"));
        }
        state.keys.verify(state.store.as_ref(), secret).await?.ok_or_else(|| {
            ApiError::unauthorized("unknown or revoked API key; create one with `countersign keys create`")
        })
    }
}

/// A caller whose key holds the `admin` scope (webhooks): a 403 naming the scope otherwise.
pub struct Admin(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Scope::Admin)?;
        Ok(Self(caller))
    }
}
