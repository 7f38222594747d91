-- What a key may do: agent (create, read, wait, escalate), decide (respond), admin (webhooks).
-- Keys made before scopes existed keep every power they had.
ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT 'agent,decide,admin';
