//! The fake Slack over real HTTP, with a hand-written HTTP/1.1 client (so the tests check the
//! bytes on the wire, not a client library's view of them).

use std::time::Duration;

use countersign_fakes::slack::{Failure, FakeSlack, sign};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "xoxb-test-token";

/// One HTTP response, as read off the socket.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// Sends one request to `path` (below the fake's base, e.g. `/chat.postMessage?x=1`) and reads
/// the whole response.
async fn send(slack: &FakeSlack, verb: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let base = slack.base();
    let host = base.strip_prefix("http://").and_then(|rest| rest.strip_suffix("/api")).unwrap();
    let mut stream = TcpStream::connect(host).await.unwrap();
    let mut request = format!(
        "{verb} /api{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    parse_reply(&String::from_utf8(raw).unwrap())
}

fn parse_reply(raw: &str) -> Reply {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    Reply { status, headers, body: body.to_owned() }
}

/// A JSON call with the bot token as a bearer header.
async fn post_json(slack: &FakeSlack, method: &str, args: Value) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    let headers = [("Content-Type", "application/json; charset=utf-8"), ("Authorization", auth.as_str())];
    send(slack, "POST", &format!("/{method}"), &headers, args.to_string().as_bytes()).await
}

/// A form-encoded call (the token among the fields, if the caller puts it there).
async fn post_form(slack: &FakeSlack, method: &str, form: &str) -> Reply {
    let headers = [("Content-Type", "application/x-www-form-urlencoded")];
    send(slack, "POST", &format!("/{method}"), &headers, form.as_bytes()).await
}

#[tokio::test]
async fn base_is_the_loopback_api_root() {
    let slack = FakeSlack::start().await;
    let base = slack.base();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert!(base.ends_with("/api"), "{base}");
}

#[tokio::test]
async fn post_message_records_and_answers_with_increasing_ts_and_dm_channels() {
    let slack = FakeSlack::start().await;
    let blocks = json!([{ "type": "section", "text": { "type": "mrkdwn", "text": "*hi*" } }]);
    let first = post_json(&slack, "chat.postMessage", json!({ "channel": "C1", "text": "hello" })).await;
    let second =
        post_json(&slack, "chat.postMessage", json!({ "channel": "U123", "blocks": blocks, "thread_ts": "1.2" })).await;

    assert_eq!(first.status, 200);
    assert!(first.header("content-type").unwrap().starts_with("application/json"));
    let (first, second) = (first.json(), second.json());
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["channel"], "C1");
    assert_eq!(first["message"]["text"], "hello");
    assert_eq!(first["ts"], first["message"]["ts"]);
    assert_eq!(second["ok"], true, "{second}");
    assert_eq!(second["channel"], "D123");
    assert_eq!(second["message"]["blocks"], blocks);
    assert_eq!(second["message"]["thread_ts"], "1.2");

    let ts = |answer: &Value| answer["ts"].as_str().unwrap().parse::<f64>().unwrap();
    assert!(ts(&second) > ts(&first), "{first} then {second}");
    let decimals = first["ts"].as_str().unwrap().split_once('.').unwrap().1.len();
    assert_eq!(decimals, 6);

    let calls = slack.calls_to("chat.postMessage");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].token.as_deref(), Some(TOKEN));
    assert_eq!(calls[0].body, json!({ "channel": "C1", "text": "hello" }));
    assert_eq!(calls[1].body["blocks"], blocks);
    assert_eq!(calls[1].answered, second);
    assert!(calls[1].at >= calls[0].at);
}

