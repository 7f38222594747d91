-- Outbound webhooks. An endpoint belongs to a project and lists the events it wants; its secret
-- signs deliveries (it must be readable to sign, so it is stored as is, like any HMAC key).
CREATE TABLE webhook_endpoints (
    id           TEXT PRIMARY KEY,
    project_id   TEXT NOT NULL REFERENCES projects(id),
    url          TEXT NOT NULL,
    events       TEXT NOT NULL,          -- JSON array of event names
    format       TEXT NOT NULL CHECK (format IN ('v1beta2', 'legacy')),
    secret       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    disabled_at  BIGINT
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
    event_seq        BIGINT NOT NULL,    -- escalations the request had when the event happened
    created_at       BIGINT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT,             -- NULL once delivered or failed
    lease            TEXT,               -- set by the worker that claimed the next attempt
    lease_until      BIGINT,
    last_status      BIGINT,
    last_error       TEXT,
    last_latency_ms  BIGINT,
    delivered_at     BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at);

CREATE TABLE webhook_attempts (
    delivery_id  TEXT NOT NULL REFERENCES webhook_deliveries(id),
    attempt      BIGINT NOT NULL,
    at           BIGINT NOT NULL,
    status_code  BIGINT,
    error        TEXT,
    latency_ms   BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

CREATE FUNCTION countersign_enqueue_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    what TEXT;
    seq BIGINT;
    at BIGINT;
BEGIN
    IF TG_OP = 'INSERT' THEN
        what := 'created'; seq := 0; at := NEW.requested_at;
    ELSIF OLD.responded_at IS NULL AND NEW.responded_at IS NOT NULL THEN
        what := 'completed'; seq := json_array_length(NEW.escalations::json); at := NEW.responded_at;
    ELSIF json_array_length(NEW.escalations::json) > json_array_length(OLD.escalations::json) THEN
        what := 'escalated'; seq := json_array_length(NEW.escalations::json);
        at := (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT;
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO webhook_deliveries (id, endpoint_id, project_id, kind, call_id, event_type, event_seq, created_at, status, next_attempt_at)
    SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), e.id, NEW.project_id, NEW.kind, NEW.call_id,
           NEW.kind || '.' || what, seq, at, 'pending', at
    FROM webhook_endpoints e
    WHERE e.project_id = NEW.project_id AND e.disabled_at IS NULL
      AND position('"' || NEW.kind || '.' || what || '"' IN e.events) > 0;
    RETURN NULL;
END;
$$;

CREATE TRIGGER webhooks_on_change AFTER INSERT OR UPDATE ON requests
FOR EACH ROW EXECUTE FUNCTION countersign_enqueue_webhooks();
