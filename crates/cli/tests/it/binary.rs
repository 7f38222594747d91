//! The real `countersign` binary: keys commands, first start, serving, SIGTERM, restart.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_countersign");

/// The `--database-url` of a test's data directory, made by [`fresh_dir`].
pub(crate) fn database(data_dir: &std::path::Path) -> String {
    std::fs::read_to_string(data_dir.join("postgres-database-url"))
        .unwrap_or_else(|_| format!("sqlite://{}", data_dir.join("countersign.db").display()))
}

/// A data directory with its database (on PostgreSQL, a fresh one).
pub(crate) async fn fresh_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    crate::support::database_url(dir.path()).await;
    dir
}

pub(crate) fn countersign(data_dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--database-url", &database(data_dir)])
        .env_remove("COUNTERSIGN_DATABASE_URL")
        .env_remove("COUNTERSIGN_DATA_DIR")
        .output()
        .unwrap()
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A `countersign serve` process; its stdout lines up to "Listening on" are kept.
pub(crate) struct Served {
    pub(crate) child: Child,
    addr: String,
    banner: Vec<String>,
}

/// A test that fails leaves no server behind (it would hold the test's output pipe open).
impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    pub(crate) fn start(data_dir: &std::path::Path) -> Self {
        Self::start_with(data_dir, &[], Stdio::inherit())
    }

    /// Starts with these environment variables on top of `COUNTERSIGN_LOG=warn` (which they may
    /// override), the log (stderr) going to `stderr`.
    pub(crate) fn start_with(data_dir: &std::path::Path, env: &[(&str, &str)], stderr: Stdio) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--database-url", &database(data_dir)])
            .env("COUNTERSIGN_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut banner = Vec::new();
        let addr = loop {
            let line = lines.next().expect("serve exited before listening").unwrap();
            if let Some(addr) = line.strip_prefix("Listening on http://") {
                break addr.to_owned();
            }
            banner.push(line);
        };
        // Read the rest of the banner (printed right after) on a thread so the pipe never fills.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        banner.extend(rx.try_iter());
        Self { child, addr, banner }
    }

    /// The lines `serve` printed on stdout (around the listening line).
    pub(crate) fn banner(&self) -> &[String] {
        &self.banner
    }

    /// `GET /humanlayer/v1/function_calls/{call_id}` with `key`, as JSON.
    pub(crate) async fn function_call(&self, key: &str, call_id: &str) -> serde_json::Value {
        let url = self.url(&format!("/humanlayer/v1/function_calls/{call_id}"));
        crate::support::client().get(url).bearer_auth(key).send().await.unwrap().json().await.unwrap()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGTERM and returns the exit status.
    pub(crate) fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "serve did not stop within 10 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test]
async fn keys_are_created_listed_used_and_revoked() {
    let dir = fresh_dir().await;
    let out = countersign(dir.path(), &["keys", "create", "--project", "team-a", "--name", "ci"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let key = text.lines().last().unwrap().to_owned();
    assert!(key.starts_with("cs_") && !key.contains(' '), "the key is alone on the last line: {text}");

    let list = countersign(dir.path(), &["keys", "list", "--json"]);
    assert!(list.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(rows[0]["project"], "team-a");
    assert_eq!(rows[0]["name"], "ci");
    assert!(rows[0]["revoked_at"].is_null());
    assert!(!stdout(&list).contains(&key), "listings never show the secret");
    let table = stdout(&countersign(dir.path(), &["keys", "list"]));
    assert!(table.starts_with("PREFIX") && table.contains("team-a") && table.contains("active"), "{table}");
    if !crate::support::on_postgres() {
        let db = std::fs::read(dir.path().join("countersign.db")).unwrap();
        assert!(!db.windows(key.len()).any(|w| w == key.as_bytes()), "the database holds only the hash");
    }

    let server = Served::start(dir.path());
    assert!(!server.banner.iter().any(|l| l.contains("HUMANLAYER_API_KEY=")), "no new key when one exists");
    let http = crate::support::client();
    let project = http.get(server.url("/humanlayer/v1/project")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(project.status(), 200);
    assert_eq!(project.json::<serde_json::Value>().await.unwrap()["name"], "team-a");

    let prefix = rows[0]["prefix"].as_str().unwrap();
    let revoke = countersign(dir.path(), &["keys", "revoke", prefix]);
    assert!(revoke.status.success(), "{revoke:?}");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let status = http.get(server.url("/humanlayer/v1/project")).bearer_auth(&key).send().await.unwrap().status();
        if status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "a revoked key kept working");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.terminate().success(), "SIGTERM is a clean exit");

    let missing = countersign(dir.path(), &["keys", "revoke", "cs_nothing"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("keys list"), "the error says how to find keys");
    let bad_project = countersign(dir.path(), &["keys", "create", "--project", "Bad Name"]);
    assert_eq!(bad_project.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_project.stderr).contains("lowercase"));
}

#[tokio::test]
async fn a_first_start_prints_a_working_key_and_data_survives_sigterm() {
    let dir = fresh_dir().await;
    let server = Served::start(dir.path());
    let banner = server.banner.join("\n");
    let base =
        banner.lines().find_map(|l| l.trim().strip_prefix("export HUMANLAYER_API_BASE=")).expect(&banner).to_owned();
    let key =
        banner.lines().find_map(|l| l.trim().strip_prefix("export HUMANLAYER_API_KEY=")).expect(&banner).to_owned();
    assert_eq!(base, server.url("/humanlayer/v1"));

    let http = crate::support::client();
    let body = serde_json::json!({"run_id": "r", "call_id": "durable", "spec": {"fn": "f", "kwargs": {"n": 1}}});
    let created = http.post(format!("{base}/function_calls")).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(created.status(), 200);
    assert!(server.terminate().success());

    let server = Served::start(dir.path());
    assert!(!server.banner.iter().any(|l| l.contains("HUMANLAYER_API_KEY=")), "the first key is made once");
    let fetched = http.get(server.url("/humanlayer/v1/function_calls/durable")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.json::<serde_json::Value>().await.unwrap()["spec"]["kwargs"]["n"], 1);
    assert!(server.terminate().success());
}

#[test]
fn help_and_usage_errors_are_clear() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    for word in ["serve", "keys", "--data-dir", "HUMANLAYER_API_BASE"] {
        assert!(text.contains(word), "--help should mention {word}: {text}");
    }
    let wrong = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(wrong.status.code(), Some(2), "usage errors exit 2");
}

/// `--version`, `/healthz` and the build-info metric name the release and the git commit built.
#[tokio::test]
async fn the_version_names_the_commit_it_was_built_from() {
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8(out.stdout).unwrap().trim().to_owned());
    let commit = head.unwrap_or_else(|| "unknown".to_owned());
    let version = Command::new(BIN).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8(version.stdout).unwrap().trim(),
        format!("countersign {} (commit {commit})", env!("CARGO_PKG_VERSION"))
    );

    let dir = fresh_dir().await;
    let server =
        Served::start_with(dir.path(), &[("COUNTERSIGN_METRICS_TOKEN", "a-token-of-sixteen-chars")], Stdio::inherit());
    let http = crate::support::client();
    let health: serde_json::Value = http.get(server.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(health["commit"], commit.as_str());
    let metrics = http
        .get(server.url("/metrics"))
        .bearer_auth("a-token-of-sixteen-chars")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let info = metrics.lines().find(|l| l.starts_with("countersign_build_info{")).expect(&metrics);
    assert!(info.contains(&format!("commit=\"{commit}\"")), "{info}");
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = fresh_dir().await;
    let key =
        stdout(&countersign(dir.path(), &["keys", "create", "--project", "crash"])).lines().last().unwrap().to_owned();
    let mut server = Served::start(dir.path());
    let http = crate::support::client();
    // Concurrent creates so that several share a group commit, and decisions on half of them.
    let creates: Vec<_> = (0..64)
        .map(|i| {
            let (http, url, key) = (http.clone(), server.url("/humanlayer/v1/function_calls"), key.clone());
            tokio::spawn(async move {
                let body = serde_json::json!({"run_id": "r", "call_id": format!("c{i}"), "spec": {"fn": "f", "kwargs": {"i": i}}});
                http.post(url).bearer_auth(key).json(&body).send().await.unwrap().status()
            })
        })
        .collect();
    for create in creates {
        assert_eq!(create.await.unwrap(), 200);
    }
    for i in (0..64).step_by(2) {
        let url = server.url(&format!("/humanlayer/v1/agent/function_calls/c{i}/respond"));
        let status = http
            .post(url)
            .bearer_auth(&key)
            .json(&serde_json::json!({"approved": true}))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
    }
    server.child.kill().unwrap(); // SIGKILL: no graceful shutdown, no chance to flush anything
    server.child.wait().unwrap();

    let server = Served::start(dir.path());
    for i in 0..64 {
        let url = server.url(&format!("/humanlayer/v1/function_calls/c{i}"));
        let got: serde_json::Value = http.get(url).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        assert_eq!(got["spec"]["kwargs"]["i"], i, "create c{i} was acknowledged, so it must survive");
        let expected = if i % 2 == 0 { serde_json::json!(true) } else { serde_json::Value::Null };
        assert_eq!(got["status"]["approved"], expected, "decision on c{i}");
    }
    assert!(server.terminate().success());
}

#[test]
fn an_unreachable_database_is_a_one_line_error_naming_host_port_and_cause() {
    for args in [&["keys", "list"][..], &["serve", "--listen", "127.0.0.1:0"][..]] {
        let out = Command::new(BIN)
            .args(args)
            .args(["--database-url", "postgres://cs@127.0.0.1:1/countersign"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: ") && last.contains("127.0.0.1:1") && last.contains("refused"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_on_one_postgres_act_as_one_server() {
    if !crate::support::on_postgres() {
        eprintln!("skipped: several processes need PostgreSQL (set COUNTERSIGN_TEST_DATABASE_URL)");
        return;
    }
    let dir = fresh_dir().await;
    let key =
        stdout(&countersign(dir.path(), &["keys", "create", "--project", "shared"])).lines().last().unwrap().to_owned();
    let (a, b) = (Served::start(dir.path()), Served::start(dir.path()));
    let http = crate::support::client();
    let body = serde_json::json!({"run_id": "r", "call_id": "both", "spec": {"fn": "f", "kwargs": {}}});
    let created = http.post(a.url("/humanlayer/v1/function_calls")).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(created.status(), 200, "the key made by the CLI works on A");
    let waiter = {
        let (http, url, key) = (http.clone(), b.url("/humanlayer/v1/function_calls/both?wait=30"), key.clone());
        tokio::spawn(async move {
            http.get(url).bearer_auth(key).send().await.unwrap().json::<serde_json::Value>().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let decided = Instant::now();
    let respond = |server: &Served| server.url("/humanlayer/v1/agent/function_calls/both/respond");
    let first = http
        .post(respond(&a))
        .bearer_auth(&key)
        .json(&serde_json::json!({"approved": false, "comment": "via A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let woken = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
    assert_eq!(woken["status"]["comment"], "via A", "B's long-poll woke with A's decision");
    assert!(decided.elapsed() < Duration::from_secs(2));
    let second =
        http.post(respond(&b)).bearer_auth(&key).json(&serde_json::json!({"approved": true})).send().await.unwrap();
    assert_eq!(second.status(), 409, "the loser on the other process gets 409");
    assert!(a.terminate().success() && b.terminate().success());
}

fn countersign_with_stdin(data_dir: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--database-url", &database(data_dir)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// The stored password hash of a user, read straight from the database.
async fn stored_password_hash(data_dir: &std::path::Path, email: &str) -> Option<String> {
    use sqlx::Connection;
    let url = database(data_dir);
    let query = "SELECT password_hash FROM users WHERE email = $1";
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_scalar(query).bind(email).fetch_one(&mut conn).await.unwrap()
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar(query).bind(email).fetch_one(&mut conn).await.unwrap()
    }
}

#[tokio::test]
async fn users_are_created_listed_and_disabled() {
    let dir = fresh_dir().await;
    let password = "correct horse battery staple";
    let args = [
        "users",
        "create",
        "--email",
        "Ada@Example.com",
        "--role",
        "approver",
        "--project",
        "alpha",
        "--project",
        "beta",
        "--password-stdin",
    ];
    let out = countersign_with_stdin(dir.path(), &args, &format!("{password}\n"));
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("approver ada@example.com in alpha, beta"), "{}", stdout(&out));
    let hash = stored_password_hash(dir.path(), "ada@example.com").await.expect("a password was stored");
    assert!(hash.starts_with("$argon2id$") && !hash.contains(password), "stored as an argon2 hash only");

    let out = countersign(
        dir.path(),
        &["users", "create", "--email", "bob@example.com", "--role", "admin", "--project", "beta"],
    );
    assert!(out.status.success());
    let printed = stdout(&out);
    let link = printed.lines().find(|l| l.contains("/set-password?token=csp_")).expect("a set-password link");
    assert!(link.starts_with("http://127.0.0.1:8484/set-password?token=csp_"), "{printed}");
    let again = countersign(dir.path(), &["users", "reset-password", "bob@example.com"]);
    assert!(again.status.success());
    let second = stdout(&again);
    assert!(second.contains("/set-password?token=csp_") && !second.contains(link), "a new link each time: {second}");
    let nobody = countersign(dir.path(), &["users", "reset-password", "nobody@example.com"]);
    assert_eq!(nobody.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("no user with email nobody@example.com"));

    let list = countersign(dir.path(), &["users", "list", "--json"]);
    let users: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(users[0]["email"], "ada@example.com");
    assert_eq!(users[0]["projects"], serde_json::json!(["alpha", "beta"]));
    assert_eq!(users[0]["status"], "active");
    assert_eq!(users[1]["role"], "admin");
    assert_eq!(users[1]["status"], "no password");
    let alpha = countersign(dir.path(), &["users", "list", "--project", "alpha", "--json"]);
    let alpha: serde_json::Value = serde_json::from_slice(&alpha.stdout).unwrap();
    assert_eq!(alpha.as_array().unwrap().len(), 1, "bob is not in alpha");
    let table = stdout(&countersign(dir.path(), &["users", "list"]));
    assert!(table.starts_with("EMAIL") && table.contains("no password"), "{table}");

    let again = countersign(
        dir.path(),
        &["users", "create", "--email", "ada@example.com", "--role", "admin", "--project", "alpha"],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let short = countersign_with_stdin(
        dir.path(),
        &[
            "users",
            "create",
            "--email",
            "c@example.com",
            "--role",
            "approver",
            "--project",
            "alpha",
            "--password-stdin",
        ],
        "short\n",
    );
    assert_eq!(short.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 10"));
    let bad_email = countersign(
        dir.path(),
        &["users", "create", "--email", "not-an-email", "--role", "approver", "--project", "alpha"],
    );
    assert_eq!(bad_email.status.code(), Some(1));
    let bad_role = countersign(
        dir.path(),
        &["users", "create", "--email", "d@example.com", "--role", "owner", "--project", "alpha"],
    );
    assert_eq!(bad_role.status.code(), Some(2), "clap refuses an unknown role");

    let disable = countersign(dir.path(), &["users", "disable", "ADA@example.com"]);
    assert!(disable.status.success(), "{disable:?}");
    let users: serde_json::Value =
        serde_json::from_slice(&countersign(dir.path(), &["users", "list", "--json"]).stdout).unwrap();
    assert_eq!(users[0]["status"], "disabled");
    assert!(users[0]["disabled_at"].is_string());
    let nobody = countersign(dir.path(), &["users", "disable", "nobody@example.com"]);
    assert_eq!(nobody.status.code(), Some(1));
}

#[tokio::test]
async fn projects_email_sets_shows_and_clears_the_default_address() {
    let dir = fresh_dir().await;
    assert!(countersign(dir.path(), &["keys", "create", "--project", "acme"]).status.success());
    let set = countersign(dir.path(), &["projects", "email", "acme", "Team@Example.com"]);
    assert!(set.status.success());
    assert!(stdout(&set).contains("emailed to team@example.com"), "{}", stdout(&set));
    let shown = countersign(dir.path(), &["projects", "email", "acme", "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown, serde_json::json!({"project": "acme", "default_email": "team@example.com"}));
    let bad = countersign(dir.path(), &["projects", "email", "acme", "not-an-address"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not an email address"));
    let cleared = countersign(dir.path(), &["projects", "email", "acme", "--clear"]);
    assert!(stdout(&cleared).contains("has no default email"));
    let missing = countersign(dir.path(), &["projects", "email", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
}

/// `--log-format json` (or `COUNTERSIGN_LOG_FORMAT=json`) writes one JSON object per log line;
/// `/readyz` is 200 while the database answers; a bad format is a usage error.
#[tokio::test]
async fn logs_can_be_json_lines_and_readiness_is_served() {
    let dir = fresh_dir().await;
    let log = dir.path().join("server.log");
    let server = Served::start_with(
        dir.path(),
        &[("COUNTERSIGN_LOG_FORMAT", "json"), ("COUNTERSIGN_LOG", "info")],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let key =
        stdout(&countersign(dir.path(), &["keys", "create", "--project", "logs"])).lines().last().unwrap().to_owned();
    let http = crate::support::client();
    let ready = http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let made = ready.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(made.len() == 16 && made.bytes().all(|b| b.is_ascii_hexdigit()), "a new request id: {made}");
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    let call = serde_json::json!({"run_id": "r", "call_id": "logged", "spec": {"fn": "f", "kwargs": {}}});
    let created = http.post(server.url("/humanlayer/v1/function_calls")).bearer_auth(&key).json(&call).send().await;
    assert_eq!(created.unwrap().status(), 200);
    let decided = http
        .post(server.url("/humanlayer/v1/agent/function_calls/logged/respond"))
        .bearer_auth(&key)
        .header("x-request-id", "agent-trace-42")
        .json(&serde_json::json!({"approved": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 200);
    assert_eq!(decided.headers()["x-request-id"], "agent-trace-42", "the client's id comes back");
    assert!(server.terminate().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(lines.len() >= 2, "{text}");
    assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string()), "{text}");
    assert!(lines.iter().any(|l| l["fields"]["message"] == "pending requests loaded"), "{text}");
    let decisions: Vec<_> = lines.iter().filter(|l| l["fields"]["message"] == "request decided").collect();
    assert_eq!(decisions.len(), 1, "each decision is logged once: {text}");
    let decision = decisions[0];
    assert_eq!(decision["span"]["id"], "agent-trace-42", "under its request id: {decision}");
    assert_eq!(decision["fields"]["call_id"], "logged");
    assert_eq!(decision["fields"]["decision"], "approved");
    assert_eq!(decision["fields"]["channel"], "api", "how");
    assert!(decision["fields"]["by"].as_str().unwrap().starts_with("API key cs_"), "who: {decision}");
    assert!(!text.contains(&key), "the key itself is never logged");

    let bad = Command::new(BIN).args(["keys", "list"]).env("COUNTERSIGN_LOG_FORMAT", "xml").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("use text or json"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