#[tokio::test]
async fn post_message_needs_a_channel_and_some_text() {
    let slack = FakeSlack::start().await;
    let no_channel = post_json(&slack, "chat.postMessage", json!({ "text": "hi" })).await;
    assert_eq!(no_channel.json(), json!({ "ok": false, "error": "channel_not_found" }));
    let no_text = post_json(&slack, "chat.postMessage", json!({ "channel": "C1" })).await;
    assert_eq!(no_text.json(), json!({ "ok": false, "error": "no_text" }));
    let bad_blocks =
        post_form(&slack, "chat.postMessage", &format!("token={TOKEN}&channel=C1&blocks=%7Bnot+json")).await;
    assert_eq!(bad_blocks.json()["error"], "invalid_blocks_format");
    let null_blocks =
        post_json(&slack, "chat.postMessage", json!({ "channel": "C1", "text": "hi", "blocks": null })).await;
    assert_eq!(null_blocks.json()["ok"], true);
}

#[tokio::test]
async fn blocks_sent_as_a_form_field_are_parsed() {
    let slack = FakeSlack::start().await;
    let form = format!("token={TOKEN}&channel=C1&blocks=%5B%7B%22type%22%3A%22divider%22%7D%5D");
    let answer = post_form(&slack, "chat.postMessage", &form).await.json();
    assert_eq!(answer["message"]["blocks"], json!([{ "type": "divider" }]));
    // The recorded arguments keep the form field as the string that was sent.
    let call = &slack.calls_to("chat.postMessage")[0];
    assert_eq!(call.body["blocks"], r#"[{"type":"divider"}]"#);
    assert_eq!(call.token.as_deref(), Some(TOKEN));
}

#[tokio::test]
async fn update_accepts_only_timestamps_the_fake_handed_out_for_that_channel() {
    let slack = FakeSlack::start().await;
    let posted = post_json(&slack, "chat.postMessage", json!({ "channel": "U7", "text": "v1" })).await.json();
    let ts = posted["ts"].as_str().unwrap();

    let unknown = post_json(&slack, "chat.update", json!({ "channel": "D7", "ts": "1.000001", "text": "v2" })).await;
    assert_eq!(unknown.json(), json!({ "ok": false, "error": "message_not_found" }));
    let other_channel = post_json(&slack, "chat.update", json!({ "channel": "C1", "ts": ts, "text": "v2" })).await;
    assert_eq!(other_channel.json()["error"], "message_not_found");

    let updated = post_json(&slack, "chat.update", json!({ "channel": "D7", "ts": ts, "text": "v2" })).await.json();
    assert_eq!(updated["ok"], true, "{updated}");
    assert_eq!(updated["channel"], "D7");
    assert_eq!(updated["ts"], ts);
    assert_eq!(updated["text"], "v2");
    assert_eq!(slack.calls_to("chat.update").len(), 3);
}

#[tokio::test]
async fn a_queued_rate_limit_is_answered_once_with_retry_after() {
    let slack = FakeSlack::start().await;
    slack.fail_next("chat.postMessage", Failure::RateLimited { retry_after_secs: 7 });
    let args = json!({ "channel": "C1", "text": "hi" });

    let limited = post_json(&slack, "chat.postMessage", args.clone()).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("7"));
    assert_eq!(limited.json(), json!({ "ok": false, "error": "ratelimited" }));

    let normal = post_json(&slack, "chat.postMessage", args).await;
    assert_eq!(normal.status, 200);
    assert_eq!(normal.json()["ok"], true);

    let calls = slack.calls_to("chat.postMessage");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].answered, json!({ "http_status": 429 }));
    assert_eq!(calls[1].answered["ok"], true);
}

#[tokio::test]
async fn queued_failures_are_used_in_order_and_only_for_their_method() {
    let slack = FakeSlack::start().await;
    slack.fail_next("chat.postMessage", Failure::Error("not_in_channel".into()));
    slack.fail_next("chat.postMessage", Failure::Status(503));
    let args = json!({ "channel": "C1", "text": "hi" });

    let auth = post_json(&slack, "auth.test", json!({})).await;
    assert_eq!(auth.json()["ok"], true);

    let first = post_json(&slack, "chat.postMessage", args.clone()).await;
    assert_eq!((first.status, first.json()), (200, json!({ "ok": false, "error": "not_in_channel" })));
    let second = post_json(&slack, "chat.postMessage", args.clone()).await;
    assert_eq!(second.status, 503);
    assert_eq!(second.body, "");
    let third = post_json(&slack, "chat.postMessage", args).await;
    assert_eq!(third.json()["ok"], true);
    assert_eq!(slack.calls_to("chat.postMessage")[1].answered, json!({ "http_status": 503 }));
}

