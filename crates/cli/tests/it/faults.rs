//! Faults with a clear answer: PostgreSQL stopping and coming back under running instances.
//! Runs only on PostgreSQL, in a private cluster of its own (the suite's cluster is shared).

use crate::support::{TestServer, approval, on_postgres};
use reqwest::StatusCode;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A PostgreSQL cluster only this test uses, stopped and removed on drop.
struct PrivateCluster {
    dir: tempfile::TempDir,
    port: u16,
    admin: String,
}

impl PrivateCluster {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-test-cluster")
    }

    fn run(&self, action: &str) -> String {
        let out = Command::new(Self::script())
            .args([action, self.dir.path().join("data").to_str().unwrap()])
            .env("COUNTERSIGN_TEST_PG_PORT", self.port.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "pg-test-cluster {action}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // postgres (the account the script runs the cluster as, under root) must reach the folder.
        Command::new("chmod").args(["755", dir.path().to_str().unwrap()]).status().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cluster = Self { dir, port, admin: String::new() };
        cluster.admin = cluster.run("start");
        cluster
    }

    async fn database(&self) -> String {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.admin).await.unwrap();
        sqlx::query("CREATE DATABASE faults").execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        format!("{}/faults", self.admin.rsplit_once('/').unwrap().0)
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .args(["stop", self.dir.path().join("data").to_str().unwrap()])
            .env("COUNTERSIGN_TEST_PG_PORT", self.port.to_string())
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_answers_503_then_recovers_losing_nothing_and_missing_no_wake() {
    if !on_postgres() {
        eprintln!("skipped: needs PostgreSQL (set COUNTERSIGN_TEST_DATABASE_URL)");
        return;
    }
    let cluster = PrivateCluster::start();
    let url = cluster.database().await;
    let a = Arc::new(TestServer::start_on(&url).await);
    let b = Arc::new(a.another_instance().await);

    for i in 0..20 {
        assert_eq!(a.post("/function_calls", approval(&format!("kept{i}"))).await.0, StatusCode::OK);
    }
    a.post("/function_calls", approval("w")).await;
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.get("/function_calls/w?wait=60").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Load through the outage: every create acknowledged with a 200 must survive it.
    let stop_load = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (a, stop_load) = (a.clone(), stop_load.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut i = 0;
            while !stop_load.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("load{i}");
                let (status, body) = a.post("/function_calls", approval(&id)).await;
                match status {
                    StatusCode::OK => acknowledged.push(id),
                    StatusCode::SERVICE_UNAVAILABLE => assert_eq!(body["error"]["code"], "unavailable"),
                    other => panic!("create during the outage: {other} {body}"),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    cluster.run("stop");
    let during = a.post("/function_calls", approval("during-outage")).await;
    assert_eq!(during.0, StatusCode::SERVICE_UNAVAILABLE, "{}", during.1);
    assert_eq!(during.1["error"]["code"], "unavailable");

    cluster.run("resume");
    // The pool reconnects by itself; decide through A as soon as it answers again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) =
            a.post("/agent/function_calls/w/respond", json!({"approved": true, "comment": "back"})).await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(Instant::now() < deadline, "A did not recover after PostgreSQL came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // B's listener lost its connection; whether the NOTIFY reached it or it re-checked on
    // reconnecting, its waiter must wake with the decision.
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(15), waiter).await.expect("B's waiter never woke").unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"]["comment"], "back");

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_load.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = load.await.unwrap();
    assert!(acknowledged.len() > 10, "the load ran before and after the outage");
    for id in (0..20).map(|i| format!("kept{i}")).chain(acknowledged) {
        let (status, _) = b.get(&format!("/function_calls/{id}")).await;
        assert_eq!(status, StatusCode::OK, "acknowledged create {id} survived the outage");
    }
    let (status, _) = b.get("/function_calls/during-outage").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the refused create was not half-stored");
}
