//! The terminal commands (`login`, `logout`, `inbox`, `approve`, `reject`, `answer`): the real
//! binary against a real server, with its own home directory for the stored login.

use crate::support::{TestServer, approval, client, json, question};
use serde_json::{Value, json};
use std::process::{Output, Stdio};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
const PASSWORD: &str = "correct horse battery staple";

/// A server, and a home directory in which the binary keeps its login.
struct Desk {
    server: TestServer,
    home: TempDir,
}

/// What a run of the binary left: exit code and both streams.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Ran {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

impl Desk {
    async fn start() -> Self {
        Self { server: TestServer::start().await, home: tempfile::tempdir().unwrap() }
    }

    fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    fn credentials_path(&self) -> std::path::PathBuf {
        self.home.path().join("config").join("countersign").join("credentials.json")
    }

    fn stored_token(&self) -> String {
        let stored: Value = serde_json::from_str(&std::fs::read_to_string(self.credentials_path()).unwrap()).unwrap();
        stored["token"].as_str().unwrap().to_owned()
    }

    /// Runs `countersign ARGS` as the person at this desk, with `env` set and `stdin` fed.
    async fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Ran {
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(args)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for name in [
            "COUNTERSIGN_TOKEN",
            "COUNTERSIGN_SERVER",
            "COUNTERSIGN_CONFIG",
            "COUNTERSIGN_DATA_DIR",
            "COUNTERSIGN_DATABASE_URL",
            "NO_COLOR",
        ] {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().unwrap();
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).await.unwrap();
        }
        child.wait_with_output().await.unwrap().into()
    }

    async fn run(&self, args: &[&str]) -> Ran {
        self.run_with(args, &[], None).await
    }

    /// Creates a person with [`PASSWORD`] in `projects`, through `countersign users create`.
    async fn person(&self, email: &str, projects: &[&str]) {
        let url = crate::support::database_url(self.server.dir.path()).await;
        let mut args = vec!["users", "create", "--email", email, "--role", "approver", "--password-stdin"];
        for project in projects {
            args.extend(["--project", project]);
        }
        // The server's data directory holds its master key (the database's secrets are sealed with it).
        let dir = self.server.dir.path().to_str().unwrap().to_owned();
        args.extend(["--database-url", &url, "--data-dir", &dir]);
        let out = self.run_with(&args, &[], Some(&format!("{PASSWORD}\n"))).await;
        assert_eq!(out.code, Some(0), "{out:?}");
    }

    /// Runs an administration command (`users ...`) on the server's database.
    async fn admin(&self, args: &[&str]) -> Ran {
        let url = crate::support::database_url(self.server.dir.path()).await;
        let dir = self.server.dir.path().to_str().unwrap().to_owned();
        let mut args = args.to_vec();
        args.extend(["--database-url", &url, "--data-dir", &dir]);
        self.run(&args).await
    }

    async fn login(&self, email: &str) -> Ran {
        let url = self.url();
        self.run_with(&["login", "--server", &url, "--email", email, "--password-stdin"], &[], Some(PASSWORD)).await
    }

    /// A person of `projects`, signed in at this desk.
    async fn signed_in(&self, email: &str, projects: &[&str]) {
        self.person(email, projects).await;
        let out = self.login(email).await;
        assert_eq!(out.code, Some(0), "{out:?}");
    }

    /// An approval (as the agent) through the HumanLayer API, with the key of `alpha` or `beta`.
    async fn ask_approval(&self, project: &str, body: Value) {
        let key = if project == "alpha" { &self.server.key } else { &self.server.other_key };
        let (status, created) = self.server.post_as(key, "/function_calls", body).await;
        assert_eq!(status, 200, "{created}");
    }

    /// A request as the agent sees it.
    async fn agent_view(&self, project: &str, path: &str) -> Value {
        let key = if project == "alpha" { &self.server.key } else { &self.server.other_key };
        let response = self.server.http.get(self.server.api(path)).bearer_auth(key).send().await.unwrap();
        crate::support::json(response).await.1
    }
}

fn assert_exit(out: &Ran, code: i32, needle: &str) {
    assert_eq!(out.code, Some(code), "{out:?}");
    assert!(out.stderr.contains(needle), "stderr should mention {needle:?}: {out:?}");
}

