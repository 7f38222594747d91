//! Projects, their API keys, and the server-wide keys: the [`Projects`] trait, and
//! [`impl_projects`], which implements it for both backends with one SQL text.

use crate::StoreResult;
use async_trait::async_trait;
use countersign_core::api_key::{KeyHash, Scopes};
use countersign_core::event::Stamp;
use countersign_core::{Project, ProjectName, Timestamp};

/// A stored API key (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub project_id: String,
    pub project_name: String,
    pub name: Option<String>,
    /// The first characters of the key, e.g. `cs_AbC123`.
    pub display_prefix: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// What the key may do.
    pub scopes: Scopes,
    /// The person the key acts for (lower-cased email), if it names one.
    pub owner: Option<String>,
}

/// What to store for a new key.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub project_id: String,
    pub name: Option<String>,
    pub display_prefix: String,
    pub hash: KeyHash,
    /// What the key may do.
    pub scopes: Scopes,
    /// The person the key acts for (separation of duties bars them from approving its requests).
    pub owner: Option<String>,
}

/// Projects, the API keys that act for them, and server-wide secrets.
#[async_trait]
pub trait Projects: Send + Sync {
    /// Answers when the database does (`SELECT 1`), for readiness checks.
    async fn ping(&self) -> StoreResult<()>;
    /// Returns the project with this name, creating it if needed.
    async fn ensure_project(&self, name: &ProjectName) -> StoreResult<Project>;
    /// Creates a project with `member` (an email) in it as its first person, logging
    /// `project_created` and `person_added`, in one transaction; `None` when the name is taken
    /// (or there is no such person).
    async fn create_project(&self, name: &ProjectName, member: &str, stamp: &Stamp) -> StoreResult<Option<Project>>;
    /// The project with this name, if any.
    async fn project_by_name(&self, name: &str) -> StoreResult<Option<Project>>;
    /// The project with this id, if any.
    async fn project_by_id(&self, id: &str) -> StoreResult<Option<Project>>;

    /// Stores a new API key, logging `key_created` in its project's chain with who made it.
    async fn insert_api_key(&self, key: NewApiKey, stamp: &Stamp) -> StoreResult<ApiKeyRecord>;
    /// Lists keys, of one project or of all, oldest first.
    async fn api_keys(&self, project_name: Option<&str>) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Revokes the key with this id or display prefix (logging `key_revoked` when it was active);
    /// returns it, or `None` if there is none.
    async fn revoke_api_key(&self, id_or_prefix: &str, stamp: &Stamp) -> StoreResult<Option<ApiKeyRecord>>;
    /// The active (unrevoked) key with this hash and its project.
    async fn authenticate(&self, hash: &KeyHash) -> StoreResult<Option<(ApiKeyRecord, Project)>>;
    /// How many unrevoked keys exist across all projects.
    async fn count_active_api_keys(&self) -> StoreResult<u64>;

    /// A server-wide secret by name, created from `fresh` by whichever instance asks first.
    async fn server_key(&self, name: &str, fresh: &str) -> StoreResult<String>;
    /// How many stored secrets were sealed or re-sealed with the current master key when the
    /// store opened (after an upgrade or a rotation; 0 otherwise).
    fn secrets_resealed(&self) -> u64;
}

