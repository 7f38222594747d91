//! `countersign migrate`: a SQLite database copied into PostgreSQL serves the same requests to
//! the same keys, its audit chains verify with the same heads, and its secrets open with the
//! same master key. Runs when the suite has PostgreSQL (`COUNTERSIGN_TEST_DATABASE_URL`).

use crate::binary::{Served, countersign, stdout};
use crate::support::on_postgres;
use serde_json::{Value, json};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_sqlite_database_moves_to_postgres_with_keys_requests_audit_and_secrets() {
    if !on_postgres() {
        return;
    }
    // The SQLite side: a data directory without a PostgreSQL marker is SQLite.
    let lite = tempfile::tempdir().unwrap();
    let key =
        stdout(&countersign(lite.path(), &["keys", "create", "--project", "ops"])).lines().last().unwrap().to_owned();
    let hook = countersign(lite.path(), &["webhooks", "add", "--project", "ops", "https://hooks.example.com/in"]);
    assert!(hook.status.success(), "{}", stderr(&hook));
    let server = Served::start(lite.path());
    let http = crate::support::client();
    for i in 0..30 {
        let body = json!({"run_id": "r", "call_id": format!("c{i}"), "spec": {"fn": "pay", "kwargs": {"n": i}}});
        let created =
            http.post(server.url("/humanlayer/v1/function_calls")).bearer_auth(&key).json(&body).send().await.unwrap();
        assert_eq!(created.status(), 200);
    }
    for i in (0..30).step_by(3) {
        let decided = http
            .post(server.url(&format!("/humanlayer/v1/agent/function_calls/c{i}/respond")))
            .bearer_auth(&key)
            .json(&json!({"approved": false, "comment": format!("no {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(decided.status(), 200);
    }
    let from = format!("sqlite://{}", lite.path().join("countersign.db").display());
    let pg_dir = tempfile::tempdir().unwrap();
    let to = crate::support::database_url(pg_dir.path()).await;
    // Not while a server uses the SQLite database.
    let busy = countersign(lite.path(), &["migrate", "--from", &from, "--to", &to]);
    assert_eq!(busy.status.code(), Some(1));
    assert!(stderr(&busy).contains("in use"), "{}", stderr(&busy));
    assert!(server.terminate().success());

    let moved = countersign(lite.path(), &["migrate", "--from", &from, "--to", &to, "--json"]);
    assert!(moved.status.success(), "{}", stderr(&moved));
    let report: Value = serde_json::from_str(&stdout(&moved)).unwrap();
    assert_eq!(report["tables"]["requests"], 30, "{report:#}");
    assert_eq!(report["tables"]["webhook_endpoints"], 1);
    let chains = report["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 1);
    assert_eq!(chains[0]["events"], 42, "the key, the webhook, 30 creates and 10 decisions: {report:#}");

    // Into a database that now holds data: refused, nothing changed.
    let again = countersign(lite.path(), &["migrate", "--from", &from, "--to", &to]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already holds data"), "{}", stderr(&again));

    // Serve PostgreSQL with the SQLite server's master key: the same key reads the same requests.
    std::fs::copy(lite.path().join("master.key"), pg_dir.path().join("master.key")).unwrap();
    let verify = countersign(pg_dir.path(), &["audit", "verify"]);
    assert!(verify.status.success(), "{}{}", stdout(&verify), stderr(&verify));
    let hooks = countersign(pg_dir.path(), &["webhooks", "list", "--json"]);
    assert!(hooks.status.success(), "the copied webhook secret opens: {}", stderr(&hooks));
    let server = Served::start(pg_dir.path());
    for i in 0..30 {
        let got = server.function_call(&key, &format!("c{i}")).await;
        assert_eq!(got["spec"]["kwargs"]["n"], i, "c{i}: {got}");
        if i % 3 == 0 {
            assert_eq!(got["status"]["approved"], false);
            assert_eq!(got["status"]["comment"], format!("no {i}"));
        } else {
            assert_eq!(got["status"]["approved"], Value::Null);
        }
    }
    // New writes go on from there, on PostgreSQL.
    let body = json!({"run_id": "r", "call_id": "after", "spec": {"fn": "pay", "kwargs": {}}});
    let created =
        http.post(server.url("/humanlayer/v1/function_calls")).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(created.status(), 200);
    // The new event is sealed onto the copied chain (by the sealer, shortly after the write).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let chains = loop {
        let verify = countersign(pg_dir.path(), &["audit", "verify", "--json"]);
        assert!(verify.status.success(), "{}{}", stdout(&verify), stderr(&verify));
        let chains: Value = serde_json::from_str(&stdout(&verify)).unwrap();
        if chains[0]["unsealed"] == 0 || std::time::Instant::now() > deadline {
            break chains;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(chains[0]["count"], 43, "the chain goes on after the copied events: {chains:#}");
    assert!(server.terminate().success());
}
