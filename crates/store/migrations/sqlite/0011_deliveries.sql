-- One delivery queue for every channel. Each row is one event's delivery on one channel (to one
-- webhook endpoint, or the event's email), routed from the event log in Rust; one worker claims
-- due rows with a lease and hands each to its channel. The webhook outbox and the email outbox
-- move here unchanged (a sent email is 'delivered'); every attempt of any channel is logged in
-- delivery_attempts.
CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,   -- the webhook-id header, or the email's Message-ID
    channel          TEXT NOT NULL,      -- 'webhook' or 'email'
    target           TEXT,               -- the webhook endpoint's id; NULL for email
    project_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    call_id          TEXT NOT NULL,
    event_type       TEXT NOT NULL,      -- e.g. function_call.completed
    event_seq        INTEGER NOT NULL,    -- escalations the request had when the event happened
    created_at       INTEGER NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,             -- NULL once delivered or failed
    lease            TEXT,               -- set by the worker that claimed the next attempt
    lease_until      INTEGER,
    last_status      INTEGER,             -- a webhook endpoint's HTTP status
    last_error       TEXT,
    last_latency_ms  INTEGER,
    delivered_at     INTEGER,
    recipients       TEXT                -- email: JSON array of every address it went to
);
CREATE INDEX deliveries_due ON deliveries (channel, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_target ON deliveries (target, created_at) WHERE target IS NOT NULL;
CREATE INDEX deliveries_request ON deliveries (project_id, kind, call_id);

CREATE TABLE delivery_attempts (
    delivery_id  TEXT NOT NULL REFERENCES deliveries(id),
    attempt      INTEGER NOT NULL,
    at           INTEGER NOT NULL,
    status_code  INTEGER,
    error        TEXT,
    latency_ms   INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

INSERT INTO deliveries (id, channel, target, project_id, kind, call_id, event_type, event_seq, created_at, status,
                        attempts, next_attempt_at, lease, lease_until, last_status, last_error, last_latency_ms,
                        delivered_at)
SELECT id, 'webhook', endpoint_id, project_id, kind, call_id, event_type, event_seq, created_at, status, attempts,
       next_attempt_at, lease, lease_until, last_status, last_error, last_latency_ms, delivered_at
FROM webhook_deliveries;
INSERT INTO delivery_attempts (delivery_id, attempt, at, status_code, error, latency_ms)
SELECT delivery_id, attempt, at, status_code, error, latency_ms FROM webhook_attempts;
INSERT INTO deliveries (id, channel, target, project_id, kind, call_id, event_type, event_seq, created_at, status,
                        attempts, next_attempt_at, lease, lease_until, last_error, delivered_at, recipients)
SELECT id, 'email', NULL, project_id, kind, call_id,
       kind || CASE purpose WHEN 'escalation' THEN '.escalated' ELSE '.created' END, event_seq, created_at,
       CASE status WHEN 'sent' THEN 'delivered' ELSE status END, attempts, next_attempt_at, lease, lease_until,
       last_error, sent_at, recipients
FROM email_messages;
DROP TABLE webhook_attempts;
DROP TABLE webhook_deliveries;
DROP TABLE email_messages;
