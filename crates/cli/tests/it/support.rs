//! Shared fixtures: a server per test on a fresh data directory, and a JSON client that checks
//! every answer is JSON.

use countersign_core::ProjectName;
use countersign_core::api_key;
use countersign_server::{Server, Settings};
use countersign_store::{NewApiKey, Store};
use reqwest::StatusCode;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    pub dir: TempDir,
    pub addr: SocketAddr,
    /// A key of project `alpha`.
    pub key: String,
    /// A key of project `beta`, to check isolation.
    pub other_key: String,
    pub http: reqwest::Client,
    /// The server's store, to set up people and inspect what is stored.
    pub store: Arc<dyn Store>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

pub async fn create_key(store: &dyn Store, project: &str) -> String {
    create_scoped_key(store, project, countersign_core::api_key::Scopes::all()).await
}

/// A key of `project` (created if needed) with these scopes.
pub async fn create_scoped_key(store: &dyn Store, project: &str, scopes: countersign_core::api_key::Scopes) -> String {
    create_owned_key(store, project, scopes, None).await
}

/// A key of `project` with these scopes, acting for `owner` (separation of duties).
pub async fn create_owned_key(
    store: &dyn Store,
    project: &str,
    scopes: countersign_core::api_key::Scopes,
    owner: Option<&str>,
) -> String {
    let project = store.ensure_project(&ProjectName::parse(project).unwrap()).await.unwrap();
    let key = api_key::generate();
    store
        .insert_api_key(
            NewApiKey {
                project_id: project.id,
                name: None,
                display_prefix: key.display_prefix,
                hash: key.hash,
                scopes,
                owner: owner.map(str::to_owned),
            },
            &countersign_core::event::Stamp::now("test"),
        )
        .await
        .unwrap();
    key.secret
}

/// An HTTP client builder. The CLI's reqwest has rustls without a built-in crypto provider, so
/// every client in this process needs ring installed as the default first.
pub fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// An HTTP client (see [`client_builder`]).
pub fn client() -> reqwest::Client {
    client_builder().build().unwrap()
}

/// The admin URL of a PostgreSQL server to test against; unset means SQLite.
pub const PG_ENV: &str = "COUNTERSIGN_TEST_DATABASE_URL";

/// True when the suite runs on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var(PG_ENV).is_ok_and(|u| !u.is_empty())
}

