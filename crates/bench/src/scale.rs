//! One store at scale, on a server of its own (SQLite): the same figures on the empty store and
//! with `--scale-requests` (1,000,000) pending requests of about 1 KB, all in one project,
//! created through the API as agents do:
//!
//! - the server's resident set (VmRSS), live and after a restart reloads (warms) them all;
//! - start-up: spawn → the "Listening on" line (the server warms its in-memory view before it
//!   listens), and spawn → `GET /readyz` answering 200;
//! - GET p99 of one pending call and create p99, each under the load phase's connections
//!   (`--connections`, `--seconds`), the goal being within 2x of the empty store's.
//!
//! On the empty store, before the bulk load, the crowd figures (see [`crate::waiters`]):
//! `--scale-waiters` long-polls, each on a call of its own and then all on one call, and
//! `--scale-streams` inbox event streams of one signed-in person.

use crate::client::{self, Conn, LoadResult, MakeRequest, Phase, Target};
use crate::process::{self, Server};
use crate::waiters::{self, IdleResult, PollResult, StreamResult};
use crate::{Launch, Opts, memory};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The project everything is created in.
const PROJECT: &str = "scale";
/// The person whose inbox streams are opened.
const EMAIL: &str = "scale@example.com";
const PASSWORD: &str = "a long bench passphrase";
/// Requests per chunk of the bulk load (progress is printed after each).
const CHUNK: u64 = 100_000;
/// Longest a server may take to warm a large store before it listens.
const STARTUP_LIMIT: Duration = Duration::from_secs(1800);
/// Longest a server may take to exit after SIGTERM (it is killed then, and the run goes on).
const STOP_LIMIT: Duration = Duration::from_secs(600);

/// Spawn → listening, and spawn → ready.
#[derive(Debug, Default, Clone, Copy)]
pub struct Startup {
    pub listening: Duration,
    pub ready: Duration,
}

/// The figures of one store: its server's memory, start-up, and latencies under load.
#[derive(Debug, Default)]
pub struct StoreFigures {
    /// Pending requests in the store when measured (about).
    pub pending: u64,
    /// RSS of the server that took the requests (the empty store: after its start).
    pub rss_live: u64,
    /// RSS after the start measured in `startup`.
    pub rss_started: u64,
    pub startup: Startup,
    /// SIGTERM → exit, and whether it had to be killed after [`STOP_LIMIT`] (the empty store:
    /// the stop before the timed start; the full store: the server that took the requests).
    pub stop: (Duration, bool),
    /// The restarted full store's SIGTERM → exit.
    pub stop_restarted: (Duration, bool),
    pub get: LoadResult,
    pub create: LoadResult,
}

#[derive(Debug, Default)]
pub struct ScaleResult {
    pub requests: u64,
    pub spec_bytes: u64,
    pub empty: StoreFigures,
    pub full: StoreFigures,
    /// The bulk load: each chunk's creates.
    pub chunks: Vec<LoadResult>,
    pub loading: Duration,
    /// Bytes of the data directory with the full store.
    pub store_bytes: u64,
    pub max_connections: u64,
    pub distinct: PollResult,
    pub shared: PollResult,
    pub streams: StreamResult,
    pub idle: IdleResult,
}

impl ScaleResult {
    pub fn loaded(&self) -> u64 {
        self.chunks.iter().map(|c| c.ok_total).sum()
    }

    pub fn load_failures(&self) -> u64 {
        self.chunks.iter().map(LoadResult::failures).sum()
    }

    pub fn load_rate(&self) -> f64 {
        self.loaded() as f64 / self.loading.as_secs_f64()
    }
}

/// `COUNTERSIGN_MAX_CONNECTIONS` for the scale server: room for every parked connection plus
/// the load's (the default, 10,000, would queue some of them in the accept backlog).
fn max_connections(opts: &Opts) -> u64 {
    opts.scale_waiters.max(opts.scale_streams) + opts.connections as u64 + 1_000
}

