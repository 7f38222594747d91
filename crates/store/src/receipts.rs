//! The installation's receipt signing keys: one current, the rotated-out ones kept (with when
//! they stopped signing) so that receipts they signed stay verifiable. The [`Receipts`] trait,
//! and [`impl_receipts`], which implements it for both backends with one SQL text.

use crate::StoreResult;
use async_trait::async_trait;
use countersign_core::Timestamp;

/// A signing key as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    /// `EdDSA`.
    pub algorithm: String,
    /// The 32-byte Ed25519 secret.
    pub secret: [u8; 32],
    /// The 32-byte public key.
    pub public_key: [u8; 32],
    pub valid_from: Timestamp,
    /// When it stopped signing (rotated out); `None` for the current key.
    pub valid_until: Option<Timestamp>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("secret", &"<secret>")
            .field("valid_from", &self.valid_from)
            .field("valid_until", &self.valid_until)
            .finish()
    }
}

/// Receipt signing keys.
#[async_trait]
pub trait Receipts: Send + Sync {
    /// The current key; `candidate` becomes it when there is none (several instances starting at
    /// once agree on one).
    async fn ensure_signing_key(&self, candidate: &SigningKey) -> StoreResult<SigningKey>;
    /// The current key, if any.
    async fn current_signing_key(&self) -> StoreResult<Option<SigningKey>>;
    /// Makes `new` the current key; the one before stops signing at `new.valid_from` (returned).
    async fn rotate_signing_key(&self, new: &SigningKey) -> StoreResult<Option<SigningKey>>;
    /// Every key, current and rotated out, oldest first.
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>>;
}

/// Implements [`Receipts`] for a backend's store (a struct with a `pool: sqlx::Pool<$db>`), with
/// `$begin` starting a write transaction.
macro_rules! impl_receipts {
    ($store:ty, $db:ty, begin: $begin:literal) => {
        const _: () = {
            use crate::receipts::{Receipts, SigningKey};
            use crate::{StoreError, StoreResult};
            use countersign_core::Timestamp;
            use sqlx::Row;

            const KEY: &str = "SELECT kid, algorithm, secret, public_key, valid_from, valid_until FROM signing_keys";

            fn bytes(hex_text: &str, what: &str) -> StoreResult<[u8; 32]> {
                hex::decode(hex_text)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| StoreError::Internal(format!("a signing key's {what} is not 32 hex bytes")))
            }

            fn key(ring: &crate::secrets::Keyring, row: &<$db as sqlx::Database>::Row) -> StoreResult<SigningKey> {
                let kid: String = row.try_get("kid")?;
                let secret = ring.open(
                    &crate::secrets::place("signing_keys", "secret", &kid),
                    &row.try_get::<String, _>("secret")?,
                )?;
                Ok(SigningKey {
                    kid,
                    algorithm: row.try_get("algorithm")?,
                    secret: bytes(&secret, "secret")?,
                    public_key: bytes(&row.try_get::<String, _>("public_key")?, "public key")?,
                    valid_from: Timestamp::from_micros(row.try_get("valid_from")?),
                    valid_until: row.try_get::<Option<i64>, _>("valid_until")?.map(Timestamp::from_micros),
                })
            }

            async fn insert<'c, E: sqlx::Executor<'c, Database = $db>>(
                executor: E,
                ring: &crate::secrets::Keyring,
                k: &SigningKey,
            ) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO signing_keys (kid, algorithm, secret, public_key, valid_from, valid_until, current) \
                     VALUES ($1, $2, $3, $4, $5, NULL, 1) ON CONFLICT DO NOTHING",
                )
                .bind(&k.kid)
                .bind(&k.algorithm)
                .bind(ring.seal(&crate::secrets::place("signing_keys", "secret", &k.kid), &hex::encode(k.secret)))
                .bind(hex::encode(k.public_key))
                .bind(k.valid_from.as_micros())
                .execute(executor)
                .await?;
                Ok(())
            }

            #[async_trait::async_trait]
            impl Receipts for $store {
                async fn ensure_signing_key(&self, candidate: &SigningKey) -> StoreResult<SigningKey> {
                    insert(&self.pool, &self.keyring, candidate).await?;
                    self.current_signing_key()
                        .await?
                        .ok_or_else(|| StoreError::Internal("no current signing key after inserting one".into()))
                }

                async fn current_signing_key(&self) -> StoreResult<Option<SigningKey>> {
                    let sql = format!("{KEY} WHERE current = 1");
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_optional(&self.pool).await?;
                    row.as_ref().map(|row| key(&self.keyring, row)).transpose()
                }

                async fn rotate_signing_key(&self, new: &SigningKey) -> StoreResult<Option<SigningKey>> {
                    let mut conn = self.pool.acquire().await?;
                    sqlx::query($begin).execute(&mut *conn).await?;
                    let result = async {
                        let sql = format!("{KEY} WHERE current = 1");
                        let old = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_optional(&mut *conn).await?;
                        let old = old.as_ref().map(|row| key(&self.keyring, row)).transpose()?;
                        sqlx::query("UPDATE signing_keys SET current = NULL, valid_until = $1 WHERE current = 1")
                            .bind(new.valid_from.as_micros())
                            .execute(&mut *conn)
                            .await?;
                        insert(&mut *conn, &self.keyring, new).await?;
                        Ok::<_, StoreError>(old.map(|k| SigningKey { valid_until: Some(new.valid_from), ..k }))
                    }
                    .await;
                    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
                    sqlx::query(end).execute(&mut *conn).await?;
                    result
                }

                async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>> {
                    let sql = format!("{KEY} ORDER BY valid_from, kid");
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
                    rows.iter().map(|row| key(&self.keyring, row)).collect()
                }
            }
        };
    };
}
pub(crate) use impl_receipts;
