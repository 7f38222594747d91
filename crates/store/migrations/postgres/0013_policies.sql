-- Policies and time. A project's policy file (rules that auto-decide, ask for a quorum, separate
-- duties, escalate and expire), its groups of approvers, who owns each key, and per request: the
-- rule that governs it (decided at creation, so a later policy change does not move the goal
-- posts), how it ended when no person decided it, the votes cast toward its quorum, and its timers.
CREATE TABLE policies (
    project_id  TEXT PRIMARY KEY REFERENCES projects(id),
    source      TEXT NOT NULL,        -- the policy file exactly as set (parsed again when loaded)
    version     BIGINT NOT NULL,      -- 1 for the first policy, +1 for each change
    set_by      TEXT NOT NULL,        -- who set it, as shown
    set_at      BIGINT NOT NULL
);

CREATE TABLE groups (
    project_id  TEXT NOT NULL REFERENCES projects(id),
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (project_id, name)
);

CREATE TABLE group_members (
    project_id  TEXT NOT NULL,
    group_name  TEXT NOT NULL,
    email       TEXT NOT NULL,        -- a person of the project, lower-cased
    added_at    BIGINT NOT NULL,
    PRIMARY KEY (project_id, group_name, email)
);

-- The person an API key acts for (separation of duties: they may not approve its requests).
ALTER TABLE api_keys ADD COLUMN owner TEXT;

-- The governing rule of an ask (JSON: rule, approvers, separation of duties, the key's owner,
-- deadline); NULL when no rule with such terms matched.
ALTER TABLE requests ADD COLUMN policy TEXT;
-- How a request ended when no one decided it: 'expired' or 'cancelled'; NULL otherwise.
ALTER TABLE requests ADD COLUMN ended TEXT;

CREATE TABLE votes (
    project_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    call_id     TEXT NOT NULL,
    voter       TEXT NOT NULL,        -- the person's email, lower-cased
    approved    BIGINT NOT NULL,
    comment     TEXT,
    actor       TEXT NOT NULL,        -- who voted and through which channel (JSON, as user_info)
    voted_at    BIGINT NOT NULL,
    PRIMARY KEY (project_id, kind, call_id, voter)
);

-- Durable timers: escalation steps and deadlines, written with their request; fired once (on
-- PostgreSQL by whichever instance locks them first).
CREATE TABLE timers (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    call_id     TEXT NOT NULL,
    action      TEXT NOT NULL,        -- what it does, as JSON (core::timer::TimerAction)
    due_at      BIGINT NOT NULL,
    fired_at    BIGINT
);
CREATE INDEX timers_due ON timers (due_at) WHERE fired_at IS NULL;
CREATE INDEX timers_request ON timers (project_id, kind, call_id);
