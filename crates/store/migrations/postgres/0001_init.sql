-- Projects isolate everything: keys, requests and decisions belong to exactly one.
CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- API keys are stored only as SHA-256 hashes; display_prefix is safe to show.
CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    project_id      TEXT NOT NULL REFERENCES projects(id),
    name            TEXT,
    display_prefix  TEXT NOT NULL,
    key_hash        BYTEA NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL,
    revoked_at      BIGINT
);

-- Approvals (kind = function_call) and questions (kind = human_contact).
-- A request is pending while responded_at IS NULL; the decision columns are written once.
-- spec and escalations are JSON kept as text, so the agent's bytes come back exactly.
CREATE TABLE requests (
    project_id    TEXT NOT NULL REFERENCES projects(id),
    kind          TEXT NOT NULL CHECK (kind IN ('function_call', 'human_contact')),
    call_id       TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    spec          TEXT NOT NULL,
    requested_at  BIGINT NOT NULL,
    responded_at  BIGINT,
    approved      BOOLEAN,
    comment       TEXT,
    response      TEXT,
    option_name   TEXT,
    decided_by    TEXT,
    escalations   TEXT NOT NULL DEFAULT '[]',
    UNIQUE (project_id, kind, call_id)
);

CREATE INDEX requests_pending ON requests (project_id, kind, requested_at) WHERE responded_at IS NULL;