/// Starts the server and times spawn → listening → `/readyz` 200.
async fn start_timed(launch: &Launch<'_>, name: &str, log: &Path, env: &[(&str, &str)]) -> Result<(Server, Startup)> {
    let spawned = Instant::now();
    let server = launch.serve_within(name, log, env, STARTUP_LIMIT).await?;
    let listening = spawned.elapsed();
    let probe = Target::new(server.addr, None)?.request("GET", "/readyz", None);
    let mut conn = Conn::connect(server.addr).await?;
    loop {
        let (status, _) = conn.send(&probe).await?;
        if status == 200 {
            break;
        }
        anyhow::ensure!(spawned.elapsed() < STARTUP_LIMIT, "/readyz did not answer 200 within {STARTUP_LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok((server, Startup { listening, ready: spawned.elapsed() }))
}

fn phase(opts: &Opts, max_requests: u64, measure: Duration) -> Phase {
    Phase { connections: opts.connections, warmup: Duration::ZERO, measure, max_requests }
}

/// GETs of `call_id` (pending), then creates of new calls, each a load phase of `--seconds`
/// after `--warmup`.
async fn latencies(opts: &Opts, target: &Target, call_id: &str, tag: &str) -> Result<(LoadResult, LoadResult)> {
    let phase = Phase { warmup: crate::secs(opts.warmup), ..phase(opts, opts.max_requests, crate::secs(opts.seconds)) };
    let get = target.request("GET", &format!("/humanlayer/v1/function_calls/{call_id}"), None);
    let make: MakeRequest = Arc::new(move |_: &Target, _, _| get.clone());
    let gets = client::run_load(target, phase, opts.client_threads, make).await?;
    let tag = tag.to_owned();
    let make: MakeRequest = Arc::new(move |t: &Target, conn, seq| {
        t.request("POST", "/humanlayer/v1/function_calls", Some(&crate::create_body(&format!("{tag}-{conn}-{seq}"))))
    });
    let creates = client::run_load(target, phase, opts.client_threads, make).await?;
    for (what, load) in [("GETs", &gets), ("creates", &creates)] {
        if load.failures() > 0 {
            eprintln!("  {what}: {} failures; first: {}", load.failures(), load.first_error.as_deref().unwrap_or("-"));
        }
    }
    Ok((gets, creates))
}

fn p99(load: &LoadResult) -> f64 {
    crate::stats::Samples::from_micros(load.latencies_us.clone()).percentile_ms(99.0)
}

/// `countersign users create … --password-stdin`, then the browser's sign-in (the login form's
/// CSRF cookie and field, then the form): the session's `Cookie` header value.
async fn sign_in(launch: &Launch<'_>, server: &Server) -> Result<String> {
    let mut command = Command::new(launch.bin);
    process::isolate(&mut command, &launch.config_home);
    command
        .args(["users", "create", "--email", EMAIL, "--role", "approver", "--project", PROJECT, "--password-stdin"])
        .args(&launch.store)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().context("running countersign users create")?;
    child.stdin.take().context("stdin is piped")?.write_all(format!("{PASSWORD}\n").as_bytes()).await?;
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!("`users create` failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
    }

    let (status, head) = raw_exchange(server, &format!("GET /login HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr)).await?;
    anyhow::ensure!(status == 200, "GET /login answered {status}");
    let csrf = set_cookie(&head, "countersign_login").context("GET /login set no countersign_login cookie")?;
    let form = format!("_csrf={csrf}&email={}&password={}&next=%2F", encode(EMAIL), encode(PASSWORD));
    let post = format!(
        "POST /login HTTP/1.1\r\nHost: {}\r\nCookie: countersign_login={csrf}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        server.addr,
        form.len()
    );
    let (status, head) = raw_exchange(server, &post).await?;
    anyhow::ensure!(status == 303, "POST /login answered {status}:\n{head}");
    let session = set_cookie(&head, "countersign_session").context("the login set no session cookie")?;
    Ok(format!("countersign_session={session}"))
}

/// Percent-encodes a form value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Sends `request` on a connection of its own and returns the status and the answer's head.
async fn raw_exchange(server: &Server, request: &str) -> Result<(u16, String)> {
    use tokio::io::AsyncReadExt;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let head = loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break String::from_utf8_lossy(&seen[..end]).into_owned();
        }
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await??;
        anyhow::ensure!(read > 0, "the server closed the connection before its answer's head");
        seen.extend_from_slice(&buf[..read]);
    };
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no status")?;
    Ok((status, head))
}

/// The value a `Set-Cookie` header of `head` gives `name`.
fn set_cookie(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (header, value) = line.split_once(':')?;
        if !header.trim().eq_ignore_ascii_case("set-cookie") {
            return None;
        }
        let value = value.trim().strip_prefix(name)?.strip_prefix('=')?;
        Some(value.split(';').next().unwrap_or("").to_owned()).filter(|v| !v.is_empty())
    })
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    })
}

