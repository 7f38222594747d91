//! Secrets at rest: the channel secrets and server keys the store keeps (webhook signing
//! secrets, Slack tokens and signing secrets, Twilio auth tokens, the email link key, the receipt
//! signing keys) are stored encrypted with a master key that is not in the database.
//!
//! Each value is sealed with XChaCha20-Poly1305 (a random 24-byte nonce per value) and stored as
//! text: `cs-enc:v1:<key id>:<base64 of nonce and ciphertext>`. The associated data names the
//! table, column and row the value belongs to, so a sealed value copied into another row (say, a
//! webhook secret into the email link key) does not open. The key id (8 hex digits of a hash of
//! the key) says which master key sealed it, so values sealed by a key that was rotated away are
//! told apart from damaged ones.

use crate::{StoreError, StoreResult};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;

/// What every sealed value starts with.
pub const PREFIX: &str = "cs-enc:v1:";

/// A 32-byte master key.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; 32],
    id: String,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        // Best effort: the key's bytes do not outlive it in this struct.
        self.bytes = [0; 32];
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self::from_bytes(rand::random())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::new().chain_update(b"countersign master key id\0").chain_update(bytes).finalize();
        Self { bytes, id: hex::encode(&digest[..4]) }
    }

    /// Parses a key written as base64 (44 characters) or hex (64 digits) of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|e| e.to_string())?
        } else {
            STANDARD
                .decode(text)
                .map_err(|_| "a master key is 32 bytes in base64 (44 characters) or hex (64 digits)".to_owned())?
        };
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("a master key is 32 bytes; this one is {} bytes", b.len()))?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key as base64, the form key files hold.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    /// The key's id: 8 hex digits of a hash of it, safe to print and store.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The master keys a store seals and opens secrets with: the current one, which seals, and older
/// ones that only open (while a rotation has not re-sealed everything yet).
#[derive(Clone, Debug)]
pub struct Keyring {
    current: MasterKey,
    older: Vec<MasterKey>,
}

impl Keyring {
    pub fn new(current: MasterKey, older: Vec<MasterKey>) -> Self {
        Self { current, older }
    }

    /// A keyring of one new random key (tests and throwaway stores).
    pub fn ephemeral() -> Self {
        Self::new(MasterKey::generate(), Vec::new())
    }

    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// The keys after the current one (they only open).
    pub fn older(&self) -> &[MasterKey] {
        &self.older
    }

    /// Whether the key with this id is in the ring.
    pub fn knows(&self, id: &str) -> bool {
        self.key(id).is_some()
    }

    /// The ids of every key in the ring, the current one first.
    pub fn ids(&self) -> Vec<&str> {
        std::iter::once(&self.current).chain(&self.older).map(MasterKey::id).collect()
    }

    fn key(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current).chain(&self.older).find(|k| k.id == id)
    }

    /// Seals `plain` for the place `aad` names (`table.column:row`).
    pub fn seal(&self, aad: &str, plain: &str) -> String {
        let nonce: [u8; 24] = rand::random();
        let cipher = XChaCha20Poly1305::new((&self.current.bytes).into());
        let sealed = cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plain.as_bytes(), aad: aad.as_bytes() })
            .expect("XChaCha20-Poly1305 encrypts any message shorter than 256 GiB");
        let mut out = Vec::with_capacity(24 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.current.id, STANDARD.encode(out))
    }

    /// Opens a value [`seal`](Self::seal)ed for `aad`. A value that is not sealed, was sealed by
    /// a key not in the ring, or does not open (changed, or moved from another row) is an error
    /// that says which.
    pub fn open(&self, aad: &str, stored: &str) -> StoreResult<String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Err(StoreError::Internal(format!("the secret {aad} is stored unencrypted")));
        };
        let (id, body) =
            rest.split_once(':').ok_or_else(|| StoreError::Internal(format!("the secret {aad} is damaged")))?;
        let key = self.key(id).ok_or_else(|| {
            StoreError::Internal(format!(
                "the secret {aad} is encrypted with master key {id}, which this server does not have (it has {}); \
                 give it the master key the other instances use (COUNTERSIGN_MASTER_KEY_FILE)",
                self.ids().join(", ")
            ))
        })?;
        let bytes = STANDARD.decode(body).map_err(|_| StoreError::Internal(format!("the secret {aad} is damaged")))?;
        if bytes.len() < 24 + 16 {
            return Err(StoreError::Internal(format!("the secret {aad} is damaged")));
        }
        let (nonce, sealed) = bytes.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().expect("split at 24");
        let cipher = XChaCha20Poly1305::new((&key.bytes).into());
        let plain =
            cipher.decrypt(&XNonce::from(nonce), Payload { msg: sealed, aad: aad.as_bytes() }).map_err(|_| {
                StoreError::Internal(format!("the secret {aad} does not open: changed, or copied from elsewhere"))
            })?;
        String::from_utf8(plain).map_err(|_| StoreError::Internal(format!("the secret {aad} is damaged")))
    }

    /// [`open`](Self::open) for an optional column.
    pub fn open_opt(&self, aad: &str, stored: Option<String>) -> StoreResult<Option<String>> {
        stored.map(|s| self.open(aad, &s)).transpose()
    }
}

