-- Each project's inbound-email secret (SHA-256, like API keys): the inbound endpoint is
-- authenticated by it, never by an agent's API key. NULL until `countersign projects
-- inbound-email-secret PROJECT` creates one; rotating replaces it.
ALTER TABLE projects ADD COLUMN inbound_email_secret_hash BYTEA;
CREATE UNIQUE INDEX projects_inbound_email_secret ON projects (inbound_email_secret_hash);
