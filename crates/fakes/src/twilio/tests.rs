//! The fake Twilio over real HTTP, with a hand-written HTTP/1.1 client (so the tests check the
//! bytes on the wire, not a client library's view of them).

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "auth-token";

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

/// Sends one request to `path` (below the fake's base) and reads the whole response.
async fn send(twilio: &FakeTwilio, verb: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let base = twilio.base();
    let host = base.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(host).await.unwrap();
    let mut request =
        format!("{verb} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // The fake may answer (413) before reading a large body, and close.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    parse_reply(&String::from_utf8(raw).unwrap())
}

fn parse_reply(raw: &str) -> Reply {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP head in {raw:?}"));
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

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn messages_path(account_sid: &str) -> String {
    format!("/2010-04-01/Accounts/{account_sid}/Messages.json")
}

/// A message post for `account_sid` with these credentials and fields, as the production code
/// makes it.
async fn post_as(twilio: &FakeTwilio, account_sid: &str, auth: Option<(&str, &str)>, fields: &[(&str, &str)]) -> Reply {
    let authorization = auth.map(|(user, password)| basic(user, password));
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(authorization) = &authorization {
        headers.push(("Authorization", authorization));
    }
    send(twilio, "POST", &messages_path(account_sid), &headers, form(fields).as_bytes()).await
}

/// A message post with the test's account and token.
async fn post(twilio: &FakeTwilio, fields: &[(&str, &str)]) -> Reply {
    post_as(twilio, SID, Some((SID, TOKEN)), fields).await
}

/// Form fields, as a test writes them.
type Fields = &'static [(&'static str, &'static str)];

const HELLO: Fields = &[("To", "+15551230001"), ("From", "+15559870000"), ("Body", "hello, world & more")];

#[tokio::test]
async fn base_is_the_loopback_root() {
    let twilio = FakeTwilio::start().await;
    let base = twilio.base();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert!(!base.ends_with('/'), "{base}");
    assert!(format!("{twilio:?}").contains(&base));
}

#[tokio::test]
async fn an_accepted_message_is_answered_201_and_recorded_with_its_sid() {
    let twilio = FakeTwilio::start().await;
    let first = post(&twilio, HELLO).await;
    let second = post(&twilio, &[("To", "+15551230002"), ("From", "+15559870000"), ("Body", "é ✅")]).await;

    assert_eq!(first.status, 201, "{first:?}");
    assert!(first.header("content-type").unwrap().starts_with("application/json"));
    let (first, second) = (first.json(), second.json());
    assert_eq!(first["account_sid"], SID);
    assert_eq!(first["to"], "+15551230001");
    assert_eq!(first["from"], "+15559870000");
    assert_eq!(first["body"], "hello, world & more");
    assert_eq!(first["status"], "queued");
    assert_eq!(first["num_segments"], "1");
    assert_eq!(first["direction"], "outbound-api");
    assert_eq!(second["body"], "é ✅");
    let sid = first["sid"].as_str().unwrap();
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    assert!(sid[2..].chars().all(|c| c.is_ascii_hexdigit()), "{sid}");
    assert_ne!(first["sid"], second["sid"]);
    assert_eq!(first["uri"], format!("/2010-04-01/Accounts/{SID}/Messages/{sid}.json"));
    assert!(first["date_created"].as_str().unwrap().ends_with(" +0000"), "{first}");

    let messages = twilio.messages();
    assert_eq!(messages.len(), 2);
    let message = &messages[0];
    assert_eq!(message.account_sid, SID);
    assert_eq!(message.auth_user.as_deref(), Some(SID));
    assert_eq!(message.auth_token.as_deref(), Some(TOKEN));
    assert_eq!((message.to.as_str(), message.from.as_str()), ("+15551230001", "+15559870000"));
    assert_eq!(message.body, "hello, world & more");
    assert_eq!(message.sid.as_deref(), Some(sid));
    assert_eq!(message.status, 201);
    assert_eq!(message.params.len(), 3);
    assert!(messages[1].at >= message.at);
    assert_eq!(twilio.sent().len(), 2);
    assert_eq!(twilio.wait_for_sent(2, Duration::from_secs(1)).await.len(), 2);
}

#[tokio::test]
async fn a_missing_field_is_answered_400_with_its_code_and_recorded() {
    let twilio = FakeTwilio::start().await;
    let cases: [(Fields, i64, &str); 4] = [
        (&[("From", "+1555"), ("Body", "hi")], 21604, "A 'To' phone number is required."),
        (&[("To", ""), ("From", "+1555"), ("Body", "hi")], 21604, "A 'To' phone number is required."),
        (&[("To", "+1555"), ("Body", "hi")], 21603, "A 'From' phone number is required."),
        (&[("To", "+1555"), ("From", "+1666")], 21602, "Message body is required."),
    ];
    for (fields, code, message) in cases {
        let reply = post(&twilio, fields).await;
        assert_eq!(reply.status, 400, "{fields:?}");
        assert_eq!(
            reply.json(),
            json!({
                "code": code,
                "message": message,
                "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
                "status": 400,
            })
        );
    }
    let messages = twilio.messages();
    assert_eq!(messages.len(), 4);
    assert!(messages.iter().all(|message| message.status == 400 && message.sid.is_none()));
    assert_eq!(messages[2].to, "+1555");
    assert_eq!(messages[2].from, "");
    assert!(twilio.sent().is_empty());
}

#[tokio::test]
async fn queued_failures_are_used_in_order_then_messages_go_through() {
    let twilio = FakeTwilio::start().await;
    twilio.fail_next(Failure::RateLimited { retry_after_secs: 7 });
    twilio.fail_next(Failure::Error {
        status: 400,
        code: 21211,
        message: "The 'To' number +1555 is not a valid phone number.".into(),
    });
    twilio.fail_next(Failure::Error {
        status: 400,
        code: 21610,
        message: "Attempt to send to unsubscribed recipient".into(),
    });
    twilio.fail_next(Failure::Status(503));
    twilio.fail_next(Failure::Status(1000));

    // Checking the account does not use up a queued failure.
    let check = send(
        &twilio,
        "GET",
        &format!("/2010-04-01/Accounts/{SID}.json"),
        &[("Authorization", &basic(SID, TOKEN))],
        b"",
    )
    .await;
    assert_eq!(check.status, 200);

    let limited = post(&twilio, HELLO).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("7"));
    assert_eq!(limited.json()["code"], 20429);
    assert_eq!(limited.json()["message"], "Too Many Requests");
    assert_eq!(limited.json()["status"], 429);

    let invalid = post(&twilio, HELLO).await;
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.json()["code"], 21211);
    assert_eq!(invalid.json()["message"], "The 'To' number +1555 is not a valid phone number.");
    assert_eq!(invalid.json()["more_info"], "https://www.twilio.com/docs/errors/21211");

    let unsubscribed = post(&twilio, HELLO).await;
    assert_eq!((unsubscribed.status, unsubscribed.json()["code"].clone()), (400, json!(21610)));

    let unavailable = post(&twilio, HELLO).await;
    assert_eq!((unavailable.status, unavailable.body.as_str()), (503, ""));

    let not_a_status = post(&twilio, HELLO).await;
    assert_eq!((not_a_status.status, not_a_status.body.as_str()), (500, ""));

    // A failure wins over the other checks, even missing credentials.
    twilio.fail_next(Failure::Status(502));
    assert_eq!(post_as(&twilio, SID, None, &[]).await.status, 502);

    let normal = post(&twilio, HELLO).await;
    assert_eq!(normal.status, 201);

    let statuses: Vec<u16> = twilio.messages().iter().map(|message| message.status).collect();
    assert_eq!(statuses, [429, 400, 400, 503, 500, 502, 201]);
    assert!(twilio.messages()[..6].iter().all(|message| message.sid.is_none()));
    let sent = twilio.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].sid.as_deref(), normal.json()["sid"].as_str());
}

