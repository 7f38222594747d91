//! A reverse proxy that stands between an agent and a real Countersign server and alters the
//! decided function calls it passes back (an attacker on the path, or a compromised server
//! front), to show that what the agent then runs is checked against the signed receipt.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;

/// How the proxy alters each decided function call (its JSON, with `status.approved` set).
pub type Alter = Arc<dyn Fn(&mut Value) + Send + Sync>;

/// The running proxy.
pub struct Tamper {
    pub addr: SocketAddr,
}

impl Tamper {
    /// Proxies every request to `target` with `http` (give it a client that can be built: a
    /// rustls crypto provider installed); answers of `/humanlayer/v1/function_calls...` (not
    /// `/execution`) that hold a decided call are passed through `alter`.
    pub async fn start(http: reqwest::Client, target: SocketAddr, alter: Alter) -> Self {
        let app = axum::Router::new().fallback(move |request: Request| {
            let (http, alter) = (http.clone(), alter.clone());
            async move {
                let path = request.uri().path();
                let altering = path.starts_with("/humanlayer/v1/function_calls") && !path.ends_with("/execution");
                let (status, headers, body) = forward(&http, target, request).await;
                match serde_json::from_slice::<Value>(&body) {
                    Ok(mut call) if altering && call["status"]["approved"].is_boolean() => {
                        alter(&mut call);
                        (status, headers, Bytes::from(call.to_string()))
                    }
                    _ => (status, headers, body),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr }
    }

    /// The HumanLayer API base through the proxy.
    pub fn base(&self) -> String {
        format!("http://{}/humanlayer/v1", self.addr)
    }
}

async fn forward(http: &reqwest::Client, target: SocketAddr, request: Request) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut outgoing = http.request(method, format!("http://{target}{path}")).body(body);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
        if let Some(value) = parts.headers.get(&name) {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    match outgoing.send().await {
        Ok(response) => {
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, headers, response.bytes().await.unwrap_or_default())
        }
        Err(_) => (StatusCode::BAD_GATEWAY, headers, Bytes::new()),
    }
}
