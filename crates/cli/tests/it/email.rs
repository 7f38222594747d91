//! The email channel with real parts: an SMTP server on loopback (a minimal one in this file)
//! receives what Countersign sends over SMTP; the test reads the message, follows its links with
//! an HTTP client, sends replies to the inbound endpoint, and an agent on the released Python SDK
//! proceeds.

use crate::support::{TestServer, approval, assert_error, json as read_json};
use countersign_core::route::DeliveryStatus;
use countersign_server::channels::email::EmailSettings;
use countersign_server::{Limits, Settings};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One message the SMTP server accepted.
#[derive(Debug, Clone)]
pub(crate) struct Mail {
    pub(crate) rcpt: Vec<String>,
    pub(crate) raw: String,
}

impl Mail {
    fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default().parse(self.raw.as_bytes()).expect("a MIME message")
    }

    fn header(&self, name: &str) -> String {
        let parsed = self.parsed();
        let value = parsed.header(name).cloned();
        match value {
            Some(mail_parser::HeaderValue::Text(t)) => t.to_string(),
            Some(mail_parser::HeaderValue::TextList(l)) => {
                l.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" ")
            }
            Some(mail_parser::HeaderValue::Address(a)) => {
                a.iter().filter_map(|a| a.address()).collect::<Vec<_>>().join(",")
            }
            other => format!("{other:?}"),
        }
    }

    fn text(&self) -> String {
        self.parsed().body_text(0).map(|t| t.into_owned()).unwrap_or_default()
    }

    fn html(&self) -> String {
        self.parsed().body_html(0).map(|t| t.into_owned()).unwrap_or_default()
    }

    /// The email is about the request `call_id` (its text ends with `call <id>`).
    fn is_about(&self, call_id: &str) -> bool {
        self.text().lines().any(|l| l.trim_end().ends_with(&format!(" call {call_id}")))
    }

    /// The URL after `label: ` in the text part.
    fn link(&self, label: &str) -> String {
        let text = self.text();
        let line = text.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no {label} in {text}"));
        line[line.find("http").unwrap()..].trim().to_owned()
    }
}