#[tokio::test]
async fn credentials_are_checked() {
    let twilio = FakeTwilio::start().await;
    // Any pair is accepted until only_accept, as long as its user is the path's account.
    assert_eq!(post_as(&twilio, SID, Some((SID, "whatever")), HELLO).await.status, 201);
    let unauthenticated = json!({
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    });
    let no_auth = post_as(&twilio, SID, None, HELLO).await;
    assert_eq!((no_auth.status, no_auth.json()), (401, unauthenticated.clone()));
    assert!(no_auth.header("www-authenticate").unwrap().starts_with("Basic"));
    let other_account = post_as(&twilio, "AC999", Some((SID, TOKEN)), HELLO).await;
    assert_eq!((other_account.status, other_account.json()), (401, unauthenticated.clone()));
    let bearer = [("Authorization", "Bearer abc")];
    assert_eq!(send(&twilio, "POST", &messages_path(SID), &bearer, form(HELLO).as_bytes()).await.status, 401);

    twilio.only_accept(SID, TOKEN);
    let wrong_token = post_as(&twilio, SID, Some((SID, "stale")), HELLO).await;
    assert_eq!((wrong_token.status, wrong_token.json()), (401, unauthenticated.clone()));
    let wrong_account = post_as(&twilio, "AC999", Some(("AC999", TOKEN)), HELLO).await;
    assert_eq!(wrong_account.status, 401);
    assert_eq!(post(&twilio, HELLO).await.status, 201);

    // A refused post is recorded with what it carried.
    let messages = twilio.messages();
    assert_eq!(messages.iter().map(|message| message.status).collect::<Vec<_>>(), [201, 401, 401, 401, 401, 401, 201]);
    assert_eq!(messages[1].auth_user, None);
    assert_eq!(messages[3].auth_user, None);
    assert_eq!(messages[4].auth_token.as_deref(), Some("stale"));
    assert_eq!(messages[4].to, "+15551230001");
    assert_eq!(twilio.sent().len(), 2);

    // The account check follows the same rules.
    let account = |sid: &str| format!("/2010-04-01/Accounts/{sid}.json");
    let good = send(&twilio, "GET", &account(SID), &[("Authorization", &basic(SID, TOKEN))], b"").await;
    assert_eq!(good.status, 200);
    assert_eq!(good.json()["sid"], SID);
    assert_eq!(good.json()["friendly_name"], "Fake account");
    assert_eq!(good.json()["status"], "active");
    let stale = send(&twilio, "GET", &account(SID), &[("Authorization", &basic(SID, "stale"))], b"").await;
    assert_eq!((stale.status, stale.json()), (401, unauthenticated.clone()));
    assert_eq!(send(&twilio, "GET", &account(SID), &[], b"").await.status, 401);

    // Rotating the token: the new pair replaces the old one.
    twilio.only_accept(SID, "rotated");
    assert_eq!(post(&twilio, HELLO).await.status, 401);
    assert_eq!(post_as(&twilio, SID, Some((SID, "rotated")), HELLO).await.status, 201);
}

