//! Memory held for pending requests: the server's resident set (VmRSS) when empty, after
//! `projects × per_project` pending requests of about 1 KB each are created over HTTP, and after
//! a restart reloads them; the baseline is the bytes of the specs themselves.

use crate::Launch;
use crate::client::{Conn, Target};
use crate::process::{self, Server};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::Duration;

/// Connections creating at once.
const CONNECTIONS: u64 = 32;

pub struct MemoryResult {
    pub requests: u64,
    /// Bytes of one request's spec as sent.
    pub spec_bytes: u64,
    pub empty_rss: u64,
    pub loaded_rss: u64,
    pub restarted_rss: u64,
}

impl MemoryResult {
    /// Resident bytes per pending request while the server that took them runs.
    pub fn per_request_live(&self) -> f64 {
        self.loaded_rss.saturating_sub(self.empty_rss) as f64 / self.requests as f64
    }

    /// Resident bytes per pending request after a restart loaded them back.
    pub fn per_request_restarted(&self) -> f64 {
        self.restarted_rss.saturating_sub(self.empty_rss) as f64 / self.requests as f64
    }
}

/// CPU time process `pid` has used so far, user and system (/proc/PID/stat's `utime` and
/// `stime`, in clock ticks of 10 ms: Linux's `USER_HZ` is 100 on every architecture it reports).
pub fn cpu(pid: u32) -> Result<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).context("no command name in /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| -> Result<u64> {
        fields.get(i - 3).context("/proc/PID/stat is too short")?.parse::<u64>().context("a tick count")
    };
    Ok(std::time::Duration::from_millis((ticks(14)? + ticks(15)?) * 10))
}

/// The resident set of process `pid`, in bytes.
pub fn rss(pid: u32) -> Result<u64> {
    status_bytes(pid, "VmRSS:")
}

/// The anonymous part of the resident set of process `pid` (the heap, not files), in bytes.
pub fn rss_anon(pid: u32) -> Result<u64> {
    status_bytes(pid, "RssAnon:")
}

/// A `kB` field of /proc/PID/status, in bytes.
fn status_bytes(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .with_context(|| format!("no {field} line"))?;
    Ok(kb * 1024)
}

/// The RSS once it stops moving (the allocator and the warm-up settle), read every 200 ms.
pub async fn settled_rss(server: &Server) -> Result<u64> {
    let pid = server.pid().context("the server has no pid")?;
    let mut last = rss(pid)?;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rss(pid)?;
        if now.abs_diff(last) < 256 * 1024 {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

/// A spec of about 1 KB (a short call with a note, as agents send).
pub fn spec(seq: u64) -> String {
    let note = "n".repeat(960);
    format!(r#"{{"fn":"send_email","kwargs":{{"to":"user{seq}@example.com","note":"{note}"}}}}"#)
}

pub async fn run(launch: &Launch<'_>, tmp: &Path, projects: u64, per_project: u64) -> Result<MemoryResult> {
    let mut keys = Vec::new();
    for p in 0..projects {
        keys.push(process::create_key(launch.bin, &format!("memory{p}"), &launch.store, &launch.config_home).await?);
    }
    let log = tmp.join("server-memory.log");
    let mut server = launch.serve("countersign serve [memory]", &log).await?;
    let empty_rss = settled_rss(&server).await?;
    eprintln!(
        "memory: empty server at {} MB; creating {} pending requests ...",
        empty_rss >> 20,
        projects * per_project
    );
    for (p, key) in keys.iter().enumerate() {
        let target = Target::new(server.addr, Some(key))?;
        let mut tasks = Vec::new();
        for c in 0..CONNECTIONS {
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                let mut conn = Conn::connect(target.addr).await?;
                let mut seq = c;
                while seq < per_project {
                    let body = format!(r#"{{"run_id":"mem","call_id":"m{p}-{seq}","spec":{}}}"#, spec(seq));
                    let (status, answer) =
                        conn.send(&target.request("POST", "/humanlayer/v1/function_calls", Some(&body))).await?;
                    if status != 200 {
                        bail!("create answered {status}: {}", String::from_utf8_lossy(&answer));
                    }
                    seq += CONNECTIONS;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
    }
    server.check_alive()?;
    let loaded_rss = settled_rss(&server).await?;
    server.stop().await?;
    let server =
        launch.serve("countersign serve [memory, restarted]", &tmp.join("server-memory-restarted.log")).await?;
    let restarted_rss = settled_rss(&server).await?;
    server.stop().await?;
    Ok(MemoryResult {
        requests: projects * per_project,
        spec_bytes: spec(0).len() as u64,
        empty_rss,
        loaded_rss,
        restarted_rss,
    })
}
