-- The email channel. Each message to send (a request's email, or an escalation's) is written by
-- the triggers below in the transaction of the change, then sent by a worker like webhooks are.
-- id is the Message-ID we send; replies find their request through In-Reply-To / References.
CREATE TABLE email_messages (
    id               TEXT PRIMARY KEY,
    project_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    call_id          TEXT NOT NULL,
    purpose          TEXT NOT NULL CHECK (purpose IN ('request', 'escalation')),
    event_seq        INTEGER NOT NULL,   -- for an escalation, which one (1 = the first)
    created_at       INTEGER NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER,
    lease            TEXT,
    lease_until      INTEGER,
    recipients       TEXT,               -- JSON array of every address it was sent to (set when sent)
    last_error       TEXT,
    sent_at          INTEGER
);
CREATE INDEX email_messages_due ON email_messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX email_messages_request ON email_messages (project_id, kind, call_id);

-- Keys the server needs on every instance alike (e.g. the one that signs email links).
CREATE TABLE server_keys (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TRIGGER email_on_create AFTER INSERT ON requests
WHEN instr(NEW.spec, '"email"') > 0 AND json_extract(NEW.spec, '$.channel.email.address') IS NOT NULL
BEGIN
    INSERT INTO email_messages (id, project_id, kind, call_id, purpose, event_seq, created_at, status, next_attempt_at)
    VALUES ('<' || lower(hex(randomblob(16))) || '@countersign>', NEW.project_id, NEW.kind, NEW.call_id, 'request', 0,
            NEW.requested_at, 'pending', NEW.requested_at);
END;

CREATE TRIGGER email_on_escalate AFTER UPDATE OF escalations ON requests
WHEN json_array_length(NEW.escalations) > json_array_length(OLD.escalations)
BEGIN
    INSERT INTO email_messages (id, project_id, kind, call_id, purpose, event_seq, created_at, status, next_attempt_at)
    VALUES ('<' || lower(hex(randomblob(16))) || '@countersign>', NEW.project_id, NEW.kind, NEW.call_id, 'escalation',
            json_array_length(NEW.escalations), CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER), 'pending',
            CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER));
END;
