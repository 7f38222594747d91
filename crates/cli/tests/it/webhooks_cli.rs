//! `countersign webhooks ...`: the real binary managing endpoints on the database directly.

use serde_json::Value;
use std::process::{Command, Output};

/// A test's database (SQLite in a temporary directory, or a fresh PostgreSQL database).
struct Db {
    dir: tempfile::TempDir,
    url: String,
}

impl Db {
    async fn fresh() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::support::database_url(dir.path()).await;
        Self { dir, url }
    }

    /// Runs `countersign ARGS` on this database.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_countersign"));
        command
            .args(args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["--database-url", &self.url])
            .env_remove("COUNTERSIGN_DATABASE_URL")
            .env_remove("COUNTERSIGN_DATA_DIR")
            .env_remove("COUNTERSIGN_ALLOW_PRIVATE_WEBHOOK_TARGETS");
        command
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "countersign {args:?} failed: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail with `code`; returns its stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(code), "countersign {args:?}: {out:?}");
        String::from_utf8(out.stderr).unwrap()
    }
}

#[tokio::test]
async fn an_endpoint_is_added_with_a_secret_shown_once_then_listed_without_it() {
    let db = Db::fresh().await;
    let text = db.ok(&["webhooks", "add", "--project", "billing", "https://hooks.example.com/cs"]);
    let secret = text.lines().last().unwrap();
    assert!(secret.starts_with("whsec_") && !secret.contains(' '), "the secret is alone on the last line: {text}");
    assert!(text.contains("shown only this once"), "{text}");
    for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert!(text.contains(header), "says how receivers verify: {text}");
    }
    assert!(text.contains("function_call.completed, human_contact.completed") && text.contains("v1beta2"), "{text}");
    let id = text.split_whitespace().find(|w| w.starts_with("wh_")).expect("prints the id").to_owned();

    let table = db.ok(&["webhooks", "list"]);
    assert!(table.starts_with("ID") && table.contains("CREATED (UTC)"), "{table}");
    let row = table.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("{id} listed: {table}"));
    for cell in
        ["billing", "https://hooks.example.com/cs", "function_call.completed,human_contact.completed", "v1beta2"]
    {
        assert!(row.contains(cell), "{cell} in {row}");
    }
    let listed: Value = serde_json::from_str(&db.ok(&["webhooks", "list", "--project", "billing", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["project"], "billing");
    assert_eq!(listed[0]["url"], "https://hooks.example.com/cs");
    assert!(listed[0].get("secret").is_none());
    for listing in [&table, &listed.to_string()] {
        assert!(!listing.contains(secret) && !listing.contains("whsec_"), "listings never show the secret");
    }

    let other: Value = serde_json::from_str(&db.ok(&[
        "webhooks",
        "add",
        "https://hooks.example.com/all",
        "--events",
        "all",
        "--format",
        "legacy",
        "--json",
    ]))
    .unwrap();
    assert!(other["secret"].as_str().unwrap().starts_with("whsec_"), "--json includes the secret: {other}");
    assert_eq!(other["project"], "default");
    assert_eq!(other["events"].as_array().unwrap().len(), 6);
    assert_eq!(other["format"], "legacy");
    let billing_only = db.ok(&["webhooks", "list", "--project", "billing"]);
    assert!(!billing_only.contains("hooks.example.com/all"), "{billing_only}");
    assert!(db.ok(&["webhooks", "list"]).contains(" all "), "every event shows as `all`");
    assert!(db.fails(&["webhooks", "list", "--project", "nope"], 1).contains("no project named \"nope\""));
}

#[tokio::test]
async fn bad_input_is_refused_with_the_rule() {
    let db = Db::fresh().await;
    let url = "https://hooks.example.com/cs";
    let events = db.fails(&["webhooks", "add", url, "--project", "typo", "--events", "nope"], 1);
    assert!(events.contains("events: \"nope\" is not an event"), "{events}");
    let typo = db.fails(&["webhooks", "list", "--project", "typo"], 1);
    assert!(typo.contains("no project named \"typo\""), "a refused endpoint leaves no project behind: {typo}");
    for name in ["function_call.created", "function_call.completed", "human_contact.escalated"] {
        assert!(events.contains(name), "names the valid events: {events}");
    }
    let format = db.fails(&["webhooks", "add", url, "--format", "xml"], 2);
    assert!(format.contains("xml") && format.contains("v1beta2") && format.contains("legacy"), "{format}");
    for bad in ["ftp://hooks.example.com/cs", "hooks.example.com/cs"] {
        let err = db.fails(&["webhooks", "add", bad], 1);
        assert!(err.contains("url: "), "names the field: {err}");
    }
    db.fails(&["webhooks", "add"], 2);
    assert!(db.ok(&["webhooks", "list"]).starts_with("No webhook endpoints."), "nothing was added");
}

#[tokio::test]
async fn private_targets_are_refused_unless_the_configuration_allows_them() {
    let db = Db::fresh().await;
    for (url, reason) in [
        ("http://169.254.169.254/latest/meta-data/", "link-local address (169.254.169.254)"),
        ("http://localhost:9000/hook", "loopback address (localhost)"),
        ("http://2130706433/hook", "loopback address (127.0.0.1)"),
        ("http://[::1]/hook", "loopback address (::1)"),
    ] {
        let err = db.fails(&["webhooks", "add", url, "--project", "ops"], 1);
        assert!(err.contains("url: ") && err.contains(reason), "{url}: {err}");
        assert!(err.contains("COUNTERSIGN_ALLOW_PRIVATE_WEBHOOK_TARGETS"), "names the opt-in: {err}");
    }
    assert!(db.ok(&["webhooks", "list"]).starts_with("No webhook endpoints."), "nothing was added");
    let out = db
        .command(&["webhooks", "add", "http://127.0.0.1:9000/hook", "--project", "ops"])
        .env("COUNTERSIGN_ALLOW_PRIVATE_WEBHOOK_TARGETS", "true")
        .output()
        .unwrap();
    assert!(out.status.success(), "allowed by the configuration: {out:?}");
    assert!(db.ok(&["webhooks", "list"]).contains("http://127.0.0.1:9000/hook"));
}

#[tokio::test]
async fn a_removed_endpoint_is_no_longer_listed() {
    let db = Db::fresh().await;
    let added: Value =
        serde_json::from_str(&db.ok(&["webhooks", "add", "https://hooks.example.com/cs", "--json"])).unwrap();
    let id = added["id"].as_str().unwrap();
    assert!(db.ok(&["webhooks", "remove", id]).contains(&format!("Removed webhook endpoint {id}")));
    assert!(db.ok(&["webhooks", "list"]).starts_with("No webhook endpoints."));
    assert_eq!(db.ok(&["webhooks", "list", "--json"]).trim(), "[]");
    let again = db.fails(&["webhooks", "remove", id], 1);
    assert!(again.contains("no webhook endpoint") && again.contains(id), "{again}");
    db.fails(&["webhooks", "remove", "wh_nothing"], 1);
}

#[tokio::test]
async fn the_delivery_log_of_a_new_endpoint_is_empty_and_unknown_ids_are_errors() {
    let db = Db::fresh().await;
    let added: Value =
        serde_json::from_str(&db.ok(&["webhooks", "add", "https://hooks.example.com/cs", "--json"])).unwrap();
    let id = added["id"].as_str().unwrap();
    let empty = db.ok(&["webhooks", "deliveries", id]);
    assert!(empty.starts_with("No deliveries yet"), "{empty}");
    assert_eq!(db.ok(&["webhooks", "deliveries", id, "--limit", "5", "--json"]).trim(), "[]");
    db.fails(&["webhooks", "deliveries", id, "--limit", "0"], 2);

    let unknown = db.fails(&["webhooks", "deliveries", "wh_nothing"], 1);
    assert!(unknown.contains("no webhook endpoint \"wh_nothing\""), "{unknown}");
    let unknown = db.fails(&["webhooks", "attempts", "msg_nothing"], 1);
    assert!(unknown.contains("no webhook delivery \"msg_nothing\""), "{unknown}");
    let unknown = db.fails(&["webhooks", "redeliver", "msg_nothing"], 1);
    assert!(unknown.contains("no webhook delivery \"msg_nothing\""), "{unknown}");
}

#[test]
fn the_help_shows_examples_and_the_events() {
    let out = Command::new(env!("CARGO_BIN_EXE_countersign")).args(["webhooks", "add", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("Examples:") && help.contains("human_contact.escalated"), "{help}");
    let out = Command::new(env!("CARGO_BIN_EXE_countersign")).args(["webhooks", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for command in ["add", "list", "remove", "deliveries", "attempts", "redeliver"] {
        assert!(help.contains(command), "{command} in {help}");
    }
}
