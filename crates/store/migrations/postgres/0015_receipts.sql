-- Approval receipts: the installation's Ed25519 signing keys. One is current (`current` = 1; the
-- unique constraint makes two instances starting at once agree on one); a rotated-out key keeps
-- its row with `valid_until` so receipts it signed stay verifiable. The secret is kept as is
-- (it must sign); only the public key is ever published.
CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    algorithm    TEXT NOT NULL,
    secret       TEXT NOT NULL,       -- hex of the 32-byte Ed25519 secret
    public_key   TEXT NOT NULL,       -- hex of the 32-byte public key
    valid_from   BIGINT NOT NULL,
    valid_until  BIGINT,
    current      INTEGER UNIQUE CHECK (current = 1)
);
