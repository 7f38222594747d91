//! The load generator: keep-alive HTTP/1.1 connections, one TCP stream each (`TCP_NODELAY`),
//! each sending its next request as soon as the previous answer is read (no pipelining), like
//! `wrk`. The client is a minimal one (pre-encoded requests, `httparse` for the answer's head) so
//! that on a 2-core machine it leaves as much CPU as possible to the server under test.

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// No single request may take longer than this (the long-poll waits for at most 30 s itself).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);

/// Largest answer accepted (head and body).
const MAX_RESPONSE: usize = 16 << 20;

/// Where requests go and the headers every request carries.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `Host` and `Authorization` header lines, pre-encoded.
    common_headers: String,
}

impl Target {
    pub fn new(addr: SocketAddr, api_key: Option<&str>) -> Result<Self> {
        anyhow::ensure!(addr.ip().is_loopback(), "refusing to load a non-loopback address {addr}");
        let mut common_headers = format!("Host: {addr}\r\n");
        if let Some(key) = api_key {
            anyhow::ensure!(key.bytes().all(|b| b.is_ascii_graphic()), "the API key is not a valid header value");
            common_headers.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        Ok(Self { addr, common_headers })
    }

    /// Encodes one request; `json` becomes the body (with its `Content-Type` and length).
    pub fn request(&self, method: &str, path: &str, json: Option<&str>) -> Bytes {
        let mut out = format!("{method} {path} HTTP/1.1\r\n{}", self.common_headers);
        match json {
            Some(body) => {
                out.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()));
                out.push_str(body);
            }
            None => out.push_str("\r\n"),
        }
        Bytes::from(out)
    }
}

/// One keep-alive HTTP/1.1 connection (reopened if the server closes it).
pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: BytesMut,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let mut conn = Self { addr, stream: None, buf: BytesMut::with_capacity(8192) };
        conn.open().await?;
        Ok(conn)
    }

    async fn open(&mut self) -> Result<&mut TcpStream> {
        let stream = TcpStream::connect(self.addr).await.with_context(|| format!("connecting to {}", self.addr))?;
        stream.set_nodelay(true)?;
        self.buf.clear();
        Ok(self.stream.insert(stream))
    }

    /// Sends one encoded request and reads the whole answer: (status, body).
    pub async fn send(&mut self, request: &[u8]) -> Result<(u16, Bytes)> {
        self.send_within(request, REQUEST_TIMEOUT).await
    }

    /// [`Conn::send`] allowing `timeout` for the answer (a long-poll of up to 60 s).
    pub async fn send_within(&mut self, request: &[u8], timeout: Duration) -> Result<(u16, Bytes)> {
        match tokio::time::timeout(timeout, self.exchange(request)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => {
                self.stream = None;
                Err(err)
            }
            Err(_) => {
                self.stream = None;
                Err(anyhow!("no answer within {timeout:?}"))
            }
        }
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<(u16, Bytes)> {
        let stream = match self.stream.take() {
            Some(stream) => self.stream.insert(stream),
            None => self.open().await?,
        };
        stream.write_all(request).await?;
        loop {
            if let Some(parsed) = parse_response(&self.buf)? {
                self.buf.advance(parsed.consumed);
                if parsed.close {
                    self.stream = None;
                }
                return Ok((parsed.status, parsed.body));
            }
            if self.buf.len() > MAX_RESPONSE {
                bail!("answer larger than {MAX_RESPONSE} bytes");
            }
            self.buf.reserve(8192);
            let stream = self.stream.as_mut().expect("open while reading");
            if stream.read_buf(&mut self.buf).await? == 0 {
                bail!("the server closed the connection");
            }
        }
    }
}

struct Parsed {
    status: u16,
    body: Bytes,
    consumed: usize,
    close: bool,
}

/// One complete answer at the start of `buf`, or `None` if more bytes are needed.
fn parse_response(buf: &[u8]) -> Result<Option<Parsed>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.context("no status code")?;
    let (mut length, mut chunked, mut close) = (None, false, response.version == Some(0));
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("bad Content-Length")?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().ends_with("chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let rest = &buf[head_len..];
    if chunked {
        return Ok(dechunk(rest)?.map(|(body, used)| Parsed { status, body, consumed: head_len + used, close }));
    }
    let length = match length {
        Some(n) => n,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None => bail!("answer {status} has neither Content-Length nor chunked encoding"),
    };
    if rest.len() < length {
        return Ok(None);
    }
    Ok(Some(Parsed { status, body: Bytes::copy_from_slice(&rest[..length]), consumed: head_len + length, close }))
}