/// A database for one test: a fresh PostgreSQL database when [`PG_ENV`] is set, else a SQLite
/// file in `dir`. Calling it again with the same `dir` returns the same database.
pub async fn database_url(dir: &std::path::Path) -> String {
    let Some(admin) = std::env::var(PG_ENV).ok().filter(|u| !u.is_empty()) else {
        return format!("sqlite://{}", dir.join("countersign.db").display());
    };
    let marker = dir.join("postgres-database-url");
    if let Ok(url) = std::fs::read_to_string(&marker) {
        return url;
    }
    use sqlx::Connection;
    let name = format!("cs_test_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("cannot reach the test PostgreSQL server");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let base = admin.rsplit_once('/').map(|(base, _)| base).unwrap_or(&admin);
    let url = format!("{base}/{name}");
    std::fs::write(&marker, &url).unwrap();
    url
}

/// The default settings with `limits.allow_private_webhook_targets` on: the tests' webhook
/// receivers listen on 127.0.0.1.
pub fn loopback_webhooks() -> Settings {
    let mut settings = Settings::default();
    settings.limits.allow_private_webhook_targets = true;
    settings
}

/// The master keys of a test's data directory (its `master.key`, created on first use), as
/// `countersign` commands on that directory read them.
pub fn keyring(dir: &std::path::Path) -> countersign_store::secrets::Keyring {
    countersign_store::secrets::data_dir_keyring(dir).unwrap().0
}

async fn db_url(dir: &TempDir) -> String {
    database_url(dir.path()).await
}

impl TestServer {
    /// A fresh server with the default settings, except that webhooks may target loopback (the
    /// tests' receivers); [`Self::start_with`] takes the settings as they are.
    pub async fn start() -> Self {
        Self::start_with(loopback_webhooks()).await
    }

    /// A fresh server with custom settings.
    pub async fn start_with(settings: Settings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = countersign_store::open(&db_url(&dir).await, keyring(dir.path())).await.unwrap();
        let key = create_key(store.as_ref(), "alpha").await;
        let other_key = create_key(store.as_ref(), "beta").await;
        Self::launch(dir, store, key, other_key, settings).await
    }

    async fn launch(dir: TempDir, store: Arc<dyn Store>, key: String, other_key: String, settings: Settings) -> Self {
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), store.clone(), settings).await.unwrap();
        let server = server.mount(countersign_mcp::http::router);
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self { dir, addr, key, other_key, http: client(), store, stop: Some(stop), task: Some(task) }
    }

    /// Creates an approver with this password in these projects (created if new); returns their id.
    pub async fn person(&self, email: &str, password: &str, projects: &[&str]) -> String {
        self.person_as(countersign_core::Role::Approver, email, password, projects).await
    }

    /// Creates a person with this role and password in these projects (created if new); returns
    /// their id.
    pub async fn person_as(
        &self,
        role: countersign_core::Role,
        email: &str,
        password: &str,
        projects: &[&str],
    ) -> String {
        let mut ids = Vec::new();
        for name in projects {
            ids.push(self.store.ensure_project(&ProjectName::parse(name).unwrap()).await.unwrap().id);
        }
        let email = countersign_core::Email::parse(email).unwrap();
        let hash = countersign_core::user::hash_password(password).unwrap();
        let user = self
            .store
            .create_user(&email, role, Some(&hash), &ids, &countersign_core::event::Stamp::now("test"))
            .await
            .unwrap();
        user.expect("a new email").id
    }

    /// A server on the database `url` names (e.g. one in a private PostgreSQL cluster).
    pub async fn start_on(url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postgres-database-url"), url).unwrap();
        let store = countersign_store::open(url, keyring(dir.path())).await.unwrap();
        let key = create_key(store.as_ref(), "alpha").await;
        let other_key = create_key(store.as_ref(), "beta").await;
        Self::launch(dir, store, key, other_key, loopback_webhooks()).await
    }

    /// A second instance on the same PostgreSQL database (keys and requests shared).
    pub async fn another_instance(&self) -> Self {
        self.another_instance_with(loopback_webhooks()).await
    }

    /// A second instance on the same PostgreSQL database, with these settings.
    pub async fn another_instance_with(&self, settings: Settings) -> Self {
        let url = database_url(self.dir.path()).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("postgres-database-url"), &url).unwrap();
        // Every instance on one database has the same master key.
        let key_file = countersign_store::secrets::KEY_FILE;
        std::fs::copy(self.dir.path().join(key_file), dir.path().join(key_file)).unwrap();
        let store = countersign_store::open(&url, keyring(dir.path())).await.unwrap();
        Self::launch(dir, store, self.key.clone(), self.other_key.clone(), settings).await
    }

    /// Stops gracefully and starts again on the same data directory (a new port).
    pub async fn restart(mut self) -> Self {
        self.shutdown().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let store = countersign_store::open(&db_url(&dir).await, keyring(dir.path())).await.unwrap();
        Self::launch(dir, store, self.key.clone(), self.other_key.clone(), loopback_webhooks()).await
    }

    /// Stops gracefully and waits until the store is closed.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// Full URL of an API path (relative to `/humanlayer/v1`).
    pub fn api(&self, path: &str) -> String {
        format!("http://{}/humanlayer/v1{path}", self.addr)
    }

    /// Full URL of a path at the root.
    pub fn root(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        json(self.http.get(self.api(path)).bearer_auth(&self.key).send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.post_as(&self.key, path, body).await
    }

    pub async fn post_as(&self, key: &str, path: &str, body: Value) -> (StatusCode, Value) {
        json(self.http.post(self.api(path)).bearer_auth(key).json(&body).send().await.unwrap()).await
    }
}

/// Reads a response that must be JSON with `Content-Type: application/json`.
pub async fn json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/json"), "status {status}: every answer must be JSON");
    let body = response.text().await.unwrap();
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (status, value)
}

/// Asserts an error response: status, code, and a message mentioning `needle`.
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str, needle: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(message.contains(needle), "message {message:?} should mention {needle:?}");
}

/// A minimal approval body.
pub fn approval(call_id: &str) -> Value {
    serde_json::json!({"run_id": "run-1", "call_id": call_id, "spec": {"fn": "send_email", "kwargs": {"to": "a@b.c"}}})
}

/// A minimal question body.
pub fn question(call_id: &str) -> Value {
    serde_json::json!({"run_id": "run-1", "call_id": call_id, "spec": {"msg": "which color?"}})
}

/// Runs `script` with the released Python SDK against `s` (key and base from the environment).
pub fn python_agent(s: &TestServer, script: &str, arg: &str) -> std::process::Child {
    let python = std::env::var_os("COUNTERSIGN_TEST_PYTHON").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compat/python/.venv/bin/python")
    });
    assert!(python.exists(), "no Python with humanlayer at {}: run scripts/compat-venv", python.display());
    std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(arg)
        .env("HUMANLAYER_API_KEY", &s.key)
        .env("HUMANLAYER_API_BASE", s.api(""))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// What the agent printed, once it exits successfully (within 60 s).
pub async fn agent_output(mut agent: std::process::Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            agent.kill().unwrap();
            let out = agent.wait_with_output().unwrap();
            panic!("the agent did not finish within 60 s: {}", String::from_utf8_lossy(&out.stderr));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = agent.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs the `countersign` binary on `dir`'s database with `args`, `env` and `stdin`.
pub fn run_cli(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .args(["--database-url", &crate::binary::database(dir)])
        .env_remove("COUNTERSIGN_DATABASE_URL")
        .env_remove("COUNTERSIGN_SLACK_BOT_TOKEN")
        .env_remove("COUNTERSIGN_SLACK_SIGNING_SECRET")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}
