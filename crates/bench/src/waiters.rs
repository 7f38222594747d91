//! Many parked connections on one server, each on a TCP connection of its own: long-polls
//! (`GET /humanlayer/v1/function_calls/{id}?wait=60`) and inbox event streams (`GET /events`,
//! signed in as a person). For each: the server's resident memory per parked connection, and
//! the time from the event that wakes them to the last one told.

use crate::client::{Conn, Target};
use crate::memory;
use crate::process::Server;
use crate::stats::Samples;
use anyhow::{Context, Result, anyhow, bail};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The long-poll's `wait` (the API's most).
const WAIT_SECS: u64 = 60;
/// Connections being opened at once (the server's accept backlog is 1,024; a refused SYN costs
/// the client a 1 s retry).
const OPENING: usize = 256;
/// Connections the decisions are sent over.
const DECIDERS: u64 = 64;
/// The longest an inbox stream may take to be told of a change.
const TELL_TIMEOUT: Duration = Duration::from_secs(60);

/// What one long-poll scenario measured.
#[derive(Debug, Default)]
pub struct PollResult {
    pub waiters: u64,
    /// Distinct requests waited on (1: all wait on the same one).
    pub requests: u64,
    pub rss_before: u64,
    pub rss_parked: u64,
    /// Opening every connection and sending its long-poll.
    pub parking: Duration,
    /// First decision sent → last long-poll answered.
    pub wake_all: Duration,
    /// First decision sent → last decision answered.
    pub deciding: Duration,
    /// The same run's baseline: deciding as many requests that nobody waits on over the same
    /// connections (distinct), or the one respond's round trip (shared).
    pub baseline: Duration,
    /// First decision sent → each long-poll's answer.
    pub answered: Samples,
    /// Long-polls answered before the decisions were sent (not parked).
    pub early: u64,
    /// Long-polls answered without the decision, or with an error.
    pub failed: u64,
    pub first_problem: Option<String>,
}

impl PollResult {
    /// Resident bytes the server holds per parked long-poll.
    pub fn per_waiter(&self) -> f64 {
        self.rss_parked.saturating_sub(self.rss_before) as f64 / self.waiters as f64
    }
}

/// What the inbox streams measured.
#[derive(Debug, Default)]
pub struct StreamResult {
    pub streams: u64,
    pub rss_before: u64,
    pub rss_open: u64,
    /// Opening every stream (to its answer's head).
    pub opening: Duration,
    /// The create's own round trip (the same run's baseline).
    pub create: Duration,
    /// Create sent → each stream's `changed` event.
    pub told: Samples,
    /// Streams not told within [`TELL_TIMEOUT`] (or failed).
    pub missing: u64,
    pub first_problem: Option<String>,
}

impl StreamResult {
    /// Resident bytes the server holds per open stream.
    pub fn per_stream(&self) -> f64 {
        self.rss_open.saturating_sub(self.rss_before) as f64 / self.streams as f64
    }
}

/// What the kept-alive connections between requests measured: the server's memory per HTTP/1.1
/// connection before any request is parked on it (the floor under a long-poll's figure).
#[derive(Debug, Default)]
pub struct IdleResult {
    pub connections: u64,
    pub rss_before: u64,
    pub rss_open: u64,
}

impl IdleResult {
    /// Resident bytes the server holds per open connection.
    pub fn per_connection(&self) -> f64 {
        self.rss_open.saturating_sub(self.rss_before) as f64 / self.connections as f64
    }
}

/// How often an idle connection sends its next request: well inside the server's idle timeout
/// (`header_read_timeout_secs`, 10 s by default), which would otherwise close it.
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(4);

