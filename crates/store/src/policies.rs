//! Policies and groups: each project's policy file and its groups of approvers. The [`Policies`]
//! trait, and [`impl_policies`], which implements it for both backends with one SQL text. Every
//! change is logged in the project's audit chain in its own transaction (see
//! [`crate::events`] for how each backend appends a project event).

use crate::StoreResult;
use async_trait::async_trait;
use countersign_core::event::{ProjectEvent, RequestEvent};
use countersign_core::{RequestKind, Timestamp, Vote};

/// A project's policy file as set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    pub project_id: String,
    /// The file's text, exactly as set.
    pub source: String,
    /// 1 for the first policy set, one more for each change.
    pub version: i64,
    /// Who set it, as shown.
    pub set_by: String,
    pub set_at: Timestamp,
}

/// A named group of approvers in a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub project_id: String,
    pub name: String,
    /// Members' emails, lower-cased, sorted.
    pub members: Vec<String>,
    pub created_at: Timestamp,
}

/// What a change of a group's members did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    /// Changed (or already so); the group as it is now.
    Done(Group),
    /// No group of that name in the project.
    NoSuchGroup,
    /// The group exists already (on create).
    Exists,
}

/// Policies and groups, each change logged in the audit chain.
#[async_trait]
pub trait Policies: Send + Sync {
    /// A project's policy, if one was set.
    async fn policy(&self, project_id: &str) -> StoreResult<Option<StoredPolicy>>;
    /// Logs a project event that changes nothing stored (a channel test), sealed in its chain.
    async fn log_project_event(&self, event: &ProjectEvent) -> StoreResult<()>;
    /// Sets a project's policy (replacing the one before) and logs `event`, in one transaction;
    /// returns the stored policy.
    async fn set_policy(&self, source: &str, event: &ProjectEvent) -> StoreResult<StoredPolicy>;
    /// Creates a group with its first members and logs `event`.
    async fn create_group(&self, name: &str, members: &[String], event: &ProjectEvent) -> StoreResult<GroupChange>;
    /// Adds and removes members of a group and logs `event`.
    async fn change_group(
        &self,
        name: &str,
        add: &[String],
        remove: &[String],
        event: &ProjectEvent,
    ) -> StoreResult<GroupChange>;
    /// A project's group.
    async fn group(&self, project_id: &str, name: &str) -> StoreResult<Option<Group>>;
    /// The groups of one project (or of all), by project and name.
    async fn groups(&self, project_id: Option<&str>) -> StoreResult<Vec<Group>>;

    /// Records a vote toward a pending request's quorum (once per person) and logs `event`, in
    /// one transaction that also serializes the request's votes.
    async fn vote(&self, event: &RequestEvent, vote: &Vote) -> StoreResult<Voted>;
    /// The votes cast on a request, oldest first.
    async fn votes(&self, project_id: &str, kind: RequestKind, call_id: &str) -> StoreResult<Vec<Vote>>;
}

/// What a vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Voted {
    /// Recorded; every vote on the request now, oldest first.
    Recorded(Vec<Vote>),
    /// This person voted already: their vote.
    Already(Vote),
    /// The request is not pending (decided, or not there).
    NotPending,
}

