//! Layered configuration: built-in defaults, then a TOML file, then `COUNTERSIGN_*` environment
//! variables, then command-line flags.

use crate::cli::GlobalArgs;
use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything Countersign can be configured with. The doc comment of each field is its entry in
/// the README's configuration reference (`countersign config reference` prints it; a test checks
/// the README against it).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The address the server listens on (flag `serve --listen`).
    pub listen: SocketAddr,
    /// The directory of the embedded SQLite database (flag `--data-dir`).
    pub data_dir: PathBuf,
    /// The database: `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB` (flag
    /// `--database-url`). Unset: `sqlite://<data_dir>/countersign.db`.
    pub database_url: Option<String>,
    /// The largest request body accepted, in bytes: 413 above it.
    pub max_body_bytes: usize,
    /// The base URL people and agents reach this server at, used in the printed `export` lines,
    /// set-password links and links in emails, Slack and SMS. `https://...` makes session cookies
    /// `Secure`. Unset: `http://` and the listen address.
    pub public_url: Option<String>,
    /// The organization name reported by `GET /humanlayer/v1/project`.
    pub organization: String,
    /// The SMTP server of the email channel: `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS), `smtps://user:pass@host:465` (TLS), or `smtp://host:25` (plain, a local
    /// relay). Unset: no email.
    pub smtp_url: Option<String>,
    /// The From address of emails, e.g. `Countersign <approvals@example.com>`. Unset:
    /// `Countersign <countersign@localhost>`.
    pub email_from: Option<String>,
    /// The Slack Web API's base URL (tests point it at a local fake).
    pub slack_api_base: String,
    /// Twilio's REST API base URL, for SMS and WhatsApp (tests point it at a local fake).
    pub twilio_api_base: String,
    /// An address such as `127.0.0.1:9464` that serves only `GET /metrics`, with no key (keep it
    /// private: loopback or an internal network). Unset: off.
    pub metrics_listen: Option<SocketAddr>,
    /// A token of at least 16 characters: `GET /metrics` on the main address answers requests
    /// with `Authorization: Bearer <token>`. Unset: off.
    pub metrics_token: Option<String>,
    /// The file holding the master key that encrypts the stored channel secrets (one base64 key
    /// per line, the current one first). Unset: `master.key` beside the SQLite database (so in
    /// the data directory by default), or in the data directory on PostgreSQL; created (0600) on
    /// first use. Every instance on one PostgreSQL database needs the same key.
    pub master_key_file: Option<PathBuf>,
    /// The master key itself, as base64 or hex of 32 bytes (older keys after it, separated by
    /// commas); wins over `master_key_file`. Best set in the environment, not the file.
    pub master_key: Option<String>,
    /// Bounds on what clients can send and make the server hold (the `[limits]` table; each also
    /// as `COUNTERSIGN_<KEY>`, e.g. `COUNTERSIGN_MAX_JSON_DEPTH`).
    pub limits: countersign_server::Limits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8484)),
            data_dir: dirs::data_dir().unwrap_or_else(|| PathBuf::from(".")).join("countersign"),
            database_url: None,
            max_body_bytes: 16 * 1024 * 1024,
            public_url: None,
            organization: "countersign".into(),
            smtp_url: None,
            email_from: None,
            slack_api_base: countersign_server::channels::slack::DEFAULT_API_BASE.to_owned(),
            twilio_api_base: countersign_server::channels::sms::DEFAULT_API_BASE.to_owned(),
            metrics_listen: None,
            metrics_token: None,
            master_key_file: None,
            master_key: None,
            limits: countersign_server::Limits::default(),
        }
    }
}

/// The keys `COUNTERSIGN_<KEY>` environment variables may set; other `COUNTERSIGN_` variables
/// (`COUNTERSIGN_LOG`, `COUNTERSIGN_CONFIG`, ...) are not configuration keys.
const ENV_KEYS: [&str; 14] = [
    "listen",
    "data_dir",
    "database_url",
    "max_body_bytes",
    "public_url",
    "organization",
    "smtp_url",
    "email_from",
    "slack_api_base",
    "twilio_api_base",
    "metrics_listen",
    "metrics_token",
    "master_key_file",
    "master_key",
];

