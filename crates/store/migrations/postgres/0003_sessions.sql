-- Signing in. Failed logins are counted per person and lock the account for a while; sessions
-- are browser cookies (kind web, with a CSRF token) or terminal logins (kind cli); set-password
-- links are used once. Every token is stored only as its SHA-256 hash.
ALTER TABLE users ADD COLUMN failed_logins BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN locked_until BIGINT;

CREATE TABLE sessions (
    token_hash  BYTEA PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    kind        TEXT NOT NULL CHECK (kind IN ('web', 'cli')),
    csrf_token  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE password_tokens (
    token_hash  BYTEA PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);

-- History: decided requests of a project, newest first.
CREATE INDEX requests_decided ON requests (project_id, responded_at) WHERE responded_at IS NOT NULL;
