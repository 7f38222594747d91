//! `countersign doctor`: checks what a deployment depends on and says how to fix what fails.
//! It changes nothing: the database is inspected without migrations, the master key file is not
//! created, and the channel credentials are only asked whether they work.

use crate::config::Config;
use countersign_store::Inspection;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
    Skip,
}

#[derive(Debug, Serialize)]
struct Check {
    check: String,
    status: Status,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Check>);

impl Report {
    fn add(&mut self, check: &str, status: Status, detail: impl Into<String>, fix: Option<String>) {
        self.0.push(Check { check: check.to_owned(), status, detail: detail.into(), fix });
    }
    fn ok(&mut self, check: &str, detail: impl Into<String>) {
        self.add(check, Status::Ok, detail, None);
    }
    fn skip(&mut self, check: &str, detail: impl Into<String>) {
        self.add(check, Status::Skip, detail, None);
    }
    fn warn(&mut self, check: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(check, Status::Warn, detail, Some(fix.into()));
    }
    fn fail(&mut self, check: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.add(check, Status::Fail, detail, Some(fix.into()));
    }
}

pub(crate) async fn run(config: &Config, args: crate::cli::DoctorArgs) -> anyhow::Result<()> {
    let mut report = Report::default();
    config_check(config, &mut report);
    let url = config.database_url();
    let shown = countersign_core::redact::mask_password(&url);
    let inspected = match countersign_store::inspect(&url).await {
        Ok(found) => {
            database_check(&shown, &found, &mut report);
            Some(found)
        }
        Err(e) => {
            report.fail(
                "database",
                format!("{shown}: {e}"),
                "check database_url (COUNTERSIGN_DATABASE_URL, --database-url): the server must be able to reach it",
            );
            None
        }
    };
    let key_opens = master_key_check(config, inspected.as_ref(), &mut report);
    disk_check(config, inspected.as_ref(), &mut report);
    clock_check(inspected.as_ref(), &mut report);
    smtp_check(config, &mut report).await;
    // The channel connections are read through the store, which opens only a database whose
    // schema is current and whose key is right (opening changes nothing then).
    // Only a database at this schema whose recorded key is the one loaded: opening any other
    // would migrate it, or seal its secrets with a key made here.
    let current = inspected.as_ref().is_some_and(|i| i.schema == i.known);
    if current && key_opens {
        match super::open_store(config).await {
            Ok(store) => {
                channel_checks(config, store.as_ref(), &mut report).await;
                store.close().await;
            }
            Err(e) => report.fail("channels", format!("cannot open the database: {e:#}"), "fix the database first"),
        }
    } else {
        report.skip("slack", "not checked: fix the database and master key first");
        report.skip("twilio", "not checked: fix the database and master key first");
    }
    public_url_check(config, args.url.as_deref(), &mut report).await;

    let failed = report.0.iter().filter(|c| c.status == Status::Fail).count();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"ok": failed == 0, "checks": report.0}))?);
    } else {
        for c in &report.0 {
            let tag = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            println!("{tag}  {:<11} {}", c.check, c.detail);
            if let Some(fix) = &c.fix {
                println!("      {:<11} fix: {fix}", "");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(crate::exit::Failure::new(
            crate::exit::Exit::Other,
            format!("{failed} check{} failed", if failed == 1 { "" } else { "s" })
        ));
    }
    Ok(())
}

fn config_check(config: &Config, report: &mut Report) {
    let source = std::env::var("COUNTERSIGN_CONFIG").ok().unwrap_or_else(|| "defaults, environment and flags".into());
    match &config.public_url {
        Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => report.fail(
            "config",
            format!("public_url {url:?} is not an http:// or https:// URL"),
            "set public_url to the address people reach the server at, e.g. https://countersign.example.com",
        ),
        None if !config.listen.ip().is_loopback() => report.warn(
            "config",
            format!("public_url is unset, so links in emails, Slack and SMS use the listen address {}", config.listen),
            "set public_url (COUNTERSIGN_PUBLIC_URL) to the address people reach the server at",
        ),
        _ => report.ok("config", format!("loaded ({source}); listening on {}", config.listen)),
    }
}

fn database_check(shown: &str, found: &Inspection, report: &mut Report) {
    let Inspection { backend, schema, known, .. } = found;
    if schema == known {
        report.ok("database", format!("{shown}: {backend}, schema {schema} (current)"));
    } else if schema < known {
        report.warn(
            "database",
            format!("{shown}: {backend}, schema {schema}; this binary has migrations up to {known}"),
            "they are applied when `countersign serve` starts (back the database up first)",
        );
    } else {
        report.fail(
            "database",
            format!("{shown}: schema {schema} is newer than this binary knows ({known})"),
            "run the release that made it, or a newer one",
        );
    }
}

/// Returns whether the database records a master key and the configured one is it (only then
/// may the store be opened without changing anything).
fn master_key_check(config: &Config, found: Option<&Inspection>, report: &mut Report) -> bool {
    let recorded = found.and_then(|i| i.master_key_id.clone());
    let file = config.master_key_file();
    if config.master_key.is_none() && !file.exists() {
        return match recorded {
            Some(id) => {
                report.fail(
                    "master key",
                    format!(
                        "the database's secrets are encrypted with master key {id}, but {} does not exist",
                        file.display()
                    ),
                    "copy the key file of the server that made the database there (or set COUNTERSIGN_MASTER_KEY)",
                );
                false
            }
            None => {
                report.ok("master key", format!("{} will be created on first start", file.display()));
                false
            }
        };
    }
    match config.keyring() {
        Err(e) => {
            report.fail(
                "master key",
                format!("{e:#}"),
                "fix the key file or COUNTERSIGN_MASTER_KEY (32 bytes, base64)",
            );
            false
        }
        Ok((ring, source)) => match recorded {
            Some(id) if !ring.knows(&id) => {
                report.fail(
                    "master key",
                    format!(
                        "{source} holds key {}, but the database's secrets are encrypted with {id}",
                        ring.current().id()
                    ),
                    "give this server the key file the other instances use (COUNTERSIGN_MASTER_KEY_FILE)",
                );
                false
            }
            Some(id) => {
                report.ok("master key", format!("key {} from {source}", ring.current().id()));
                id == ring.current().id()
            }
            None => {
                report.ok(
                    "master key",
                    format!("key {} from {source}; the next start encrypts the secrets with it", ring.current().id()),
                );
                false
            }
        },
    }
}

fn disk_check(config: &Config, found: Option<&Inspection>, report: &mut Report) {
    let dir = match countersign_store::sqlite_path(&config.database_url()) {
        Some(db) => db.parent().map(Path::to_path_buf).unwrap_or_else(|| config.data_dir.clone()),
        None => config.data_dir.clone(),
    };
    let probe = std::iter::successors(Some(dir.as_path()), |d| d.parent()).find(|d| d.exists());
    let Some(probe) = probe else {
        report.skip("disk", format!("{} does not exist", dir.display()));
        return;
    };
    match rustix::fs::statvfs(probe) {
        Ok(fs) => {
            let free = fs.f_bavail.saturating_mul(fs.f_frsize);
            let total = fs.f_blocks.saturating_mul(fs.f_frsize).max(1);
            let percent = free as f64 * 100.0 / total as f64;
            let detail = format!("{}: {:.1} GB free ({percent:.0} %)", probe.display(), free as f64 / 1e9);
            let on_sqlite = found.is_none_or(|i| i.backend == "sqlite");
            if free < 100 << 20 {
                report.fail(
                    "disk",
                    detail,
                    "free space: below 100 MB, SQLite refuses writes (503) when the disk fills",
                );
            } else if on_sqlite && (free < 1 << 30 || percent < 5.0) {
                report.warn("disk", detail, "free space or move data_dir to a larger disk");
            } else {
                report.ok("disk", detail);
            }
        }
        Err(e) => report.skip("disk", format!("cannot read the free space of {}: {e}", probe.display())),
    }
}

fn clock_check(found: Option<&Inspection>, report: &mut Report) {
    match found.and_then(|i| i.clock_skew_ms) {
        None => report.skip("clock", "SQLite: the database's clock is this machine's"),
        Some(ms) if ms.abs() <= 1000 => report.ok("clock", format!("{ms} ms from the database's")),
        Some(ms) if ms.abs() <= 5000 => report.warn(
            "clock",
            format!("{ms} ms from the database's"),
            "run NTP (chrony, systemd-timesyncd) on this machine and the database's: expiries and escalations follow the clock",
        ),
        Some(ms) => report.fail(
            "clock",
            format!("{:.1} s from the database's", ms as f64 / 1000.0),
            "run NTP on this machine and the database's: expiries, escalations and receipts use the clock",
        ),
    }
}

async fn smtp_check(config: &Config, report: &mut Report) {
    let Some(url) = &config.smtp_url else {
        report.skip("smtp", "email is off (no smtp_url)");
        return;
    };
    let shown = countersign_core::redact::mask_password(url);
    match countersign_server::channels::email::outbound::check_smtp(url).await {
        Ok(()) => report.ok("smtp", format!("{shown} answers NOOP")),
        Err(e) => report.fail(
            "smtp",
            format!("{shown}: {e}"),
            "check smtp_url (COUNTERSIGN_SMTP_URL): host, port, credentials and ?tls=required / smtps://",
        ),
    }
}

async fn channel_checks(config: &Config, store: &dyn countersign_store::Store, report: &mut Report) {
    let slack = countersign_server::channels::slack::api::SlackApi::new(&config.slack_api_base);
    match store.slack_connections().await {
        Err(e) => report.fail("slack", format!("cannot read the connections: {e}"), "fix the database first"),
        Ok(connections) if connections.is_empty() => report.skip("slack", "no project is connected to Slack"),
        Ok(connections) => {
            for c in connections {
                let project = project_name(store, &c.project_id).await;
                match slack.call("auth.test", &c.bot_token, &serde_json::json!({})).await {
                    Ok(who) => report
                        .ok("slack", format!("{project}: auth.test ok (team {})", who["team"].as_str().unwrap_or("?"))),
                    Err(e) => report.fail(
                        "slack",
                        format!("{project}: auth.test refused the bot token: {e}"),
                        format!(
                            "reconnect: countersign slack connect --project {project} (slack_api_base {})",
                            slack.base()
                        ),
                    ),
                }
            }
        }
    }
    let twilio = countersign_server::channels::sms::api::TwilioApi::new(&config.twilio_api_base);
    match store.twilio_connections().await {
        Err(e) => report.fail("twilio", format!("cannot read the connections: {e}"), "fix the database first"),
        Ok(connections) if connections.is_empty() => report.skip("twilio", "no project is connected to Twilio"),
        Ok(connections) => {
            for c in connections {
                let project = project_name(store, &c.project_id).await;
                match twilio.check(&c.account_sid, &c.auth_token).await {
                    Ok(()) => report.ok("twilio", format!("{project}: account {} ok", c.account_sid)),
                    Err(e) => report.fail(
                        "twilio",
                        format!("{project}: Twilio refused account {}: {e}", c.account_sid),
                        format!("reconnect: countersign twilio connect --project {project}"),
                    ),
                }
            }
        }
    }
}

async fn project_name(store: &dyn countersign_store::Store, id: &str) -> String {
    match store.project_by_id(id).await {
        Ok(Some(p)) => p.name,
        _ => id.to_owned(),
    }
}

async fn public_url_check(config: &Config, given: Option<&str>, report: &mut Report) {
    let base = given.map(str::to_owned).unwrap_or_else(|| config.public_base(config.listen));
    let base = base.trim_end_matches('/');
    let url = format!("{base}/healthz");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(5)).build() {
        Ok(http) => http,
        Err(e) => return report.skip("public url", format!("no HTTP client: {e}")),
    };
    match http.get(&url).send().await {
        Ok(answer) if answer.status().is_success() => {
            let health: serde_json::Value = answer.json().await.unwrap_or_default();
            let theirs = health["commit"].as_str().unwrap_or("?");
            if theirs != crate::cli::COMMIT && health["version"].as_str() != Some(env!("CARGO_PKG_VERSION")) {
                report.warn(
                    "public url",
                    format!(
                        "{base} answers, but runs version {} (this binary: {})",
                        health["version"],
                        crate::cli::VERSION
                    ),
                    "upgrade the server or this command line",
                );
            } else {
                report.ok("public url", format!("{base} answers /healthz (commit {theirs})"));
            }
        }
        Ok(answer) => report.fail(
            "public url",
            format!("{url} answered {}", answer.status()),
            "a proxy in front may route it elsewhere: check public_url and the proxy's configuration",
        ),
        Err(e) => report.fail(
            "public url",
            format!(
                "{url} is not reachable from this machine: {}",
                countersign_server::channels::http::without_url(&e)
            ),
            "start the server, or set public_url (COUNTERSIGN_PUBLIC_URL) to where it is reached (or pass --url)",
        ),
    }
}