/// Whether a stored value is sealed (rather than plain text from before secrets were encrypted).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// The key id a sealed value names.
pub fn sealed_by(stored: &str) -> Option<&str> {
    stored.strip_prefix(PREFIX)?.split_once(':').map(|(id, _)| id)
}

/// The associated data of a secret: the table, column and row it belongs to.
pub fn place(table: &str, column: &str, row: &str) -> String {
    format!("{table}.{column}:{row}")
}

/// The name of the key file in the data directory.
pub const KEY_FILE: &str = "master.key";

const KEY_FILE_HEADER: &str = "\
# Countersign's master key: it encrypts the channel secrets stored in the database (webhook,
# Slack and Twilio secrets, the email link key, the receipt signing keys). Keep a copy apart from
# the database's backups; every instance on one PostgreSQL database needs the same key.
# The first key encrypts; keys after it only decrypt (left by an unfinished rotation).
";

/// Reads a key file: one key per line (base64 or hex), the current one first; `#` comments.
pub fn read_key_file(path: &Path) -> Result<Keyring, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the master key file {}: {e}", path.display()))?;
    parse_keys(&text).map_err(|e| format!("the master key file {}: {e}", path.display()))
}

/// Parses keys, one per line or separated by commas, the current one first.
pub fn parse_keys(text: &str) -> Result<Keyring, String> {
    let mut keys = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(MasterKey::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err("no key in it".into());
    }
    let current = keys.remove(0);
    Ok(Keyring::new(current, keys))
}

/// The text of a key file holding `keys`, the current one first.
fn key_file_text(keys: &[&MasterKey]) -> String {
    let mut text = KEY_FILE_HEADER.to_owned();
    for key in keys {
        text.push_str(&key.to_base64());
        text.push('\n');
    }
    text
}

/// Writes `text` to a new file beside `path` with a name of its own, readable only by its
/// owner, synced; returns its path.
fn stage(path: &Path, text: &str) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{}.{:016x}.new", std::process::id(), rand::random::<u64>()));
    let staged = path.with_file_name(name);
    let mut options = std::fs::File::options();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&staged)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(staged)
}

/// Writes `keys` (the current one first) to the key file `path`, readable only by its owner,
/// replacing it whole: a crash leaves the old file or the new one.
pub fn write_key_file(path: &Path, keys: &[&MasterKey]) -> std::io::Result<()> {
    let staged = stage(path, &key_file_text(keys))?;
    if let Err(e) = std::fs::rename(&staged, path) {
        let _ = std::fs::remove_file(&staged);
        return Err(e);
    }
    crate::sync_dir_of(path)
}

