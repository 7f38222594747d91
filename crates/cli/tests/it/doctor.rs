//! `countersign doctor`: every check passes on a healthy deployment (exit 0), and each broken
//! part (SMTP, the master key, a revoked Slack token, a refused Twilio account, an unreachable
//! public URL) is a failed check with its fix (exit 1). It changes nothing.

use crate::binary::{Served, countersign, fresh_dir, stdout};
use crate::support::{database_url, keyring, on_postgres};
use countersign_core::Timestamp;
use countersign_store::secrets::MasterKey;
use countersign_store::{SlackConnection, TwilioConnection};
use serde_json::Value;

/// Runs `countersign doctor --json` on `dir` with these environment variables and flags.
/// (Asynchronously: the fake Slack and Twilio answer on this test's runtime meanwhile.)
async fn doctor(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, Value) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["doctor", "--json", "--data-dir"])
        .arg(dir)
        .args(["--database-url", &crate::binary::database(dir)])
        .args(args)
        .env_remove("COUNTERSIGN_DATABASE_URL")
        .env_remove("COUNTERSIGN_DATA_DIR")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("doctor printed no JSON ({e}): {}{}", stdout(&out), String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code(), report)
}

/// The checks named `name`.
fn checks<'a>(report: &'a Value, name: &str) -> Vec<&'a Value> {
    report["checks"].as_array().unwrap().iter().filter(|c| c["check"] == name).collect()
}

fn status(report: &Value, name: &str) -> String {
    let found = checks(report, name);
    assert_eq!(found.len(), 1, "one {name} check: {report:#}");
    found[0]["status"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_doctor_passes_a_healthy_server_and_changes_nothing() {
    let dir = fresh_dir().await;
    assert!(countersign(dir.path(), &["keys", "create", "--project", "ops"]).status.success());
    let server = Served::start(dir.path());
    let modified = |p: &std::path::Path| std::fs::metadata(p).ok().and_then(|m| m.modified().ok());
    let key_file = dir.path().join("master.key");
    let key_before = modified(&key_file);

    let (code, report) = doctor(dir.path(), &[], &["--url", &server.url("")]).await;
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["ok"], true);
    for name in ["config", "database", "master key", "public url"] {
        assert_eq!(status(&report, name), "ok", "{name}: {report:#}");
    }
    assert!(["ok", "warn"].contains(&status(&report, "disk").as_str()), "{report:#}");
    assert_eq!(status(&report, "clock"), if on_postgres() { "ok" } else { "skip" }, "{report:#}");
    for name in ["smtp", "slack", "twilio"] {
        assert_eq!(status(&report, name), "skip", "nothing configured for {name}: {report:#}");
    }
    let database = &checks(&report, "database")[0]["detail"];
    assert!(database.as_str().unwrap().contains("(current)"), "{database}");
    assert_eq!(modified(&key_file), key_before, "the doctor does not touch the key file");
    assert!(server.terminate().success());

    // A data directory without a database: nothing is created.
    let empty = tempfile::tempdir().unwrap();
    if !on_postgres() {
        let (code, report) = doctor(empty.path(), &[], &["--url", "http://127.0.0.1:1"]).await;
        assert_eq!(code, Some(1));
        assert_eq!(status(&report, "database"), "fail", "{report:#}");
        assert!(!empty.path().join("countersign.db").exists() && !empty.path().join("master.key").exists());
    }
}

#[tokio::test]
async fn the_doctor_names_each_broken_part_with_its_fix() {
    let dir = fresh_dir().await;
    assert!(countersign(dir.path(), &["keys", "create", "--project", "ops"]).status.success());
    let slack = countersign_fakes::slack::FakeSlack::start().await;
    let twilio = countersign_fakes::twilio::FakeTwilio::start().await;
    twilio.only_accept("AC-good", "the-right-token");
    {
        let store = countersign_store::open(&database_url(dir.path()).await, keyring(dir.path())).await.unwrap();
        let project = store.project_by_name("ops").await.unwrap().unwrap().id;
        store
            .set_slack_connection(
                &SlackConnection {
                    project_id: project.clone(),
                    bot_token: "xoxb-revoked".into(),
                    signing_secret: Some("s".into()),
                    default_channel: None,
                    team_id: None,
                    team_name: None,
                    bot_user_id: None,
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
                    account_sid: "AC-good".into(),
                    auth_token: "a-stale-token".into(),
                    from: "+15550001111".into(),
                    whatsapp_from: None,
                    connected_at: Timestamp::now(),
                },
                &countersign_core::event::Stamp::now("test"),
            )
            .await
            .unwrap();
        store.close().await;
    }
    slack.revoke_token("xoxb-revoked");
    let env = [
        ("COUNTERSIGN_SMTP_URL", "smtp://127.0.0.1:1"),
        ("COUNTERSIGN_SLACK_API_BASE", &slack.base()),
        ("COUNTERSIGN_TWILIO_API_BASE", &twilio.base()),
    ];
    let (code, report) = doctor(dir.path(), &env, &["--url", "http://127.0.0.1:1"]).await;
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["ok"], false);
    for name in ["smtp", "slack", "twilio", "public url"] {
        let check = checks(&report, name)[0];
        assert_eq!(check["status"], "fail", "{name}: {report:#}");
        assert!(check["fix"].as_str().is_some_and(|f| !f.is_empty()), "{name} says how to fix it: {check}");
    }
    assert!(checks(&report, "slack")[0]["detail"].as_str().unwrap().contains("invalid_auth"), "{report:#}");
    assert!(checks(&report, "slack")[0]["fix"].as_str().unwrap().contains("slack connect --project ops"));
    assert_eq!(status(&report, "database"), "ok");
    assert_eq!(status(&report, "master key"), "ok");

    // The same database with another master key: the key check fails, naming both ids.
    let other = MasterKey::generate();
    let (code, report) =
        doctor(dir.path(), &[("COUNTERSIGN_MASTER_KEY", &other.to_base64())], &["--url", "http://127.0.0.1:1"]).await;
    assert_eq!(code, Some(1));
    let key = checks(&report, "master key")[0];
    assert_eq!(key["status"], "fail");
    let detail = key["detail"].as_str().unwrap();
    assert!(detail.contains(other.id()) && detail.contains(keyring(dir.path()).current().id()), "{detail}");
    assert_eq!(status(&report, "slack"), "skip", "channels are not read with a wrong key: {report:#}");

    // The text form says the same, with a fix line under each failure.
    let text = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["doctor", "--url", "http://127.0.0.1:1", "--data-dir"])
        .arg(dir.path())
        .args(["--database-url", &crate::binary::database(dir.path())])
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    assert_eq!(text.status.code(), Some(1));
    let printed = stdout(&text);
    assert!(printed.contains("FAIL  smtp") && printed.contains("fix: "), "{printed}");
}
