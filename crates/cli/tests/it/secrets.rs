//! Secrets at rest: the channel secrets are encrypted with a master key that is not in the
//! database, so a dump of the database alone signs no webhook, reaches no Slack or Twilio
//! account and forges no email link; a server with another key refuses to start; a rotation
//! re-encrypts everything with a new key and the secrets stay what they were.

use crate::binary::{Served, countersign, fresh_dir, stdout};
use crate::support::{TestServer, database_url, keyring, on_postgres};
use countersign_core::Timestamp;
use countersign_store::prelude::*;
use countersign_store::secrets::{Keyring, MasterKey};
use countersign_store::{NewWebhookEndpoint, SlackConnection, TwilioConnection};

const WEBHOOK_SECRET: &str = "whsec_dGhpcyBpcyB0aGUgd2ViaG9vayBzZWNyZXQ";
const BOT_TOKEN: &str = "xoxb-1111-2222-thebottoken";
const SIGNING_SECRET: &str = "8f14e45fceea167a5a36dedd4bea2543";
const AUTH_TOKEN: &str = "c4ca4238a0b923820dcc509a6f75849b";

/// Gives the project `alpha` a webhook endpoint, a Slack and a Twilio connection.
async fn connect_everything(store: &dyn Store) -> String {
    let project = store.project_by_name("alpha").await.unwrap().unwrap().id;
    let endpoint = store
        .add_webhook(
            &NewWebhookEndpoint {
                project_id: project.clone(),
                url: "https://hooks.example.com/in".into(),
                events: vec![countersign_core::webhook::EventType::FunctionCallCompleted],
                format: countersign_core::webhook::Format::parse("v1beta2").unwrap(),
                secret: WEBHOOK_SECRET.into(),
            },
            &countersign_core::event::Stamp::now("test"),
        )
        .await
        .unwrap();
    store
        .set_slack_connection(
            &SlackConnection {
                project_id: project.clone(),
                bot_token: BOT_TOKEN.into(),
                signing_secret: Some(SIGNING_SECRET.into()),
                default_channel: Some("C1".into()),
                team_id: Some("T1".into()),
                team_name: Some("acme".into()),
                bot_user_id: Some("U1".into()),
                require_known_users: false,
                connected_at: Timestamp::now(),
            },
            &countersign_core::event::Stamp::now("test"),
        )
        .await
        .unwrap();
    store
        .set_twilio_connection(
            &TwilioConnection {
                project_id: project,
                account_sid: "AC0123".into(),
                auth_token: AUTH_TOKEN.into(),
                from: "+15550001111".into(),
                whatsapp_from: None,
                connected_at: Timestamp::now(),
            },
            &countersign_core::event::Stamp::now("test"),
        )
        .await
        .unwrap();
    endpoint.id
}

/// Everything an attacker with the database alone has: the SQLite file with its WAL, or a
/// `pg_dump` of the PostgreSQL database.
async fn dump(dir: &std::path::Path) -> Vec<u8> {
    let url = database_url(dir).await;
    if on_postgres() {
        let out = std::process::Command::new("pg_dump").arg(&url).output().expect("pg_dump is installed");
        assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
        return out.stdout;
    }
    let mut bytes = std::fs::read(dir.join("countersign.db")).unwrap();
    bytes.extend(std::fs::read(dir.join("countersign.db-wal")).unwrap_or_default());
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_database_dump_alone_holds_no_channel_secret_and_another_key_opens_nothing() {
    let s = TestServer::start().await;
    let endpoint = connect_everything(s.store.as_ref()).await;
    // The server made its email link key and receipt signing key at start.
    let link_key = s.store.server_key("email_links", "unused").await.unwrap();
    let signing = s.store.current_signing_key().await.unwrap().expect("a receipt signing key");
    let signing_hex = hex::encode(signing.secret);
    // Read back through the store (with the key), every secret is what was stored.
    assert_eq!(s.store.webhook(&endpoint).await.unwrap().unwrap().secret, WEBHOOK_SECRET);

    let dumped = dump(s.dir.path()).await;
    assert!(contains(&dumped, "hooks.example.com"), "the dump is a real dump of the data");
    for (what, secret) in [
        ("webhook secret", WEBHOOK_SECRET),
        ("Slack bot token", BOT_TOKEN),
        ("Slack signing secret", SIGNING_SECRET),
        ("Twilio auth token", AUTH_TOKEN),
        ("email link key", link_key.as_str()),
        ("receipt signing key", signing_hex.as_str()),
    ] {
        assert!(!contains(&dumped, secret), "the {what} is readable in the database dump");
    }
    assert!(contains(&dumped, "cs-enc:v1:"), "the secrets are there, encrypted");

    // The same database with another master key: the store refuses to open, naming both keys,
    // and so does the binary.
    let url = database_url(s.dir.path()).await;
    let ours = keyring(s.dir.path());
    let other = Keyring::new(MasterKey::generate(), Vec::new());
    let refused = countersign_store::open(&url, other.clone()).await.err().expect("another key is refused");
    let message = refused.to_string();
    assert!(message.contains(ours.current().id()) && message.contains(other.current().id()), "{message}");
    let binary = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["keys", "list", "--data-dir"])
        .arg(s.dir.path())
        .args(["--database-url", &url])
        .env("COUNTERSIGN_MASTER_KEY", other.current().to_base64())
        .output()
        .unwrap();
    assert_eq!(binary.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&binary.stderr);
    assert!(stderr.contains("master key") && stderr.contains(ours.current().id()), "{stderr}");
}

