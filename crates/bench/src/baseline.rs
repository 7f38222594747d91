//! Baselines measured in the same run: direct SQLite commits, a bare axum server (its own
//! process, see [`run_bare_server`]) and a loopback TCP echo.

use crate::stats::Samples;
use anyhow::{Context, Result};
use axum::Json;
use axum::routing::get;
use axum::serve::ListenerExt;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The server's own schema, so the baseline row has the same shape and indexes.
const SCHEMA: &str = include_str!("../../store/migrations/sqlite/0001_init.sql");
/// The project every baseline row belongs to.
const PROJECT: &str = "0190bench-project";

#[derive(Debug)]
pub struct CommitResult {
    pub commits: u64,
    pub window: Duration,
    pub latency: Samples,
}

impl CommitResult {
    pub fn rate(&self) -> f64 {
        if self.window.is_zero() { 0.0 } else { self.commits as f64 / self.window.as_secs_f64() }
    }
}

async fn open_baseline_db(db: &Path) -> Result<SqliteConnection> {
    let options = SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let mut conn =
        SqliteConnection::connect_with(&options).await.with_context(|| format!("opening {}", db.display()))?;
    sqlx::raw_sql(SCHEMA).execute(&mut conn).await?;
    sqlx::query("INSERT INTO projects (id, name, created_at) VALUES (?, 'bench', 0)")
        .bind(PROJECT)
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// One durable single-row commit after each `delay`, paced like the wake test: the floor that
/// fsync sets under any durable decision on this disk when the machine is otherwise idle.
pub async fn paced_commits(db: &Path, iters: usize, delay: Duration) -> Result<Samples> {
    let mut conn = open_baseline_db(db).await?;
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters + 10 {
        tokio::time::sleep(delay).await;
        let sent = Instant::now();
        sqlx::query("INSERT INTO requests (project_id, kind, call_id, run_id, spec, requested_at) VALUES (?, 'function_call', ?, ?, ?, ?)")
            .bind(PROJECT)
            .bind(format!("paced-{i}"))
            .bind("r")
            .bind(r#"{"fn":"f","kwargs":{"x":1}}"#)
            .bind(chrono::Utc::now().timestamp_micros())
            .execute(&mut conn)
            .await?;
        if i >= 10 {
            samples.push(sent.elapsed());
        }
    }
    conn.close().await?;
    Ok(Samples::from_durations(samples))
}

/// Sequential single-row INSERTs, each its own transaction (one commit, one WAL fsync), through
/// sqlx SQLite with WAL and `synchronous=FULL`, for `warmup` and then `measure`.
pub async fn sqlite_commits(db: &Path, warmup: Duration, measure: Duration, max: u64) -> Result<CommitResult> {
    let mut conn = open_baseline_db(db).await?;
    let spec = r#"{"fn":"f","kwargs":{"x":1}}"#;
    let start = Instant::now();
    let window_start = start + warmup;
    let window_end = window_start + measure;
    let (mut commits, mut last, mut latencies) = (0u64, window_start, Vec::new());
    for i in 0..max {
        let sent = Instant::now();
        if sent >= window_end {
            break;
        }
        sqlx::query("INSERT INTO requests (project_id, kind, call_id, run_id, spec, requested_at) VALUES (?, 'function_call', ?, ?, ?, ?)")
            .bind(PROJECT)
            .bind(format!("base-{i}"))
            .bind("r")
            .bind(spec)
            .bind(chrono::Utc::now().timestamp_micros())
            .execute(&mut conn)
            .await?;
        let done = Instant::now();
        if done >= window_start && done < window_end {
            commits += 1;
            last = done;
            if sent >= window_start {
                latencies.push(done - sent);
            }
        }
    }
    conn.close().await?;
    let window = if Instant::now() >= window_end { measure } else { last - window_start };
    Ok(CommitResult { commits, window, latency: Samples::from_durations(latencies) })
}

/// Loopback TCP round trips (64 bytes each way, `TCP_NODELAY`) against the bare server's echo
/// port, paced like the wake test: one round trip after each `delay`.
pub async fn tcp_round_trips(echo: SocketAddr, iters: usize, delay: Duration) -> Result<Samples> {
    let mut stream = TcpStream::connect(echo).await.with_context(|| format!("connecting to the echo server {echo}"))?;
    stream.set_nodelay(true)?;
    let ping = [0x5au8; 64];
    let mut pong = [0u8; 64];
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters + 10 {
        tokio::time::sleep(delay).await;
        let sent = Instant::now();
        stream.write_all(&ping).await?;
        stream.read_exact(&mut pong).await?;
        if i >= 10 {
            samples.push(sent.elapsed());
        }
    }
    Ok(Samples::from_durations(samples))
}

/// The hidden `bare-server` subcommand: a minimal axum JSON handler on `GET /` and a TCP echo
/// server, each on an ephemeral loopback port, printed like countersign's listening line.
pub fn run_bare_server() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let echo = TcpListener::bind("127.0.0.1:0").await?;
        let echo_addr = echo.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = echo.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });

        let app =
            axum::Router::new().route("/", get(|| async { Json(serde_json::json!({"ok": true, "server": "bare"})) }));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}{echo_addr}", crate::process::ECHO_PREFIX)?;
            writeln!(out, "{}{addr}", crate::process::LISTENING_PREFIX)?;
            out.flush()?;
        }
        let shutdown = async {
            if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                term.recv().await;
            }
        };
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
        Ok(())
    })
}
