-- A project's default email: requests that name no channel at all are emailed there.
ALTER TABLE projects ADD COLUMN default_email TEXT;

CREATE OR REPLACE FUNCTION countersign_enqueue_email() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    now_us BIGINT := (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT;
    has_email BOOLEAN;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF position('"channel"' IN NEW.spec) > 0 THEN
            has_email := position('"email"' IN NEW.spec) > 0
                AND (NEW.spec::json -> 'channel' -> 'email' ->> 'address') IS NOT NULL;
            IF NOT has_email AND ((NEW.spec::json -> 'channel') IS NULL OR json_typeof(NEW.spec::json -> 'channel') = 'null') THEN
                has_email := EXISTS (SELECT 1 FROM projects p WHERE p.id = NEW.project_id AND p.default_email IS NOT NULL);
            END IF;
        ELSE
            has_email := EXISTS (SELECT 1 FROM projects p WHERE p.id = NEW.project_id AND p.default_email IS NOT NULL);
        END IF;
        IF has_email THEN
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
