-- The Slack channel. A project's connection to a Slack app (its bot token and signing secret,
-- never shown back), the messages posted for each request (so a decision anywhere updates them,
-- and a click or a thread reply finds its request), claims ("X is looking at this"), and the
-- signatures of inbound Slack requests already acted on (a replay within Slack's 5 minutes is
-- refused, on any instance).
CREATE TABLE slack_connections (
    project_id           TEXT PRIMARY KEY REFERENCES projects(id),
    bot_token            TEXT NOT NULL,
    signing_secret       TEXT,
    default_channel      TEXT,
    team_id              TEXT,        -- from auth.test when connected
    team_name            TEXT,
    bot_user_id          TEXT,
    require_known_users  INTEGER NOT NULL DEFAULT 0,
    connected_at         INTEGER NOT NULL
);

CREATE TABLE slack_messages (
    channel_id   TEXT NOT NULL,       -- as Slack answered (a DM's D... id for a user id)
    ts           TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    call_id      TEXT NOT NULL,
    delivery_id  TEXT NOT NULL,       -- the delivery that posted it
    posted_at    INTEGER NOT NULL,
    PRIMARY KEY (channel_id, ts)
);
CREATE INDEX slack_messages_request ON slack_messages (project_id, kind, call_id);

CREATE TABLE request_claims (
    project_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    call_id     TEXT NOT NULL,
    claimed_by  TEXT NOT NULL,        -- what people see: a name, an email, or a Slack mention
    channel     TEXT NOT NULL,        -- where the claim was made, e.g. slack
    claimed_at  INTEGER NOT NULL,
    PRIMARY KEY (project_id, kind, call_id)
);

CREATE TABLE slack_replays (
    signature   TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX slack_replays_expiry ON slack_replays (expires_at);
