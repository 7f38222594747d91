//! PostgreSQL: throwaway databases on the cluster given with `--postgres`, and the baselines
//! measured directly against it with sqlx (1-row commits over 8 connections, a paced commit, and
//! a LISTEN/NOTIFY round trip).

use crate::baseline::CommitResult;
use crate::stats::Samples;
use anyhow::{Context, Result, bail};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The server's own PostgreSQL schema, so the baseline row has the same shape and indexes.
const SCHEMA: &str = include_str!("../../store/migrations/postgres/0001_init.sql");
/// The project every baseline row belongs to.
const PROJECT: &str = "0190bench-project";
/// The baseline insert: the statement the server's `create_request` sends.
const INSERT: &str = "INSERT INTO requests (project_id, kind, call_id, run_id, spec, requested_at) \
                      VALUES ($1, 'function_call', $2, $3, $4, $5) ON CONFLICT (project_id, kind, call_id) DO NOTHING";
const SPEC: &str = r#"{"fn":"f","kwargs":{"x":1}}"#;
/// Connections of the direct-commit baseline.
pub const BASELINE_CONNECTIONS: usize = 8;
/// No single statement of the bench may take longer than this.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The cluster named by `--postgres`: an admin URL (any database the user may connect to and
/// that allows `CREATE DATABASE`), and the databases this run created on it.
pub struct Cluster {
    admin_url: String,
    /// Version, host and port (never the URL, which may hold a password).
    pub description: String,
    created: Vec<String>,
}

impl Cluster {
    /// Checks that `admin_url` is a loopback PostgreSQL and that it answers.
    pub async fn connect(admin_url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(admin_url).context("--postgres: invalid PostgreSQL URL")?;
        let host = options.get_host();
        let loopback = host == "localhost"
            || host.starts_with('/')
            || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            bail!("--postgres: refusing a non-loopback host {host:?} (the bench runs on loopback only)");
        }
        let mut conn = tokio::time::timeout(STATEMENT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .context("--postgres: connecting timed out")?
            .with_context(|| format!("--postgres: cannot connect to {host}:{}", options.get_port()))?;
        let (version,): (String,) = sqlx::query_as("SHOW server_version").fetch_one(&mut conn).await?;
        conn.close().await?;
        let description = format!("PostgreSQL {version} at {host}:{}", options.get_port());
        eprintln!("{description}");
        Ok(Self { admin_url: admin_url.to_owned(), description, created: Vec::new() })
    }

    /// Creates an empty database `name` and returns its URL (the admin URL with the database
    /// replaced).
    pub async fn create_database(&mut self, name: &str) -> Result<String> {
        // Checked, so that the name can go into the statement as is (identifiers take no binds).
        anyhow::ensure!(
            !name.is_empty()
                && name.len() < 64
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "bad database name {name:?}"
        );
        let mut conn = self.admin().await?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("CREATE DATABASE {name} (the --postgres user needs the CREATEDB privilege)"))?;
        conn.close().await?;
        self.created.push(name.to_owned());
        with_database(&self.admin_url, name)
    }

    /// Drops every database this run created (closing whatever is still connected to them).
    pub async fn drop_all(&mut self) -> Result<()> {
        let mut conn = self.admin().await?;
        for name in std::mem::take(&mut self.created) {
            sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                .execute(&mut conn)
                .await
                .with_context(|| format!("DROP DATABASE {name}"))?;
        }
        conn.close().await?;
        Ok(())
    }

    /// The databases this run created (and has not dropped).
    pub fn created(&self) -> &[String] {
        &self.created
    }

    async fn admin(&self) -> Result<PgConnection> {
        let options = PgConnectOptions::from_str(&self.admin_url)?;
        Ok(PgConnection::connect_with(&options).await?)
    }
}

/// `url` with its database (the path) replaced by `name`, query string kept.
fn with_database(url: &str, name: &str) -> Result<String> {
    let scheme_end = url.find("://").context("the PostgreSQL URL has no scheme")? + 3;
    let rest = &url[scheme_end..];
    let query_at = rest.find('?').unwrap_or(rest.len());
    let authority_end = rest[..query_at].find('/').unwrap_or(query_at);
    Ok(format!("{}{}/{name}{}", &url[..scheme_end], &rest[..authority_end], &rest[query_at..]))
}

/// A pool on the baseline database, with the server's schema and the bench project in it.
async fn baseline_pool(url: &str, connections: usize) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(connections as u32)
        .min_connections(connections as u32)
        .acquire_timeout(STATEMENT_TIMEOUT)
        // No ping before each statement: the baseline is one round trip per insert.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to the baseline database {url}"))?;
    let exists: Option<(i32,)> =
        sqlx::query_as("SELECT 1 FROM pg_tables WHERE tablename = 'requests' AND schemaname = current_schema()")
            .fetch_optional(&pool)
            .await?;
    if exists.is_none() {
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        sqlx::query("INSERT INTO projects (id, name, created_at) VALUES ($1, 'bench', 0)")
            .bind(PROJECT)
            .execute(&pool)
            .await?;
    }
    Ok(pool)
}