#[tokio::test]
async fn form_encoded_users_info_finds_added_users() {
    let slack = FakeSlack::start().await;
    slack.add_user("U1", "T1", Some("ada@example.com"));
    slack.add_user("U2", "T1", None);

    let ada = post_form(&slack, "users.info", &format!("token={TOKEN}&user=U1")).await.json();
    assert_eq!(ada["ok"], true, "{ada}");
    assert_eq!(ada["user"]["id"], "U1");
    assert_eq!(ada["user"]["team_id"], "T1");
    assert_eq!(ada["user"]["profile"]["email"], "ada@example.com");

    let no_email = post_form(&slack, "users.info", &format!("token={TOKEN}&user=U2")).await.json();
    assert_eq!(no_email["ok"], true);
    assert!(no_email["user"]["profile"].get("email").is_none(), "{no_email}");

    let unknown = post_form(&slack, "users.info", &format!("token={TOKEN}&user=U9")).await.json();
    assert_eq!(unknown, json!({ "ok": false, "error": "user_not_found" }));

    let call = &slack.calls_to("users.info")[0];
    assert_eq!(call.token.as_deref(), Some(TOKEN));
    assert_eq!(call.body, json!({ "token": TOKEN, "user": "U1" }));
}

#[tokio::test]
async fn get_with_query_parameters_works_like_slack() {
    let slack = FakeSlack::start().await;
    slack.add_user("W5", "T1", Some("bo@example.com"));
    let reply = send(&slack, "GET", &format!("/users.info?token={TOKEN}&user=W5"), &[], b"").await;
    assert_eq!(reply.json()["user"]["profile"]["email"], "bo@example.com");
}

#[tokio::test]
async fn tokens_are_checked() {
    let slack = FakeSlack::start().await;
    let none = send(&slack, "POST", "/auth.test", &[], b"").await;
    assert_eq!(none.status, 200);
    assert_eq!(none.json(), json!({ "ok": false, "error": "not_authed" }));

    let user_token = post_form(&slack, "auth.test", "token=xoxp-user").await;
    assert_eq!(user_token.json()["error"], "invalid_auth");

    let ok = post_json(&slack, "auth.test", json!({})).await.json();
    assert_eq!(ok["team_id"], "T0FAKE");
    assert_eq!(ok["user_id"], "UBOT");

    slack.revoke_token(TOKEN);
    let revoked = post_json(&slack, "auth.test", json!({})).await;
    assert_eq!(revoked.json()["error"], "invalid_auth");
    assert_eq!(slack.calls().len(), 4);
    assert_eq!(slack.calls()[0].token, None);
}

#[tokio::test]
async fn views_open_takes_the_view_as_an_object_or_a_json_string() {
    let slack = FakeSlack::start().await;
    let view = json!({ "type": "modal", "title": { "type": "plain_text", "text": "Why?" }, "blocks": [] });

    let as_object = post_json(&slack, "views.open", json!({ "trigger_id": "1.2.abc", "view": view })).await.json();
    assert_eq!(as_object["ok"], true, "{as_object}");
    assert!(as_object["view"]["id"].as_str().unwrap().starts_with('V'));
    assert_eq!(as_object["view"]["title"], view["title"]);

    let encoded = view.to_string().replace('%', "%25").replace('&', "%26").replace('+', "%2B");
    let form = format!("token={TOKEN}&trigger_id=1.2.abc&view={encoded}");
    let as_string = post_form(&slack, "views.open", &form).await.json();
    assert_eq!(as_string["view"]["type"], "modal", "{as_string}");
    assert_ne!(as_string["view"]["id"], as_object["view"]["id"]);

    let no_trigger = post_json(&slack, "views.open", json!({ "view": view })).await.json();
    assert_eq!(no_trigger, json!({ "ok": false, "error": "invalid_arguments" }));
}

