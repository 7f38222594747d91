//! The SMS and WhatsApp channel against a fake Twilio REST API (the production code only has its
//! base URL changed), with inbound messages posted and signed the way Twilio signs them, and the
//! released Python SDK as the agent.

use crate::support::{TestServer, agent_output, loopback_webhooks, python_agent};
use countersign_core::Timestamp;
use countersign_fakes::twilio::{self, Failure, FakeTwilio};
use countersign_server::Settings;
use countersign_server::channels::sms::TwilioSettings;
use countersign_store::TwilioConnection;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

pub(crate) const SID: &str = "AC0123456789abcdef0123456789abcdef";
pub(crate) const TOKEN: &str = "twilio-auth-token-alpha";
/// The project's SMS and WhatsApp senders.
const FROM: &str = "+15550001111";
const WA_FROM: &str = "+15550002222";
/// Approvers' phones.
const ADA: &str = "+15551230001";
const BOB: &str = "+15551230002";
const STRANGER: &str = "+15559999999";
const WAIT: Duration = Duration::from_secs(20);

fn settings(fake: &FakeTwilio) -> Settings {
    Settings { twilio: TwilioSettings { api_base: fake.base() }, ..loopback_webhooks() }
}

/// A server and a fake Twilio; project `alpha` is connected (SMS from [`FROM`], WhatsApp from
/// [`WA_FROM`], auth token [`TOKEN`]).
async fn twilio_server() -> (TestServer, FakeTwilio) {
    let fake = FakeTwilio::start().await;
    let s = TestServer::start_with(settings(&fake)).await;
    let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
    s.store
        .set_twilio_connection(
            &TwilioConnection {
                project_id: project.id,
                account_sid: SID.into(),
                auth_token: TOKEN.into(),
                from: FROM.into(),
                whatsapp_from: Some(WA_FROM.into()),
                connected_at: Timestamp::now(),
            },
            &countersign_core::event::Stamp::now("test"),
        )
        .await
        .unwrap();
    (s, fake)
}

/// A function call texted to `phone`.
fn texted(call_id: &str, phone: &str) -> Value {
    json!({"run_id": "run-1", "call_id": call_id, "spec": {
        "fn": "refund", "kwargs": {"customer": "acme", "amount": 120},
        "channel": {"sms": {"phone_number": phone}},
        "reject_options": [
            {"name": "too_much", "title": "Too much", "description": "over budget"},
            {"name": "later", "title": "Ask me later", "description": "not now"}
        ]
    }})
}

/// The four-digit code in a message the server sent.
fn code_in(body: &str) -> String {
    let after = body.split_once("Reply YES ").or_else(|| body.split_once("Reply ")).map(|(_, rest)| rest);
    after
        .and_then(|rest| rest.get(..4))
        .filter(|code| code.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no code in {body:?}"))
        .to_owned()
}

/// Posts an inbound message from `from` (e.g. `+1555...` or `whatsapp:+1555...`) to the
/// project's number, signed with `token` as Twilio signs; the status and the TwiML message text.
async fn text_as(s: &TestServer, token: &str, from: &str, body: &str) -> (StatusCode, String) {
    let to = if from.starts_with("whatsapp:") { format!("whatsapp:{WA_FROM}") } else { FROM.to_owned() };
    let sid = format!("SM{:032x}", rand_u128());
    let params = [("From", from), ("To", to.as_str()), ("Body", body), ("MessageSid", sid.as_str()), ("NumMedia", "0")];
    post_signed(s, token, &params).await
}

async fn text(s: &TestServer, from: &str, body: &str) -> (StatusCode, String) {
    text_as(s, TOKEN, from, body).await
}

async fn post_signed(s: &TestServer, token: &str, params: &[(&str, &str)]) -> (StatusCode, String) {
    let url = format!("http://{}/twilio/inbound", s.addr);
    let signature = twilio::sign(token, &url, params);
    let answer = s
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(twilio::form(params))
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body = answer.text().await.unwrap();
    (status, said(&body))
}

/// The text of a TwiML `<Message>` (unescaped), or the body as it is when it is not TwiML.
fn said(body: &str) -> String {
    match (body.find("<Message>"), body.find("</Message>")) {
        (Some(a), Some(b)) => {
            body[a + 9..b].replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&")
        }
        _ if body.contains("<Response>") => String::new(),
        _ => body.to_owned(),
    }
}

fn rand_u128() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    u128::from(NEXT.fetch_add(1, Ordering::Relaxed)) << 64 | u128::from(std::process::id())
}

