-- authgate schema 2: API keys (src/store/api_keys.rs). Stored by the SHA-256
-- of the key, never the key. They go with their owner (ON DELETE CASCADE),
-- in the deleting transaction. Creation and revocation write a revocation
-- event of kind 'api_key' (subject = key id): listeners re-read the row.

CREATE TABLE api_keys (
    id           text PRIMARY KEY,
    user_id      text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    role         text NOT NULL,
    hash         bytea NOT NULL UNIQUE,
    created_at   bigint NOT NULL,
    expires_at   bigint,
    last_used_at bigint,
    revoked_at   bigint
);
CREATE INDEX api_keys_user ON api_keys (user_id);
