-- The event log: everything that happens to a request, written by Countersign in the transaction
-- of the change it records. Deliveries (webhooks, email) are routed from it in Rust (SQLite: in the
-- same transaction; PostgreSQL: when sealed), so the triggers that decided who gets what go.
DROP TRIGGER webhooks_on_create;
DROP TRIGGER webhooks_on_decide;
DROP TRIGGER webhooks_on_escalate;
DROP TRIGGER email_on_create;
DROP TRIGGER email_on_escalate;

CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id    TEXT NOT NULL,
    request_kind  TEXT NOT NULL,
    call_id       TEXT NOT NULL,
    type          TEXT NOT NULL,
    at            INTEGER NOT NULL,
    escalations   INTEGER NOT NULL,   -- escalations the request had once it happened
    body          TEXT NOT NULL,      -- the event's JSON form: exactly the bytes its hash covers
    seq           INTEGER,            -- position in its project's chain (1 = first); NULL until sealed
    prev_hash     TEXT,               -- hex SHA-256 of the event before (zeros for the first)
    hash          TEXT,
    sealed_at     INTEGER,
    routed_at     INTEGER             -- when its deliveries were queued
);
CREATE UNIQUE INDEX events_chain ON events (project_id, seq);
CREATE INDEX events_unsealed ON events (id) WHERE seq IS NULL;

-- The last sealed event of each project's chain (what a removed last event no longer matches).
CREATE TABLE chain_heads (
    project_id  TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    hash        TEXT NOT NULL
);
