//! The packaging files: systemd accepts the unit as written (with the binary under test in
//! place of the installed one), and the Containerfile's health check and entry point are
//! commands the binary has.

use std::process::Command;

#[test]
fn systemd_accepts_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: the unit is not checked");
        return;
    };
    assert!(version.status.success());
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/countersign.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/countersign "), "the unit runs the installed binary");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("countersign.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/countersign", env!("CARGO_BIN_EXE_countersign"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {complaints}");
    assert!(
        !complaints.lines().any(|l| l.contains("countersign.service")),
        "systemd has remarks on the unit: {complaints}"
    );
}

#[test]
fn the_container_runs_commands_the_binary_has() {
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/Containerfile")).unwrap();
    assert!(file.contains(r#"CMD ["countersign", "health", "--timeout", "4"]"#), "the health check");
    assert!(file.contains(r#"ENTRYPOINT ["countersign"]"#) && file.contains(r#"CMD ["serve"]"#));
    assert!(file.contains("USER countersign"), "it runs unprivileged");
    for args in [&["health", "--help"][..], &["serve", "--help"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_countersign")).args(args).output().unwrap();
        assert!(out.status.success(), "countersign {args:?}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_countersign")).args(["health", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--timeout"));
}

#[tokio::test]
async fn health_says_ready_or_not_with_its_exit_code() {
    let dir = crate::binary::fresh_dir().await;
    let server = crate::binary::Served::start(dir.path());
    let bin = env!("CARGO_BIN_EXE_countersign");
    let ready = tokio::process::Command::new(bin).args(["health", "--url", &server.url("")]).output().await.unwrap();
    assert_eq!(ready.status.code(), Some(0), "{ready:?}");
    assert!(String::from_utf8_lossy(&ready.stdout).starts_with("ready: "), "{ready:?}");
    assert!(server.terminate().success());
    let down = tokio::process::Command::new(bin)
        .args(["health", "--timeout", "2", "--url", "http://127.0.0.1:1"])
        .output()
        .await
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("is the server running?"), "{down:?}");
}

#[test]
fn config_show_masks_every_secret_and_prints_what_is_in_effect() {
    let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["config", "show", "--json"])
        .env("COUNTERSIGN_DATABASE_URL", "postgres://cs:hunter2-db@db.internal:5432/cs")
        .env("COUNTERSIGN_SMTP_URL", "smtp://mailer:hunter2-smtp@mail.internal:587")
        .env("COUNTERSIGN_METRICS_TOKEN", "hunter2-metrics-token-long")
        .env("COUNTERSIGN_MASTER_KEY", "aHVudGVyMi1tYXN0ZXIta2V5LWFhYWFhYWFhYWFhYWE=")
        .env("COUNTERSIGN_MAX_JSON_DEPTH", "12")
        .env_remove("COUNTERSIGN_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("hunter2") && !text.contains("aHVudGVy"), "a secret is shown: {text}");
    let shown: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(shown["database_url"], "postgres://cs:***@db.internal:5432/cs");
    assert_eq!(shown["smtp_url"], "smtp://mailer:***@mail.internal:587");
    assert_eq!(shown["metrics_token"], "***");
    assert_eq!(shown["master_key"], "***");
    assert_eq!(shown["limits"]["max_json_depth"], 12, "the environment's layer is in effect");
    let toml = Command::new(env!("CARGO_BIN_EXE_countersign")).args(["config", "show"]).output().unwrap();
    assert!(String::from_utf8_lossy(&toml.stdout).contains("[limits]"), "TOML by default");
}