async fn insert(pool: &PgPool, call_id: String) -> Result<()> {
    sqlx::query(INSERT)
        .bind(PROJECT)
        .bind(call_id)
        .bind("r")
        .bind(SPEC)
        .bind(chrono::Utc::now().timestamp_micros())
        .execute(pool)
        .await?;
    Ok(())
}

/// Single-row INSERTs, each its own (durable, autocommit) transaction, from
/// [`BASELINE_CONNECTIONS`] connections at once, each sending its next insert when the previous
/// one commits, for `warmup` and then `measure` (at most `max` inserts in all).
pub async fn commits(url: &str, warmup: Duration, measure: Duration, max: u64) -> Result<CommitResult> {
    let pool = baseline_pool(url, BASELINE_CONNECTIONS).await?;
    let start = Instant::now();
    let window_start = start + warmup;
    let window_end = window_start + measure;
    let sent_total = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for conn in 0..BASELINE_CONNECTIONS {
        let (pool, sent_total) = (pool.clone(), sent_total.clone());
        tasks.push(tokio::spawn(async move {
            let (mut commits, mut last, mut latencies) = (0u64, None::<Instant>, Vec::new());
            for seq in 0.. {
                let sent = Instant::now();
                if sent >= window_end || sent_total.fetch_add(1, Ordering::Relaxed) >= max {
                    break;
                }
                tokio::time::timeout(STATEMENT_TIMEOUT, insert(&pool, format!("base-{conn}-{seq}")))
                    .await
                    .context("a baseline insert took longer than 30 s")??;
                let done = Instant::now();
                if done >= window_start && done < window_end {
                    commits += 1;
                    last = Some(done);
                    if sent >= window_start {
                        latencies.push(done - sent);
                    }
                }
            }
            Ok::<_, anyhow::Error>((commits, last, latencies))
        }));
    }
    let (mut commits, mut last, mut latencies) = (0u64, None::<Instant>, Vec::new());
    for task in tasks {
        let (c, l, lat) = task.await.context("a baseline task panicked")??;
        commits += c;
        last = last.max(l);
        latencies.extend(lat);
    }
    pool.close().await;
    let window = if Instant::now() >= window_end { measure } else { last.map_or(Duration::ZERO, |l| l - window_start) };
    Ok(CommitResult { commits, window, latency: Samples::from_durations(latencies) })
}

/// One durable single-row commit after each `delay` on one connection, paced like the wake test:
/// the floor under a durable decision on this PostgreSQL when the machine is otherwise idle.
pub async fn paced_commits(url: &str, iters: usize, delay: Duration) -> Result<Samples> {
    let pool = baseline_pool(url, 1).await?;
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters + 10 {
        tokio::time::sleep(delay).await;
        let sent = Instant::now();
        tokio::time::timeout(STATEMENT_TIMEOUT, insert(&pool, format!("paced-{i}")))
            .await
            .context("a paced insert took longer than 30 s")??;
        if i >= 10 {
            samples.push(sent.elapsed());
        }
    }
    pool.close().await;
    Ok(Samples::from_durations(samples))
}

/// LISTEN/NOTIFY round trips, paced like the wake test: one connection LISTENs, another sends
/// `SELECT pg_notify(…)` after each `delay`; each sample runs from sending the NOTIFY to the
/// listener receiving it.
pub async fn notify_round_trips(url: &str, iters: usize, delay: Duration) -> Result<Samples> {
    const CHANNEL: &str = "countersign_bench";
    let options = PgConnectOptions::from_str(url)?;
    let mut listener = PgListener::connect(url).await.context("LISTEN connection")?;
    listener.listen(CHANNEL).await?;
    let mut notifier = PgConnection::connect_with(&options).await.context("NOTIFY connection")?;
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters + 10 {
        tokio::time::sleep(delay).await;
        let payload = format!("n-{i}");
        let sent = Instant::now();
        let notify = sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(&payload).execute(&mut notifier);
        let receive = async {
            loop {
                let notification = listener.recv().await?;
                if notification.payload() == payload {
                    return Ok::<_, sqlx::Error>(Instant::now());
                }
            }
        };
        let (notified, received) = tokio::time::timeout(STATEMENT_TIMEOUT, async { tokio::join!(notify, receive) })
            .await
            .context("a NOTIFY was not received within 30 s")?;
        notified?;
        let received = received?;
        if i >= 10 {
            samples.push(received - sent);
        }
    }
    notifier.close().await?;
    listener.unlisten_all().await?;
    Ok(Samples::from_durations(samples))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_is_replaced() {
        assert_eq!(
            with_database("postgres://u@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://u@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://u:p@localhost", "x").unwrap(), "postgres://u:p@localhost/x");
        assert_eq!(
            with_database("postgresql://localhost/db?sslmode=disable", "x").unwrap(),
            "postgresql://localhost/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://localhost?host=/tmp/s", "x").unwrap(),
            "postgres://localhost/x?host=/tmp/s"
        );
    }
}
