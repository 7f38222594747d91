//! Upgrading a database: what the earlier schema held is there, unchanged, after the new
//! migrations. Runs on SQLite, and on PostgreSQL when `COUNTERSIGN_TEST_DATABASE_URL` is set.

use crate::support::{database_url, on_postgres};
use countersign_core::route::{Channel, DeliveryStatus};
use countersign_core::webhook::EventType;
use countersign_core::{RequestKind, Timestamp};

/// Applies the backend's migrations numbered up to `last` to `url` (as an older release did).
async fn migrate_up_to(url: &str, last: u32) {
    try_migrate_up_to(url, last).await.unwrap();
}

/// What an older release whose newest migration is `last` does when it opens `url`.
async fn try_migrate_up_to(url: &str, last: u32) -> Result<(), sqlx::migrate::MigrateError> {
    let backend = if on_postgres() { "postgres" } else { "sqlite" };
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../store/migrations").join(backend);
    let older = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let number: u32 = name[..4].parse().unwrap();
        if number <= last {
            std::fs::copy(&path, older.path().join(&name)).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(older.path()).await.unwrap();
    if on_postgres() {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let result = migrator.run(&pool).await;
        pool.close().await;
        result
    } else {
        let options = url.parse::<sqlx::sqlite::SqliteConnectOptions>().unwrap().create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let result = migrator.run(&pool).await;
        pool.close().await;
        result
    }
}

/// Runs statements on `url`, whichever backend it is.
async fn execute(url: &str, statements: &[&str]) {
    if on_postgres() {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        for s in statements {
            sqlx::query(sqlx::AssertSqlSafe(*s)).execute(&pool).await.unwrap();
        }
        pool.close().await;
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        for s in statements {
            sqlx::query(sqlx::AssertSqlSafe(*s)).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }
}

/// The webhook outbox and the email outbox of the release before the one delivery queue move into
/// it: the same ids (so the same `webhook-id`, and replies to sent emails still find them),
/// statuses, attempt logs and recipients.
#[tokio::test]
async fn queued_webhooks_and_emails_move_into_the_one_delivery_queue() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path()).await;
    migrate_up_to(&url, 10).await;
    execute(
        &url,
        &[
            "INSERT INTO projects (id, name, created_at) VALUES ('p1', 'alpha', 1)",
            "INSERT INTO webhook_endpoints (id, project_id, url, events, format, secret, created_at) VALUES \
             ('wh_1', 'p1', 'https://hooks.example.com/', '[\"function_call.completed\"]', 'v1beta2', 'whsec_x', 1)",
            "INSERT INTO webhook_deliveries (id, endpoint_id, project_id, kind, call_id, event_type, event_seq, \
             created_at, status, attempts, next_attempt_at, last_status, last_error, last_latency_ms, delivered_at) \
             VALUES ('msg_done', 'wh_1', 'p1', 'function_call', 'c1', 'function_call.completed', 0, 10, \
             'delivered', 2, NULL, 204, NULL, 12, 20)",
            "INSERT INTO webhook_deliveries (id, endpoint_id, project_id, kind, call_id, event_type, event_seq, \
             created_at, status, attempts, next_attempt_at, last_status, last_error) VALUES ('msg_wait', 'wh_1', \
             'p1', 'function_call', 'c2', 'function_call.completed', 0, 30, 'pending', 1, 9000000000000000, 500, \
             'the endpoint answered 500')",
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, latency_ms) VALUES \
             ('msg_done', 1, 11, 500, 'the endpoint answered 500', 9), ('msg_done', 2, 20, 204, NULL, 12)",
            "INSERT INTO email_messages (id, project_id, kind, call_id, purpose, event_seq, created_at, status, \
             attempts, recipients, sent_at) VALUES ('<m1@countersign>', 'p1', 'function_call', 'c1', 'request', 0, \
             5, 'sent', 1, '[\"ada@example.com\"]', 6)",
            "INSERT INTO email_messages (id, project_id, kind, call_id, purpose, event_seq, created_at, status, \
             attempts, last_error) VALUES ('<m2@countersign>', 'p1', 'function_call', 'c1', 'escalation', 1, 7, \
             'failed', 3, 'no SMTP server is configured')",
        ],
    )
    .await;

    let store = countersign_store::open(&url, crate::support::keyring(dir.path())).await.unwrap();
    let log = store.deliveries("wh_1", 10).await.unwrap();
    assert_eq!(log.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["msg_wait", "msg_done"], "newest first");
    let done = &log[1];
    assert_eq!(
        (done.channel, done.target.as_deref(), done.status, done.attempts),
        (Channel::Webhook, Some("wh_1"), DeliveryStatus::Delivered, 2)
    );
    assert_eq!(
        (done.event_type, done.last_status, done.last_latency_ms),
        (EventType::FunctionCallCompleted, Some(204), Some(12))
    );
    assert_eq!(done.delivered_at, Some(Timestamp::from_micros(20)));
    let waiting = &log[0];
    assert_eq!(
        (waiting.status, waiting.last_error.as_deref()),
        (DeliveryStatus::Pending, Some("the endpoint answered 500"))
    );
    let attempts = store.attempts("msg_done").await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| (a.attempt, a.status_code)).collect::<Vec<_>>(),
        [(1, Some(500)), (2, Some(204))]
    );

    let emails = store.emails_of("p1", RequestKind::FunctionCall, "c1").await.unwrap();
    assert_eq!(emails.len(), 2, "{emails:?}");
    assert_eq!(
        (emails[0].channel, emails[0].status, emails[0].event_type, emails[0].recipients.clone()),
        (Channel::Email, DeliveryStatus::Delivered, EventType::FunctionCallCreated, vec!["ada@example.com".to_owned()])
    );
    assert_eq!(
        (emails[1].status, emails[1].event_type, emails[1].event_seq, emails[1].attempts),
        (DeliveryStatus::Failed, EventType::FunctionCallEscalated, 1, 3)
    );
    let replied = store.email_by_message_ids(&["<nope@x>".into(), "<m1@countersign>".into()]).await.unwrap();
    assert_eq!(replied.map(|m| m.call_id), Some("c1".to_owned()), "a reply to an email sent before still finds it");
    assert!(store.email_by_message_ids(&["msg_done".into()]).await.unwrap().is_none(), "a webhook is not an email");
    store.close().await;
}

