//! People: the [`People`] trait (users, their sessions and set-password tokens), and
//! [`impl_people`], which implements it for both backends with one SQL text. The SQL uses `$n`
//! placeholders, which SQLite also accepts (sqlx binds `$n` to the n-th argument).

use crate::StoreResult;
use async_trait::async_trait;
use countersign_core::api_key::KeyHash;
use countersign_core::event::Stamp;
use countersign_core::session::SessionKind;
use countersign_core::{Email, Project, Role, Timestamp, User};
use std::collections::BTreeMap;

/// What checking a password needs about an enabled person.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_id: String,
    /// argon2 PHC string; `None` until a password is set.
    pub password_hash: Option<String>,
}

/// A session to store (its token only as a hash).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub hash: KeyHash,
    pub user_id: String,
    pub kind: SessionKind,
    pub csrf_token: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A live session: who is signed in, and the projects they see.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub kind: SessionKind,
    pub csrf_token: String,
    pub expires_at: Timestamp,
    /// The person's projects, by name.
    pub projects: Vec<Project>,
}

/// The people who decide in the inbox: accounts, project memberships, sign-in.
#[async_trait]
pub trait People: Send + Sync {
    /// Creates a person in the given projects; `None` when the email is already taken.
    async fn create_user(
        &self,
        email: &Email,
        role: Role,
        password_hash: Option<&str>,
        project_ids: &[String],
        stamp: &Stamp,
    ) -> StoreResult<Option<User>>;
    /// People, of one project or of all, by email.
    async fn users(&self, project_name: Option<&str>) -> StoreResult<Vec<User>>;
    /// Disables a person (logged in each of their projects); returns them, or `None` if there is
    /// nobody with that email.
    async fn disable_user(&self, email: &Email, stamp: &Stamp) -> StoreResult<Option<User>>;
    /// Adds a person to the projects `add` and takes them out of `remove` (ids), in one
    /// transaction, logged in each project that changed; returns them as they are now, or `None`
    /// if there is nobody with that email.
    async fn change_user_projects(
        &self,
        email: &Email,
        add: &[String],
        remove: &[String],
        stamp: &Stamp,
    ) -> StoreResult<Option<User>>;

    /// The person with this id (enabled or not).
    async fn user(&self, id: &str) -> StoreResult<Option<User>>;
    /// The password hash of an enabled person, by email.
    async fn credentials(&self, email: &Email) -> StoreResult<Option<Credentials>>;
    /// Stores a session (and drops expired ones).
    async fn create_session(&self, session: &NewSession) -> StoreResult<()>;
    /// The unexpired session with this token hash, of an enabled person.
    async fn session(&self, hash: &KeyHash, now: Timestamp) -> StoreResult<Option<Session>>;
    /// Ends a session (logout).
    async fn delete_session(&self, hash: &KeyHash) -> StoreResult<()>;
    /// Stores a one-time set-password token.
    async fn create_password_token(&self, user_id: &str, hash: &KeyHash, expires_at: Timestamp) -> StoreResult<()>;
    /// True when a set-password token is unused, unexpired and its person enabled (it stays
    /// usable: this only asks).
    async fn password_token_usable(&self, hash: &KeyHash, now: Timestamp) -> StoreResult<bool>;
    /// Uses a set-password token: sets the password and ends the person's sessions. `None` when
    /// the token is unknown, used, expired, or the person is disabled.
    async fn set_password_with_token(
        &self,
        hash: &KeyHash,
        password_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<User>>;
}

/// Columns of `users` (never the password hash).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct UserRow {
    id: String,
    email: String,
    role: String,
    has_password: bool,
    created_at: i64,
    disabled_at: Option<i64>,
}

macro_rules! user_columns {
    () => {
        "id, email, role, password_hash IS NOT NULL AS has_password, created_at, disabled_at"
    };
}
pub(crate) const SELECT_USERS: &str = concat!("SELECT ", user_columns!(), " FROM users ORDER BY email");
pub(crate) const SELECT_USER_BY_ID: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
pub(crate) const SELECT_MEMBERSHIPS: &str =
    "SELECT up.user_id, p.name FROM user_projects up JOIN projects p ON p.id = up.project_id ORDER BY p.name";
