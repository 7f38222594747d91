-- At-most-once execution of approved function calls: the agent reports `started` once (the
-- primary key and the request's row lock make a second start lose), then `finished` or `failed`.
-- Each report is also an event of the request's audit chain.
CREATE TABLE executions (
    project_id     TEXT NOT NULL,
    kind           TEXT NOT NULL,
    call_id        TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('started', 'finished', 'failed')),
    started_at     BIGINT NOT NULL,
    started_by     TEXT NOT NULL,      -- who reported the start (the API key, as `key cs_...`)
    ended_at       BIGINT,
    result_sha256  TEXT,
    error          TEXT,
    start_token    TEXT,               -- the agent's token: its retried start is answered again, not refused
    PRIMARY KEY (project_id, kind, call_id)
);