/// `n` kept-alive connections, each sending `GET /healthz` every [`KEEP_ALIVE_EVERY`] and
/// otherwise idle: the server's RSS per connection, hyper's own cost before any handler runs
/// long.
pub async fn idle(server: &Server, target: &Target, n: u64) -> Result<IdleResult> {
    let mut result = IdleResult { connections: n, ..Default::default() };
    result.rss_before = quiet_rss(server).await?;
    let probe = target.request("GET", "/healthz", None);
    let opening = Arc::new(Semaphore::new(OPENING));
    let opened = Arc::new(AtomicU64::new(0));
    let all_open = Arc::new(tokio::sync::Notify::new());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let (addr, probe, opening) = (target.addr, probe.clone(), Arc::clone(&opening));
        let (opened, all_open, mut stopped) = (Arc::clone(&opened), Arc::clone(&all_open), stopped.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = {
                let _permit = opening.acquire().await?;
                Conn::connect(addr).await?
            };
            let mut first = true;
            loop {
                let (status, body) = conn.send(&probe).await?;
                if status != 200 {
                    bail!("GET /healthz: HTTP {status}: {}", String::from_utf8_lossy(&body));
                }
                if std::mem::take(&mut first) && opened.fetch_add(1, Ordering::SeqCst) + 1 == n {
                    all_open.notify_one();
                }
                tokio::select! {
                    () = tokio::time::sleep(KEEP_ALIVE_EVERY) => {}
                    _ = stopped.wait_for(|s| *s) => return Ok::<_, anyhow::Error>(()),
                }
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), all_open.notified())
        .await
        .map_err(|_| anyhow!("{} of {n} idle connections opened within 60 s", opened.load(Ordering::SeqCst)))?;
    result.rss_open = quiet_rss(server).await?;
    let _ = stop.send(true);
    for task in tasks {
        task.await.context("an idle connection's task panicked")??;
    }
    Ok(result)
}

/// The server's RSS once it has been quiet a while: four readings 500 ms apart within 64 KiB
/// (the creates and decisions before leave background work: sealing, the outbox), at most 20 s.
async fn quiet_rss(server: &Server) -> Result<u64> {
    let pid = server.pid().context("the server has no pid")?;
    let mut readings = vec![memory::rss(pid)?];
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        readings.push(memory::rss(pid)?);
        let last = &readings[readings.len().saturating_sub(4)..];
        if last.len() == 4 && last.iter().max().unwrap_or(&0) - last.iter().min().unwrap_or(&0) < 64 * 1024 {
            break;
        }
    }
    Ok(*readings.last().unwrap_or(&0))
}

fn create_path() -> &'static str {
    "/humanlayer/v1/function_calls"
}