/// The keyring of the key file `dir/master.key`, which is created (with a new random key, mode
/// 0600) if it does not exist. Two processes creating it at once end up with the same key: the
/// file is published with a hard link, which fails if another got there first, and then that
/// one's key is read. Returns whether this call created it.
pub fn data_dir_keyring(dir: &Path) -> Result<(Keyring, bool), String> {
    let path = dir.join(KEY_FILE);
    if path.exists() {
        return read_key_file(&path).map(|ring| (ring, false));
    }
    let key = MasterKey::generate();
    let cannot = |e: std::io::Error| format!("cannot create the master key file {}: {e}", path.display());
    let staged = stage(&path, &key_file_text(&[&key])).map_err(cannot)?;
    let published = std::fs::hard_link(&staged, &path);
    let _ = std::fs::remove_file(&staged);
    match published {
        Ok(()) => {
            crate::sync_dir_of(&path).map_err(cannot)?;
            Ok((Keyring::new(key, Vec::new()), true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key_file(&path).map(|ring| (ring, false)),
        Err(e) => Err(cannot(e)),
    }
}

/// Every stored secret: its table, column, the column naming its row (the associated data's
/// `row`), and which rows of the table hold secrets.
pub(crate) const SEALED: [(&str, &str, &str, &str); 6] = [
    ("webhook_endpoints", "secret", "id", "TRUE"),
    ("slack_connections", "bot_token", "project_id", "TRUE"),
    ("slack_connections", "signing_secret", "project_id", "signing_secret IS NOT NULL"),
    ("twilio_connections", "auth_token", "project_id", "TRUE"),
    ("signing_keys", "secret", "kid", "TRUE"),
    // The route salt only makes delivery ids; the master key id is what is checked at start.
    ("server_keys", "value", "name", "name = 'email_links'"),
];

/// The server keys (`server_keys.name`) that are secrets, sealed like the columns above.
pub(crate) const SEALED_SERVER_KEYS: [&str; 1] = ["email_links"];

/// The `server_keys` row that names the master key the database's secrets are sealed with.
pub const MASTER_KEY_ID: &str = "master_key_id";

/// Defines `prepare(pool, ring) -> StoreResult<u64>` over one pool type: run at every open,
/// after the migrations. It refuses a keyring that lacks the database's master key (a second
/// instance started with a key of its own), then seals every secret stored in plain text (from
/// before secrets were encrypted) and re-seals every one sealed by an older key of the ring (a
/// rotation), and records the current key as the database's. Returns how many it (re)sealed.
///
/// A read-only look first: when everything is sealed with the current key, which is the
/// recorded one, it writes nothing (a CLI command beside a running server). Otherwise it does
/// the work in one transaction that `$begin` opens and `$lock` serializes across processes
/// (`BEGIN IMMEDIATE` on SQLite; a transaction-scoped advisory lock on PostgreSQL), reading
/// the recorded key again under it, so two instances starting at once with different keys cannot
/// both pass the check.
macro_rules! secrets_queries {
    ($db:ty, begin: $begin:literal, lock: $lock:literal) => {
        pub(crate) async fn prepare(
            pool: &sqlx::Pool<$db>,
            ring: &crate::secrets::Keyring,
        ) -> crate::StoreResult<u64> {
            let mut conn = pool.acquire().await?;
            if let Some(done) = prepare_on(&mut conn, ring, false).await? {
                return Ok(done);
            }
            sqlx::query($begin).execute(&mut *conn).await?;
            let result = async {
                sqlx::query($lock).execute(&mut *conn).await?;
                prepare_on(&mut conn, ring, true).await
            }
            .await;
            let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
            sqlx::query(end).execute(&mut *conn).await?;
            Ok(result?.unwrap_or(0))
        }

        /// The check, and with `write` the work; without it, `None` when there is work to do.
        async fn prepare_on(
            conn: &mut <$db as sqlx::Database>::Connection,
            ring: &crate::secrets::Keyring,
            write: bool,
        ) -> crate::StoreResult<Option<u64>> {
            use crate::secrets::{MASTER_KEY_ID, SEALED, is_sealed, place, sealed_by};
            let recorded: Option<String> = sqlx::query_scalar("SELECT value FROM server_keys WHERE name = $1")
                .bind(MASTER_KEY_ID)
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(id) = &recorded
                && !ring.knows(id)
            {
                return Err(crate::StoreError::Unavailable(format!(
                    "this database's secrets are encrypted with master key {id}, but this server's master key is {}; \
                     give it the key the other instances use (COUNTERSIGN_MASTER_KEY_FILE, COUNTERSIGN_MASTER_KEY \
                     or the master.key beside the database)",
                    ring.current().id()
                )));
            }
            let current = ring.current().id().to_owned();
            let mut updates = Vec::new();
            for (table, column, row, which) in SEALED {
                let select = format!("SELECT {row}, {column} FROM {table} WHERE {which}");
                let stored: Vec<(String, String)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(select)).fetch_all(&mut *conn).await?;
                for (id, value) in stored {
                    if sealed_by(&value) == Some(current.as_str()) {
                        continue;
                    }
                    let aad = place(table, column, &id);
                    let plain = if is_sealed(&value) { ring.open(&aad, &value)? } else { value.clone() };
                    let update = format!("UPDATE {table} SET {column} = $1 WHERE {row} = $2 AND {column} = $3");
                    updates.push((update, ring.seal(&aad, &plain), id, value));
                }
            }
            if updates.is_empty() && recorded.as_deref() == Some(current.as_str()) {
                return Ok(Some(0));
            }
            if !write {
                return Ok(None);
            }
            let resealed = updates.len() as u64;
            for (update, sealed, id, value) in updates {
                let done =
                    sqlx::query(sqlx::AssertSqlSafe(update)).bind(sealed).bind(&id).bind(value).execute(&mut *conn).await?;
                if done.rows_affected() != 1 {
                    return Err(crate::StoreError::Unavailable(format!(
                        "a secret ({id}) changed while it was being encrypted; start again"
                    )));
                }
            }
            sqlx::query(
                "INSERT INTO server_keys (name, value, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )
            .bind(MASTER_KEY_ID)
            .bind(&current)
            .bind(countersign_core::Timestamp::now().as_micros())
            .execute(&mut *conn)
            .await?;
            if resealed > 0 {
                tracing::info!(resealed, master_key = %current, "secrets encrypted with the current master key");
            }
            Ok(Some(resealed))
        }
    };
}
pub(crate) use secrets_queries;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_in_its_place_and_with_its_key() {
        let ring = Keyring::ephemeral();
        let sealed = ring.seal("webhook_endpoints.secret:a", "whsec_abc");
        assert!(sealed.starts_with(&format!("{PREFIX}{}:", ring.current().id())));
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(ring.open("webhook_endpoints.secret:a", &sealed).unwrap(), "whsec_abc");
        assert_ne!(ring.seal("webhook_endpoints.secret:a", "whsec_abc"), sealed, "a fresh nonce every time");
        // Another row, another key, a changed byte, plain text: each refused.
        assert!(ring.open("webhook_endpoints.secret:b", &sealed).is_err());
        let other = Keyring::ephemeral();
        let err = other.open("webhook_endpoints.secret:a", &sealed).unwrap_err().to_string();
        assert!(err.contains(ring.current().id()) && err.contains("MASTER_KEY"), "{err}");
        let mut changed = sealed.clone().into_bytes();
        let last = changed.len() - 3;
        changed[last] = if changed[last] == b'A' { b'B' } else { b'A' };
        assert!(ring.open("webhook_endpoints.secret:a", std::str::from_utf8(&changed).unwrap()).is_err());
        assert!(ring.open("webhook_endpoints.secret:a", "whsec_abc").unwrap_err().to_string().contains("unencrypted"));
    }

    #[test]
    fn an_older_key_opens_but_does_not_seal() {
        let old = MasterKey::generate();
        let sealed_before = Keyring::new(old.clone(), vec![]).seal("t.c:r", "x");
        let ring = Keyring::new(MasterKey::generate(), vec![old.clone()]);
        assert_eq!(ring.open("t.c:r", &sealed_before).unwrap(), "x");
        assert_eq!(sealed_by(&ring.seal("t.c:r", "x")), Some(ring.current().id()));
        assert_ne!(ring.current().id(), old.id());
    }

    #[test]
    fn keys_parse_from_base64_or_hex_of_32_bytes() {
        let key = MasterKey::generate();
        assert_eq!(MasterKey::parse(&key.to_base64()).unwrap().id(), key.id());
        assert_eq!(MasterKey::parse(&hex::encode(key.bytes)).unwrap().id(), key.id());
        assert!(MasterKey::parse("c2hvcnQ=").unwrap_err().contains("32 bytes"));
        assert!(MasterKey::parse("not a key!").is_err());
        assert!(!format!("{key:?}").contains(&key.to_base64()), "Debug does not show the key");
    }

    #[test]
    fn a_key_file_is_created_once_private_and_read_back_with_older_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (ring, created) = data_dir_keyring(dir.path()).unwrap();
        assert!(created);
        let (again, created) = data_dir_keyring(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(again.current().id(), ring.current().id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let newer = MasterKey::generate();
        write_key_file(&dir.path().join(KEY_FILE), &[&newer, ring.current()]).unwrap();
        let both = read_key_file(&dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(both.ids(), vec![newer.id(), ring.current().id()]);
        assert_eq!(
            parse_keys(&format!("{}, {}", newer.to_base64(), ring.current().to_base64())).unwrap().ids().len(),
            2
        );
        assert!(parse_keys("# only a comment\n").unwrap_err().contains("no key"));
    }
}
