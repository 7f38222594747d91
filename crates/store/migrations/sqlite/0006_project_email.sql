-- A project's default email: requests that name no channel at all are emailed there.
ALTER TABLE projects ADD COLUMN default_email TEXT;

DROP TRIGGER email_on_create;
CREATE TRIGGER email_on_create AFTER INSERT ON requests
WHEN (instr(NEW.spec, '"email"') > 0 AND json_extract(NEW.spec, '$.channel.email.address') IS NOT NULL)
  OR (json_extract(NEW.spec, '$.channel') IS NULL
      AND EXISTS (SELECT 1 FROM projects p WHERE p.id = NEW.project_id AND p.default_email IS NOT NULL))
BEGIN
    INSERT INTO email_messages (id, project_id, kind, call_id, purpose, event_seq, created_at, status, next_attempt_at)
    VALUES ('<' || lower(hex(randomblob(16))) || '@countersign>', NEW.project_id, NEW.kind, NEW.call_id, 'request', 0,
            NEW.requested_at, 'pending', NEW.requested_at);
END;
