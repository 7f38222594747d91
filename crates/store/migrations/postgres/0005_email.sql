-- The email channel. Each message to send (a request's email, or an escalation's) is written by
-- the trigger below in the transaction of the change, then sent by a worker like webhooks are.
-- id is the Message-ID we send; replies find their request through In-Reply-To / References.
CREATE TABLE email_messages (
    id               TEXT PRIMARY KEY,
    project_id       TEXT NOT NULL,
    kind             TEXT NOT NULL,
    call_id          TEXT NOT NULL,
    purpose          TEXT NOT NULL CHECK (purpose IN ('request', 'escalation')),
    event_seq        BIGINT NOT NULL,    -- for an escalation, which one (1 = the first)
    created_at       BIGINT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,
    lease            TEXT,
    lease_until      BIGINT,
    recipients       TEXT,               -- JSON array of every address it was sent to (set when sent)
    last_error       TEXT,
    sent_at          BIGINT
);
CREATE INDEX email_messages_due ON email_messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX email_messages_request ON email_messages (project_id, kind, call_id);

-- Keys the server needs on every instance alike (e.g. the one that signs email links).
CREATE TABLE server_keys (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE FUNCTION countersign_enqueue_email() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    now_us BIGINT := (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF position('"email"' IN NEW.spec) > 0 AND (NEW.spec::json -> 'channel' -> 'email' ->> 'address') IS NOT NULL THEN
            INSERT INTO email_messages (id, project_id, kind, call_id, purpose, event_seq, created_at, status, next_attempt_at)
            VALUES ('<' || replace(gen_random_uuid()::text, '-', '') || '@countersign>', NEW.project_id, NEW.kind,
                    NEW.call_id, 'request', 0, NEW.requested_at, 'pending', NEW.requested_at);
        END IF;
    ELSIF json_array_length(NEW.escalations::json) > json_array_length(OLD.escalations::json) THEN
        INSERT INTO email_messages (id, project_id, kind, call_id, purpose, event_seq, created_at, status, next_attempt_at)
        VALUES ('<' || replace(gen_random_uuid()::text, '-', '') || '@countersign>', NEW.project_id, NEW.kind,
                NEW.call_id, 'escalation', json_array_length(NEW.escalations::json), now_us, 'pending', now_us);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER email_on_change AFTER INSERT OR UPDATE ON requests
FOR EACH ROW EXECUTE FUNCTION countersign_enqueue_email();
