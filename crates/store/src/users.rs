//! People: the SQL both backends share (PostgreSQL's `$n` placeholders, which SQLite also
//! accepts since they appear in order), and the row type.

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