/// A minimal SMTP server: accepts everything, keeps every message.
#[derive(Clone, Default)]
pub(crate) struct SmtpSink {
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    pub(crate) async fn start() -> (Self, String) {
        Self::start_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    /// A sink on `listener`; its `smtp://` URL.
    fn start_on(listener: tokio::net::TcpListener) -> (Self, String) {
        let sink = Self::default();
        let url = format!("smtp://{}", listener.local_addr().unwrap());
        let mails = sink.mails.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let mails = mails.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                    let mut rcpt = Vec::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let upper = line.to_ascii_uppercase();
                        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                            b"250 sink\r\n"
                        } else if upper.starts_with("RCPT TO:") {
                            rcpt.push(line[8..].trim().trim_matches(['<', '>']).to_lowercase());
                            b"250 ok\r\n"
                        } else if upper == "DATA" {
                            let _ = write.write_all(b"354 go on\r\n").await;
                            let mut raw = String::new();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if l == "." {
                                    break;
                                }
                                raw.push_str(l.strip_prefix('.').unwrap_or(&l));
                                raw.push_str("\r\n");
                            }
                            mails.lock().unwrap().push(Mail { rcpt: std::mem::take(&mut rcpt), raw });
                            b"250 queued\r\n"
                        } else if upper == "QUIT" {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"250 ok\r\n"
                        };
                        let _ = write.write_all(reply).await;
                    }
                });
            }
        });
        (sink, url)
    }

    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Mail> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mails = self.mails.lock().unwrap().clone();
            if mails.len() >= n {
                return mails;
            }
            assert!(Instant::now() < deadline, "expected {n} emails, got {}", mails.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits until the emails of a request are recorded as sent (the SMTP server has them a moment
/// before: a reply can only be matched to its recipients once they are recorded).
async fn wait_sent(s: &TestServer, kind: countersign_core::RequestKind, call_id: &str, n: usize) {
    let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let emails = s.store.emails_of(&project.id, kind, call_id).await.unwrap();
        if emails.iter().filter(|e| e.status == DeliveryStatus::Delivered).count() >= n {
            return;
        }
        assert!(Instant::now() < deadline, "emails of {call_id} not sent: {emails:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn server_with_email() -> (TestServer, SmtpSink) {
    server_with_email_and(Limits::default()).await
}

async fn server_with_email_and(limits: Limits) -> (TestServer, SmtpSink) {
    let (sink, url) = SmtpSink::start().await;
    let email = EmailSettings {
        smtp_url: Some(url),
        from: Some("Countersign <approvals@example.com>".into()),
        // Templates render in a child process of the real binary, as under `countersign serve`.
        template_renderer: Some(env!("CARGO_BIN_EXE_countersign").into()),
    };
    (TestServer::start_with(Settings { email, limits, ..Settings::default() }).await, sink)
}

/// A fresh inbound-email secret of the project `name` (what `countersign projects
/// inbound-email-secret` prints).
async fn inbound_secret(s: &TestServer, name: &str) -> String {
    let project = s.store.project_by_name(name).await.unwrap().unwrap();
    let secret = countersign_server::channels::email::inbound::generate_secret();
    assert!(s.store.set_inbound_email_secret(&project.id, Some(&secret.hash)).await.unwrap());
    secret.secret
}

fn emailed(call_id: &str, channel: Value) -> Value {
    json!({"run_id": "r", "call_id": call_id, "spec": {
        "fn": "refund", "kwargs": {"customer": "acme", "amount": 120},
        "channel": {"email": channel},
        "reject_options": [{"name": "later", "title": "Not now", "prompt_fill": "try again tomorrow"}]
    }})
}

fn http() -> reqwest::Client {
    crate::support::client_builder().redirect(Policy::none()).build().unwrap()
}

#[tokio::test]
async fn an_approval_email_with_links_that_decide_only_their_request_once() {
    let (s, sink) = server_with_email().await;
    let channel = json!({
        "address": "Ada@Example.com",
        "additional_recipients": [{"address": "cc@example.com", "field": "cc"}, {"address": "audit@example.com", "field": "bcc"}],
        "experimental_subject_line": "Refund for acme?",
        "experimental_in_reply_to_message_id": "<thread-1@agent.example.com>",
        "experimental_references_message_id": "<thread-0@agent.example.com>"
    });
    s.post("/function_calls", emailed("c1", channel)).await;
    let mail = sink.wait_for(1).await.remove(0);
    let mut rcpt = mail.rcpt.clone();
    rcpt.sort();
    assert_eq!(rcpt, ["ada@example.com", "audit@example.com", "cc@example.com"]);
    assert_eq!(mail.header("Subject"), "Refund for acme?");
    assert!(mail.header("In-Reply-To").contains("thread-1@agent.example.com"));
    assert!(mail.header("References").contains("thread-0@agent.example.com"));
    assert!(!mail.raw.contains("audit@example.com\r\n") || !mail.header("Bcc").contains("audit"), "bcc is not shown");
    let text = mail.text();
    assert!(text.contains("refund") && text.contains("\"amount\": 120"), "{text}");
    assert!(mail.html().contains("Approve") && mail.html().contains("<code>refund</code>"), "{}", mail.html());

    let http = http();
    let approve = mail.link("Approve:");
    let reject = mail.link("Reject");
    // Opening the link shows the request and a form; it decides nothing by itself.
    let page = http.get(&approve).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("id=\"decide\""));
    let (_, pending) = s.get("/function_calls/c1").await;
    assert_eq!(pending["status"]["approved"], Value::Null);
    // A forged or altered link is refused and changes nothing.
    let forged = format!("{}x", &approve[..approve.len() - 1]);
    let refused = http.post(&forged).form(&[("comment", "x")]).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.text().await.unwrap().contains("Link not valid"));
    // Approve.
    let done = http.post(&approve).form(&[("comment", "fine")]).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let (_, fc) = s.get("/function_calls/c1").await;
    assert_eq!(fc["status"]["approved"], true);
    assert_eq!(fc["status"]["comment"], "fine");
    assert_eq!(fc["status"]["user_info"], json!({"channel": "email", "email": "ada@example.com"}));
    // Used: the same link, or the other one, only shows what was decided.
    for link in [&approve, &reject] {
        let again = http.post(link).form(&[("text", "no")]).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::CONFLICT);
        assert!(again.text().await.unwrap().contains("already decided"));
    }
    assert_eq!(s.get("/function_calls/c1").await.1["status"]["approved"], true);
}