fn respond_request(target: &Target, call_id: &str) -> bytes::Bytes {
    target.request(
        "POST",
        &format!("/humanlayer/v1/agent/function_calls/{call_id}/respond"),
        Some(r#"{"approved":true,"comment":"ok"}"#),
    )
}

/// Sends `request(i)` for every `i` in `0..n` over [`DECIDERS`] connections; every answer must be
/// a 2xx. Returns when the last is answered.
async fn each_over_connections(
    target: &Target,
    n: u64,
    request: impl Fn(&Target, u64) -> bytes::Bytes + Send + Sync + 'static,
) -> Result<()> {
    let request = Arc::new(request);
    let mut tasks = Vec::new();
    for c in 0..DECIDERS.min(n) {
        let (target, request) = (target.clone(), Arc::clone(&request));
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::connect(target.addr).await?;
            let mut i = c;
            while i < n {
                let (status, body) = conn.send(&request(&target, i)).await?;
                if !(200..300).contains(&status) {
                    bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
                }
                i += DECIDERS;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Creates pending calls `{prefix}-0` … `{prefix}-{n-1}`.
async fn create_calls(target: &Target, prefix: &str, n: u64) -> Result<()> {
    let prefix = prefix.to_owned();
    each_over_connections(target, n, move |t, i| {
        t.request("POST", create_path(), Some(&crate::create_body(&format!("{prefix}-{i}"))))
    })
    .await
    .with_context(|| format!("creating {n} calls"))
}

/// One parked long-poll: when it was answered, and whether it showed the call approved.
type Answer = Result<(Instant, bool)>;

/// Opens `n` connections, each sending a long-poll on `call_id(i)`; returns their tasks once
/// every one is sent.
async fn park(target: &Target, n: u64, call_id: impl Fn(u64) -> String) -> Result<Vec<JoinHandle<Answer>>> {
    let opening = Arc::new(Semaphore::new(OPENING));
    let sent = Arc::new(AtomicU64::new(0));
    let all_sent = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let poll =
            target.request("GET", &format!("/humanlayer/v1/function_calls/{}?wait={WAIT_SECS}", call_id(i)), None);
        let (addr, opening, sent, all_sent) =
            (target.addr, Arc::clone(&opening), Arc::clone(&sent), Arc::clone(&all_sent));
        tasks.push(tokio::spawn(async move {
            let conn = {
                let _permit = opening.acquire().await?;
                Conn::connect(addr).await
            };
            if sent.fetch_add(1, Ordering::SeqCst) + 1 == n {
                all_sent.notify_one();
            }
            let (status, body) = conn?.send_within(&poll, Duration::from_secs(WAIT_SECS + 30)).await?;
            let at = Instant::now();
            if !(200..300).contains(&status) {
                bail!("long-poll: HTTP {status}: {}", String::from_utf8_lossy(&body));
            }
            let approved = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.pointer("/status/approved").and_then(serde_json::Value::as_bool));
            Ok((at, approved == Some(true)))
        }));
    }
    tokio::time::timeout(Duration::from_secs(WAIT_SECS / 2), all_sent.notified()).await.map_err(|_| {
        anyhow!("{} of {n} long-polls connected within {} s", sent.load(Ordering::SeqCst), WAIT_SECS / 2)
    })?;
    // The last request written is read by the server a moment later.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(tasks)
}

/// Collects the long-polls' answers into `result`, timed from `start`.
async fn collect(tasks: Vec<JoinHandle<Answer>>, start: Instant, result: &mut PollResult) -> Result<()> {
    let mut answered = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await.context("long-poll task panicked")? {
            Ok((at, _)) if at < start => {
                result.early += 1;
                result.first_problem.get_or_insert_with(|| "a long-poll answered before the decision".into());
            }
            Ok((at, true)) => answered.push(at - start),
            Ok((_, false)) => {
                result.failed += 1;
                result.first_problem.get_or_insert_with(|| "a woken long-poll did not show approved".into());
            }
            Err(err) => {
                result.failed += 1;
                result.first_problem.get_or_insert_with(|| format!("{err:#}"));
            }
        }
    }
    result.wake_all = answered.iter().max().copied().unwrap_or_default();
    result.answered = Samples::from_durations(answered);
    Ok(())
}

/// `n` long-polls, each on a call of its own, then all `n` calls decided over [`DECIDERS`]
/// connections; the baseline decides `n` other calls nobody waits on, the same way.
pub async fn distinct(server: &Server, target: &Target, tag: &str, n: u64) -> Result<PollResult> {
    let mut result = PollResult { waiters: n, requests: n, ..Default::default() };
    let (waited, alone) = (format!("lp-{tag}"), format!("ld-{tag}"));
    create_calls(target, &waited, n).await?;
    create_calls(target, &alone, n).await?;
    let base_start = Instant::now();
    let prefix = alone.clone();
    each_over_connections(target, n, move |t, i| respond_request(t, &format!("{prefix}-{i}"))).await?;
    result.baseline = base_start.elapsed();

    result.rss_before = quiet_rss(server).await?;
    let parking = Instant::now();
    let prefix = waited.clone();
    let tasks = park(target, n, move |i| format!("{prefix}-{i}")).await?;
    result.parking = parking.elapsed();
    result.rss_parked = quiet_rss(server).await?;

    let start = Instant::now();
    each_over_connections(target, n, move |t, i| respond_request(t, &format!("{waited}-{i}"))).await?;
    result.deciding = start.elapsed();
    collect(tasks, start, &mut result).await?;
    Ok(result)
}

/// `n` long-polls on one call, then one decision; the baseline is that respond's round trip.
pub async fn shared(server: &Server, target: &Target, tag: &str, n: u64) -> Result<PollResult> {
    let mut result = PollResult { waiters: n, requests: 1, ..Default::default() };
    let call_id = format!("ls-{tag}");
    create_calls(target, &call_id, 1).await?;
    let call_id = format!("{call_id}-0");
    result.rss_before = quiet_rss(server).await?;
    let parking = Instant::now();
    let id = call_id.clone();
    let tasks = park(target, n, move |_| id.clone()).await?;
    result.parking = parking.elapsed();
    result.rss_parked = quiet_rss(server).await?;

    // Opened only now: an idle connection is closed after `header_read_timeout_secs`.
    let mut control = Conn::connect(target.addr).await?;
    let start = Instant::now();
    let (status, body) = control.send(&respond_request(target, &call_id)).await?;
    result.baseline = start.elapsed();
    result.deciding = result.baseline;
    anyhow::ensure!((200..300).contains(&status), "respond: HTTP {status}: {}", String::from_utf8_lossy(&body));
    collect(tasks, start, &mut result).await?;
    Ok(result)
}

/// `n` inbox streams (`GET /events`) of one signed-in person (as many browser tabs), then one
/// create in their project: the time until every stream has its `changed` event.
pub async fn streams(server: &Server, target: &Target, cookie: &str, tag: &str, n: u64) -> Result<StreamResult> {
    let mut result = StreamResult { streams: n, ..Default::default() };
    result.rss_before = quiet_rss(server).await?;
    let request = format!(
        "GET /events HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n",
        target.addr
    );
    let request = Arc::new(request.into_bytes());
    let opening = Arc::new(Semaphore::new(OPENING));
    let opened = Arc::new(AtomicU64::new(0));
    let all_open = Arc::new(tokio::sync::Notify::new());
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let (addr, request, opening) = (target.addr, Arc::clone(&request), Arc::clone(&opening));
        let (opened, all_open) = (Arc::clone(&opened), Arc::clone(&all_open));
        tasks.push(tokio::spawn(async move {
            let stream = {
                let _permit = opening.acquire().await?;
                open_stream(addr, &request).await
            };
            if opened.fetch_add(1, Ordering::SeqCst) + 1 == n {
                all_open.notify_one();
            }
            let (mut stream, mut seen) = stream?;
            tokio::time::timeout(TELL_TIMEOUT, async {
                let mut buf = [0u8; 4096];
                loop {
                    if contains_changed(&seen) {
                        return Ok(Instant::now());
                    }
                    let read = stream.read(&mut buf).await?;
                    if read == 0 {
                        bail!("the stream ended before a `changed` event");
                    }
                    seen.extend_from_slice(&buf[..read]);
                    // Only the tail matters to a match across reads.
                    if seen.len() > 8192 {
                        seen.drain(..seen.len() - 64);
                    }
                }
            })
            .await
            .map_err(|_| anyhow!("no `changed` event within {TELL_TIMEOUT:?}"))?
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), all_open.notified())
        .await
        .map_err(|_| anyhow!("{} of {n} inbox streams opened within 60 s", opened.load(Ordering::SeqCst)))?;
    result.opening = started.elapsed();
    result.rss_open = quiet_rss(server).await?;

    let mut control = Conn::connect(target.addr).await?;
    let create = target.request("POST", create_path(), Some(&crate::create_body(&format!("sse-{tag}"))));
    let start = Instant::now();
    let (status, body) = control.send(&create).await?;
    result.create = start.elapsed();
    anyhow::ensure!((200..300).contains(&status), "create: HTTP {status}: {}", String::from_utf8_lossy(&body));
    let mut told = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await.context("stream task panicked")? {
            Ok(at) if at >= start => told.push(at - start),
            Ok(_) => {
                result.missing += 1;
                result.first_problem.get_or_insert_with(|| "a stream was told before the create".into());
            }
            Err(err) => {
                result.missing += 1;
                result.first_problem.get_or_insert_with(|| format!("{err:#}"));
            }
        }
    }
    result.told = Samples::from_durations(told);
    Ok(result)
}

fn contains_changed(seen: &[u8]) -> bool {
    let find = |needle: &[u8]| seen.windows(needle.len()).any(|w| w == needle);
    find(b"event: changed") || find(b"event:changed")
}

/// Opens one inbox stream: the connection, and what was read after the answer's head (a 200
/// is required).
async fn open_stream(addr: SocketAddr, request: &[u8]) -> Result<(TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(request).await?;
    let mut seen = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).into_owned();
            let status = head.split_whitespace().nth(1).unwrap_or("");
            anyhow::ensure!(status == "200", "GET /events answered {head:?}");
            return Ok((stream, seen.split_off(end + 4)));
        }
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .map_err(|_| anyhow!("GET /events: no answer within 30 s"))??;
        if read == 0 {
            bail!("GET /events: the server closed the connection");
        }
        seen.extend_from_slice(&buf[..read]);
    }
}
