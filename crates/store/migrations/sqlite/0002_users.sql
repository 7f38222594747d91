-- People who decide. A person has one role and belongs to one or more projects; the password is
-- an argon2 PHC string (NULL until set).
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'approver')),
    password_hash  TEXT,
    created_at     INTEGER NOT NULL,
    disabled_at    INTEGER
);

CREATE TABLE user_projects (
    user_id     TEXT NOT NULL REFERENCES users(id),
    project_id  TEXT NOT NULL REFERENCES projects(id),
    PRIMARY KEY (user_id, project_id)
);