pub(crate) const SELECT_USER_PROJECTS: &str = "SELECT p.id, p.name, p.created_at FROM user_projects up \
     JOIN projects p ON p.id = up.project_id WHERE up.user_id = $1 ORDER BY p.name";
pub(crate) const SELECT_CREDENTIALS: &str =
    "SELECT id, password_hash FROM users WHERE email = $1 AND disabled_at IS NULL";
pub(crate) const INSERT_SESSION: &str = "INSERT INTO sessions (token_hash, user_id, kind, csrf_token, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const SELECT_SESSION: &str = "SELECT s.user_id, s.kind, s.csrf_token, s.expires_at FROM sessions s \
     JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled_at IS NULL";
pub(crate) const DELETE_SESSION: &str = "DELETE FROM sessions WHERE token_hash = $1";
pub(crate) const DELETE_USER_SESSIONS: &str = "DELETE FROM sessions WHERE user_id = $1";
pub(crate) const DELETE_EXPIRED_SESSIONS: &str = "DELETE FROM sessions WHERE expires_at <= $1";
pub(crate) const INSERT_PASSWORD_TOKEN: &str =
    "INSERT INTO password_tokens (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
pub(crate) const PASSWORD_TOKEN_USABLE: &str = "SELECT t.user_id FROM password_tokens t \
     JOIN users u ON u.id = t.user_id \
     WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.expires_at > $2 AND u.disabled_at IS NULL";
pub(crate) const USE_PASSWORD_TOKEN: &str = "UPDATE password_tokens SET used_at = $1 \
     WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING user_id";
pub(crate) const SET_PASSWORD: &str = "UPDATE users SET password_hash = $1 WHERE id = $2 AND disabled_at IS NULL";
pub(crate) const INSERT_USER: &str = "INSERT INTO users (id, email, role, password_hash, created_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (email) DO NOTHING";
pub(crate) const INSERT_MEMBERSHIP: &str =
    "INSERT INTO user_projects (user_id, project_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
pub(crate) const DELETE_MEMBERSHIP: &str = "DELETE FROM user_projects WHERE user_id = $1 AND project_id = $2";
pub(crate) const SELECT_USER_ID_ROLE: &str = "SELECT id, role FROM users WHERE email = $1";
/// The ids of the projects of the person with this email.
pub(crate) const SELECT_PROJECT_IDS_OF_EMAIL: &str = "SELECT m.project_id FROM user_projects m \
     JOIN users u ON u.id = m.user_id WHERE u.email = $1 ORDER BY m.project_id";
pub(crate) const DISABLE_USER: &str = "UPDATE users SET disabled_at = $1 WHERE email = $2 AND disabled_at IS NULL";

/// Joins users with their project names, keeping those of `project` (all when `None`).
pub(crate) fn assemble(rows: Vec<UserRow>, memberships: Vec<(String, String)>, project: Option<&str>) -> Vec<User> {
    let mut projects: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (user_id, name) in memberships {
        projects.entry(user_id).or_default().push(name);
    }
    rows.into_iter()
        .map(|row| User {
            projects: projects.remove(&row.id).unwrap_or_default(),
            role: Role::parse(&row.role).unwrap_or(Role::Approver),
            id: row.id,
            email: row.email,
            has_password: row.has_password,
            created_at: Timestamp::from_micros(row.created_at),
            disabled_at: row.disabled_at.map(Timestamp::from_micros),
        })
        .filter(|user| project.is_none_or(|p| user.projects.iter().any(|name| name == p)))
        .collect()
}