/// The raw value of one column of one row, whichever backend.
async fn stored_text(url: &str, sql: &str) -> String {
    if on_postgres() {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&pool).await.unwrap();
        pool.close().await;
        value
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let value: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&pool).await.unwrap();
        pool.close().await;
        value
    }
}

/// Secrets an earlier release stored in plain text are encrypted with the master key when the
/// upgraded server first opens the database, and read back unchanged; the plain text is gone.
#[tokio::test]
async fn secrets_stored_in_plain_text_by_an_earlier_release_are_encrypted_at_first_open() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path()).await;
    migrate_up_to(&url, 16).await;
    execute(
        &url,
        &[
            "INSERT INTO projects (id, name, created_at) VALUES ('p1', 'alpha', 1)",
            "INSERT INTO webhook_endpoints (id, project_id, url, events, format, secret, created_at) VALUES \
             ('wh_1', 'p1', 'https://hooks.example.com/', '[\"function_call.completed\"]', 'v1beta2', 'whsec_plain', 1)",
            "INSERT INTO slack_connections (project_id, bot_token, signing_secret, default_channel, team_id, team_name, \
             bot_user_id, require_known_users, connected_at) VALUES ('p1', 'xoxb-plain', 'slack-signing-plain', NULL, \
             'T1', 'acme', 'U1', 0, 1)",
            "INSERT INTO twilio_connections (project_id, account_sid, auth_token, from_number, whatsapp_from, connected_at) \
             VALUES ('p1', 'AC1', 'twilio-token-plain', '+15550001111', NULL, 1)",
            "INSERT INTO server_keys (name, value, created_at) VALUES ('email_links', 'link-key-plain', 1)",
        ],
    )
    .await;

    let ring = crate::support::keyring(dir.path());
    let store = countersign_store::open(&url, ring.clone()).await.unwrap();
    assert_eq!(store.secrets_resealed(), 5);
    assert_eq!(store.webhook("wh_1").await.unwrap().unwrap().secret, "whsec_plain");
    let slack = store.slack_connection("p1").await.unwrap().unwrap();
    assert_eq!(
        (slack.bot_token.as_str(), slack.signing_secret.as_deref()),
        ("xoxb-plain", Some("slack-signing-plain"))
    );
    assert_eq!(store.twilio_connection("p1").await.unwrap().unwrap().auth_token, "twilio-token-plain");
    assert_eq!(store.server_key("email_links", "unused").await.unwrap(), "link-key-plain");
    store.close().await;

    let prefix = format!("cs-enc:v1:{}:", ring.current().id());
    for sql in [
        "SELECT secret FROM webhook_endpoints WHERE id = 'wh_1'",
        "SELECT bot_token FROM slack_connections",
        "SELECT signing_secret FROM slack_connections",
        "SELECT auth_token FROM twilio_connections",
        "SELECT value FROM server_keys WHERE name = 'email_links'",
    ] {
        let raw = stored_text(&url, sql).await;
        assert!(raw.starts_with(&prefix) && !raw.contains("plain"), "{sql}: {raw}");
    }
    // A second open finds nothing left to encrypt.
    let store = countersign_store::open(&url, ring).await.unwrap();
    assert_eq!(store.secrets_resealed(), 0);
    store.close().await;
}

/// The release before secrets were sealed would take a sealed value for the secret itself: it
/// refuses a database this release has opened (its migrator does not know migration 17).
#[tokio::test]
async fn the_release_before_sealed_secrets_refuses_a_database_this_one_opened() {
    let dir = tempfile::tempdir().unwrap();
    let url = database_url(dir.path()).await;
    let store = countersign_store::open(&url, crate::support::keyring(dir.path())).await.unwrap();
    store.close().await;
    let refused = try_migrate_up_to(&url, 16).await.expect_err("the older release must refuse");
    assert!(refused.to_string().contains("17"), "{refused}");
}