const SMS_AGENT: &str = r#"
import sys
from humanlayer import HumanLayer, ContactChannel, SMSContactChannel, ResponseOption
hl = HumanLayer(verbose=False)
channel = ContactChannel(sms=SMSContactChannel(phone_number=sys.argv[1]))
options = [ResponseOption(name="too_much", title="Too much", description="over budget"),
           ResponseOption(name="later", title="Ask me later", description="not now")]
@hl.require_approval(contact_channel=channel, reject_options=options)
def refund(amount: int, currency: str) -> str:
    return f"refunded {amount} {currency}"
print(refund(amount=5000, currency="USD"), flush=True)
"#;

/// Approve, reject with a reason, and pick an option by number, each in one reply, with the
/// released SDK waiting; the message says what is asked and how to answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_decides_from_a_plain_phone_in_one_reply() {
    let (s, fake) = twilio_server().await;
    // Approve.
    let agent = python_agent(&s, SMS_AGENT, ADA);
    let sent = fake.wait_for_sent(1, WAIT).await.remove(0);
    assert_eq!((sent.to.as_str(), sent.from.as_str(), sent.account_sid.as_str()), (ADA, FROM, SID));
    assert_eq!(sent.auth_token.as_deref(), Some(TOKEN));
    let code = code_in(&sent.body);
    assert!(sent.body.starts_with("Approve refund(amount=5000, currency=USD)?"), "{}", sent.body);
    assert!(sent.body.contains(&format!("Reply YES {code} or NO {code} <reason>.")), "{}", sent.body);
    assert!(sent.body.contains(&format!("1 {code} for Too much, 2 {code} for Ask me later")), "{}", sent.body);
    assert!(sent.body.contains(&format!("http://{}/r/alpha/approval/", s.addr)), "a link: {}", sent.body);
    assert!(countersign_core::sms::segments(&sent.body).segments <= 2, "{}", sent.body);
    let (status, answer) = text(&s, ADA, &format!("YES {code}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, format!("Approved refund ({code}). Thank you."));
    assert_eq!(agent_output(agent).await, "refunded 5000 USD");

    // Reject with a reason, code first and in lower case.
    let agent = python_agent(&s, SMS_AGENT, ADA);
    let sent = fake.wait_for_sent(2, WAIT).await.remove(1);
    let code = code_in(&sent.body);
    let (_, answer) = text(&s, ADA, &format!("no {code} too much for one customer")).await;
    assert!(answer.starts_with("Rejected refund"), "{answer}");
    assert_eq!(agent_output(agent).await, "User denied refund with message: too much for one customer");

    // An option by its number.
    let agent = python_agent(&s, SMS_AGENT, ADA);
    let sent = fake.wait_for_sent(3, WAIT).await.remove(2);
    let code = code_in(&sent.body);
    let (_, answer) = text(&s, ADA, &format!("2 {code}")).await;
    assert!(answer.starts_with("Rejected refund"), "{answer}");
    assert_eq!(agent_output(agent).await, "User denied refund with message: not now", "the option's description");
}

/// The decision records the channel and the number, and the person when the number is theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_by_text_names_the_number_and_the_person_it_belongs_to() {
    let (s, fake) = twilio_server().await;
    s.person("ada@example.com", "a long passphrase", &["alpha"]).await;
    assert_eq!(
        s.store
            .set_user_phone("ada@example.com", Some(ADA), &countersign_core::event::Stamp::now("test"))
            .await
            .unwrap(),
        countersign_store::PhoneSet::Done
    );
    s.post("/function_calls", texted("p1", ADA)).await;
    s.post("/function_calls", texted("p2", BOB)).await;
    let sent = fake.wait_for_sent(2, WAIT).await;
    for m in &sent {
        let code = code_in(&m.body);
        let (_, answer) = text(&s, &m.to, &format!("y {code}")).await;
        assert!(answer.starts_with("Approved"), "{answer}");
    }
    let (_, p1) = s.get("/function_calls/p1").await;
    assert_eq!(p1["status"]["approved"], true);
    assert_eq!(p1["status"]["user_info"]["channel"], "sms");
    assert_eq!(p1["status"]["user_info"]["phone_number"], ADA);
    assert_eq!(p1["status"]["user_info"]["email"], "ada@example.com");
    let (_, p2) = s.get("/function_calls/p2").await;
    assert_eq!(p2["status"]["user_info"]["phone_number"], BOB);
    assert_eq!(p2["status"]["user_info"]["email"], Value::Null, "bob's number belongs to no person");
}