/// Implements [`Policies`] for a backend's store (a struct with a `pool: sqlx::Pool<$db>`, and
/// the `begin_change`/`log_change` pair every backend has for project events), whose `$begin`
/// starts a vote's write transaction and whose `$log_request` appends the vote's event in it.
macro_rules! impl_policies {
    ($store:ty, $db:ty, begin: $begin:literal, lock: $lock:literal, log_request: $log_request:path) => {
        const _: () = {
            use $crate::policies::{Group, GroupChange, Policies, StoredPolicy, Voted};
            use $crate::{StoreError, StoreResult};
            use async_trait::async_trait;
            use countersign_core::event::{ProjectEvent, RequestEvent};
            use countersign_core::{DecisionChannel, RequestKind, Timestamp, Vote};
            use sqlx::Row;

            async fn read_votes(
                conn: &mut <$db as sqlx::Database>::Connection,
                project_id: &str,
                kind: &str,
                call_id: &str,
            ) -> StoreResult<Vec<Vote>> {
                let rows = sqlx::query(
                    "SELECT voter, approved, comment, actor, voted_at FROM votes \
                     WHERE project_id = $1 AND kind = $2 AND call_id = $3 ORDER BY voted_at, voter",
                )
                .bind(project_id)
                .bind(kind)
                .bind(call_id)
                .fetch_all(&mut *conn)
                .await?;
                rows.iter()
                    .map(|row| {
                        let actor: String = row.try_get("actor")?;
                        let channel = serde_json::from_str::<serde_json::Value>(&actor)
                            .ok()
                            .and_then(|a| serde_json::from_value::<DecisionChannel>(a["channel"].clone()).ok())
                            .unwrap_or(DecisionChannel::Web);
                        Ok(Vote {
                            voter: row.try_get("voter")?,
                            approved: row.try_get::<i64, _>("approved")? != 0,
                            comment: row.try_get("comment")?,
                            channel,
                            at: Timestamp::from_micros(row.try_get("voted_at")?).to_rfc3339(),
                        })
                    })
                    .collect()
            }

            async fn read_group(
                conn: &mut <$db as sqlx::Database>::Connection,
                project_id: &str,
                name: &str,
            ) -> StoreResult<Option<Group>> {
                let Some(created) = sqlx::query("SELECT created_at FROM groups WHERE project_id = $1 AND name = $2")
                    .bind(project_id)
                    .bind(name)
                    .fetch_optional(&mut *conn)
                    .await?
                else {
                    return Ok(None);
                };
                let members: Vec<String> = sqlx::query_scalar(
                    "SELECT email FROM group_members WHERE project_id = $1 AND group_name = $2 ORDER BY email",
                )
                .bind(project_id)
                .bind(name)
                .fetch_all(&mut *conn)
                .await?;
                Ok(Some(Group {
                    project_id: project_id.to_owned(),
                    name: name.to_owned(),
                    members,
                    created_at: Timestamp::from_micros(created.try_get("created_at")?),
                }))
            }

            async fn add_members(
                conn: &mut <$db as sqlx::Database>::Connection,
                project_id: &str,
                name: &str,
                members: &[String],
                at: i64,
            ) -> StoreResult<()> {
                for email in members {
                    sqlx::query(
                        "INSERT INTO group_members (project_id, group_name, email, added_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (project_id, group_name, email) DO NOTHING",
                    )
                    .bind(project_id)
                    .bind(name)
                    .bind(email)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            }

            #[async_trait]
            impl Policies for $store {
                async fn policy(&self, project_id: &str) -> StoreResult<Option<StoredPolicy>> {
                    let row = sqlx::query(
                        "SELECT source, version, set_by, set_at FROM policies WHERE project_id = $1",
                    )
                    .bind(project_id)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.map(|row| {
                        Ok(StoredPolicy {
                            project_id: project_id.to_owned(),
                            source: row.try_get("source")?,
                            version: row.try_get("version")?,
                            set_by: row.try_get("set_by")?,
                            set_at: Timestamp::from_micros(row.try_get("set_at")?),
                        })
                    })
                    .transpose()
                }

                async fn log_project_event(&self, event: &ProjectEvent) -> StoreResult<()> {
                    let mut tx = self.begin_change().await?;
                    Self::log_change(&mut tx, std::slice::from_ref(event)).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn set_policy(&self, source: &str, event: &ProjectEvent) -> StoreResult<StoredPolicy> {
                    let mut tx = self.begin_change().await?;
                    let version: i64 = sqlx::query_scalar(
                        "INSERT INTO policies (project_id, source, version, set_by, set_at) VALUES ($1, $2, 1, $3, $4) \
                         ON CONFLICT (project_id) DO UPDATE SET source = excluded.source, \
                         version = policies.version + 1, set_by = excluded.set_by, set_at = excluded.set_at \
                         RETURNING version",
                    )
                    .bind(&event.project_id)
                    .bind(source)
                    .bind(&event.by)
                    .bind(event.at.as_micros())
                    .fetch_one(&mut *tx)
                    .await?;
                    Self::log_change(&mut tx, std::slice::from_ref(event)).await?;
                    tx.commit().await?;
                    Ok(StoredPolicy {
                        project_id: event.project_id.clone(),
                        source: source.to_owned(),
                        version,
                        set_by: event.by.clone(),
                        set_at: event.at,
                    })
                }

                async fn create_group(
                    &self,
                    name: &str,
                    members: &[String],
                    event: &ProjectEvent,
                ) -> StoreResult<GroupChange> {
                    let mut tx = self.begin_change().await?;
                    let created = sqlx::query(
                        "INSERT INTO groups (project_id, name, created_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (project_id, name) DO NOTHING",
                    )
                    .bind(&event.project_id)
                    .bind(name)
                    .bind(event.at.as_micros())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if created == 0 {
                        return Ok(GroupChange::Exists);
                    }
                    add_members(&mut tx, &event.project_id, name, members, event.at.as_micros()).await?;
                    Self::log_change(&mut tx, std::slice::from_ref(event)).await?;
                    let group = read_group(&mut tx, &event.project_id, name).await?;
                    tx.commit().await?;
                    group.map(GroupChange::Done).ok_or_else(|| StoreError::Internal("a new group is missing".into()))
                }

                async fn change_group(
                    &self,
                    name: &str,
                    add: &[String],
                    remove: &[String],
                    event: &ProjectEvent,
                ) -> StoreResult<GroupChange> {
                    let mut tx = self.begin_change().await?;
                    if read_group(&mut tx, &event.project_id, name).await?.is_none() {
                        return Ok(GroupChange::NoSuchGroup);
                    }
                    add_members(&mut tx, &event.project_id, name, add, event.at.as_micros()).await?;
                    for email in remove {
                        sqlx::query(
                            "DELETE FROM group_members WHERE project_id = $1 AND group_name = $2 AND email = $3",
                        )
                        .bind(&event.project_id)
                        .bind(name)
                        .bind(email)
                        .execute(&mut *tx)
                        .await?;
                    }
                    Self::log_change(&mut tx, std::slice::from_ref(event)).await?;
                    let group = read_group(&mut tx, &event.project_id, name).await?;
                    tx.commit().await?;
                    group.map(GroupChange::Done).ok_or_else(|| StoreError::Internal("a changed group is missing".into()))
                }

                async fn vote(&self, event: &RequestEvent, vote: &Vote) -> StoreResult<Voted> {
                    let (project_id, kind, call_id) = (&event.project_id, event.request_kind.as_str(), &event.call_id);
                    let mut tx = self.pool.begin_with($begin).await?;
                    let pending = sqlx::query(concat!(
                        "SELECT 1 FROM requests WHERE project_id = $1 AND kind = $2 AND call_id = $3 \
                         AND responded_at IS NULL ",
                        $lock
                    ))
                    .bind(project_id)
                    .bind(kind)
                    .bind(call_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if pending.is_none() {
                        return Ok(Voted::NotPending);
                    }
                    let votes = read_votes(&mut tx, project_id, kind, call_id).await?;
                    if let Some(earlier) = votes.into_iter().find(|v| v.voter == vote.voter) {
                        return Ok(Voted::Already(earlier));
                    }
                    let actor = match &event.body {
                        countersign_core::event::EventBody::Voted { vote } => serde_json::json!({"channel": vote.channel}),
                        _ => serde_json::json!({}),
                    };
                    sqlx::query(
                        "INSERT INTO votes (project_id, kind, call_id, voter, approved, comment, actor, voted_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(project_id)
                    .bind(kind)
                    .bind(call_id)
                    .bind(&vote.voter)
                    .bind(i64::from(vote.approved))
                    .bind(vote.comment.as_deref())
                    .bind(actor.to_string())
                    .bind(event.at.as_micros())
                    .execute(&mut *tx)
                    .await?;
                    let queued = $log_request(&mut tx, event).await?;
                    let votes = read_votes(&mut tx, project_id, kind, call_id).await?;
                    tx.commit().await?;
                    self.request_event_logged(queued);
                    Ok(Voted::Recorded(votes))
                }

                async fn votes(&self, project_id: &str, kind: RequestKind, call_id: &str) -> StoreResult<Vec<Vote>> {
                    let mut conn = self.pool.acquire().await?;
                    read_votes(&mut conn, project_id, kind.as_str(), call_id).await
                }

                async fn group(&self, project_id: &str, name: &str) -> StoreResult<Option<Group>> {
                    let mut conn = self.pool.acquire().await?;
                    read_group(&mut conn, project_id, name).await
                }

                async fn groups(&self, project_id: Option<&str>) -> StoreResult<Vec<Group>> {
                    let rows = sqlx::query(
                        "SELECT g.project_id, g.name, g.created_at, m.email FROM groups g \
                         LEFT JOIN group_members m ON m.project_id = g.project_id AND m.group_name = g.name \
                         WHERE CAST($1 AS TEXT) IS NULL OR g.project_id = $1 ORDER BY g.project_id, g.name, m.email",
                    )
                    .bind(project_id)
                    .fetch_all(&self.pool)
                    .await?;
                    let mut out: Vec<Group> = Vec::new();
                    for row in rows {
                        let (project_id, name): (String, String) = (row.try_get("project_id")?, row.try_get("name")?);
                        let email: Option<String> = row.try_get("email")?;
                        match out.last_mut() {
                            Some(g) if g.project_id == project_id && g.name == name => g.members.extend(email),
                            _ => out.push(Group {
                                project_id,
                                name,
                                members: email.into_iter().collect(),
                                created_at: Timestamp::from_micros(row.try_get("created_at")?),
                            }),
                        }
                    }
                    Ok(out)
                }
            }
        };
    };
}
pub(crate) use impl_policies;