#[tokio::test]
async fn rotating_the_master_key_reencrypts_every_secret_and_keeps_them() {
    let dir = fresh_dir().await;
    let url = database_url(dir.path()).await;
    let before = keyring(dir.path());
    let store = countersign_store::open(&url, before.clone()).await.unwrap();
    store.ensure_project(&countersign_core::ProjectName::parse("alpha").unwrap()).await.unwrap();
    let endpoint = connect_everything(store.as_ref()).await;
    let link_key = store.server_key("email_links", &countersign_core::session::random_text(43)).await.unwrap();
    store.close().await;

    if !on_postgres() {
        // A running server holds the SQLite database: no rotation under it.
        let server = Served::start(dir.path());
        let refused = countersign(dir.path(), &["secrets", "rotate-master-key"]);
        assert_eq!(refused.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&refused.stderr).contains("in use"), "{refused:?}");
        assert!(server.terminate().success());
    }
    if on_postgres() {
        // Instances might still run with the old key: the operator must say none does.
        let refused = countersign(dir.path(), &["secrets", "rotate-master-key"]);
        assert_eq!(refused.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&refused.stderr).contains("--all-instances-stopped"), "{refused:?}");
    }
    let rotated = countersign(dir.path(), &["secrets", "rotate-master-key", "--all-instances-stopped"]);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    let after = keyring(dir.path());
    assert_ne!(after.current().id(), before.current().id());
    assert!(after.older().is_empty(), "the key file keeps the new key alone");
    assert!(
        stdout(&rotated).contains(&format!("{} → {}", before.current().id(), after.current().id())),
        "{}",
        stdout(&rotated)
    );

    // Every stored secret names the new key, and opens to what it was.
    let dumped = dump(dir.path()).await;
    assert!(
        !contains(&dumped, &format!("cs-enc:v1:{}:", before.current().id())),
        "a secret still sealed by the old key"
    );
    let store = countersign_store::open(&url, after.clone()).await.unwrap();
    assert_eq!(store.secrets_resealed(), 0, "the rotation finished the job");
    assert_eq!(store.webhook(&endpoint).await.unwrap().unwrap().secret, WEBHOOK_SECRET);
    let project = store.project_by_name("alpha").await.unwrap().unwrap().id;
    let slack = store.slack_connection(&project).await.unwrap().unwrap();
    assert_eq!((slack.bot_token.as_str(), slack.signing_secret.as_deref()), (BOT_TOKEN, Some(SIGNING_SECRET)));
    assert_eq!(store.twilio_connection(&project).await.unwrap().unwrap().auth_token, AUTH_TOKEN);
    assert_eq!(store.server_key("email_links", "unused").await.unwrap(), link_key);
    store.close().await;
    // The old key alone no longer opens the database.
    assert!(countersign_store::open(&url, before).await.is_err());

    let status = countersign(dir.path(), &["secrets", "status", "--json"]);
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout(&status)).unwrap();
    assert_eq!(report["key_id"], after.current().id());
}