const WHATSAPP_AGENT: &str = r#"
import sys
from humanlayer import HumanLayer, ContactChannel, WhatsAppContactChannel
hl = HumanLayer(verbose=False)
ask = hl.human_as_tool(contact_channel=ContactChannel(whatsapp=WhatsAppContactChannel(phone_number=sys.argv[1])))
print(ask("Which colour should the launch banner be?"), flush=True)
"#;

/// A question by WhatsApp, answered in free text (without the code: it is the only one pending).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_is_answered_by_whatsapp() {
    let (s, fake) = twilio_server().await;
    let agent = python_agent(&s, WHATSAPP_AGENT, BOB);
    let sent = fake.wait_for_sent(1, WAIT).await.remove(0);
    assert_eq!(sent.to, format!("whatsapp:{BOB}"));
    assert_eq!(sent.from, format!("whatsapp:{WA_FROM}"));
    let code = code_in(&sent.body);
    assert!(sent.body.starts_with("Question: Which colour should the launch banner be?"), "{}", sent.body);
    assert!(sent.body.contains(&format!("Reply {code} <your answer>.")), "{}", sent.body);
    let (_, pending) = s.get("/agent/human_contacts/pending").await;
    let call_id = pending["items"][0]["call_id"].as_str().unwrap().to_owned();
    // The same number by SMS has nothing pending: a WhatsApp request is answered on WhatsApp.
    let (_, by_sms) = text(&s, BOB, "Yes, deep blue").await;
    assert_eq!(by_sms, "", "nothing was texted to this number by SMS: {by_sms}");
    let (_, answer) = text(&s, &format!("whatsapp:{BOB}"), "Yes, deep blue").await;
    assert_eq!(answer, format!("Your answer to {code} is recorded. Thank you."));
    assert_eq!(agent_output(agent).await, "Yes, deep blue");
    let (_, contact) = s.get(&format!("/contact_requests/{call_id}")).await;
    assert_eq!(contact["status"]["response"], "Yes, deep blue");
    assert_eq!(contact["status"]["user_info"]["channel"], "whatsapp");
    assert_eq!(contact["status"]["user_info"]["phone_number"], BOB);
}

