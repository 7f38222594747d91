//! Webhooks as an attacker with a project key would use them: URLs to the server's own network
//! are refused (unless the configuration allows private targets), an endpoint that somehow points
//! there anyway is not reached, and the delivery log cannot tell open, closed and non-HTTP ports
//! apart.

use crate::support::{TestServer, approval, assert_error};
use crate::webhooks::Receiver;
use countersign_server::Settings;
use countersign_store::NewWebhookEndpoint;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// The forms of "this machine or its private network" an agent tried, with what the refusal says.
const PRIVATE_URLS: [(&str, &str); 12] = [
    ("http://169.254.169.254/latest/meta-data/", "link-local address (169.254.169.254)"),
    ("http://[::1]:8484/hook", "loopback address (::1)"),
    ("http://localhost:8484/hook", "loopback address (localhost)"),
    ("http://0.0.0.0:8484/hook", "unspecified address (0.0.0.0)"),
    ("http://2130706433:8484/hook", "loopback address (127.0.0.1)"),
    ("http://0x7f000001/hook", "loopback address (127.0.0.1)"),
    ("http://017700000001/hook", "loopback address (127.0.0.1)"),
    ("http://10.0.0.1/hook", "private address (10.0.0.1)"),
    ("http://192.168.1.1/hook", "private address (192.168.1.1)"),
    ("http://[fe80::1]/hook", "link-local address (fe80::1)"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback address (::ffff:127.0.0.1)"),
    ("https://127.0.0.1:8484/hook", "loopback address (127.0.0.1)"),
];

#[tokio::test]
async fn webhook_urls_to_private_addresses_are_refused_by_default() {
    let s = TestServer::start_with(Settings::default()).await;
    for (url, reason) in PRIVATE_URLS {
        let got = s.post("/webhooks", json!({"url": url})).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request", reason);
        assert_error(&got, StatusCode::BAD_REQUEST, "invalid_request", "limits.allow_private_webhook_targets");
    }
    let (_, listed) = s.get("/webhooks").await;
    assert_eq!(listed["items"], json!([]), "nothing was stored");
    // A public address is fine.
    let (status, body) = s.post("/webhooks", json!({"url": "https://93.184.215.14/hook"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The opt-in (what the other tests use) lets every one of them through.
    let allowed = TestServer::start().await;
    for (url, _) in PRIVATE_URLS {
        let (status, body) = allowed.post("/webhooks", json!({"url": url})).await;
        assert_eq!(status, StatusCode::CREATED, "{url} with the opt-in: {body}");
    }
}

/// The newest delivery of an endpoint once it has been attempted.
async fn attempted(s: &TestServer, endpoint_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, log) = s.get(&format!("/webhooks/{endpoint_id}/deliveries")).await;
        if log["items"][0]["attempts"].as_u64().unwrap_or(0) >= 1 {
            return log["items"][0].clone();
        }
        assert!(Instant::now() < deadline, "never attempted: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_endpoint_stored_with_a_private_address_is_never_reached() {
    let s = TestServer::start_with(Settings::default()).await;
    let (receiver, url) = Receiver::start().await;
    let port = url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/hook");
    let project = s.store.project_by_name("alpha").await.unwrap().unwrap();
    // Stored directly, as if registered before the check existed (or with the opt-in since
    // turned off): the literal address, a loopback name, and an IPv4-mapped IPv6 form.
    let mut ids = Vec::new();
    for target in
        [url.clone(), format!("http://localhost:{port}/hook"), format!("http://[::ffff:127.0.0.1]:{port}/hook")]
    {
        let endpoint = s
            .store
            .add_webhook(
                &NewWebhookEndpoint {
                    project_id: project.id.clone(),
                    url: target,
                    events: vec![countersign_core::webhook::EventType::FunctionCallCreated],
                    format: countersign_core::webhook::Format::V1Beta2,
                    secret: countersign_core::webhook::generate_secret(),
                },
                &countersign_core::event::Stamp::now("test"),
            )
            .await
            .unwrap();
        ids.push(endpoint.id);
    }
    s.post("/function_calls", approval("c1")).await;
    for id in &ids {
        let delivery = attempted(&s, id).await;
        assert_eq!(delivery["status"], "pending", "{delivery}");
        assert_eq!(delivery["last_error"], "could not deliver: no HTTP response", "{delivery}");
        assert_eq!(delivery["last_status"], Value::Null);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received().is_empty(), "the loopback receiver got nothing");
}

/// Serves `reply` (then closes) to every connection; `None` accepts and closes at once.
async fn raw_server(reply: Option<&'static [u8]>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            if let Some(reply) = reply {
                let _ = stream.write_all(reply).await;
            }
            drop(stream);
        }
    });
    port
}

#[tokio::test]
async fn the_delivery_log_does_not_tell_closed_open_and_non_http_ports_apart() {
    let s = TestServer::start().await; // loopback allowed: the point is what the log says
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ssh = raw_server(Some(b"SSH-2.0-OpenSSH_9.6\r\n")).await;
    let hangs_up = raw_server(None).await;
    let http = raw_server(Some(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")).await;
    let (_, plain_http) = Receiver::start().await;
    let targets = [
        format!("http://127.0.0.1:{closed}/hook"),
        format!("http://127.0.0.1:{ssh}/hook"),
        format!("http://127.0.0.1:{hangs_up}/hook"),
        // TLS to a port that speaks plain HTTP.
        plain_http.replace("http://", "https://"),
        format!("http://127.0.0.1:{http}/hook"),
    ];
    let mut ids = Vec::new();
    for url in &targets {
        let (status, endpoint) = s.post("/webhooks", json!({"url": url, "events": ["function_call.created"]})).await;
        assert_eq!(status, StatusCode::CREATED, "{endpoint}");
        ids.push(endpoint["id"].as_str().unwrap().to_owned());
    }
    s.post("/function_calls", approval("c1")).await;
    let mut seen = Vec::new();
    for id in &ids {
        let delivery = attempted(&s, id).await;
        seen.push((
            delivery["last_error"].clone(),
            delivery["last_status"].clone(),
            delivery["last_latency_ms"].clone(),
        ));
    }
    let no_answer = (json!("could not deliver: no HTTP response"), Value::Null, json!(0));
    for (url, got) in targets.iter().zip(&seen).take(4) {
        assert_eq!(got, &no_answer, "{url}");
    }
    assert_eq!(seen[4].0, "the endpoint answered 503 Service Unavailable");
    assert_eq!(seen[4].1, 503);
    // The attempts log says the same.
    let (_, log) = s.get(&format!("/webhooks/{}/deliveries", ids[1])).await;
    let delivery_id = log["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, one) = s.get(&format!("/webhook_deliveries/{delivery_id}")).await;
    assert_eq!(one["attempts_log"][0]["error"], "could not deliver: no HTTP response", "{one}");
    assert_eq!(one["attempts_log"][0]["latency_ms"], 0, "{one}");
}