/// Decodes a chunked body at the start of `buf`: (body, bytes used), or `None` if incomplete.
fn dechunk(buf: &[u8]) -> Result<Option<(Bytes, usize)>> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(line_len) = find_crlf(&buf[pos..]) else { return Ok(None) };
        let line = std::str::from_utf8(&buf[pos..pos + line_len]).context("bad chunk size line")?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).with_context(|| format!("bad chunk size {size_text:?}"))?;
        pos += line_len + 2;
        if size == 0 {
            // Trailers (usually none), each ending in CRLF, then an empty line.
            loop {
                let Some(line_len) = find_crlf(&buf[pos..]) else { return Ok(None) };
                pos += line_len + 2;
                if line_len == 0 {
                    return Ok(Some((Bytes::from(body), pos)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Builds the request a connection sends next, from (connection index, sequence number).
pub type MakeRequest = Arc<dyn Fn(&Target, usize, u64) -> Bytes + Send + Sync>;

/// A bounded load phase: warm-up, then the measured window; at most `max_requests` in all.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub connections: usize,
    pub warmup: Duration,
    pub measure: Duration,
    pub max_requests: u64,
}

#[derive(Debug, Default)]
pub struct LoadResult {
    /// 2xx answers that arrived inside the measured window.
    pub ok_in_window: u64,
    /// Length of the measured window (shorter than asked if `max_requests` ended the phase).
    pub window: Duration,
    /// 2xx answers over the whole phase, warm-up included.
    pub ok_total: u64,
    /// Non-2xx answers over the whole phase, by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Transport failures (connection reset, timeout, ...), whole phase.
    pub transport_errors: u64,
    pub first_error: Option<String>,
    /// Latency of each 2xx request sent and answered inside the window, in µs.
    pub latencies_us: Vec<u32>,
    /// Whether `max_requests` ended the phase before its time ran out.
    pub capped: bool,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        if self.window.is_zero() { 0.0 } else { self.ok_in_window as f64 / self.window.as_secs_f64() }
    }

    pub fn failures(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.transport_errors
    }
}

struct TaskResult {
    ok_in_window: u64,
    ok_total: u64,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
    last_in_window: Option<Instant>,
    capped: bool,
}

/// Drives `phase.connections` connections at `target` as fast as they are answered, from
/// `threads` OS threads, each with its own single-threaded runtime and its share of the
/// connections (like `wrk`'s threads: no work stealing, no cross-thread wake-ups).
pub async fn run_load(target: &Target, phase: Phase, threads: usize, make: MakeRequest) -> Result<LoadResult> {
    let threads = threads.clamp(1, phase.connections.max(1));
    // Everyone connects, then waits at `connected`; the main thread fixes the start instant and
    // releases them through `go`.
    let connected = Arc::new(Barrier::new(threads + 1));
    let go = Arc::new(Barrier::new(threads + 1));
    let start = Arc::new(OnceLock::<Instant>::new());
    let issued = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let indices: Vec<usize> = (t..phase.connections).step_by(threads).collect();
        let (target, make, issued) = (target.clone(), Arc::clone(&make), Arc::clone(&issued));
        let (connected, go, start) = (Arc::clone(&connected), Arc::clone(&go), Arc::clone(&start));
        handles.push(std::thread::Builder::new().name(format!("load-{t}")).spawn(
            move || -> Result<Vec<TaskResult>> {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
                let runtime = match runtime {
                    Ok(rt) => rt,
                    Err(err) => {
                        connected.wait();
                        go.wait();
                        return Err(err.into());
                    }
                };
                runtime.block_on(async move {
                    let mut conns = Vec::with_capacity(indices.len());
                    let mut failure = None;
                    for &index in &indices {
                        match Conn::connect(target.addr).await {
                            Ok(conn) => conns.push((index, conn)),
                            Err(err) => {
                                failure = Some(err);
                                break;
                            }
                        }
                    }
                    connected.wait();
                    go.wait();
                    if let Some(err) = failure {
                        return Err(err);
                    }
                    let start = *start.get().expect("start is set before go");
                    let window_start = start + phase.warmup;
                    let window_end = window_start + phase.measure;
                    let tasks: Vec<_> = conns
                        .into_iter()
                        .map(|(index, conn)| {
                            let (target, make, issued) = (target.clone(), Arc::clone(&make), Arc::clone(&issued));
                            tokio::spawn(drive(
                                conn,
                                index,
                                target,
                                make,
                                issued,
                                phase.max_requests,
                                window_start,
                                window_end,
                            ))
                        })
                        .collect();
                    let mut results = Vec::with_capacity(tasks.len());
                    for task in tasks {
                        results.push(task.await.context("load task panicked")?);
                    }
                    Ok(results)
                })
            },
        )?);
    }
    let (connected, go, start_cell) = (Arc::clone(&connected), Arc::clone(&go), Arc::clone(&start));
    let start = tokio::task::spawn_blocking(move || {
        connected.wait();
        let start = *start_cell.get_or_init(Instant::now);
        go.wait();
        start
    })
    .await?;
    let window_start = start + phase.warmup;
    let joined = tokio::task::spawn_blocking(move || {
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow!("load thread panicked"))?).collect::<Result<Vec<_>>>()
    })
    .await??;

    let mut total = LoadResult::default();
    let mut last_in_window: Option<Instant> = None;
    for r in joined.into_iter().flatten() {
        total.ok_in_window += r.ok_in_window;
        total.ok_total += r.ok_total;
        for (status, n) in r.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
        total.transport_errors += r.transport_errors;
        total.first_error = total.first_error.or(r.first_error);
        total.latencies_us.extend(r.latencies_us);
        last_in_window = last_in_window.max(r.last_in_window);
        total.capped |= r.capped;
    }
    total.window =
        if total.capped { last_in_window.map_or(Duration::ZERO, |last| last - window_start) } else { phase.measure };
    Ok(total)
}

