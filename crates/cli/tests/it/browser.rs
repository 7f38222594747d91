//! The inbox in a real headless Chromium, driven over WebDriver (chromedriver + fantoccini): a
//! person signs in, an agent on the released Python SDK asks for approval in a subprocess, the
//! request appears without a reload, the person rejects it with a reject option, and the agent
//! gets exactly the SDK's denial text. Also: markup in arguments never runs, keyboard approval,
//! and the phone-width layout. Screenshots go to `target/screenshots/`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them) and the compatibility suite's Python venv with
//! `humanlayer` (`scripts/compat-venv`, or `COUNTERSIGN_TEST_PYTHON`).

use crate::support::TestServer;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const PASSWORD: &str = "correct-horse-battery";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn python() -> PathBuf {
    let path = std::env::var_os("COUNTERSIGN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("compat/python/.venv/bin/python"));
    assert!(
        path.exists(),
        "no Python with the humanlayer SDK at {}: run scripts/compat-venv (or set COUNTERSIGN_TEST_PYTHON)",
        path.display()
    );
    path
}

/// A chromedriver process, killed on drop.
pub(crate) struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn start_browser() -> (Driver, Client) {
    let chromedriver =
        std::env::var("COUNTERSIGN_TEST_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    assert!(
        Path::new(&chromedriver).exists(),
        "{chromedriver} is missing: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start chromedriver");
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver { child, port, _profile: profile };
    let chrome_binary = std::env::var("COUNTERSIGN_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chrome_binary,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,900",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ]
        }
    });
    let capabilities = match capabilities {
        Value::Object(map) => map,
        _ => unreachable!(),
    };
    let started = Instant::now();
    let client = loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
        {
            Ok(client) => break client,
            Err(err) if started.elapsed() < Duration::from_secs(20) => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("cannot start a Chromium session through chromedriver: {err}"),
        }
    };
    (driver, client)
}

/// Waits until `script` (a JS expression) is truthy.
pub(crate) async fn wait_for(browser: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let value = browser.execute(&format!("return !!({script});"), vec![]).await.unwrap();
        if value == Value::Bool(true) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what} ({script})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn js(browser: &Client, script: &str) -> Value {
    browser.execute(script, vec![]).await.unwrap()
}

pub(crate) async fn screenshot(browser: &Client, name: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
    let path = dir.join("screenshots").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(&path, png).unwrap();
    path
}

const AGENT: &str = r#"
import os, sys, time
from humanlayer import HumanLayer, ResponseOption

hl = HumanLayer(run_id="browser-run", sleep=lambda _s: time.sleep(0.2))

@hl.require_approval(reject_options=[
    ResponseOption(name="later", title="Not now", description="Ask again tomorrow", prompt_fill="try again tomorrow", interactive=False),
    ResponseOption(name="other", title="Something else", prompt_fill="explain", interactive=True),
])
def send_email(to: str, body: str) -> str:
    return "sent to " + to

print(send_email(to="ceo@example.com", body=sys.argv[1]), flush=True)
"#;

