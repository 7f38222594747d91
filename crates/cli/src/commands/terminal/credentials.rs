//! The login `countersign login` keeps: server, token, email and expiry, in
//! `<config dir>/countersign/credentials.json`, readable only by its owner.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;

/// A stored login. Not `Debug`, so the token cannot end up in a log line by accident.
#[derive(Serialize, Deserialize)]
pub struct Credentials {
    pub server: String,
    pub token: String,
    pub email: String,
    pub expires_at: String,
}

impl Credentials {
    /// Where the login is stored.
    pub fn path() -> anyhow::Result<PathBuf> {
        let dir =
            dirs::config_dir().context("cannot find your configuration directory: set HOME (or XDG_CONFIG_HOME)")?;
        Ok(dir.join("countersign").join("credentials.json"))
    }

    /// The stored login, if there is one.
    pub fn load() -> anyhow::Result<Option<Self>> {
        let path = Self::path()?;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let credentials = serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged: delete it and run `countersign login` again", path.display()))?;
        Ok(Some(credentials))
    }

    /// Stores the login, replacing any other: written to a private temporary file, then renamed,
    /// so the file is never readable by others nor half-written.
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        let path = Self::path()?;
        let dir = path.parent().expect("the path has a folder");
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let temporary = dir.join(".credentials.json.tmp");
        let _ = std::fs::remove_file(&temporary);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let write = || -> std::io::Result<()> {
            let mut file = options.open(&temporary)?;
            file.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)
        };
        write().with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// Deletes the stored login, if any.
    pub fn remove() -> anyhow::Result<()> {
        let path = Self::path()?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot delete {}", path.display()))
            }
            _ => Ok(()),
        }
    }
}
