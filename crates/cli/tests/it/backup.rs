//! `countersign backup` while the server is under load, and `countersign restore`: the restored
//! database holds every write acknowledged before the backup began, its audit chain verifies,
//! and keys keep working. A restore refuses a database a server is using, and keeps (moves
//! aside) one it replaces.

use crate::binary::{Served, countersign, fresh_dir, stdout};
use crate::support::on_postgres;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A write the server acknowledged: a create of `call_id` (with kwargs `n`), and whether its
/// approval was acknowledged too.
#[derive(Clone, Debug)]
struct Acked {
    call_id: String,
    n: u64,
    approved: bool,
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_every_write_acknowledged_before_it() {
    let dir = fresh_dir().await;
    if on_postgres() {
        return the_documented_pg_dump_and_pg_restore_keep_requests_audit_chain_and_keys(dir).await;
    }
    let key =
        stdout(&countersign(dir.path(), &["keys", "create", "--project", "ops"])).lines().last().unwrap().to_owned();
    let server = Served::start(dir.path());
    let http = crate::support::client();
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..8u64 {
        let (http, key, acked, stop) = (http.clone(), key.clone(), acked.clone(), stop.clone());
        let base = server.url("/humanlayer/v1");
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let call_id = format!("w{worker}-{n}");
                let body = json!({"run_id": "load", "call_id": call_id, "spec": {"fn": "pay", "kwargs": {"n": n}}});
                let created = http.post(format!("{base}/function_calls")).bearer_auth(&key).json(&body).send().await;
                if !matches!(&created, Ok(r) if r.status() == 200) {
                    continue;
                }
                let index = {
                    let mut acked = acked.lock().unwrap();
                    acked.push(Acked { call_id: call_id.clone(), n, approved: false });
                    acked.len() - 1
                };
                if n.is_multiple_of(2) {
                    let decided = http
                        .post(format!("{base}/agent/function_calls/{call_id}/respond"))
                        .bearer_auth(&key)
                        .json(&json!({"approved": true, "comment": "ok"}))
                        .send()
                        .await;
                    if matches!(&decided, Ok(r) if r.status() == 200) {
                        acked.lock().unwrap()[index].approved = true;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;

    // What was acknowledged before the backup began must all be in it.
    let before: Vec<Acked> = acked.lock().unwrap().clone();
    let file = dir.path().join("backup.db");
    let (data_dir, target) = (dir.path().to_owned(), file.clone());
    let out = tokio::task::spawn_blocking(move || countersign(&data_dir, &["backup", target.to_str().unwrap()]))
        .await
        .unwrap();
    assert!(out.status.success(), "backup failed: {}", stderr(&out));
    assert!(stdout(&out).contains("Backed up"), "{}", stdout(&out));
    let during = acked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let total = acked.lock().unwrap().len();
    assert!(before.len() > 50, "the load made only {} requests before the backup", before.len());
    assert!(total > during, "the server went on acknowledging writes after the backup");
    assert!(before.iter().any(|a| a.approved), "decisions were acknowledged before the backup");

    // A server holds the database: a restore onto it is refused, and the database is untouched.
    let refused = countersign(dir.path(), &["restore", file.to_str().unwrap(), "--replace"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("in use by a running"), "{}", stderr(&refused));
    // Writing over an existing backup is refused too.
    let again = countersign(dir.path(), &["backup", file.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already exists"), "{}", stderr(&again));
    assert!(server.terminate().success());

    // Restore into a new data directory and serve it.
    let elsewhere = tempfile::tempdir().unwrap();
    let restored = countersign(elsewhere.path(), &["restore", file.to_str().unwrap()]);
    assert!(restored.status.success(), "restore failed: {}", stderr(&restored));
    // The secrets need the master key, which is not in the backup: the restore says so.
    let key_id = crate::support::keyring(dir.path()).current().id().to_owned();
    assert!(stdout(&restored).contains(&format!("master key {key_id}: copy the key file")), "{}", stdout(&restored));
    assert!(!elsewhere.path().join("master.key").exists(), "restore makes no key of its own");
    std::fs::copy(dir.path().join("master.key"), elsewhere.path().join("master.key")).unwrap();
    let verify = countersign(elsewhere.path(), &["audit", "verify"]);
    assert!(verify.status.success(), "audit verify on the restored database: {}{}", stdout(&verify), stderr(&verify));
    let server = Served::start(elsewhere.path());
    for a in &before {
        let got = server.function_call(&key, &a.call_id).await;
        assert_eq!(got["spec"]["kwargs"]["n"], a.n, "{} was acknowledged before the backup: {got}", a.call_id);
        if a.approved {
            assert_eq!(got["status"]["approved"], true, "{}'s approval was acknowledged before the backup", a.call_id);
        }
    }
    assert!(server.terminate().success());

    // Restoring over the original database: refused without --replace, kept aside with it.
    let kept = countersign(dir.path(), &["restore", file.to_str().unwrap()]);
    assert_eq!(kept.status.code(), Some(1));
    assert!(stderr(&kept).contains("--replace"), "{}", stderr(&kept));
    let replaced = countersign(dir.path(), &["restore", file.to_str().unwrap(), "--replace"]);
    assert!(replaced.status.success(), "{}", stderr(&replaced));
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|name| name.starts_with("countersign.db.before-restore-"))
        .expect("the replaced database is kept");
    // The database moved aside holds everything, the writes after the backup included.
    let aside_url = format!("sqlite://{}", dir.path().join(&aside).display());
    let conn = sqlx::SqlitePool::connect(&aside_url).await.unwrap();
    let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM requests").fetch_one(&conn).await.unwrap();
    conn.close().await;
    assert_eq!(count as usize, total, "the database moved aside lost writes");
}

#[tokio::test]
async fn a_restore_refuses_what_is_not_a_countersign_backup() {
    if on_postgres() {
        return;
    }
    let dir = fresh_dir().await;
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"not a database at all, just some bytes that are long enough").unwrap();
    let out = countersign(dir.path(), &["restore", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a Countersign database"), "{}", stderr(&out));
    let missing = countersign(dir.path(), &["restore", dir.path().join("nothing.db").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no database file"), "{}", stderr(&missing));
    assert!(!dir.path().join("countersign.db").exists(), "nothing was restored");
}

/// On PostgreSQL, `backup` points to pg_dump; the README's pg_dump/pg_restore commands give a
/// database that serves the same requests with the same keys, its audit chain intact.
async fn the_documented_pg_dump_and_pg_restore_keep_requests_audit_chain_and_keys(dir: tempfile::TempDir) {
    let out = countersign(dir.path(), &["backup", dir.path().join("b.db").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("pg_dump"), "{}", stderr(&out));

    let key =
        stdout(&countersign(dir.path(), &["keys", "create", "--project", "ops"])).lines().last().unwrap().to_owned();
    let server = Served::start(dir.path());
    let http = crate::support::client();
    for i in 0..20 {
        let body = json!({"run_id": "r", "call_id": format!("c{i}"), "spec": {"fn": "pay", "kwargs": {"n": i}}});
        let created =
            http.post(server.url("/humanlayer/v1/function_calls")).bearer_auth(&key).json(&body).send().await.unwrap();
        assert_eq!(created.status(), 200);
    }
    let approved = http
        .post(server.url("/humanlayer/v1/agent/function_calls/c3/respond"))
        .bearer_auth(&key)
        .json(&json!({"approved": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);

    // pg_dump while serving, as the README says.
    let source = crate::binary::database(dir.path());
    let dump = dir.path().join("countersign.dump");
    let dumped = std::process::Command::new("pg_dump")
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .arg(&source)
        .output()
        .expect("pg_dump is installed with the PostgreSQL client");
    assert!(dumped.status.success(), "pg_dump: {}", stderr(&dumped));
    assert!(server.terminate().success());

    let elsewhere = tempfile::tempdir().unwrap();
    let target = crate::support::database_url(elsewhere.path()).await;
    let restored =
        std::process::Command::new("pg_restore").args(["--no-owner", "--dbname", &target]).arg(&dump).output().unwrap();
    assert!(restored.status.success(), "pg_restore: {}", stderr(&restored));
    // Without the master key, a command on the restored database says where the key must go.
    let keyless = countersign(elsewhere.path(), &["audit", "verify"]);
    assert_eq!(keyless.status.code(), Some(1));
    assert!(stderr(&keyless).contains("no key file"), "{}", stderr(&keyless));
    assert!(!elsewhere.path().join("master.key").exists(), "no key of its own is made for it");
    std::fs::copy(dir.path().join("master.key"), elsewhere.path().join("master.key")).unwrap();
    let verify = countersign(elsewhere.path(), &["audit", "verify"]);
    assert!(verify.status.success(), "audit verify: {}{}", stdout(&verify), stderr(&verify));
    let server = Served::start(elsewhere.path());
    for i in 0..20 {
        let got = server.function_call(&key, &format!("c{i}")).await;
        assert_eq!(got["spec"]["kwargs"]["n"], i, "c{i}: {got}");
        let approved = if i == 3 { json!(true) } else { Value::Null };
        assert_eq!(got["status"]["approved"], approved, "c{i}");
    }
    assert!(server.terminate().success());
}