/// Forged or missing signatures are refused (403) and change nothing; a stranger's number cannot
/// decide, even with the right code; a replayed message is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_stranger_sends_decides_anything() {
    let (s, fake) = twilio_server().await;
    s.post("/function_calls", texted("f1", ADA)).await;
    let code = code_in(&fake.wait_for_sent(1, WAIT).await[0].body);
    let yes = format!("YES {code}");

    let (status, body) = text_as(&s, "not-the-token", ADA, &yes).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("X-Twilio-Signature"), "{body}");
    let url = format!("http://{}/twilio/inbound", s.addr);
    let params = [("From", ADA), ("To", FROM), ("Body", yes.as_str()), ("MessageSid", "SM1")];
    let unsigned = s
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(twilio::form(&params))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::FORBIDDEN);
    // Signed over other fields than those sent (the body changed in transit).
    let signature = twilio::sign(TOKEN, &url, &params);
    let tampered = [("From", ADA), ("To", FROM), ("Body", "YES"), ("MessageSid", "SM1")];
    let forged = s
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", signature)
        .body(twilio::form(&tampered))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let (_, f1) = s.get("/function_calls/f1").await;
    assert_eq!(f1["status"]["responded_at"], Value::Null, "still pending: {f1}");

    // A stranger, properly signed (Twilio relays anyone's message): no answer, nothing decided.
    let (status, answer) = text(&s, STRANGER, &yes).await;
    assert_eq!((status, answer.as_str()), (StatusCode::OK, ""));
    let (_, answer) = text(&s, STRANGER, "YES").await;
    assert_eq!(answer, "");
    let (_, f1) = s.get("/function_calls/f1").await;
    assert_eq!(f1["status"]["responded_at"], Value::Null, "still pending: {f1}");

    // The right number decides; the same message posted again is ignored.
    let params = [("From", ADA), ("To", FROM), ("Body", yes.as_str()), ("MessageSid", "SMreplayed")];
    let (_, first) = post_signed(&s, TOKEN, &params).await;
    assert!(first.starts_with("Approved"), "{first}");
    let (status, again) = post_signed(&s, TOKEN, &params).await;
    assert_eq!((status, again.as_str()), (StatusCode::OK, ""), "a replay is acknowledged and ignored");
    // Another project's token does not sign for this one's number.
    let (status, _) = text_as(&s, "beta-token", ADA, "NO").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Two requests pending for one number: a reply without a code is answered with the codes; one
/// with a code decides that one only; a request decided elsewhere answers who decided it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pending_requests_on_one_number_are_told_apart_by_their_codes() {
    let (s, fake) = twilio_server().await;
    s.post("/function_calls", texted("t1", ADA)).await;
    s.post("/function_calls", texted("t2", ADA)).await;
    let sent = fake.wait_for_sent(2, WAIT).await;
    let codes: Vec<String> = sent.iter().map(|m| code_in(&m.body)).collect();
    assert_ne!(codes[0], codes[1], "codes are unique among the number's open requests");
    let (_, listing) = text(&s, ADA, "yes").await;
    assert!(listing.starts_with("2 requests wait for you"), "{listing}");
    assert!(listing.contains(&codes[0]) && listing.contains(&codes[1]), "{listing}");
    let (_, t1) = s.get("/function_calls/t1").await;
    assert_eq!(t1["status"]["responded_at"], Value::Null);

    // Which request got which code is the store's business: find t2's.
    let t2_code =
        sent.iter().zip(&codes).find(|(m, _)| m.body.contains("approval/t2")).map(|(_, c)| c.clone()).unwrap();
    let (_, answer) = text(&s, ADA, &format!("{t2_code} approve")).await;
    assert!(answer.starts_with("Approved"), "{answer}");
    let (_, t2) = s.get("/function_calls/t2").await;
    assert_eq!(t2["status"]["approved"], true);
    let (_, t1) = s.get("/function_calls/t1").await;
    assert_eq!(t1["status"]["responded_at"], Value::Null, "t1 untouched");

    // Now t1 is the only one: a bare NO applies to it.
    let (_, answer) = text(&s, ADA, "NO not this week").await;
    assert!(answer.starts_with("Rejected"), "{answer}");
    let (_, t1) = s.get("/function_calls/t1").await;
    assert_eq!(t1["status"]["comment"], "not this week");

    // Decided elsewhere first: the reply hears who decided.
    s.post("/function_calls", texted("t3", ADA)).await;
    let code = code_in(&fake.wait_for_sent(3, WAIT).await[2].body);
    let (status, _) = s.post("/agent/function_calls/t3/respond", json!({"approved": true, "comment": "ok"})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, answer) = text(&s, ADA, &format!("NO {code}")).await;
    assert!(answer.starts_with("Already approved by API key"), "{answer}");
    assert!(answer.contains("via api"), "{answer}");
    let (_, t3) = s.get("/function_calls/t3").await;
    assert_eq!(t3["status"]["approved"], true, "unchanged");
}

