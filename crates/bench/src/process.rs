//! Child processes: the countersign server, its `keys create`, and the bench's own bare server.

use anyhow::{Context, Result, anyhow, bail};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The line a server prints once it accepts connections.
pub const LISTENING_PREFIX: &str = "Listening on http://";
/// The line the bare server prints for its TCP echo port (before the listening line).
pub const ECHO_PREFIX: &str = "Echo on ";

/// How long a server may take to print its listening line (unless told otherwise).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server process, stopped with SIGTERM when [`Server::stop`] is called (killed if dropped).
pub struct Server {
    name: String,
    child: Child,
    pub addr: SocketAddr,
    /// Stdout lines printed before the listening line.
    pub preamble: Vec<String>,
    log: PathBuf,
}

impl Server {
    /// Starts `command` (stdout is read until the listening line, then drained; stderr goes to `log`).
    pub async fn start(name: &str, command: Command, log: &Path) -> Result<Self> {
        Self::start_within(name, command, log, STARTUP_TIMEOUT).await
    }

    /// [`Server::start`] allowing `timeout` for the listening line (a server loading a large store).
    pub async fn start_within(name: &str, mut command: Command, log: &Path, timeout: Duration) -> Result<Self> {
        let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log_file)).kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut preamble = Vec::new();
        let found = tokio::time::timeout(timeout, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.trim().strip_prefix(LISTENING_PREFIX) {
                    let addr: SocketAddr =
                        rest.trim_end_matches('/').parse().with_context(|| format!("bad listening line {line:?}"))?;
                    return Ok(Some(addr));
                }
                preamble.push(line);
            }
            Ok::<_, anyhow::Error>(None)
        })
        .await;
        let addr = match found {
            Ok(Ok(Some(addr))) => addr,
            Ok(Ok(None)) => {
                let status = child.wait().await.ok();
                bail!("{name} exited ({status:?}) without printing {LISTENING_PREFIX:?}; stderr:\n{}", tail(log));
            }
            Ok(Err(err)) => return Err(err.context(format!("reading {name}'s stdout"))),
            Err(_) => {
                bail!("{name} printed no {LISTENING_PREFIX:?} line within {timeout:?}; stderr:\n{}", tail(log))
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { name: name.to_owned(), child, addr, preamble, log: log.to_owned() })
    }

    /// The process id (none once it has exited).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process is still running; if not, an error quoting its stderr.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(anyhow!("{} exited ({status}); stderr:\n{}", self.name, tail(&self.log))),
        }
    }

    /// SIGTERM, then up to `limit` for a clean exit (then SIGKILL): how long it took to exit,
    /// and whether it had to be killed.
    pub async fn stop_timed(mut self, limit: Duration) -> Result<(Duration, bool)> {
        let Some(pid) = self.child.id() else {
            return Ok((Duration::ZERO, false));
        };
        let sent = std::time::Instant::now();
        let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    eprintln!("note: {} exited with {status} after SIGTERM", self.name);
                }
                Ok((sent.elapsed(), false))
            }
            Err(_) => {
                self.child.kill().await?;
                eprintln!("note: {} did not stop within {limit:?} of SIGTERM (killed)", self.name);
                Ok((sent.elapsed(), true))
            }
        }
    }

    /// SIGTERM, then up to 10 s for a clean exit, then SIGKILL.
    pub async fn stop(mut self) -> Result<()> {
        let Some(pid) = self.child.id() else {
            return Ok(());
        };
        let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    eprintln!("note: {} exited with {status} after SIGTERM", self.name);
                }
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("{} did not stop within 10 s of SIGTERM (killed)", self.name)
            }
        }
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Shields a countersign child from the caller's configuration: no `COUNTERSIGN_*`,
/// `HUMANLAYER_*` or `RUST_LOG` variables, and an empty config home (so no
/// `~/.config/countersign/config.toml` is read), so it uses its defaults plus the bench's own flags.
/// The pending limits per project are raised (the load phases leave a million pending requests in
/// one project; the checks still run on every create).
pub fn isolate(command: &mut Command, config_home: &Path) {
    for (name, _) in std::env::vars_os() {
        if name
            .to_str()
            .is_some_and(|n| n.starts_with("COUNTERSIGN_") || n.starts_with("HUMANLAYER_") || n == "RUST_LOG")
        {
            command.env_remove(&name);
        }
    }
    command.env("XDG_CONFIG_HOME", config_home);
    command.env("COUNTERSIGN_MAX_PENDING_PER_PROJECT", "1000000000");
    command.env("COUNTERSIGN_MAX_PENDING_BYTES_PER_PROJECT", "1000000000000");
}

/// `countersign keys create --project NAME STORE…` (`STORE`: `--data-dir DIR` or
/// `--database-url URL`): the key is the last line of stdout.
pub async fn create_key(bin: &Path, project: &str, store: &[OsString], config_home: &Path) -> Result<String> {
    let mut command = Command::new(bin);
    isolate(&mut command, config_home);
    let output = tokio::time::timeout(
        STARTUP_TIMEOUT,
        command.args(["keys", "create", "--project", project]).args(store).stdin(Stdio::null()).output(),
    )
    .await
    .map_err(|_| anyhow!("`keys create` took longer than {STARTUP_TIMEOUT:?}"))?
    .with_context(|| format!("running {} keys create", bin.display()))?;
    if !output.status.success() {
        bail!("`keys create` failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    let stdout = String::from_utf8(output.stdout).context("`keys create` printed non-UTF-8")?;
    let key = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| anyhow!("`keys create` printed nothing"))?;
    anyhow::ensure!(!key.contains(char::is_whitespace), "last line of `keys create` is not a key: {key:?}");
    Ok(key.to_owned())
}

/// Open files of process `pid` (entries of /proc/PID/fd).
pub fn open_files(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd")).context("reading /proc/PID/fd")?.count())
}

/// Raises this process's soft open-file limit to its hard limit (with util-linux's `prlimit`,
/// which needs no dependency here) so that it can hold many connections at once; children
/// inherit it. Returns the soft limit in force afterwards.
pub fn raise_open_file_limit() -> Result<u64> {
    let limits = || -> Result<(u64, u64)> {
        let text = std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
        let line = text.lines().find(|l| l.starts_with("Max open files")).context("no open-file limit line")?;
        let mut fields = line["Max open files".len()..].split_whitespace();
        let mut number = || fields.next().map(|v| if v == "unlimited" { u64::MAX } else { v.parse().unwrap_or(0) });
        Ok((number().unwrap_or(0), number().unwrap_or(0)))
    };
    let (soft, hard) = limits()?;
    if soft < hard {
        let value = if hard == u64::MAX { "unlimited".to_owned() } else { hard.to_string() };
        let raised = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={value}:{value}"))
            .status();
        if !matches!(raised, Ok(status) if status.success()) {
            eprintln!("note: could not raise the open-file limit from {soft} to {hard} (`prlimit`: {raised:?})");
        }
    }
    Ok(limits()?.0)
}