#[tokio::test]
async fn login_stores_a_private_login_and_never_prints_the_token() {
    let desk = Desk::start().await;
    desk.person("ada@example.com", &["alpha", "beta"]).await;
    let out = desk.login("Ada@Example.com").await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), format!("Signed in to {} as ada@example.com (projects: alpha, beta).", desk.url()));

    let path = desk.credentials_path();
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(stored["server"], desk.url());
    assert_eq!(stored["email"], "ada@example.com");
    assert!(stored["expires_at"].is_string());
    let token = desk.stored_token();
    assert!(token.starts_with("cst_"), "{stored}");
    assert!(!out.stdout.contains(&token) && !out.stderr.contains(&token), "the token is never printed");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only its owner may read the login");
    }

    let again = desk.login("ada@example.com").await;
    assert_eq!(again.code, Some(0), "{again:?}");
    assert_ne!(desk.stored_token(), token, "a new login replaces the stored one");
    let replaced = desk.run_with(&["inbox"], &[("COUNTERSIGN_TOKEN", &token)], None).await;
    assert_exit(&replaced, 3, "countersign login");

    let url = desk.url();
    let wrong = ["login", "--server", &url, "--email", "ada@example.com", "--password-stdin"];
    let out = desk.run_with(&wrong, &[], Some("not the password\n")).await;
    assert_exit(&out, 3, "wrong email or password");
    let out = desk.run_with(&["login", "--server", &url, "--email", "ada@example.com"], &[], None).await;
    assert_exit(&out, 2, "--password-stdin");
}