/// Twilio's refusals fail the delivery for good with Twilio's code in its log; 429 and 5xx are
/// retried; STOP stops further messages until START.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_errors_and_opt_outs() {
    let (s, fake) = twilio_server().await;
    fake.fail_next(Failure::Error {
        status: 400,
        code: 21211,
        message: "The 'To' number is not a valid phone number.".into(),
    });
    s.post("/function_calls", texted("e1", ADA)).await;
    let failed = wait_delivery(&s, "e1", "failed").await;
    assert!(failed["last_error"].as_str().unwrap().contains("21211"), "{failed}");
    assert_eq!(failed["attempts"], 1);

    // A 429 waits its Retry-After, then goes out.
    fake.fail_next(Failure::RateLimited { retry_after_secs: 1 });
    s.post("/function_calls", texted("e2", ADA)).await;
    let delivered = wait_delivery(&s, "e2", "delivered").await;
    assert_eq!(delivered["attempts"], 2, "{delivered}");
    assert_eq!(delivered["recipients"], json!([ADA]));
    assert_eq!(fake.sent().len(), 1);
    // A 5xx is retried later (not failed).
    fake.fail_next(Failure::Status(503));
    s.post("/function_calls", texted("e5", ADA)).await;
    let retrying = wait_delivery(&s, "e5", "pending-after-attempt").await;
    assert!(retrying["last_error"].as_str().unwrap().contains("503"), "{retrying}");

    // STOP is recorded: the next request to the number is not sent.
    let (_, answer) = text(&s, ADA, "STOP").await;
    assert_eq!(answer, "", "Twilio answers STOP itself");
    s.post("/function_calls", texted("e3", ADA)).await;
    let stopped = wait_delivery(&s, "e3", "failed").await;
    assert!(stopped["last_error"].as_str().unwrap().contains("replied STOP"), "{stopped}");
    assert_eq!(fake.sent().len(), 1, "nothing more was sent");
    let (_, _) = text(&s, ADA, "START").await;
    s.post("/function_calls", texted("e4", ADA)).await;
    let sent = fake.wait_for_sent(2, WAIT).await;
    assert!(sent[1].body.contains("Approve refund"), "sent again after START");
}

