//! People: the queries both backends share. The SQL uses `$n` placeholders, which SQLite also
//! accepts since they appear in order; [`user_queries`] writes the functions once for each pool
//! type (sqlx's generic bounds over `Database` would be longer than the code).

use countersign_core::{Role, Timestamp, User};
use std::collections::BTreeMap;

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

pub(crate) const SELECT_USERS: &str = "SELECT id, email, role, password_hash IS NOT NULL AS has_password, created_at, disabled_at FROM users ORDER BY email";
pub(crate) const SELECT_MEMBERSHIPS: &str =
    "SELECT up.user_id, p.name FROM user_projects up JOIN projects p ON p.id = up.project_id ORDER BY p.name";
pub(crate) const INSERT_USER: &str = "INSERT INTO users (id, email, role, password_hash, created_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (email) DO NOTHING";
pub(crate) const INSERT_MEMBERSHIP: &str =
    "INSERT INTO user_projects (user_id, project_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";
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

/// Defines `create_user`, `users` and `disable_user` over one concrete pool type.
macro_rules! user_queries {
    ($pool:ty) => {
        use crate::StoreResult;
        use crate::users::{self, UserRow};
        use countersign_core::{Email, Role, Timestamp, User};

        pub(super) async fn create_user(
            pool: &$pool,
            email: &Email,
            role: Role,
            password_hash: Option<&str>,
            project_ids: &[String],
        ) -> StoreResult<Option<User>> {
            let id = uuid::Uuid::now_v7().to_string();
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(users::INSERT_USER)
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
            for project_id in project_ids {
                sqlx::query(users::INSERT_MEMBERSHIP).bind(&id).bind(project_id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(users(pool, None).await?.into_iter().find(|u| u.id == id))
        }

        pub(super) async fn users(pool: &$pool, project_name: Option<&str>) -> StoreResult<Vec<User>> {
            let rows: Vec<UserRow> = sqlx::query_as(users::SELECT_USERS).fetch_all(pool).await?;
            let memberships: Vec<(String, String)> = sqlx::query_as(users::SELECT_MEMBERSHIPS).fetch_all(pool).await?;
            Ok(users::assemble(rows, memberships, project_name))
        }

        pub(super) async fn disable_user(pool: &$pool, email: &Email) -> StoreResult<Option<User>> {
            sqlx::query(users::DISABLE_USER)
                .bind(Timestamp::now().as_micros())
                .bind(email.as_str())
                .execute(pool)
                .await?;
            Ok(users(pool, None).await?.into_iter().find(|u| u.email == email.as_str()))
        }
    };
}
pub(crate) use user_queries;
