-- Secrets at rest: from this release, the channel secrets and server keys are stored sealed with
-- a master key that is not in the database (`cs-enc:v1:...`; see crates/store/src/secrets.rs),
-- and `server_keys.master_key_id` names it. The sealing is done in Rust when a store opens. This
-- migration changes no table: it marks the schema, so that an older release, which would take a
-- sealed value for the secret itself, refuses this database instead of using it.
SELECT 1;