/// The delivery of a request's text, once it reached `status`.
async fn wait_delivery(s: &TestServer, call_id: &str, status: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
        let found = s
            .store
            .deliveries_of(
                countersign_core::route::Channel::Sms,
                &project.id,
                countersign_core::RequestKind::FunctionCall,
                call_id,
            )
            .await
            .unwrap()
            .into_iter()
            .next();
        if let Some(d) = &found
            && (d.status.as_str() == status
                || (status == "pending-after-attempt" && d.attempts >= 1 && d.status.as_str() == "pending"))
        {
            return json!({"attempts": d.attempts, "last_error": d.last_error, "recipients": d.recipients});
        }
        assert!(tokio::time::Instant::now() < deadline, "the text of {call_id} never became {status}: {found:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server killed right after a request addressed to a phone was acknowledged texts it after
/// the restart, once (it was queued in the create's own transaction, while Twilio was down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_after_the_create_texts_after_restart() {
    use crate::binary::{Served, fresh_dir};
    use crate::support::run_cli;
    let fake = FakeTwilio::start().await;
    let dir = fresh_dir().await;
    let base = fake.base();
    let key =
        String::from_utf8(run_cli(dir.path(), &["keys", "create", "--project", "crash"], &[], "").stdout).unwrap();
    let key = key.lines().last().unwrap().to_owned();
    let connect =
        ["twilio", "connect", "--project", "crash", "--account-sid", SID, "--auth-token-stdin", "--from", FROM];
    let out = run_cli(dir.path(), &connect, &[("COUNTERSIGN_TWILIO_API_BASE", base.as_str())], TOKEN);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let mut server = Served::start_with(
        dir.path(),
        &[("COUNTERSIGN_TWILIO_API_BASE", dead.as_str())],
        std::process::Stdio::inherit(),
    );
    let http = crate::support::client();
    let create = http.post(server.url("/humanlayer/v1/function_calls")).bearer_auth(&key).json(&texted("k1", ADA));
    assert_eq!(create.send().await.unwrap().status(), StatusCode::OK);
    server.child.kill().unwrap(); // SIGKILL right after the create was acknowledged
    server.child.wait().unwrap();
    assert!(fake.sent().is_empty());

    let server = Served::start_with(
        dir.path(),
        &[("COUNTERSIGN_TWILIO_API_BASE", base.as_str())],
        std::process::Stdio::inherit(),
    );
    // A first attempt the killed server made (refused: nothing listened) is retried about 5 s
    // later; one it was in the middle of when killed waits for its claim (60 s) to lapse.
    let sent = fake.wait_for_sent(1, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.sent().len(), 1, "texted once: {sent:?}");
    assert_eq!(sent[0].to, ADA);
    assert!(server.terminate().success());
}

/// The CLI connects (checking the credentials with Twilio), shows and disconnects; a person's
/// phone number is set, shown and refused when it is someone else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_connects_twilio_and_sets_phone_numbers() {
    use crate::support::run_cli;
    let fake = FakeTwilio::start().await;
    fake.only_accept(SID, TOKEN);
    let dir = crate::binary::fresh_dir().await;
    let base = fake.base();
    let env = [("COUNTERSIGN_TWILIO_API_BASE", base.as_str()), ("COUNTERSIGN_PUBLIC_URL", "https://cs.example.com")];
    run_cli(dir.path(), &["keys", "create", "--project", "ops"], &[], "");
    let text = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    let wrong = run_cli(
        dir.path(),
        &["twilio", "connect", "--project", "ops", "--account-sid", SID, "--auth-token-stdin", "--from", FROM],
        &env,
        "wrong",
    );
    assert_eq!(wrong.status.code(), Some(1), "{}", text(&wrong));
    assert!(text(&wrong).contains("20003"), "{}", text(&wrong));
    let bad_number = run_cli(
        dir.path(),
        &["twilio", "connect", "--project", "ops", "--account-sid", SID, "--auth-token-stdin", "--from", "555-0001"],
        &env,
        TOKEN,
    );
    assert_eq!(bad_number.status.code(), Some(2), "{}", text(&bad_number));
    let ok = run_cli(
        dir.path(),
        &[
            "twilio",
            "connect",
            "--project",
            "ops",
            "--account-sid",
            SID,
            "--auth-token-stdin",
            "--from",
            "+1 555 000 1111",
            "--whatsapp-from",
            "whatsapp:+15550002222",
            "--json",
        ],
        &env,
        TOKEN,
    );
    assert!(ok.status.success(), "{}", text(&ok));
    let shown: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(shown["from"], FROM);
    assert_eq!(shown["whatsapp_from"], "whatsapp:+15550002222");
    assert_eq!(shown["inbound_url"], "https://cs.example.com/twilio/inbound");
    assert!(!text(&ok).contains(TOKEN), "the token is never shown");
    let status = run_cli(dir.path(), &["twilio", "status", "--project", "ops", "--json"], &env, "");
    assert!(status.status.success(), "{}", text(&status));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["credentials_ok"], true);
    let gone = run_cli(dir.path(), &["twilio", "disconnect", "--project", "ops"], &env, "");
    assert!(text(&gone).contains("disconnected"), "{}", text(&gone));
    let status = run_cli(dir.path(), &["twilio", "status", "--project", "ops"], &env, "");
    assert_eq!(status.status.code(), Some(1));
    assert!(text(&status).contains("twilio connect"), "{}", text(&status));

    for email in ["ada@example.com", "bob@example.com"] {
        let out = run_cli(
            dir.path(),
            &["users", "create", "--email", email, "--role", "approver", "--project", "ops"],
            &[],
            "",
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    let set = run_cli(dir.path(), &["users", "phone", "ada@example.com", "+1 (555) 123-0001"], &[], "");
    assert!(set.status.success(), "{}", text(&set));
    let shown = run_cli(dir.path(), &["users", "phone", "ada@example.com"], &[], "");
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim(), ADA);
    let taken = run_cli(dir.path(), &["users", "phone", "bob@example.com", ADA], &[], "");
    assert!(!taken.status.success() && text(&taken).contains("ada@example.com"), "{}", text(&taken));
    let bad = run_cli(dir.path(), &["users", "phone", "bob@example.com", "12345"], &[], "");
    assert!(!bad.status.success() && text(&bad).contains("international form"), "{}", text(&bad));
}
