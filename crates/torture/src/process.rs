//! The `countersign` binary under test: `serve` instances started, killed and restarted on the
//! same store (each instance's stderr appended to its own log, with a line marking every start),
//! and the commands run against the store (`keys create`, `webhooks add`, `audit verify`,
//! `audit export`), all isolated from the caller's configuration.

use anyhow::{Context, Result, anyhow, bail};
use std::ffi::OsString;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The line `serve` prints once it accepts connections.
const LISTENING_PREFIX: &str = "Listening on http://";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// How to run the binary against one store.
#[derive(Clone, Debug)]
pub struct Countersign {
    pub bin: PathBuf,
    /// `--data-dir DIR` or `--database-url URL`.
    pub store: Vec<OsString>,
    /// An empty config home, so no `~/.config/countersign/config.toml` is read.
    pub config_home: PathBuf,
}

/// Output of a command that ran to its end.
pub struct Output {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Countersign {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        for (name, _) in std::env::vars_os() {
            if name
                .to_str()
                .is_some_and(|n| n.starts_with("COUNTERSIGN_") || n.starts_with("HUMANLAYER_") || n == "RUST_LOG")
            {
                command.env_remove(&name);
            }
        }
        command.env("XDG_CONFIG_HOME", &self.config_home);
        // The receiver is on loopback; the load leaves many requests pending in one project.
        command.env("COUNTERSIGN_ALLOW_PRIVATE_WEBHOOK_TARGETS", "true");
        command.env("COUNTERSIGN_MAX_PENDING_PER_PROJECT", "100000000");
        command.env("COUNTERSIGN_MAX_PENDING_BYTES_PER_PROJECT", "100000000000");
        command
    }

    /// Runs `countersign ARGS... STORE...` to its end (bounded in time).
    pub async fn run(&self, args: &[&str]) -> Result<Output> {
        let mut command = self.command();
        command.args(args).args(&self.store).stdin(Stdio::null()).kill_on_drop(true);
        let output = tokio::time::timeout(COMMAND_TIMEOUT, command.output())
            .await
            .map_err(|_| anyhow!("`countersign {}` took longer than {COMMAND_TIMEOUT:?}", args.join(" ")))?
            .with_context(|| format!("running {}", self.bin.display()))?;
        Ok(Output {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Runs a command that must succeed; returns its stdout.
    pub async fn run_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args).await?;
        if !out.success {
            bail!("`countersign {}` failed ({:?}): {}{}", args.join(" "), out.code, out.stderr, out.stdout);
        }
        Ok(out.stdout)
    }

    /// `keys create --project P`: the key is the last line of stdout.
    pub async fn create_key(&self, project: &str) -> Result<String> {
        let stdout = self.run_ok(&["keys", "create", "--project", project]).await?;
        let key =
            stdout.lines().rev().map(str::trim).find(|l| !l.is_empty()).context("`keys create` printed nothing")?;
        anyhow::ensure!(!key.contains(char::is_whitespace), "last line of `keys create` is not a key: {key:?}");
        Ok(key.to_owned())
    }

    /// `webhooks add URL --project P --json`: returns the endpoint's secret.
    pub async fn add_webhook(&self, project: &str, url: &str) -> Result<String> {
        let stdout = self.run_ok(&["webhooks", "add", url, "--project", project, "--json"]).await?;
        let endpoint: serde_json::Value =
            serde_json::from_str(stdout.trim()).with_context(|| format!("`webhooks add --json` printed {stdout:?}"))?;
        endpoint["secret"].as_str().map(str::to_owned).context("`webhooks add --json` printed no secret")
    }

    /// `audit verify --json`: whether it exited 0, and what it printed (trimmed).
    pub async fn audit_verify(&self) -> Result<(bool, String)> {
        let out = self.run(&["audit", "verify", "--json"]).await?;
        let text = format!("{}{}", out.stdout.trim(), out.stderr.trim());
        Ok((out.success, text))
    }

    /// Starts `serve --listen 127.0.0.1:0` with its stderr appended to `log`.
    pub async fn serve(&self, name: &str, log: &Path, env: &[(&str, &str)]) -> Result<Server> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        writeln!(file, "===== torture: starting {name} at {} =====", chrono::Utc::now().to_rfc3339())?;
        let mut command = self.command();
        command.args(["serve", "--listen", "127.0.0.1:0"]).args(&self.store);
        command.envs(env.iter().copied());
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(file)).kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(STARTUP_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.trim().strip_prefix(LISTENING_PREFIX) {
                    let addr: SocketAddr =
                        rest.trim_end_matches('/').parse().with_context(|| format!("bad listening line {line:?}"))?;
                    return Ok(Some(addr));
                }
            }
            Ok::<_, anyhow::Error>(None)
        })
        .await;
        let addr = match found {
            Ok(Ok(Some(addr))) => addr,
            Ok(Ok(None)) => {
                let status = child.wait().await.ok();
                bail!("{name} exited ({status:?}) without listening; its log ends:\n{}", tail(log, 12));
            }
            Ok(Err(err)) => return Err(err.context(format!("reading {name}'s stdout"))),
            Err(_) => bail!("{name} did not listen within {STARTUP_TIMEOUT:?}; its log ends:\n{}", tail(log, 12)),
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server { name: name.to_owned(), child, addr, log: log.to_owned() })
    }
}

/// A running `countersign serve`.
pub struct Server {
    pub name: String,
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Server {
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether it is still running; if not, an error quoting its log.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(anyhow!("{} exited ({status}); its log ends:\n{}", self.name, tail(&self.log, 8))),
        }
    }

    /// SIGKILL, and wait for it to be gone.
    pub async fn kill(mut self) -> Result<()> {
        self.child.start_kill().ok();
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .map_err(|_| anyhow!("{} survived SIGKILL for 10 s", self.name))??;
        Ok(())
    }

    /// SIGTERM, then up to 20 s for a clean exit (SIGKILL after that, reported).
    pub async fn stop(mut self) -> Result<()> {
        let Some(pid) = self.child.id() else { return Ok(()) };
        let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                anyhow::ensure!(status.success(), "{} exited with {status} after SIGTERM", self.name);
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!(
                    "{} did not stop within 20 s of SIGTERM (killed); its log ends:\n{}",
                    self.name,
                    tail(&self.log, 8)
                )
            }
        }
    }
}

/// The last `n` lines of a log, each cut to 300 characters (logged SQL can be long).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(|l| l.chars().take(300).collect()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Log lines at WARN or ERROR level (or that mention a panic), with the count of all of them.
/// The load's escalations name an email address and no SMTP server is configured, so their
/// "email not sent" warnings are expected and left out.
pub fn warnings(path: &Path, keep: usize) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let hits: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN ") || l.contains("panicked"))
        .filter(|l| !l.contains("email not sent"))
        .collect();
    (hits.len(), hits.iter().take(keep).map(|l| l.chars().take(300).collect()).collect())
}