#[tokio::test]
async fn unknown_paths_are_404_and_other_verbs_405() {
    let twilio = FakeTwilio::start().await;
    let auth = basic(SID, TOKEN);
    let headers = [("Authorization", auth.as_str())];
    let not_found = json!({
        "code": 20404,
        "message": "The requested resource was not found",
        "more_info": "https://www.twilio.com/docs/errors/20404",
        "status": 404,
    });
    for path in [
        "/",
        "/2010-04-01/Accounts",
        &format!("/2010-04-01/Accounts/{SID}"),
        &format!("/2010-04-01/Accounts/{SID}/Messages"),
        &format!("/2010-04-01/Accounts/{SID}/Calls.json"),
        &format!("/2010-04-01/Accounts/{SID}/Messages.json/extra"),
        &format!("/2010-04-02/Accounts/{SID}/Messages.json"),
    ] {
        let reply = send(&twilio, "POST", path, &headers, form(HELLO).as_bytes()).await;
        assert_eq!((reply.status, reply.json()), (404, not_found.clone()), "{path}");
    }
    let listed = send(&twilio, "GET", &messages_path(SID), &headers, b"").await;
    assert_eq!((listed.status, listed.json()["code"].clone()), (405, json!(20004)));
    let updated = send(&twilio, "POST", &format!("/2010-04-01/Accounts/{SID}.json"), &headers, b"").await;
    assert_eq!(updated.status, 405);
    assert!(twilio.messages().is_empty());
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_not_recorded() {
    let twilio = FakeTwilio::start().await;
    let body = format!("To=%2B1555&From=%2B1666&Body={}", "a".repeat(MAX_BODY_BYTES));
    let auth = basic(SID, TOKEN);
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/x-www-form-urlencoded")];
    let reply = send(&twilio, "POST", &messages_path(SID), &headers, body.as_bytes()).await;
    assert_eq!(reply.status, 413);
    assert!(twilio.messages().is_empty());
    // Just under the limit is fine.
    let body = format!("To=%2B1555&From=%2B1666&Body={}", "a".repeat(MAX_BODY_BYTES - 40));
    let reply = send(&twilio, "POST", &messages_path(SID), &headers, body.as_bytes()).await;
    assert_eq!(reply.status, 201);
}

#[tokio::test]
async fn wait_for_sent_wakes_when_a_message_arrives() {
    let twilio = FakeTwilio::start().await;
    let waiter = {
        let twilio = twilio.clone();
        tokio::spawn(async move { twilio.wait_for_sent(1, Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    post(&twilio, &[("From", "+1"), ("Body", "refused")]).await;
    post(&twilio, HELLO).await;
    let sent = waiter.await.unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body, "hello, world & more");
}

#[tokio::test]
#[should_panic(expected = "expected 2 accepted message(s) within 50ms but got 1; the 2 message post(s) that arrived")]
async fn wait_for_sent_panics_listing_what_arrived() {
    let twilio = FakeTwilio::start().await;
    post(&twilio, HELLO).await;
    post(&twilio, &[("To", "+1"), ("Body", "no sender")]).await;
    twilio.wait_for_sent(2, Duration::from_millis(50)).await;
}

/// The worked example of Twilio's webhook security documentation (the one the official SDKs
/// test against): its caller is `+14158675310`.
#[test]
fn the_signature_matches_twilios_documented_example() {
    let params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675310"),
        ("Digits", "1234"),
        ("From", "+14158675310"),
        ("To", "+18005551212"),
    ];
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    assert_eq!(sign("12345", url, &params), "GvWf1cFY/Q7PnoempGyD5oXAezc=");
    // The order the parameters are given in does not matter; the token, URL and values do.
    let mut reversed = params;
    reversed.reverse();
    assert_eq!(sign("12345", url, &reversed), "GvWf1cFY/Q7PnoempGyD5oXAezc=");
    assert_ne!(sign("12346", url, &params), "GvWf1cFY/Q7PnoempGyD5oXAezc=");
    assert_ne!(sign("12345", "https://mycompany.com/myapp.php?foo=1&bar=3", &params), "GvWf1cFY/Q7PnoempGyD5oXAezc=");
}

#[test]
fn form_encodes_the_way_browsers_and_twilio_do() {
    assert_eq!(form(&[("Body", "hi there"), ("From", "+1 (555) ✅")]), "Body=hi+there&From=%2B1+%28555%29+%E2%9C%85");
    assert_eq!(form(&[]), "");
}

#[test]
fn dates_are_written_as_twilio_writes_them() {
    assert_eq!(rfc2822(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
    assert_eq!(rfc2822(UNIX_EPOCH + Duration::from_secs(1_692_853_305)), "Thu, 24 Aug 2023 05:01:45 +0000");
    assert_eq!(rfc2822(UNIX_EPOCH + Duration::from_secs(951_782_400)), "Tue, 29 Feb 2000 00:00:00 +0000");
    assert_eq!(rfc2822(UNIX_EPOCH + Duration::from_secs(4_102_444_799)), "Thu, 31 Dec 2099 23:59:59 +0000");
}
