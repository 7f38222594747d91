//! A project's email settings (its default address, its inbound-email secret) and the server-wide
//! keys; queries both backends share. The emails themselves are deliveries (see [`crate::queue`]).

/// Defines a project's email settings queries over one pool type.
macro_rules! email_queries {
    ($pool:ty) => {
        use crate::StoreResult;

        pub(super) async fn default_email(pool: &$pool, project_id: &str) -> StoreResult<Option<String>> {
            let row: Option<(Option<String>,)> = sqlx::query_as("SELECT default_email FROM projects WHERE id = $1")
                .bind(project_id)
                .fetch_optional(pool)
                .await?;
            Ok(row.and_then(|(a,)| a))
        }

        pub(super) async fn set_inbound_email_secret(
            pool: &$pool,
            project_id: &str,
            hash: Option<&[u8]>,
        ) -> StoreResult<bool> {
            let done = sqlx::query("UPDATE projects SET inbound_email_secret_hash = $1 WHERE id = $2")
                .bind(hash)
                .bind(project_id)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        pub(super) async fn project_id_by_inbound_email_secret(
            pool: &$pool,
            hash: &[u8],
        ) -> StoreResult<Option<String>> {
            let row: Option<(String,)> = sqlx::query_as("SELECT id FROM projects WHERE inbound_email_secret_hash = $1")
                .bind(hash)
                .fetch_optional(pool)
                .await?;
            Ok(row.map(|(id,)| id))
        }
    };
}
pub(crate) use email_queries;