/// Implements [`Projects`] for a backend's store (a struct with a `pool: sqlx::Pool<$db>`). Also
/// defines `<$store>::server_key_in(pool, name, fresh)`, for opening the store: it needs the
/// routing salt before the store exists.
macro_rules! impl_projects {
    ($store:ty, $db:ty) => {
        const _: () = {
            use crate::row::{KeyRow, ProjectRow, select_keys};
            use crate::{ApiKeyRecord, NewApiKey, Projects, StoreError, StoreResult};
            use countersign_core::api_key::KeyHash;
            use countersign_core::event::{ProjectEventBody, Stamp};
            use countersign_core::{Project, ProjectName, Timestamp};

            impl $store {
                async fn server_key_in(
                    pool: &sqlx::Pool<$db>,
                    ring: &crate::secrets::Keyring,
                    name: &str,
                    fresh: &str,
                ) -> StoreResult<String> {
                    let secret = crate::secrets::SEALED_SERVER_KEYS.contains(&name);
                    let place = crate::secrets::place("server_keys", "value", name);
                    let stored = if secret { ring.seal(&place, fresh) } else { fresh.to_owned() };
                    sqlx::query(
                        "INSERT INTO server_keys (name, value, created_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(name)
                    .bind(stored)
                    .bind(Timestamp::now().as_micros())
                    .execute(pool)
                    .await?;
                    let (value,): (String,) = sqlx::query_as("SELECT value FROM server_keys WHERE name = $1")
                        .bind(name)
                        .fetch_one(pool)
                        .await?;
                    if secret { ring.open(&place, &value) } else { Ok(value) }
                }
            }

            #[async_trait::async_trait]
            impl Projects for $store {
                async fn ping(&self) -> StoreResult<()> {
                    sqlx::query("SELECT 1").execute(&self.pool).await?;
                    Ok(())
                }

                async fn ensure_project(&self, name: &ProjectName) -> StoreResult<Project> {
                    sqlx::query(
                        "INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(uuid::Uuid::now_v7().to_string())
                    .bind(name.as_str())
                    .bind(Timestamp::now().as_micros())
                    .execute(&self.pool)
                    .await?;
                    self.project_by_name(name.as_str())
                        .await?
                        .ok_or_else(|| StoreError::Internal(format!("project {name} vanished after insert")))
                }

                async fn create_project(
                    &self,
                    name: &ProjectName,
                    member: &str,
                    stamp: &Stamp,
                ) -> StoreResult<Option<Project>> {
                    let mut tx = self.begin_change().await?;
                    let Some((user_id, role)): Option<(String, String)> =
                        sqlx::query_as(crate::people::SELECT_USER_ID_ROLE)
                            .bind(member)
                            .fetch_optional(&mut *tx)
                            .await?
                    else {
                        return Ok(None);
                    };
                    let id = uuid::Uuid::now_v7().to_string();
                    let created = sqlx::query(
                        "INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(&id)
                    .bind(name.as_str())
                    .bind(stamp.at.as_micros())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if created == 0 {
                        return Ok(None);
                    }
                    sqlx::query(crate::people::INSERT_MEMBERSHIP).bind(&user_id).bind(&id).execute(&mut *tx).await?;
                    let events = [
                        stamp.event(&id, ProjectEventBody::ProjectCreated { name: name.as_str().to_owned() }),
                        stamp.event(&id, ProjectEventBody::PersonAdded { email: member.to_owned(), role }),
                    ];
                    Self::log_change(&mut tx, &events).await?;
                    tx.commit().await?;
                    Ok(Some(Project { id, name: name.as_str().to_owned(), created_at: stamp.at }))
                }

                async fn project_by_name(&self, name: &str) -> StoreResult<Option<Project>> {
                    let row: Option<ProjectRow> =
                        sqlx::query_as("SELECT id, name, created_at FROM projects WHERE name = $1")
                            .bind(name)
                            .fetch_optional(&self.pool)
                            .await?;
                    Ok(row.map(Project::from))
                }

                async fn project_by_id(&self, id: &str) -> StoreResult<Option<Project>> {
                    let row: Option<ProjectRow> =
                        sqlx::query_as("SELECT id, name, created_at FROM projects WHERE id = $1")
                            .bind(id)
                            .fetch_optional(&self.pool)
                            .await?;
                    Ok(row.map(Project::from))
                }

                async fn insert_api_key(&self, key: NewApiKey, stamp: &Stamp) -> StoreResult<ApiKeyRecord> {
                    let id = uuid::Uuid::now_v7().to_string();
                    let mut tx = self.begin_change().await?;
                    sqlx::query(
                        "INSERT INTO api_keys (id, project_id, name, display_prefix, key_hash, created_at, scopes, \
                         owner) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(&id)
                    .bind(&key.project_id)
                    .bind(&key.name)
                    .bind(&key.display_prefix)
                    .bind(&key.hash.0[..])
                    .bind(Timestamp::now().as_micros())
                    .bind(key.scopes.to_text())
                    .bind(key.owner.as_deref())
                    .execute(&mut *tx)
                    .await?;
                    let body = ProjectEventBody::KeyCreated {
                        key: key.display_prefix.clone(),
                        name: key.name.clone(),
                        scopes: key.scopes.list().iter().map(|s| s.as_str().to_owned()).collect(),
                        owner: key.owner.clone(),
                    };
                    Self::log_change(&mut tx, &[stamp.event(&key.project_id, body)]).await?;
                    let row: KeyRow = sqlx::query_as(concat!(select_keys!(), " WHERE k.id = $1"))
                        .bind(&id)
                        .fetch_one(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(row.into())
                }

                async fn api_keys(&self, project_name: Option<&str>) -> StoreResult<Vec<ApiKeyRecord>> {
                    let rows: Vec<KeyRow> = sqlx::query_as(concat!(
                        select_keys!(),
                        " WHERE $1 IS NULL OR p.name = $1 ORDER BY k.created_at, k.id"
                    ))
                    .bind(project_name)
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(rows.into_iter().map(ApiKeyRecord::from).collect())
                }

                async fn revoke_api_key(&self, id_or_prefix: &str, stamp: &Stamp) -> StoreResult<Option<ApiKeyRecord>> {
                    let mut tx = self.begin_change().await?;
                    let revoked = sqlx::query(
                        "UPDATE api_keys SET revoked_at = $1 \
                         WHERE (id = $2 OR display_prefix = $2) AND revoked_at IS NULL",
                    )
                    .bind(stamp.at.as_micros())
                    .bind(id_or_prefix)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    let row: Option<KeyRow> =
                        sqlx::query_as(concat!(select_keys!(), " WHERE k.id = $1 OR k.display_prefix = $1"))
                            .bind(id_or_prefix)
                            .fetch_optional(&mut *tx)
                            .await?;
                    let record = row.map(ApiKeyRecord::from);
                    if let Some(key) = record.as_ref().filter(|_| revoked > 0) {
                        let body = ProjectEventBody::KeyRevoked { key: key.display_prefix.clone() };
                        Self::log_change(&mut tx, &[stamp.event(&key.project_id, body)]).await?;
                    }
                    tx.commit().await?;
                    Ok(record)
                }

                async fn authenticate(&self, hash: &KeyHash) -> StoreResult<Option<(ApiKeyRecord, Project)>> {
                    let row: Option<KeyRow> =
                        sqlx::query_as(concat!(select_keys!(), " WHERE k.key_hash = $1 AND k.revoked_at IS NULL"))
                            .bind(&hash.0[..])
                            .fetch_optional(&self.pool)
                            .await?;
                    let Some(key) = row.map(ApiKeyRecord::from) else { return Ok(None) };
                    let project = self
                        .project_by_id(&key.project_id)
                        .await?
                        .ok_or_else(|| StoreError::Internal(format!("key {} has no project", key.id)))?;
                    Ok(Some((key, project)))
                }

                async fn count_active_api_keys(&self) -> StoreResult<u64> {
                    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
                        .fetch_one(&self.pool)
                        .await?;
                    Ok(n as u64)
                }

                async fn server_key(&self, name: &str, fresh: &str) -> StoreResult<String> {
                    Self::server_key_in(&self.pool, &self.keyring, name, fresh).await
                }

                fn secrets_resealed(&self) -> u64 {
                    self.resealed
                }
            }
        };
    };
}
pub(crate) use impl_projects;