#[tokio::test]
async fn post_ephemeral_answers_a_message_ts() {
    let slack = FakeSlack::start().await;
    let answer =
        post_json(&slack, "chat.postEphemeral", json!({ "channel": "C1", "user": "U1", "text": "psst" })).await.json();
    assert_eq!(answer["ok"], true, "{answer}");
    assert!(answer["message_ts"].is_string());
    let no_user = post_json(&slack, "chat.postEphemeral", json!({ "channel": "C1", "text": "psst" })).await.json();
    assert_eq!(no_user["ok"], false);
}

#[tokio::test]
async fn malformed_requests_get_slack_errors() {
    let slack = FakeSlack::start().await;
    let unknown = post_json(&slack, "chat.teleport", json!({})).await;
    assert_eq!((unknown.status, unknown.json()), (200, json!({ "ok": false, "error": "unknown_method" })));

    let auth = format!("Bearer {TOKEN}");
    let headers = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];
    let broken = send(&slack, "POST", "/chat.postMessage", &headers, b"{\"channel\":").await;
    assert_eq!(broken.json(), json!({ "ok": false, "error": "invalid_json" }));
    let call = &slack.calls_to("chat.postMessage")[0];
    assert_eq!(call.body, "{\"channel\":");
    assert_eq!(call.token.as_deref(), Some(TOKEN));
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_refused() {
    let slack = FakeSlack::start().await;
    let text = "a".repeat(1024 * 1024 + 1);
    let reply = post_form(&slack, "chat.postMessage", &format!("token={TOKEN}&channel=C1&text={text}")).await;
    assert_eq!(reply.status, 413);
    assert!(slack.calls().is_empty());
}

#[tokio::test]
async fn wait_for_returns_once_enough_calls_arrived() {
    let slack = FakeSlack::start().await;
    let sender = slack.clone();
    tokio::spawn(async move {
        for n in 0..3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            post_json(&sender, "chat.postMessage", json!({ "channel": "C1", "text": n.to_string() })).await;
        }
    });
    let calls = slack.wait_for("chat.postMessage", 3, Duration::from_secs(10)).await;
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[2].body["text"], "2");
}

#[tokio::test]
#[should_panic(expected = "expected 2 call(s) of chat.postMessage")]
async fn wait_for_panics_listing_what_arrived() {
    let slack = FakeSlack::start().await;
    post_json(&slack, "chat.postMessage", json!({ "channel": "C1", "text": "only one" })).await;
    slack.wait_for("chat.postMessage", 2, Duration::from_millis(100)).await;
}

#[test]
fn sign_matches_slack_signatures() {
    // From Python: hmac.new(b'secret', b'v0:1:body', hashlib.sha256).hexdigest()
    assert_eq!(sign("secret", 1, "body"), "v0=c9bc7cc90a3668336bc5414530c26b4fdd714d73e447a37b322b8251e09f98e2");
    // Slack's documented example secret, timestamp and body, computed the same way.
    assert_eq!(
        sign("8f742231b10e8888abcd99yyyzzz85a5", 1531420618, "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J"),
        "v0=bca5eef5dd737ed259b428b18cd24f679baa18c3fc5f1cb2a6ac9f03e717969a"
    );
    // And against the hmac crate directly.
    let mut mac = Hmac::<Sha256>::new_from_slice(b"another").unwrap();
    mac.update(b"v0:1700000000:{\"a\":1}");
    let expected = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(sign("another", 1_700_000_000, "{\"a\":1}"), expected);
}