#[tokio::test]
async fn an_approval_arrives_live_and_is_rejected_with_an_option_in_chromium() {
    let s = TestServer::start().await;
    s.person("ada@example.com", PASSWORD, &["alpha"]).await;
    let (_driver, browser) = start_browser().await;
    let base = s.root("");

    // No session: the login page.
    browser.goto(&format!("{base}/")).await.unwrap();
    assert!(browser.current_url().await.unwrap().path().starts_with("/login"));
    browser.find(Locator::Css("#email")).await.unwrap().send_keys("ada@example.com").await.unwrap();
    browser.find(Locator::Css("#password")).await.unwrap().send_keys("not-the-password").await.unwrap();
    browser.find(Locator::Css("#sign-in")).await.unwrap().click().await.unwrap();
    let error = browser.wait().for_element(Locator::Css("#login-error")).await.unwrap().text().await.unwrap();
    assert_eq!(error, "Wrong email or password.");
    browser.find(Locator::Css("#password")).await.unwrap().send_keys(PASSWORD).await.unwrap();
    browser.find(Locator::Css("#sign-in")).await.unwrap().click().await.unwrap();
    browser.wait().for_element(Locator::Css("#pending")).await.unwrap();
    assert_eq!(browser.current_url().await.unwrap().path(), "/");
    wait_for(&browser, "the live stream", "document.querySelector('[sse-connect]') && htmx").await;
    // Marks this page load: if the page reloaded, the mark would be gone.
    js(&browser, "window.__sameLoad = 'yes'; return null;").await;
    // Give the EventSource a moment to connect before the agent asks.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The agent asks, in a subprocess, with markup in its arguments.
    let evil = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script> Q3 numbers";
    let agent = Command::new(python())
        .arg("-c")
        .arg(AGENT)
        .arg(evil)
        .env("HUMANLAYER_API_KEY", &s.key)
        .env("HUMANLAYER_API_BASE", s.api(""))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the Python agent");

    wait_for(
        &browser,
        "the request in the list",
        "document.querySelector('#items .item .summary')?.textContent === 'send_email'",
    )
    .await;
    assert_eq!(js(&browser, "return window.__sameLoad || null;").await, json!("yes"), "no reload");
    browser.find(Locator::Css("#items .item a")).await.unwrap().click().await.unwrap();
    wait_for(&browser, "the detail view", "document.querySelector('#request-title')?.textContent === 'send_email'")
        .await;
    let kwargs = browser.find(Locator::Css("#kwargs")).await.unwrap().text().await.unwrap();
    assert!(kwargs.contains("\"to\": \"ceo@example.com\""), "{kwargs}");
    assert!(kwargs.contains("<script>window.__pwned=2</script>"), "markup is shown as text: {kwargs}");
    assert_eq!(js(&browser, "return window.__pwned || null;").await, Value::Null, "markup never runs");
    assert_eq!(js(&browser, "return document.querySelectorAll('#kwargs script, #kwargs img').length;").await, json!(0));

    // The option fills its prompt; the shot shows the inbox as a person sees it.
    browser.find(Locator::Css("label[for=reject-option-1]")).await.unwrap().click().await.unwrap();
    let filled = js(&browser, "return document.querySelector('#reject-comment').value;").await;
    assert_eq!(filled, json!("try again tomorrow"));
    let shot = screenshot(&browser, "inbox.png").await;
    browser.find(Locator::Css("#reject")).await.unwrap().click().await.unwrap();
    wait_for(&browser, "the outcome", "document.querySelector('#outcome')").await;
    let outcome = browser.find(Locator::Css("#outcome")).await.unwrap().text().await.unwrap();
    assert!(outcome.contains("Rejected by ada@example.com"), "{outcome}");

    let done = tokio::task::spawn_blocking(move || agent.wait_with_output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "agent failed: {}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(stdout.trim_end(), "User denied send_email with message: try again tomorrow");
    let (_, calls) = s.get("/agent/function_calls/pending").await;
    assert_eq!(calls["total"], 0);
    // The decided request leaves the list without a reload.
    wait_for(&browser, "an empty list", "document.querySelectorAll('#items .item').length === 0").await;
    assert_eq!(js(&browser, "return window.__sameLoad || null;").await, json!("yes"));
    eprintln!("screenshot: {}", shot.display());

    // Keyboard: j selects and opens, a approves.
    for id in ["kb-1", "kb-2"] {
        let body = json!({"run_id": "kb", "call_id": id, "spec": {"fn": format!("deploy_{id}"), "kwargs": {}}});
        assert_eq!(s.post("/function_calls", body).await.0, reqwest::StatusCode::OK);
    }
    wait_for(&browser, "two requests", "document.querySelectorAll('#items .item').length === 2").await;
    js(&browser, "document.activeElement && document.activeElement.blur(); return null;").await;
    browser.find(Locator::Css("body")).await.unwrap().send_keys("j").await.unwrap();
    wait_for(
        &browser,
        "the newest selected and open",
        "document.querySelector('#request-title')?.textContent === 'deploy_kb-2'",
    )
    .await;
    assert_eq!(
        js(&browser, "return document.querySelector('#items .item.selected')?.dataset.callId;").await,
        json!("kb-2")
    );
    browser.find(Locator::Css("body")).await.unwrap().send_keys("a").await.unwrap();
    wait_for(&browser, "the approval", "document.querySelector('#outcome')").await;
    let (_, approved) = s.get("/function_calls/kb-2").await;
    assert_eq!(approved["status"]["approved"], true);
    assert_eq!(approved["status"]["user_info"]["email"], "ada@example.com");
    assert_eq!(approved["status"]["user_info"]["channel"], "web");
    browser.find(Locator::Css("body")).await.unwrap().send_keys("?").await.unwrap();
    wait_for(&browser, "the keys dialog", "document.querySelector('#keys').open").await;

    // Phone width: one column, the detail below the list, nothing wider than the screen.
    browser.set_window_size(390, 844).await.unwrap();
    browser.goto(&format!("{base}/r/alpha/approval/kb-1")).await.unwrap();
    wait_for(&browser, "the detail at phone width", "document.querySelector('#request-title')").await;
    let layout = js(
        &browser,
        "const l = document.querySelector('.list').getBoundingClientRect(); \
         const d = document.querySelector('#detail').getBoundingClientRect(); \
         return [d.top >= l.bottom - 1, document.documentElement.scrollWidth <= window.innerWidth + 1];",
    )
    .await;
    assert_eq!(layout, json!([true, true]), "stacked and no sideways scrolling");
    let unlabelled = js(
        &browser,
        "return [...document.querySelectorAll('input:not([type=hidden]), textarea, select')] \
         .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.id || e.name);",
    )
    .await;
    assert_eq!(unlabelled, json!([]), "every control has a label");
    screenshot(&browser, "inbox-phone.png").await;
    browser.close().await.unwrap();
}