/// The names of the limits (each a `[limits]` key and a `COUNTERSIGN_<KEY>` variable).
fn limit_keys() -> Vec<String> {
    match serde_json::to_value(countersign_server::Limits::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

impl Config {
    /// Loads the layers; flags in `args` win.
    pub fn load(args: &GlobalArgs) -> anyhow::Result<Self> {
        let file = args.config.clone().or_else(|| std::env::var_os("COUNTERSIGN_CONFIG").map(PathBuf::from));
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match &file {
            Some(path) if !path.exists() => anyhow::bail!("configuration file {} does not exist", path.display()),
            Some(path) => figment = figment.merge(Toml::file(path)),
            None => {
                if let Some(default) = dirs::config_dir().map(|d| d.join("countersign").join("config.toml")) {
                    figment = figment.merge(Toml::file(default));
                }
            }
        }
        figment = figment.merge(Env::prefixed("COUNTERSIGN_").only(&ENV_KEYS));
        let limit_keys = limit_keys();
        let nested = limit_keys.clone();
        figment = figment.merge(
            Env::prefixed("COUNTERSIGN_").filter(move |key| limit_keys.iter().any(|k| key == k.as_str())).map(
                move |key| match nested.iter().find(|k| key == k.as_str()) {
                    Some(k) => format!("limits.{k}").into(),
                    None => key.into(),
                },
            ),
        );
        let mut config: Config = figment.extract().context("invalid configuration")?;
        if let Some(dir) = &args.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &args.database_url {
            config.database_url = Some(url.clone());
        }
        if let Some(token) = &config.metrics_token {
            let min = countersign_server::metrics::MIN_TOKEN_LEN;
            anyhow::ensure!(
                token.chars().count() >= min && !token.chars().any(char::is_whitespace),
                "metrics_token must be at least {min} characters without spaces (e.g. `openssl rand -hex 24`)"
            );
        }
        Ok(config)
    }

    /// The database to open.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.sqlite_path().display()))
    }

    /// The base URL people and agents reach this server at: `public_url`, else the listen address.
    pub fn public_base(&self, bound: SocketAddr) -> String {
        let base = self.public_url.clone().unwrap_or_else(|| Self::local_base(bound));
        base.trim_end_matches('/').to_owned()
    }

    /// `http://` and an address this machine reaches `bound` at (loopback for an unspecified one).
    pub fn local_base(bound: SocketAddr) -> String {
        let ip = bound.ip();
        let host = if ip.is_unspecified() { "127.0.0.1".to_owned() } else { ip.to_string() };
        let host = if bound.is_ipv6() && !ip.is_unspecified() { format!("[{host}]") } else { host };
        format!("http://{host}:{}", bound.port())
    }

    /// The master keys of the stored secrets, and where they came from: `master_key`, else
    /// `master_key_file`, else the data directory's `master.key` (created if missing).
    pub fn keyring(&self) -> anyhow::Result<(countersign_store::secrets::Keyring, String)> {
        use countersign_store::secrets;
        if let Some(text) = &self.master_key {
            let ring =
                secrets::parse_keys(text).map_err(|e| anyhow::anyhow!("master_key (COUNTERSIGN_MASTER_KEY): {e}"))?;
            return Ok((ring, "COUNTERSIGN_MASTER_KEY".to_owned()));
        }
        let path = self.master_key_file();
        if self.master_key_file.is_some() {
            anyhow::ensure!(
                path.exists(),
                "master_key_file {} does not exist; copy the key file the other instances use there, \
                 or unset it to use the data directory's",
                path.display()
            );
            let ring = secrets::read_key_file(&path).map_err(anyhow::Error::msg)?;
            warn_if_readable_by_others(&path);
            return Ok((ring, path.display().to_string()));
        }
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| self.data_dir.clone());
        let (ring, created) = secrets::data_dir_keyring(&dir).map_err(anyhow::Error::msg)?;
        if created {
            tracing::info!(path = %path.display(), key = ring.current().id(), "created a master key for the stored secrets");
        }
        warn_if_readable_by_others(&path);
        Ok((ring, path.display().to_string()))
    }

    /// The key file in use when `master_key` is unset: `master_key_file`, else `master.key`
    /// beside the SQLite database (the key goes where the database goes), else in the data
    /// directory (PostgreSQL).
    pub fn master_key_file(&self) -> PathBuf {
        if let Some(file) = &self.master_key_file {
            return file.clone();
        }
        let dir = countersign_store::sqlite_path(&self.database_url())
            .and_then(|db| db.parent().map(Path::to_path_buf))
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or_else(|| self.data_dir.clone());
        dir.join(countersign_store::secrets::KEY_FILE)
    }

    /// Where the embedded database lives.
    pub fn sqlite_path(&self) -> PathBuf {
        Path::new(&self.data_dir).join("countersign.db")
    }
}

/// Warns when a key file can be read by other users than its owner.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "the master key file is readable by others; chmod 600 it");
        }
    }
}

