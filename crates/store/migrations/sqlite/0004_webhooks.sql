-- Outbound webhooks. An endpoint belongs to a project and lists the events it wants; its secret
-- signs deliveries (it must be readable to sign, so it is stored as is, like any HMAC key).
CREATE TABLE webhook_endpoints (
    id           TEXT PRIMARY KEY,
    project_id   TEXT NOT NULL REFERENCES projects(id),
    url          TEXT NOT NULL,
    events       TEXT NOT NULL,          -- JSON array of event names
    format       TEXT NOT NULL CHECK (format IN ('v1beta2', 'legacy')),
    secret       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    disabled_at  INTEGER
);
CREATE INDEX webhook_endpoints_project ON webhook_endpoints (project_id) WHERE disabled_at IS NULL;

-- The outbox: one row per event and endpoint, written by the triggers below in the same
-- transaction as the change it reports, so a committed decision always has its deliveries.
-- The body is rendered when sent, from the request (immutable once decided) and event_seq.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,   -- also the webhook-id header
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints(id),
    project_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    call_id          TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    event_seq        INTEGER NOT NULL,   -- escalations the request had when the event happened
    created_at       INTEGER NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,            -- NULL once delivered or failed
    lease            TEXT,               -- set by the worker that claimed the next attempt
    lease_until      INTEGER,
    last_status      INTEGER,
    last_error       TEXT,
    last_latency_ms  INTEGER,
    delivered_at     INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at);

CREATE TABLE webhook_attempts (
    delivery_id  TEXT NOT NULL REFERENCES webhook_deliveries(id),
    attempt      INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    latency_ms   INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

CREATE TRIGGER webhooks_on_create AFTER INSERT ON requests
BEGIN
    INSERT INTO webhook_deliveries (id, endpoint_id, project_id, kind, call_id, event_type, event_seq, created_at, status, next_attempt_at)
    SELECT 'msg_' || lower(hex(randomblob(16))), e.id, NEW.project_id, NEW.kind, NEW.call_id, NEW.kind || '.created', 0,
           NEW.requested_at, 'pending', NEW.requested_at
    FROM webhook_endpoints e
    WHERE e.project_id = NEW.project_id AND e.disabled_at IS NULL AND instr(e.events, '"' || NEW.kind || '.created"') > 0;
END;

CREATE TRIGGER webhooks_on_decide AFTER UPDATE OF responded_at ON requests
WHEN OLD.responded_at IS NULL AND NEW.responded_at IS NOT NULL
BEGIN
    INSERT INTO webhook_deliveries (id, endpoint_id, project_id, kind, call_id, event_type, event_seq, created_at, status, next_attempt_at)
    SELECT 'msg_' || lower(hex(randomblob(16))), e.id, NEW.project_id, NEW.kind, NEW.call_id, NEW.kind || '.completed',
           json_array_length(NEW.escalations), NEW.responded_at, 'pending', NEW.responded_at
    FROM webhook_endpoints e
    WHERE e.project_id = NEW.project_id AND e.disabled_at IS NULL AND instr(e.events, '"' || NEW.kind || '.completed"') > 0;
END;

CREATE TRIGGER webhooks_on_escalate AFTER UPDATE OF escalations ON requests
WHEN json_array_length(NEW.escalations) > json_array_length(OLD.escalations)
BEGIN
    INSERT INTO webhook_deliveries (id, endpoint_id, project_id, kind, call_id, event_type, event_seq, created_at, status, next_attempt_at)
    SELECT 'msg_' || lower(hex(randomblob(16))), e.id, NEW.project_id, NEW.kind, NEW.call_id, NEW.kind || '.escalated',
           json_array_length(NEW.escalations), CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER), 'pending',
           CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)
    FROM webhook_endpoints e
    WHERE e.project_id = NEW.project_id AND e.disabled_at IS NULL AND instr(e.events, '"' || NEW.kind || '.escalated"') > 0;
END;
