//! PostgreSQL for the runs: a fresh database per run on the cluster given by its admin URL
//! (loopback only), and the faults: the cluster stopped and started with `pg_ctl` as the
//! `postgres` user, or its postmaster and every child paused with SIGSTOP.

use anyhow::{Context, Result, bail};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// A database this run created; dropped by [`Database::drop_database`].
pub struct Database {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl Database {
    /// Creates `name` on the cluster of `admin_url` (which must be on loopback).
    pub async fn create(admin_url: &str, name: &str) -> Result<Self> {
        anyhow::ensure!(
            !name.is_empty()
                && name.len() < 64
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "bad database name {name:?}"
        );
        let options = PgConnectOptions::from_str(admin_url).context("--database-url: not a PostgreSQL URL")?;
        let host = options.get_host();
        let loopback = host == "localhost"
            || host.starts_with('/')
            || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            bail!("--database-url: refusing the non-loopback host {host:?} (the suite runs on loopback only)");
        }
        let mut conn = admin(admin_url).await?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("CREATE DATABASE {name} (the user needs CREATEDB)"))?;
        conn.close().await?;
        Ok(Self { admin_url: admin_url.to_owned(), name: name.to_owned(), url: with_database(admin_url, name)? })
    }

    /// Drops the database, closing what is still connected.
    pub async fn drop_database(&self) -> Result<()> {
        let mut conn = admin(&self.admin_url).await?;
        sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    }
}

async fn admin(url: &str) -> Result<PgConnection> {
    let options = PgConnectOptions::from_str(url)?;
    tokio::time::timeout(Duration::from_secs(30), PgConnection::connect_with(&options))
        .await
        .context("connecting to PostgreSQL timed out")?
        .context("connecting to PostgreSQL")
}

/// `url` with its database replaced by `name` (query string kept).
pub fn with_database(url: &str, name: &str) -> Result<String> {
    let scheme_end = url.find("://").context("the PostgreSQL URL has no scheme")? + 3;
    let rest = &url[scheme_end..];
    let query_at = rest.find('?').unwrap_or(rest.len());
    let authority_end = rest[..query_at].find('/').unwrap_or(query_at);
    Ok(format!("{}{}/{name}{}", &url[..scheme_end], &rest[..authority_end], &rest[query_at..]))
}

/// A cluster this process may stop, start and pause: its data directory and `pg_ctl`.
pub struct Cluster {
    pub data_dir: PathBuf,
    pub bin_dir: PathBuf,
}

impl Cluster {
    /// `bin_dir`, or the newest `/usr/lib/postgresql/*/bin`.
    pub fn new(data_dir: &Path, bin_dir: Option<&Path>) -> Result<Self> {
        let bin_dir = match bin_dir {
            Some(dir) => dir.to_owned(),
            None => newest_pg_bin().context("no /usr/lib/postgresql/*/bin; pass --pg-bin")?,
        };
        anyhow::ensure!(bin_dir.join("pg_ctl").is_file(), "no pg_ctl in {}", bin_dir.display());
        anyhow::ensure!(
            data_dir.join("postmaster.pid").is_file(),
            "{} holds no running cluster (no postmaster.pid)",
            data_dir.display()
        );
        Ok(Self { data_dir: data_dir.to_owned(), bin_dir })
    }

    /// `pg_ctl ARGS` as the cluster's owner (`postgres` when we are root).
    fn pg_ctl(&self, args: &[&str]) -> Result<()> {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let data = self.data_dir.display().to_string();
        let root = std::process::Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0"))?;
        let mut command = if root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            std::process::Command::new(&pg_ctl)
        };
        let out = command.args(["-D", &data]).args(args).output().context("running pg_ctl")?;
        if !out.status.success() {
            bail!("pg_ctl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// `pg_ctl stop -m fast`: connections are closed, the cluster shuts down.
    pub fn stop(&self) -> Result<()> {
        self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"])
    }

    /// Starts the stopped cluster with the options it last ran with (`pg_ctl restart` reads
    /// them from `postmaster.opts`, and starts a stopped cluster too).
    pub fn start(&self) -> Result<()> {
        let log = self.data_dir.join("server.log").display().to_string();
        self.pg_ctl(&["-w", "-t", "60", "-l", &log, "restart"])
    }

    /// The postmaster and its children, as they are now.
    pub fn processes(&self) -> Result<Vec<u32>> {
        let pid_file = self.data_dir.join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).with_context(|| format!("reading {}", pid_file.display()))?;
        let postmaster: u32 = text.lines().next().unwrap_or_default().trim().parse().context("postmaster.pid")?;
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc")? {
            let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            if parent_of(&stat) == Some(postmaster) {
                pids.push(pid);
            }
        }
        Ok(pids)
    }
}

/// The parent pid in a `/proc/PID/stat` line (the field after the parenthesised name).
pub fn parent_of(stat: &str) -> Option<u32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Sends `signal` (`STOP`, `CONT`) to every pid.
pub fn signal(pids: &[u32], signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{signal} {pids:?} failed");
    Ok(())
}

fn newest_pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_string_lossy().parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(with_database("postgres://u@127.0.0.1:5/postgres", "t1").unwrap(), "postgres://u@127.0.0.1:5/t1");
        assert_eq!(
            with_database("postgres://u@h:5/db?sslmode=disable", "t").unwrap(),
            "postgres://u@h:5/t?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h:5", "t").unwrap(), "postgres://u@h:5/t");
    }

    #[test]
    fn the_parent_pid_is_read_past_the_process_name() {
        assert_eq!(parent_of("123 (postgres: walwriter ) S 77 123 123 0"), Some(77));
        assert_eq!(parent_of("9 (a) b) R 1 9"), Some(1));
        assert_eq!(parent_of("garbage"), None);
    }
}