#[tokio::test]
async fn repeated_wrong_passwords_are_throttled_for_a_minute() {
    let desk = Desk::start().await;
    desk.person("eve@example.com", &["alpha"]).await;
    let url = desk.url();
    let args = ["login", "--server", &url, "--email", "eve@example.com", "--password-stdin"];
    for _ in 0..5 {
        assert_exit(&desk.run_with(&args, &[], Some("guess guess guess\n")).await, 3, "wrong email or password");
    }
    let out = desk.run_with(&args, &[], Some("guess guess guess\n")).await;
    assert_exit(&out, 3, "too many sign-in attempts; try again in");
    let out = desk.run_with(&args, &[], Some(PASSWORD)).await;
    assert_exit(&out, 3, "try again in");
    let response = client()
        .post(desk.server.root("/api/v1/login"))
        .json(&json!({"email": "eve@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let wait: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After within the one-minute window: {wait}");
    let (status, body) = json(response).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_attempts");
}

#[tokio::test]
async fn the_inbox_lists_only_the_persons_projects_and_others_stay_out_of_reach() {
    let desk = Desk::start().await;
    desk.signed_in("ada@example.com", &["alpha"]).await;
    let empty = desk.run(&["inbox"]).await;
    assert_eq!((empty.code, empty.stdout.trim()), (Some(0), "Nothing is waiting for you."), "{empty:?}");

    desk.ask_approval("alpha", approval("mine")).await;
    desk.ask_approval("beta", approval("theirs")).await;
    desk.server.post("/contact_requests", question("q-1")).await;

    let sneaky = json!({"run_id": "r", "call_id": "sneaky", "spec": {"msg": "ok?\u{1b}]0;pwned\u{7}"}});
    let (status, created) = desk.server.post("/contact_requests", sneaky).await;
    assert_eq!(status, 200, "{created}");
    let out = desk.run(&["inbox"]).await;
    assert!(!out.stdout.contains(['\u{1b}', '\u{7}']), "agents cannot send escape sequences to the terminal: {out:?}");
    let out = desk.run(&["answer", "sneaky", "no"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(!out.stdout.contains(['\u{1b}', '\u{7}']), "{out:?}");

    let out = desk.run(&["inbox", "--json"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let items: Value = serde_json::from_str(&out.stdout).unwrap();
    let ids: Vec<&str> = items.as_array().unwrap().iter().map(|i| i["call_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["q-1", "mine"], "newest first, and nothing of project beta");
    assert_eq!(items[1]["project"], "alpha");
    assert_eq!(items[1]["kind"], "function_call");
    assert_eq!(items[1]["status"], "pending");
    assert_eq!(items[1]["request"]["spec"]["kwargs"]["to"], "a@b.c", "the full HumanLayer request");

    let table = desk.run(&["inbox"]).await;
    assert_eq!(table.code, Some(0), "{table:?}");
    assert!(!table.stdout.contains('\x1b'), "plain text when stdout is not a terminal: {table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{table:?}");
    assert!(lines[0].starts_with("ID ") && lines[0].contains("KIND") && lines[0].ends_with("ASKED"), "{table:?}");
    let kind_at = lines[0].find("KIND").unwrap();
    assert_eq!(&lines[1][kind_at..kind_at + 8], "question", "columns are aligned: {table:?}");
    assert_eq!(&lines[2][kind_at..kind_at + 8], "approval", "columns are aligned: {table:?}");
    assert!(lines[2].starts_with("mine ") && lines[2].contains("send_email") && lines[2].contains("run-1"));
    assert!(lines[2].ends_with("s ago"), "{table:?}");
    let limited = desk.run(&["inbox", "--limit", "1"]).await;
    assert!(limited.stdout.contains("Showing 1 of 2"), "{limited:?}");

    let out = desk.run(&["approve", "theirs", "-m", "sneaky"]).await;
    assert_exit(&out, 4, "theirs");
    let out = desk.run(&["approve", "theirs", "--project", "beta"]).await;
    assert_exit(&out, 4, "beta");
    let theirs = desk.agent_view("beta", "/function_calls/theirs").await;
    assert_eq!(theirs["status"]["approved"], Value::Null, "beta's request stays pending: {theirs}");
}

/// The call ids in `countersign inbox --json`.
async fn inbox_ids(desk: &Desk) -> Vec<String> {
    let out = desk.run(&["inbox", "--json"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let items: Value = serde_json::from_str(&out.stdout).unwrap();
    items.as_array().unwrap().iter().map(|i| i["call_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn adding_and_removing_projects_changes_what_a_signed_in_person_sees_at_once() {
    let desk = Desk::start().await;
    desk.signed_in("ada@example.com", &["alpha"]).await;
    desk.ask_approval("alpha", approval("mine")).await;
    desk.ask_approval("beta", approval("theirs")).await;
    assert_eq!(inbox_ids(&desk).await, ["mine"]);

    let out = desk.admin(&["users", "add-project", "ada@example.com", "--project", "beta"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "ada@example.com is now in alpha, beta.");
    assert_eq!(inbox_ids(&desk).await, ["theirs", "mine"], "no new login needed");

    let out = desk.admin(&["users", "remove-project", "ada@example.com", "--project", "alpha"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "ada@example.com is now in beta.");
    assert_eq!(inbox_ids(&desk).await, ["theirs"]);
    assert_exit(&desk.run(&["approve", "mine"]).await, 4, "mine");
    let mine = desk.agent_view("alpha", "/function_calls/mine").await;
    assert_eq!(mine["status"]["approved"], Value::Null, "alpha's request stays pending: {mine}");

    let out = desk.admin(&["users", "list", "--json"]).await;
    let users: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(users[0]["projects"], json!(["beta"]), "{users}");

    let out = desk.admin(&["users", "remove-project", "ada@example.com", "--project", "alpha"]).await;
    assert_exit(&out, 1, "is not in project \"alpha\" (their projects: beta)");
    let out = desk.admin(&["users", "add-project", "bob@example.com", "--project", "beta"]).await;
    assert_exit(&out, 1, "no user with email bob@example.com");
    let out = desk.admin(&["users", "remove-project", "ada@example.com", "--project", "beta"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("is now in no project"), "{out:?}");
    assert_eq!(inbox_ids(&desk).await, Vec::<String>::new());
}

#[tokio::test]
async fn approving_records_the_person_and_a_second_decision_names_them() {
    let desk = Desk::start().await;
    desk.signed_in("ada@example.com", &["alpha"]).await;
    desk.ask_approval("alpha", approval("c-1")).await;

    let out = desk.run(&["approve", "c-1", "-m", "ok"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "Approved send_email (call c-1) in project alpha.");
    let decided = desk.agent_view("alpha", "/function_calls/c-1").await;
    assert_eq!(decided["status"]["approved"], true, "{decided}");
    assert_eq!(decided["status"]["comment"], "ok");
    assert_eq!(decided["status"]["user_info"]["channel"], "cli");
    assert_eq!(decided["status"]["user_info"]["email"], "ada@example.com");

    let again = desk.run(&["approve", "c-1"]).await;
    assert_exit(&again, 5, "ada@example.com");
    let reject = desk.run(&["reject", "c-1", "-m", "changed my mind"]).await;
    assert_exit(&reject, 5, "approved");

    desk.ask_approval("alpha", approval("c-2")).await;
    let out = desk.run(&["approve", "c-2", "--json"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let item: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(item["status"], "approved");
    assert_eq!(item["request"]["status"]["user_info"]["channel"], "cli");

    // Edited arguments.
    desk.ask_approval("alpha", approval("c-3")).await;
    assert_exit(&desk.run(&["approve", "c-3", "--kwargs", "[1]"]).await, 2, "JSON object");
    assert_exit(&desk.run(&["approve", "c-3", "--kwargs", "{"]).await, 2, "not valid JSON");
    let out = desk.run(&["approve", "c-3", "--kwargs", r#"{"to": "cfo@example.com"}"#]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let decided = desk.agent_view("alpha", "/function_calls/c-3").await;
    assert_eq!(decided["status"]["updated_kwargs"], json!({"to": "cfo@example.com"}));
}

#[tokio::test]
async fn rejecting_with_an_option_uses_its_prompt_fill_and_an_unknown_option_names_the_choices() {
    let desk = Desk::start().await;
    desk.signed_in("ada@example.com", &["alpha"]).await;
    let mut body = approval("r-1");
    body["spec"]["reject_options"] = json!([{"name": "later", "title": "Later", "prompt_fill": "try again tomorrow"}, {"name": "never", "title": "Never"}]);
    desk.ask_approval("alpha", body).await;

    let out = desk.run(&["reject", "r-1"]).await;
    assert_eq!(out.code, Some(2), "a rejection needs -m or --option: {out:?}");
    let out = desk.run(&["reject", "r-1", "--option", "nope"]).await;
    assert_exit(&out, 1, "option: \"nope\" is not an option");
    assert!(out.stderr.contains("later"), "{out:?}");
    assert!(out.stderr.contains("never"), "{out:?}");
    let out = desk.run(&["answer", "r-1", "yes"]).await;
    assert_exit(&out, 4, "r-1");

    let out = desk.run(&["reject", "r-1", "--option", "later"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "Rejected send_email (call r-1) in project alpha.");
    let decided = desk.agent_view("alpha", "/function_calls/r-1").await;
    assert_eq!(decided["status"]["approved"], false, "{decided}");
    assert_eq!(decided["status"]["reject_option_name"], "later");
    assert_eq!(decided["status"]["comment"], "try again tomorrow");

    desk.ask_approval("alpha", approval("r-2")).await;
    let out = desk.run(&["reject", "r-2", "-m", "not today"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(desk.agent_view("alpha", "/function_calls/r-2").await["status"]["comment"], "not today");
}

#[tokio::test]
async fn answering_a_question() {
    let desk = Desk::start().await;
    desk.signed_in("ada@example.com", &["alpha"]).await;
    desk.server.post("/contact_requests", question("q-1")).await;
    let mut body = question("q-2");
    body["spec"]["response_options"] = json!([{"name": "b", "title": "Blue", "prompt_fill": "blue, definitely"}]);
    desk.server.post("/contact_requests", body).await;

    let out = desk.run(&["approve", "q-1"]).await;
    assert_exit(&out, 4, "q-1");
    let out = desk.run(&["answer", "q-1"]).await;
    assert_eq!(out.code, Some(2), "an answer needs text or --option: {out:?}");

    let out = desk.run(&["answer", "q-1", "green, like grass"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "Answered \"which color?\" (call q-1) in project alpha.");
    let answered = desk.agent_view("alpha", "/contact_requests/q-1").await;
    assert_eq!(answered["status"]["response"], "green, like grass", "{answered}");
    assert_eq!(answered["status"]["user_info"]["channel"], "cli");
    assert_eq!(answered["status"]["user_info"]["email"], "ada@example.com");

    let out = desk.run(&["answer", "q-2", "--option", "b"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let answered = desk.agent_view("alpha", "/contact_requests/q-2").await;
    assert_eq!(answered["status"]["response"], "blue, definitely", "{answered}");
    assert_eq!(answered["status"]["response_option_name"], "b");
}

#[tokio::test]
async fn an_id_in_two_projects_is_ambiguous_until_a_project_is_named() {
    let desk = Desk::start().await;
    desk.signed_in("ada@example.com", &["alpha", "beta"]).await;
    desk.ask_approval("alpha", approval("dup")).await;
    desk.ask_approval("beta", approval("dup")).await;

    let out = desk.run(&["approve", "dup"]).await;
    assert_exit(&out, 2, "--project");
    let out = desk.run(&["approve", "dup", "--project", "beta"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "Approved send_email (call dup) in project beta.");
    assert_eq!(desk.agent_view("beta", "/function_calls/dup").await["status"]["approved"], true);
    assert_eq!(desk.agent_view("alpha", "/function_calls/dup").await["status"]["approved"], Value::Null);
}

#[tokio::test]
async fn the_token_variable_overrides_and_logout_ends_the_session_on_the_server() {
    let desk = Desk::start().await;
    desk.signed_in("ada@example.com", &["alpha"]).await;
    desk.ask_approval("alpha", approval("c-1")).await;
    let token = desk.stored_token();

    let out = desk.run_with(&["inbox"], &[("COUNTERSIGN_TOKEN", "cst_not-a-real-token")], None).await;
    assert_exit(&out, 3, "countersign login");

    // Another machine: no stored login, only the variable and the server.
    let elsewhere = Desk { server: TestServer::start().await, home: tempfile::tempdir().unwrap() };
    let url = desk.url();
    let out = elsewhere
        .run_with(&["inbox", "--json"], &[("COUNTERSIGN_TOKEN", &token), ("COUNTERSIGN_SERVER", &url)], None)
        .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap()[0]["call_id"], "c-1");
    let out = elsewhere.run(&["inbox", "--server", &url]).await;
    assert_exit(&out, 3, "not signed in");

    let out = desk.run(&["logout"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), format!("Signed out of {url}."));
    assert!(!desk.credentials_path().exists(), "logout deletes the stored login");
    assert_exit(&desk.run(&["inbox"]).await, 3, "countersign login");
    let out = desk.run_with(&["inbox", "--server", &url], &[("COUNTERSIGN_TOKEN", &token)], None).await;
    assert_exit(&out, 3, "countersign login");
    let out = desk.run(&["logout"]).await;
    assert_eq!(out.code, Some(0), "logging out twice is fine: {out:?}");

    // A login already ended on the server (expired, revoked elsewhere) still signs out cleanly.
    let again = desk.login("ada@example.com").await;
    assert_eq!(again.code, Some(0), "{again:?}");
    let token = desk.stored_token();
    let out = desk.run_with(&["logout"], &[("COUNTERSIGN_TOKEN", &token)], None).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(desk.credentials_path().exists(), "revoking the variable's token leaves the stored login in place");
    let out = desk.run(&["logout"]).await;
    assert_eq!(out.code, Some(0), "the server's 401 is no obstacle to signing out: {out:?}");
    assert!(!desk.credentials_path().exists());
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    let desk = Desk::start().await;
    let env = [("COUNTERSIGN_TOKEN", "cst_x")];
    let out = desk.run_with(&["inbox", "--server", "http://127.0.0.1:1"], &env, None).await;
    assert_exit(&out, 1, "cannot reach the server at http://127.0.0.1:1");
    assert!(out.stderr.contains("--server"), "{out:?}");
    let out = desk.run_with(&["inbox", "--server", "127.0.0.1:8484"], &env, None).await;
    assert_exit(&out, 2, "http");
}

#[tokio::test]
async fn the_terminal_commands_document_their_exit_codes() {
    let desk = Desk::start().await;
    for command in ["login", "logout", "inbox", "approve", "reject", "answer"] {
        let out = desk.run(&[command, "--help"]).await;
        assert_eq!(out.code, Some(0), "{out:?}");
        for needle in ["Examples:", "Exit codes:", "5  already decided", "COUNTERSIGN_TOKEN"] {
            assert!(out.stdout.contains(needle), "`{command} --help` should mention {needle:?}: {out:?}");
        }
    }
}