/// The README's configuration reference, made from the doc comments and defaults of [`Config`]
/// and its `[limits]`: `countersign config reference` prints it, and a test fails when the
/// README's copy differs.
pub struct Reference {
    /// The table of top-level keys.
    pub keys: String,
    /// The table of `[limits]` keys.
    pub limits: String,
}

impl Reference {
    /// Both tables, as `countersign config reference` prints them.
    pub fn markdown(&self) -> String {
        format!("{}\n[limits]\n\n{}", self.keys, self.limits)
    }
}

/// Builds the reference tables.
pub fn reference() -> anyhow::Result<Reference> {
    let schema = schemars::schema_for!(Config);
    let schema = schema.as_value();
    let defaults = serde_json::to_value(Config::default())?;
    let doc = |props: &serde_json::Value, key: &str| -> anyhow::Result<String> {
        let text = props[key]["description"]
            .as_str()
            .with_context(|| format!("the configuration key {key} has no doc comment"))?;
        Ok(text.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|"))
    };
    let props = &schema["properties"];
    let mut keys = String::from("| key | env | default | what it sets |\n|---|---|---|---|\n");
    let serde_json::Value::Object(fields) = &defaults else { anyhow::bail!("the configuration is not a table") };
    for (key, default) in fields {
        if key == "limits" {
            continue;
        }
        let default = match key.as_str() {
            "data_dir" => "the OS data directory's `countersign` (`~/.local/share/countersign`)".to_owned(),
            _ => default_text(default),
        };
        let env = format!("COUNTERSIGN_{}", key.to_uppercase());
        keys.push_str(&format!("| `{key}` | `{env}` | {default} | {} |\n", doc(props, key)?));
    }
    let limit_props = &schema["$defs"]["Limits"]["properties"];
    let mut limits = String::from("| key | default | bounds |\n|---|---|---|\n");
    let serde_json::Value::Object(fields) = &defaults["limits"] else { anyhow::bail!("limits is not a table") };
    for (key, default) in fields {
        limits.push_str(&format!("| `{key}` | {} | {} |\n", default_text(default), doc(limit_props, key)?));
    }
    Ok(Reference { keys, limits })
}

/// A default as the reference shows it: `none` for unset, sizes of whole KiB/MiB named.
fn default_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "none".to_owned(),
        serde_json::Value::String(text) => format!("`{text}`"),
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(n) if n >= 1 << 20 && n % (1 << 20) == 0 => format!("`{n}` ({} MiB)", n >> 20),
            Some(n) if n >= 1 << 10 && n % (1 << 10) == 0 && n % 1000 != 0 => format!("`{n}` ({} KiB)", n >> 10),
            _ => format!("`{n}`"),
        },
        other => format!("`{other}`"),
    }
}

#[cfg(test)]
mod tests {
    /// The README's two configuration tables are what the code says. To update them after
    /// changing a key's doc comment or default: `COUNTERSIGN_BLESS=1 cargo test -p countersign
    /// the_readme`.
    #[test]
    fn the_readme_configuration_reference_is_what_the_code_says() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let mut readme = std::fs::read_to_string(&path).unwrap();
        let reference = super::reference().unwrap();
        let bless = std::env::var_os("COUNTERSIGN_BLESS").is_some();
        for (name, table) in [("keys", &reference.keys), ("limits", &reference.limits)] {
            let begin = format!("<!-- config reference: {name} (generated: countersign config reference) -->\n");
            let end = format!("<!-- end of config reference: {name} -->");
            let start = readme.find(&begin).unwrap_or_else(|| panic!("README.md has no line {begin}")) + begin.len();
            let stop = start + readme[start..].find(&end).unwrap_or_else(|| panic!("README.md has no line {end}"));
            if bless {
                readme.replace_range(start..stop, table);
            } else {
                assert_eq!(
                    &readme[start..stop],
                    table.as_str(),
                    "README.md's {name} table differs from the code; run COUNTERSIGN_BLESS=1 cargo test -p countersign the_readme"
                );
            }
        }
        if bless {
            std::fs::write(&path, readme).unwrap();
        }
    }

    /// The example configuration file of the packaging parses, with every key it sets known.
    #[test]
    fn the_packaged_example_configuration_is_valid() {
        use figment::providers::Format;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/config.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let uncommented: String = text
            .lines()
            .map(|l| l.strip_prefix("# ").filter(|l| l.contains(" = ")).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        for candidate in [text.as_str(), uncommented.as_str()] {
            let config: super::Config =
                figment::Figment::from(figment::providers::Serialized::defaults(super::Config::default()))
                    .merge(figment::providers::Toml::string(candidate))
                    .extract()
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(config.listen.port(), 8484);
        }
    }
}