#[tokio::test]
async fn replies_approve_reject_and_answer_and_strangers_are_refused() {
    let (s, sink) = server_with_email().await;
    s.post("/function_calls", emailed("a1", json!({"address": "ada@example.com"}))).await;
    s.post("/function_calls", emailed("a2", json!({"address": "ada@example.com"}))).await;
    let question = json!({"run_id": "r", "call_id": "q1", "spec": {"msg": "Which region?", "channel": {"email": {"address": "ada@example.com"}}}});
    s.post("/contact_requests", question).await;
    let mails = sink.wait_for(3).await;
    wait_sent(&s, countersign_core::RequestKind::FunctionCall, "a1", 1).await;
    wait_sent(&s, countersign_core::RequestKind::FunctionCall, "a2", 1).await;
    wait_sent(&s, countersign_core::RequestKind::HumanContact, "q1", 1).await;
    let id_of = |call: &str| {
        let mail = mails.iter().find(|m| m.is_about(call)).unwrap();
        mail.header("Message-ID")
    };
    let reply = |to_id: &str, from: &str, body: &str| {
        format!(
            "From: {from}\r\nTo: approvals@example.com\r\nSubject: Re: x\r\nIn-Reply-To: <{to_id}>\r\nReferences: <{to_id}>\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
        )
    };
    let secret = inbound_secret(&s, "alpha").await;
    let other_secret = inbound_secret(&s, "beta").await;
    // The agent's own key cannot post a reply (it could forge the approver's).
    let with_key = s.http.post(s.api("/email/inbound")).bearer_auth(&s.key).body(reply(
        &id_of("a1"),
        "ada@example.com",
        "approve",
    ));
    let with_key = read_json(with_key.send().await.unwrap()).await;
    assert_error(&with_key, StatusCode::UNAUTHORIZED, "unauthorized", "API keys cannot post inbound email");
    let bogus = s.http.post(s.api("/email/inbound")).bearer_auth("csie_nope").body(reply(
        &id_of("a1"),
        "ada@example.com",
        "approve",
    ));
    assert_eq!(bogus.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.get("/function_calls/a1").await.1["status"]["approved"], Value::Null);
    let post = |raw: String| {
        s.http
            .post(s.api("/email/inbound"))
            .bearer_auth(&secret)
            .header("content-type", "message/rfc822")
            .body(raw)
            .send()
    };
    // A stranger cannot decide, whatever they write.
    let stranger = read_json(post(reply(&id_of("a1"), "mallory@example.com", "approve")).await.unwrap()).await;
    assert_error(&stranger, StatusCode::FORBIDDEN, "forbidden", "mallory@example.com");
    assert_eq!(s.get("/function_calls/a1").await.1["status"]["approved"], Value::Null);
    // Another project's secret cannot use this project's thread.
    let other = s.http.post(s.api("/email/inbound")).bearer_auth(&other_secret).body(reply(
        &id_of("a1"),
        "ada@example.com",
        "approve",
    ));
    assert_eq!(other.send().await.unwrap().status(), StatusCode::NOT_FOUND);

    let quoted = "\r\n\r\nOn Tue, Countersign <approvals@example.com> wrote:\r\n> Approve: http://x\r\n";
    let ok = post(reply(&id_of("a1"), "Ada <ADA@example.com>", &format!("Approve{quoted}"))).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let (_, a1) = s.get("/function_calls/a1").await;
    assert_eq!(a1["status"]["approved"], true);
    assert_eq!(
        a1["status"]["user_info"],
        json!({"channel": "email", "email": "ada@example.com", "via": "inbound_email"})
    );
    let no = post(reply(&id_of("a2"), "ada@example.com", &format!("reject\r\nnot above 100{quoted}"))).await.unwrap();
    assert_eq!(no.status(), StatusCode::OK);
    let (_, a2) = s.get("/function_calls/a2").await;
    assert_eq!(
        (a2["status"]["approved"].clone(), a2["status"]["comment"].clone()),
        (json!(false), json!("not above 100"))
    );
    let again = read_json(post(reply(&id_of("a2"), "ada@example.com", "approve")).await.unwrap()).await;
    assert_error(&again, StatusCode::CONFLICT, "conflict", "already has a response");
    let unclear = read_json(post(reply(&id_of("q1"), "ada@example.com", "")).await.unwrap()).await;
    assert_eq!(unclear.0, StatusCode::BAD_REQUEST);
    let answer = post(reply(&id_of("q1"), "ada@example.com", &format!("eu-west-1, please{quoted}"))).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let (_, q1) = s.get("/contact_requests/q1").await;
    assert_eq!(q1["status"]["response"], "eu-west-1, please");
    let unknown = read_json(post(reply("<nope@countersign>", "ada@example.com", "approve")).await.unwrap()).await;
    assert_eq!(unknown.0, StatusCode::NOT_FOUND);

    // A thread's Message-IDs are looked up only as far as 64 of them: In-Reply-To, then References
    // newest first. Ours as In-Reply-To, the newest reference or the root of a short thread is
    // found (a2 is decided: 409); ours as the oldest of 5,001 references is not (404).
    let junk: String = (0..5_000).map(|i| format!(" <junk{i}@elsewhere.example>")).collect();
    let a2 = id_of("a2");
    let long_thread = |in_reply_to: &str, references: &str| {
        format!(
            "From: ada@example.com\r\nIn-Reply-To: <{in_reply_to}>\r\nReferences:{references}\r\n\
             Content-Type: text/plain\r\n\r\napprove\r\n"
        )
    };
    let threads = [
        (a2.clone(), junk.clone()),
        ("junk@x.example".into(), format!("{junk} <{a2}>")),
        // Every reference counts, not only the newest (the root of a short thread is ours).
        ("junk@x.example".into(), format!(" <{a2}> <j1@x.example> <j2@x.example>")),
    ];
    for (in_reply_to, references) in threads {
        let found = read_json(post(long_thread(&in_reply_to, &references)).await.unwrap()).await;
        assert_error(&found, StatusCode::CONFLICT, "conflict", "already has a response");
    }
    let too_far = read_json(post(long_thread("junk@x.example", &format!(" <{a2}>{junk}"))).await.unwrap()).await;
    assert_eq!(too_far.0, StatusCode::NOT_FOUND, "{too_far:?}");
}

