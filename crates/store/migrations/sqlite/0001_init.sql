-- Projects isolate everything: keys, requests and decisions belong to exactly one.
CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- API keys are stored only as SHA-256 hashes; display_prefix is safe to show.
CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    project_id      TEXT NOT NULL REFERENCES projects(id),
    name            TEXT,
    display_prefix  TEXT NOT NULL,
    key_hash        BLOB NOT NULL UNIQUE,
    created_at      INTEGER NOT NULL,
    revoked_at      INTEGER
);

-- Approvals (kind = function_call) and questions (kind = human_contact).
-- A request is pending while responded_at IS NULL; the decision columns are written once.
CREATE TABLE requests (
    project_id    TEXT NOT NULL REFERENCES projects(id),
    kind          TEXT NOT NULL CHECK (kind IN ('function_call', 'human_contact')),
    call_id       TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    spec          TEXT NOT NULL,
    requested_at  INTEGER NOT NULL,
    responded_at  INTEGER,
    approved      INTEGER,
    comment       TEXT,
    response      TEXT,
    option_name   TEXT,
    decided_by    TEXT,
    escalations   TEXT NOT NULL DEFAULT '[]',
    UNIQUE (project_id, kind, call_id)
);

CREATE INDEX requests_pending ON requests (project_id, kind, requested_at) WHERE responded_at IS NULL;
