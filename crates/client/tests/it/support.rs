//! Shared fixtures: a real Countersign server per test (restartable on the same data directory and
//! port), a human who decides through the API, and a proxy that counts the SDK's requests.

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use countersign_client::Client;
use countersign_core::{ProjectName, api_key};
use countersign_server::{Server, Settings};
use countersign_store::NewApiKey;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server on a fresh data directory.
pub struct TestServer {
    dir: TempDir,
    pub addr: SocketAddr,
    /// A key of the project `alpha`.
    pub key: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// A plain HTTP client (ring as the crypto provider, as the SDK does).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

impl TestServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = countersign_store::open(
            &database_url(&dir),
            countersign_store::secrets::data_dir_keyring(dir.path()).unwrap().0,
        )
        .await
        .unwrap();
        let project = store.ensure_project(&ProjectName::parse("alpha").unwrap()).await.unwrap();
        let key = api_key::generate();
        let new_key = NewApiKey {
            project_id: project.id,
            name: None,
            display_prefix: key.display_prefix,
            hash: key.hash,
            scopes: countersign_core::api_key::Scopes::all(),
            owner: None,
        };
        store.insert_api_key(new_key, &countersign_core::event::Stamp::now("test")).await.unwrap();
        let mut server =
            Self { dir, addr: "127.0.0.1:0".parse().unwrap(), key: key.secret, http: http(), stop: None, task: None };
        server.launch().await;
        server
    }

    /// Serves the data directory on `self.addr` (port 0 the first time, then the same port).
    async fn launch(&mut self) {
        let store = countersign_store::open(
            &database_url(&self.dir),
            countersign_store::secrets::data_dir_keyring(self.dir.path()).unwrap().0,
        )
        .await
        .unwrap();
        let server = Server::bind(self.addr, store, Settings::default()).await.unwrap();
        self.addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        self.task = Some(tokio::spawn(server.run(async move {
            let _ = stopped.await;
        })));
        self.stop = Some(stop);
    }

    /// Stops gracefully and waits until the store is closed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// Starts again on the same data directory and the same port.
    pub async fn start_again(&mut self) {
        self.launch().await;
    }

    /// The API base URL.
    pub fn base(&self) -> String {
        format!("http://{}/humanlayer/v1", self.addr)
    }

    /// An SDK client of this server; long-polls of `wait`.
    pub fn client(&self) -> Client {
        Client::builder().base_url(self.base()).api_key(&self.key).run_id("test-run").build().unwrap()
    }

    /// A client with custom settings.
    pub fn client_builder(&self) -> countersign_client::ClientBuilder {
        Client::builder().base_url(self.base()).api_key(&self.key).run_id("test-run")
    }

    /// The human: `POST` through the API with the project's key.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response =
            self.http.post(format!("{}{path}", self.base())).bearer_auth(&self.key).json(&body).send().await.unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        (status, response.json().await.unwrap())
    }

    /// Decides the approval `call_id`.
    pub async fn decide(&self, call_id: &str, decision: Value) -> Value {
        let (status, body) = self.post(&format!("/agent/function_calls/{call_id}/respond"), decision).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Answers the question `call_id`.
    pub async fn answer(&self, call_id: &str, answer: Value) -> Value {
        let (status, body) = self.post(&format!("/agent/human_contacts/{call_id}/respond"), answer).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until a request of `kind` (`function_calls` or `human_contacts`) is pending; returns it.
    pub async fn next_pending(&self, kind: &str) -> Value {
        for _ in 0..500 {
            let url = format!("{}/agent/{kind}/pending", self.base());
            let page: Value = self.http.get(url).bearer_auth(&self.key).send().await.unwrap().json().await.unwrap();
            if let Some(first) = page["items"].get(0) {
                return first.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("nothing became pending in {kind}");
    }
}

fn database_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.path().join("countersign.db").display())
}

/// A reverse proxy in front of a server that counts the GETs it forwards.
pub struct CountingProxy {
    pub addr: SocketAddr,
    gets: Arc<AtomicUsize>,
}

impl CountingProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let gets = Arc::new(AtomicUsize::new(0));
        let counted = gets.clone();
        let http = http();
        let app = axum::Router::new().fallback(move |request: Request| {
            let (http, counted) = (http.clone(), counted.clone());
            async move {
                if request.method() == axum::http::Method::GET {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                forward(&http, target, request).await
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, gets }
    }

    pub fn base(&self) -> String {
        format!("http://{}/humanlayer/v1", self.addr)
    }

    /// GETs forwarded so far.
    pub fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }
}

async fn forward(http: &reqwest::Client, target: SocketAddr, request: Request) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
    let mut outgoing = http.request(method, format!("http://{target}{path}")).body(body);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(value) = parts.headers.get(&name) {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
    }
    let response = outgoing.send().await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let mut headers = HeaderMap::new();
    if let Some(value) = response.headers().get("content-type") {
        headers.insert(header::CONTENT_TYPE, value.as_bytes().try_into().unwrap());
    }
    (status, headers, response.bytes().await.unwrap())
}