/// One connection's loop: send, read the answer, record, repeat until the window closes.
#[allow(clippy::too_many_arguments)]
async fn drive(
    mut conn: Conn,
    index: usize,
    target: Target,
    make: MakeRequest,
    issued: Arc<AtomicU64>,
    max_requests: u64,
    window_start: Instant,
    window_end: Instant,
) -> TaskResult {
    let mut r = TaskResult {
        ok_in_window: 0,
        ok_total: 0,
        statuses: BTreeMap::new(),
        transport_errors: 0,
        first_error: None,
        latencies_us: Vec::with_capacity(4096),
        last_in_window: None,
        capped: false,
    };
    let mut seq = 0u64;
    loop {
        if issued.fetch_add(1, Ordering::Relaxed) >= max_requests {
            r.capped = true;
            break;
        }
        let sent = Instant::now();
        if sent >= window_end {
            break;
        }
        let request = make(&target, index, seq);
        seq += 1;
        match conn.send(&request).await {
            Ok((status, body)) => {
                let done = Instant::now();
                if (200..300).contains(&status) {
                    r.ok_total += 1;
                    if done >= window_start && done < window_end {
                        r.ok_in_window += 1;
                        r.last_in_window = Some(done);
                        if sent >= window_start {
                            r.latencies_us.push(u32::try_from((done - sent).as_micros()).unwrap_or(u32::MAX));
                        }
                    }
                } else {
                    *r.statuses.entry(status).or_default() += 1;
                    if r.first_error.is_none() {
                        r.first_error = Some(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
                    }
                }
            }
            Err(err) => {
                r.transport_errors += 1;
                if r.first_error.is_none() {
                    r.first_error = Some(format!("{err:#}"));
                }
                if r.transport_errors >= 100 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked() {
        let buf = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 404";
        let p = parse_response(buf).unwrap().unwrap();
        assert_eq!((p.status, &p.body[..], p.consumed, p.close), (200, &b"{}"[..], 40, false));
        assert!(parse_response(&buf[..39]).unwrap().is_none());

        let buf = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let p = parse_response(buf).unwrap().unwrap();
        assert_eq!((p.status, &p.body[..], p.consumed, p.close), (201, &b"abcde"[..], buf.len(), true));
        for cut in 0..buf.len() {
            assert!(parse_response(&buf[..cut]).unwrap().is_none(), "cut at {cut}");
        }
    }
}