pub async fn run(opts: &Opts, launch: &Launch<'_>, data_dir: &Path, tmp: &Path, tag: &str) -> Result<ScaleResult> {
    let limit = process::raise_open_file_limit()?;
    let needed = opts.scale_waiters.max(opts.scale_streams) + opts.connections as u64 + 256;
    if limit < needed {
        bail!("the open-file limit is {limit}, below the {needed} connections this part opens (raise `ulimit -n`)");
    }
    let mut result = ScaleResult {
        requests: opts.scale_requests,
        spec_bytes: memory::spec(0).len() as u64,
        max_connections: max_connections(opts),
        ..Default::default()
    };
    let max_conns = result.max_connections.to_string();
    let env = [("COUNTERSIGN_MAX_CONNECTIONS", max_conns.as_str())];
    let key = process::create_key(launch.bin, PROJECT, &launch.store, &launch.config_home).await?;

    eprintln!("scale: starting and stopping a server on the empty store, then starting it again ...");
    let (first, _) =
        start_timed(launch, "countersign serve [scale, first]", &tmp.join("server-scale-first.log"), &env).await?;
    result.empty.stop = first.stop_timed(STOP_LIMIT).await?;

    // On a server of its own, so that its memory is as fresh as the first long-poll crowd's.
    eprintln!("scale: {} kept-alive connections, idle between requests ...", opts.scale_waiters);
    let (mut idle, _) =
        start_timed(launch, "countersign serve [scale, idle]", &tmp.join("server-scale-idle.log"), &env).await?;
    let measured = async {
        let target = Target::new(idle.addr, Some(&key))?;
        waiters::idle(&idle, &target, opts.scale_waiters).await
    }
    .await;
    idle.check_alive()?;
    idle.stop_timed(STOP_LIMIT).await?;
    result.idle = measured?;
    eprintln!("  {:.0} bytes per connection", result.idle.per_connection());
    let (mut server, startup) =
        start_timed(launch, "countersign serve [scale, empty]", &tmp.join("server-scale.log"), &env).await?;
    let outcome = async {
        let target = Target::new(server.addr, Some(&key))?;
        result.empty.startup = startup;
        result.empty.rss_started = memory::settled_rss(&server).await?;
        result.empty.rss_live = result.empty.rss_started;
        eprintln!(
            "  listening after {:.0} ms, ready after {:.0} ms, {} MB",
            startup.listening.as_secs_f64() * 1e3,
            startup.ready.as_secs_f64() * 1e3,
            result.empty.rss_started >> 20
        );
        let probe = format!("probe-{tag}");
        let mut conn = Conn::connect(server.addr).await?;
        let (status, body) = conn
            .send(&target.request("POST", "/humanlayer/v1/function_calls", Some(&crate::create_body(&probe))))
            .await?;
        anyhow::ensure!(status == 200, "create {probe}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        eprintln!("scale: GET and create latencies on the empty store ...");
        (result.empty.get, result.empty.create) = latencies(opts, &target, &probe, &format!("e-{tag}")).await?;
        result.empty.pending = 1 + result.empty.create.ok_total;
        eprintln!("  GET p99 {:.3} ms, create p99 {:.3} ms", p99(&result.empty.get), p99(&result.empty.create));

        eprintln!("scale: {} long-polls, each on a call of its own ...", opts.scale_waiters);
        result.distinct = waiters::distinct(&server, &target, tag, opts.scale_waiters).await?;
        eprintln!(
            "  {:.0} bytes per waiter, all woken in {:.0} ms",
            result.distinct.per_waiter(),
            ms(result.distinct.wake_all)
        );
        eprintln!("scale: {} long-polls on one call ...", opts.scale_waiters);
        result.shared = waiters::shared(&server, &target, tag, opts.scale_waiters).await?;
        eprintln!(
            "  {:.0} bytes per waiter, all woken in {:.0} ms",
            result.shared.per_waiter(),
            ms(result.shared.wake_all)
        );
        eprintln!("scale: {} inbox streams of one signed-in person ...", opts.scale_streams);
        let cookie = sign_in(launch, &server).await?;
        result.streams = waiters::streams(&server, &target, &cookie, tag, opts.scale_streams).await?;
        eprintln!(
            "  {:.0} bytes per stream, all told in {:.0} ms",
            result.streams.per_stream(),
            result.streams.told.max_ms()
        );
        server.check_alive()?;

        eprintln!(
            "scale: creating {} pending requests of {} bytes over {} connections ...",
            opts.scale_requests, result.spec_bytes, opts.connections
        );
        let loading = Instant::now();
        let mut done = 0;
        while done < opts.scale_requests {
            let n = CHUNK.min(opts.scale_requests - done);
            let chunk = done / CHUNK;
            let make: MakeRequest = Arc::new(move |t: &Target, conn, seq| {
                let body = format!(
                    r#"{{"run_id":"scale","call_id":"b{chunk}-{conn}-{seq}","spec":{}}}"#,
                    memory::spec(done + seq)
                );
                t.request("POST", "/humanlayer/v1/function_calls", Some(&body))
            });
            let load =
                client::run_load(&target, phase(opts, n, Duration::from_secs(3600)), opts.client_threads, make).await?;
            server.check_alive()?;
            done += n;
            eprintln!(
                "  {done} sent in {:.0} s (this chunk {:.0}/s, p99 {:.1} ms{})",
                loading.elapsed().as_secs_f64(),
                load.ok_total as f64 / load.window.as_secs_f64(),
                p99(&load),
                if load.failures() > 0 { format!(", {} failures", load.failures()) } else { String::new() }
            );
            result.chunks.push(load);
        }
        result.loading = loading.elapsed();
        result.full.rss_live = memory::settled_rss(&server).await?;
        eprintln!("  {} MB with them all pending; stopping it (SIGTERM) ...", result.full.rss_live >> 20);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let stopped = server.stop_timed(STOP_LIMIT).await;
    outcome?;
    result.full.stop = stopped?;
    eprintln!(
        "  stopped after {:.1} s{}",
        result.full.stop.0.as_secs_f64(),
        if result.full.stop.1 { " (killed)" } else { "" }
    );
    result.store_bytes = dir_bytes(data_dir);

    eprintln!("scale: restarting on the full store ({} MB on disk) ...", result.store_bytes >> 20);
    let (mut server, startup) =
        start_timed(launch, "countersign serve [scale, full]", &tmp.join("server-scale-full.log"), &env).await?;
    let outcome = async {
        let target = Target::new(server.addr, Some(&key))?;
        result.full.startup = startup;
        result.full.rss_started = memory::settled_rss(&server).await?;
        eprintln!(
            "  listening after {:.0} ms, ready after {:.0} ms, {} MB",
            startup.listening.as_secs_f64() * 1e3,
            startup.ready.as_secs_f64() * 1e3,
            result.full.rss_started >> 20
        );
        eprintln!("scale: GET and create latencies on the full store ...");
        (result.full.get, result.full.create) =
            latencies(opts, &target, &format!("probe-{tag}"), &format!("f-{tag}")).await?;
        // The crowd scenarios decided their calls; the inbox streams' create stays pending.
        result.full.pending = result.empty.pending + 1 + result.loaded();
        eprintln!("  GET p99 {:.3} ms, create p99 {:.3} ms", p99(&result.full.get), p99(&result.full.create));
        server.check_alive()?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let stopped = server.stop_timed(STOP_LIMIT).await;
    outcome?;
    result.full.stop_restarted = stopped?;
    Ok(result)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