/// Implements [`People`] for a backend's store (a struct with a `pool: sqlx::Pool<$db>`).
macro_rules! impl_people {
    ($store:ty, $db:ty) => {
        const _: () = {
            use crate::people::{self, UserRow};
            use crate::{Credentials, NewSession, People, Session, StoreError, StoreResult};
            use countersign_core::api_key::KeyHash;
            use countersign_core::event::{ProjectEventBody, Stamp};
            use countersign_core::session::SessionKind;
            use countersign_core::{Email, Project, Role, Timestamp, User};

            /// The projects of a person, by name.
            async fn user_projects(pool: &sqlx::Pool<$db>, user_id: &str) -> StoreResult<Vec<Project>> {
                let rows: Vec<(String, String, i64)> =
                    sqlx::query_as(people::SELECT_USER_PROJECTS).bind(user_id).fetch_all(pool).await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, name, created_at)| Project { id, name, created_at: Timestamp::from_micros(created_at) })
                    .collect())
            }

            #[async_trait::async_trait]
            impl People for $store {
                async fn create_user(
                    &self,
                    email: &Email,
                    role: Role,
                    password_hash: Option<&str>,
                    project_ids: &[String],
                    stamp: &Stamp,
                ) -> StoreResult<Option<User>> {
                    let id = uuid::Uuid::now_v7().to_string();
                    let mut tx = self.begin_change().await?;
                    let inserted = sqlx::query(people::INSERT_USER)
                        .bind(&id)
                        .bind(email.as_str())
                        .bind(role.as_str())
                        .bind(password_hash)
                        .bind(Timestamp::now().as_micros())
                        .execute(&mut *tx)
                        .await?;
                    if inserted.rows_affected() == 0 {
                        return Ok(None);
                    }
                    let mut events = Vec::new();
                    for project_id in project_ids {
                        sqlx::query(people::INSERT_MEMBERSHIP).bind(&id).bind(project_id).execute(&mut *tx).await?;
                        let body = ProjectEventBody::PersonAdded {
                            email: email.as_str().to_owned(),
                            role: role.as_str().into(),
                        };
                        events.push(stamp.event(project_id, body));
                    }
                    Self::log_change(&mut tx, &events).await?;
                    tx.commit().await?;
                    Ok(self.users(None).await?.into_iter().find(|u| u.id == id))
                }

                async fn users(&self, project_name: Option<&str>) -> StoreResult<Vec<User>> {
                    let rows: Vec<UserRow> = sqlx::query_as(people::SELECT_USERS).fetch_all(&self.pool).await?;
                    let memberships: Vec<(String, String)> =
                        sqlx::query_as(people::SELECT_MEMBERSHIPS).fetch_all(&self.pool).await?;
                    Ok(people::assemble(rows, memberships, project_name))
                }

                async fn disable_user(&self, email: &Email, stamp: &Stamp) -> StoreResult<Option<User>> {
                    let mut tx = self.begin_change().await?;
                    let disabled = sqlx::query(people::DISABLE_USER)
                        .bind(stamp.at.as_micros())
                        .bind(email.as_str())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if disabled > 0 {
                        let projects: Vec<(String,)> = sqlx::query_as(people::SELECT_PROJECT_IDS_OF_EMAIL)
                            .bind(email.as_str())
                            .fetch_all(&mut *tx)
                            .await?;
                        let body = ProjectEventBody::PersonRemoved { email: email.as_str().to_owned(), disabled: true };
                        let events: Vec<_> = projects.iter().map(|(p,)| stamp.event(p, body.clone())).collect();
                        Self::log_change(&mut tx, &events).await?;
                    }
                    tx.commit().await?;
                    Ok(self.users(None).await?.into_iter().find(|u| u.email == email.as_str()))
                }

                async fn change_user_projects(
                    &self,
                    email: &Email,
                    add: &[String],
                    remove: &[String],
                    stamp: &Stamp,
                ) -> StoreResult<Option<User>> {
                    let mut tx = self.begin_change().await?;
                    let Some((id, role)): Option<(String, String)> = sqlx::query_as(people::SELECT_USER_ID_ROLE)
                        .bind(email.as_str())
                        .fetch_optional(&mut *tx)
                        .await?
                    else {
                        return Ok(None);
                    };
                    let mut events = Vec::new();
                    for project_id in add {
                        let added =
                            sqlx::query(people::INSERT_MEMBERSHIP).bind(&id).bind(project_id).execute(&mut *tx).await?;
                        if added.rows_affected() > 0 {
                            let body =
                                ProjectEventBody::PersonAdded { email: email.as_str().to_owned(), role: role.clone() };
                            events.push(stamp.event(project_id, body));
                        }
                    }
                    for project_id in remove {
                        let removed =
                            sqlx::query(people::DELETE_MEMBERSHIP).bind(&id).bind(project_id).execute(&mut *tx).await?;
                        if removed.rows_affected() > 0 {
                            let body =
                                ProjectEventBody::PersonRemoved { email: email.as_str().to_owned(), disabled: false };
                            events.push(stamp.event(project_id, body));
                        }
                    }
                    Self::log_change(&mut tx, &events).await?;
                    tx.commit().await?;
                    self.user(&id).await
                }

                async fn user(&self, id: &str) -> StoreResult<Option<User>> {
                    let Some(row): Option<UserRow> =
                        sqlx::query_as(people::SELECT_USER_BY_ID).bind(id).fetch_optional(&self.pool).await?
                    else {
                        return Ok(None);
                    };
                    let projects = user_projects(&self.pool, id).await?;
                    let memberships = projects.into_iter().map(|p| (id.to_owned(), p.name)).collect();
                    Ok(people::assemble(vec![row], memberships, None).pop())
                }

                async fn credentials(&self, email: &Email) -> StoreResult<Option<Credentials>> {
                    let row: Option<(String, Option<String>)> = sqlx::query_as(people::SELECT_CREDENTIALS)
                        .bind(email.as_str())
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(row.map(|(user_id, password_hash)| Credentials { user_id, password_hash }))
                }

                async fn create_session(&self, session: &NewSession) -> StoreResult<()> {
                    sqlx::query(people::DELETE_EXPIRED_SESSIONS)
                        .bind(session.created_at.as_micros())
                        .execute(&self.pool)
                        .await?;
                    sqlx::query(people::INSERT_SESSION)
                        .bind(&session.hash.0[..])
                        .bind(&session.user_id)
                        .bind(session.kind.as_str())
                        .bind(&session.csrf_token)
                        .bind(session.created_at.as_micros())
                        .bind(session.expires_at.as_micros())
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn session(&self, hash: &KeyHash, now: Timestamp) -> StoreResult<Option<Session>> {
                    let row: Option<(String, String, String, i64)> = sqlx::query_as(people::SELECT_SESSION)
                        .bind(&hash.0[..])
                        .bind(now.as_micros())
                        .fetch_optional(&self.pool)
                        .await?;
                    let Some((user_id, kind, csrf_token, expires_at)) = row else { return Ok(None) };
                    let Some(user) = self.user(&user_id).await? else { return Ok(None) };
                    let kind = SessionKind::parse(&kind)
                        .ok_or_else(|| StoreError::Internal(format!("stored session kind {kind:?} is unknown")))?;
                    let projects = user_projects(&self.pool, &user_id).await?;
                    Ok(Some(Session {
                        user,
                        kind,
                        csrf_token,
                        expires_at: Timestamp::from_micros(expires_at),
                        projects,
                    }))
                }

                async fn delete_session(&self, hash: &KeyHash) -> StoreResult<()> {
                    sqlx::query(people::DELETE_SESSION).bind(&hash.0[..]).execute(&self.pool).await?;
                    Ok(())
                }

                async fn create_password_token(
                    &self,
                    user_id: &str,
                    hash: &KeyHash,
                    expires_at: Timestamp,
                ) -> StoreResult<()> {
                    sqlx::query(people::INSERT_PASSWORD_TOKEN)
                        .bind(&hash.0[..])
                        .bind(user_id)
                        .bind(Timestamp::now().as_micros())
                        .bind(expires_at.as_micros())
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn password_token_usable(&self, hash: &KeyHash, now: Timestamp) -> StoreResult<bool> {
                    let found: Option<(String,)> = sqlx::query_as(people::PASSWORD_TOKEN_USABLE)
                        .bind(&hash.0[..])
                        .bind(now.as_micros())
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(found.is_some())
                }

                async fn set_password_with_token(
                    &self,
                    hash: &KeyHash,
                    password_hash: &str,
                    now: Timestamp,
                ) -> StoreResult<Option<User>> {
                    let mut tx = self.pool.begin().await?;
                    let used: Option<(String,)> = sqlx::query_as(people::USE_PASSWORD_TOKEN)
                        .bind(now.as_micros())
                        .bind(&hash.0[..])
                        .fetch_optional(&mut *tx)
                        .await?;
                    let Some((user_id,)) = used else { return Ok(None) };
                    let set =
                        sqlx::query(people::SET_PASSWORD).bind(password_hash).bind(&user_id).execute(&mut *tx).await?;
                    if set.rows_affected() == 0 {
                        return Ok(None);
                    }
                    sqlx::query(people::DELETE_USER_SESSIONS).bind(&user_id).execute(&mut *tx).await?;
                    tx.commit().await?;
                    self.user(&user_id).await
                }
            }
        };
    };
}
pub(crate) use impl_people;