#[tokio::test]
async fn escalations_and_templates_send_their_own_emails() {
    let (s, sink) = server_with_email().await;
    let template = "<h1>{{ event.spec.fn }} for {{ event.spec.kwargs.customer }}</h1><a href=\"{{ urls.base_url }}\">decide</a> {{ type }} {{ event.spec.kwargs | tojson }}";
    s.post("/function_calls", emailed("t1", json!({"address": "ada@example.com", "template": template}))).await;
    let mail = sink.wait_for(1).await.remove(0);
    let html = mail.html();
    assert!(html.contains("<h1>refund for acme</h1>"), "{html}");
    assert!(html.contains("v1beta2.function_call") && html.contains(r#"{"amount":120,"customer":"acme"}"#), "{html}");
    // urls.base_url is the link (minijinja escapes `/` in HTML as `&#x2f;`, which browsers read as `/`).
    let href = html.split("href=\"").nth(1).unwrap().split('"').next().unwrap().replace("&#x2f;", "/");
    assert!(href.starts_with(&s.root("/email/")), "{href}");
    let escalation = json!({"escalation_msg": "Ada is away; please decide", "additional_recipients": [{"address": "boss@example.com", "field": "to"}]});
    let (status, body) = s.post("/agent/function_calls/t1/escalate_email", escalation).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mails = sink.wait_for(2).await;
    wait_sent(&s, countersign_core::RequestKind::FunctionCall, "t1", 2).await;
    let escalated = &mails[1];
    assert_eq!(escalated.rcpt, ["boss@example.com"]);
    assert!(escalated.header("Subject").starts_with("Escalated:"));
    assert!(escalated.text().contains("Ada is away; please decide"));
    // The boss may answer the escalation by reply; Ada's reply to the first email still works too.
    let reply = format!(
        "From: boss@example.com\r\nIn-Reply-To: <{}>\r\nContent-Type: text/plain\r\n\r\nno - wait for Ada\r\n",
        escalated.header("Message-ID")
    );
    // As an inbound-mail service posts it: the secret as the Basic-auth password.
    let secret = inbound_secret(&s, "alpha").await;
    let resp =
        s.http.post(s.api("/email/inbound")).basic_auth("inbound", Some(&secret)).body(reply).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, t1) = s.get("/function_calls/t1").await;
    assert_eq!(t1["status"]["comment"], "wait for Ada");
    assert_eq!(t1["status"]["user_info"]["email"], "boss@example.com");
}

#[tokio::test]
async fn without_an_smtp_server_emails_fail_with_a_clear_reason() {
    let s = TestServer::start().await;
    s.post("/function_calls", emailed("c1", json!({"address": "ada@example.com"}))).await;
    let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let emails = s.store.emails_of(&project.id, countersign_core::RequestKind::FunctionCall, "c1").await.unwrap();
        if emails.first().is_some_and(|e| e.status == DeliveryStatus::Failed) {
            assert!(emails[0].last_error.as_deref().unwrap().contains("smtp_url"), "{emails:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{emails:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The request itself is unaffected: still pending, decidable elsewhere.
    assert_eq!(s.get("/function_calls/c1").await.1["status"]["approved"], Value::Null);
    // Requests without an email channel queue no email at all.
    s.post("/function_calls", approval("plain")).await;
    let none = s.store.emails_of(&project.id, countersign_core::RequestKind::FunctionCall, "plain").await.unwrap();
    assert!(none.is_empty());
}

const AGENT: &str = r#"
import time
from humanlayer import HumanLayer, ContactChannel, EmailContactChannel
hl = HumanLayer(run_id="email-run", sleep=lambda _s: time.sleep(0.2))
@hl.require_approval(contact_channel=ContactChannel(email=EmailContactChannel(address="ada@example.com")))
def refund(customer: str, amount: int) -> str:
    return f"refunded {amount} to {customer}"
print(refund(customer="acme", amount=120), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_the_python_sdk_proceeds_after_the_emailed_link_is_followed() {
    let (s, sink) = server_with_email().await;
    let python = std::env::var_os("COUNTERSIGN_TEST_PYTHON").map(std::path::PathBuf::from).unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compat/python/.venv/bin/python")
    });
    assert!(python.exists(), "no Python with humanlayer at {}: run scripts/compat-venv", python.display());
    let agent = std::process::Command::new(python)
        .arg("-c")
        .arg(AGENT)
        .env("HUMANLAYER_API_KEY", &s.key)
        .env("HUMANLAYER_API_BASE", s.api(""))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mail = sink.wait_for(1).await.remove(0);
    assert_eq!(mail.rcpt, ["ada@example.com"]);
    let approve = mail.link("Approve:");
    let http = http();
    assert_eq!(http.get(&approve).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(http.post(&approve).form(&[("comment", "")]).send().await.unwrap().status(), StatusCode::OK);
    let out = tokio::task::spawn_blocking(move || agent.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "refunded 120 to acme");
}

#[tokio::test]
async fn requests_without_a_channel_go_to_the_projects_default_email() {
    let (s, sink) = server_with_email().await;
    let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
    assert!(
        s.store
            .set_default_email(&project.id, Some("team@example.com"), &countersign_core::event::Stamp::now("test"))
            .await
            .unwrap()
    );
    s.post("/function_calls", approval("plain")).await;
    let slack = json!({"run_id": "r", "call_id": "slack", "spec": {"fn": "f", "kwargs": {}, "channel": {"slack": {"channel_or_user_id": "C1"}}}});
    s.post("/function_calls", slack).await;
    s.post("/function_calls", emailed("own", json!({"address": "ada@example.com"}))).await;
    let mails = sink.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mails = if sink.mails.lock().unwrap().len() > 2 { sink.mails.lock().unwrap().clone() } else { mails };
    assert_eq!(mails.len(), 2, "a request with another channel is not emailed: {mails:?}");
    let default = mails.iter().find(|m| m.is_about("plain")).expect("the default-channel email");
    assert_eq!(default.rcpt, ["team@example.com"]);
    let own = mails.iter().find(|m| m.is_about("own")).unwrap();
    assert_eq!(own.rcpt, ["ada@example.com"]);
    wait_sent(&s, countersign_core::RequestKind::FunctionCall, "plain", 1).await;
    // The default address may decide by reply.
    let reply = format!(
        "From: team@example.com\r\nIn-Reply-To: <{}>\r\nContent-Type: text/plain\r\n\r\nyes\r\n",
        default.header("Message-ID")
    );
    let secret = inbound_secret(&s, "alpha").await;
    let resp = s.http.post(s.api("/email/inbound")).bearer_auth(&secret).body(reply).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (_, fc) = s.get("/function_calls/plain").await;
    assert_eq!(
        fc["status"]["user_info"],
        json!({"channel": "email", "email": "team@example.com", "via": "inbound_email"})
    );
}

/// Waits until the first email of a request of project `alpha` is `failed` and returns its error.
async fn failed_reason(s: &TestServer, call_id: &str, within: Duration) -> String {
    let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
    let deadline = Instant::now() + within;
    loop {
        let emails =
            s.store.emails_of(&project.id, countersign_core::RequestKind::FunctionCall, call_id).await.unwrap();
        if let Some(e) = emails.first().filter(|e| e.status == DeliveryStatus::Failed) {
            return e.last_error.clone().unwrap_or_default();
        }
        assert!(Instant::now() < deadline, "email of {call_id} not failed in time: {emails:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_emails_at_once_than_database_connections_all_go_out() {
    // The worker sends up to 16 at once inside one task; while it waits on the store, the sends
    // holding the pool's connections (4 on SQLite) must still run, or the worker stalls for good.
    let (s, sink) = server_with_email().await;
    let creates =
        (0..24).map(|i| s.post("/function_calls", emailed(&format!("m{i}"), json!({"address": "ada@example.com"}))));
    for (status, body) in futures::future::join_all(creates).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let mails = sink.wait_for(24).await;
    assert_eq!(mails.len(), 24);
    for i in 0..24 {
        assert!(mails.iter().any(|m| m.is_about(&format!("m{i}"))), "no email about m{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_templates_fail_for_good_and_other_email_still_flows() {
    // A render deadline far above what the memory bound needs, so that on a loaded machine the
    // memory bound is still what ends the greedy template (fuel and output size end the others).
    let limits = Limits { template_timeout_ms: 10_000, ..Limits::default() };
    let (s, sink) = server_with_email_and(limits).await;
    let started = Instant::now();
    // A loop of 10^10 steps, and one that builds gigabytes of text.
    let spin = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
    let huge = "{% for i in range(1000) %}{{ \"x\" * 50000000 }}{% endfor %}";
    s.post("/function_calls", emailed("spin", json!({"address": "ada@example.com", "template": spin}))).await;
    s.post("/function_calls", emailed("huge", json!({"address": "ada@example.com", "template": huge}))).await;
    // One that needs more memory than the renderer may take, with a short output.
    let greedy = "{% set ns = namespace(s=\"x\" * 1000000) %}{% for i in range(9) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}";
    s.post("/function_calls", emailed("greedy", json!({"address": "ada@example.com", "template": greedy}))).await;
    // And a recipient that is no address at all.
    s.post("/function_calls", emailed("nobody", json!({"address": "not an address"}))).await;
    // Another project's plain email goes out meanwhile.
    let plain = emailed("fine", json!({"address": "bob@example.com"}));
    let (status, _) = s.post_as(&s.other_key, "/function_calls", plain).await;
    assert_eq!(status, StatusCode::OK);
    let mails = sink.wait_for(1).await;
    assert_eq!(mails[0].rcpt, ["bob@example.com"]);
    assert!(started.elapsed() < Duration::from_secs(10), "the plain email waited {:?}", started.elapsed());
    // Both runaway templates end as permanent failures that say why, not a day of retries.
    let spin_reason = failed_reason(&s, "spin", Duration::from_secs(20)).await;
    assert!(spin_reason.contains("template"), "{spin_reason}");
    let huge_reason = failed_reason(&s, "huge", Duration::from_secs(20)).await;
    assert!(huge_reason.contains("template"), "{huge_reason}");
    let greedy_reason = failed_reason(&s, "greedy", Duration::from_secs(20)).await;
    assert!(greedy_reason.contains("bytes of memory"), "the memory bound ends it: {greedy_reason}");
    let nobody_reason = failed_reason(&s, "nobody", Duration::from_secs(20)).await;
    assert!(nobody_reason.contains("is not a valid email address"), "{nobody_reason}");
    let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
    for call_id in ["spin", "huge", "greedy", "nobody"] {
        let emails =
            s.store.emails_of(&project.id, countersign_core::RequestKind::FunctionCall, call_id).await.unwrap();
        assert_eq!(emails[0].attempts, 1, "failed at the first attempt, never retried: {emails:?}");
    }
    assert_eq!(sink.mails.lock().unwrap().len(), 1, "nothing of the failed emails was sent");
}

/// A server killed right after a request with an email channel was acknowledged sends its email
/// after restart, once: the email was queued in the create's own transaction (while the SMTP
/// server was down, so nothing could have been sent before the kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_after_the_create_emails_after_restart() {
    use crate::binary::{Served, countersign, fresh_dir, stdout};
    let dir = fresh_dir().await;
    let key =
        stdout(&countersign(dir.path(), &["keys", "create", "--project", "crash"])).lines().last().unwrap().to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let smtp = format!("smtp://127.0.0.1:{port}");
    let env =
        [("COUNTERSIGN_SMTP_URL", smtp.as_str()), ("COUNTERSIGN_EMAIL_FROM", "Countersign <approvals@example.com>")];
    let mut server = Served::start_with(dir.path(), &env, std::process::Stdio::inherit());
    let http = crate::support::client();
    let create = http
        .post(server.url("/humanlayer/v1/function_calls"))
        .bearer_auth(&key)
        .json(&emailed("c1", json!({"address": "ada@example.com"})));
    assert_eq!(create.send().await.unwrap().status(), StatusCode::OK);
    server.child.kill().unwrap(); // SIGKILL right after the create was acknowledged
    server.child.wait().unwrap();

    let (sink, _) = SmtpSink::start_on(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    let server = Served::start_with(dir.path(), &env, std::process::Stdio::inherit());
    // A first attempt the killed server made (refused: nothing listened) is retried about 5 s
    // later; one it was in the middle of when killed waits for its claim (60 s) to lapse.
    let deadline = Instant::now() + Duration::from_secs(90);
    while sink.mails.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the email was not sent after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mails = sink.mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1, "sent once");
    assert_eq!(mails[0].rcpt, ["ada@example.com"]);
    assert!(mails[0].raw.contains("refund"), "{}", mails[0].raw);
    assert!(server.terminate().success());
}
