-- authgate schema 1: the records of src/store/mod.rs, one table each, plus
-- the revocation event log other instances follow.

CREATE TABLE users (
    id            text PRIMARY KEY,
    email         text NOT NULL UNIQUE,
    role          text NOT NULL,
    password_hash text NOT NULL,
    created_at    bigint NOT NULL,
    token_version bigint NOT NULL DEFAULT 0
);

CREATE TABLE families (
    id         text PRIMARY KEY,
    user_id    text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    revoked_at bigint,
    -- Creation order, to end the oldest session first past the per-user cap.
    seq        bigserial NOT NULL
);
CREATE INDEX families_user ON families (user_id);
CREATE INDEX families_expiry ON families (expires_at);

-- Keyed by the SHA-256 of the token; the token itself is never stored.
CREATE TABLE refresh_tokens (
    hash        bytea PRIMARY KEY,
    family_id   text NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    user_id     text NOT NULL,
    expires_at  bigint NOT NULL,
    rotated_at  bigint,
    replaced_by text
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

-- Revoked sessions, kept after their family is swept until pruned.
CREATE TABLE revocations (
    family_id  text PRIMARY KEY,
    revoked_at bigint NOT NULL
);
CREATE INDEX revocations_at ON revocations (revoked_at);

-- Deleted users, until every access token issued before has expired.
CREATE TABLE tombstones (
    user_id    text PRIMARY KEY,
    deleted_at bigint NOT NULL
);

-- Every revocation, in commit order (writers serialise on an advisory lock
-- before taking a sequence number), announced with NOTIFY.
-- kind: 'version' (subject = user id, version = new minimum),
--       'deleted' (subject = user id), 'family' (subject = family id).
CREATE TABLE revocation_events (
    seq     bigserial PRIMARY KEY,
    kind    text NOT NULL,
    subject text NOT NULL,
    version bigint,
    at      bigint NOT NULL
);
CREATE INDEX revocation_events_at ON revocation_events (at);

-- The highest sequence number pruned: a listener that last saw less than
-- this missed events and reloads the whole state instead.
CREATE TABLE revocation_events_pruned (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    through bigint NOT NULL
);
INSERT INTO revocation_events_pruned (through) VALUES (0);

-- Access-token lifetimes in use (leeway included): revocations are kept for
-- the longest. `until` is NULL while some run may still mint with it.
CREATE TABLE access_lifetimes (
    lifetime bigint PRIMARY KEY,
    until    bigint
);

-- The pair a rotation minted, sealed under a key derived from the presented
-- refresh token (which is never stored), kept for the reuse grace so a retry
-- on another instance gets the same pair. Unreadable without that token.
CREATE TABLE grace_pairs (
    presented  bytea PRIMARY KEY,
    sealed     bytea NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX grace_pairs_expiry ON grace_pairs (expires_at);

-- A family's rotation state (src/store/mod.rs `Chain`): the live token's
-- generation, the key its tokens are tagged with, and the rotated tokens
-- still kept for the grace (JSON list of {hash, keep_until}).
CREATE TABLE chains (
    family_id  text PRIMARY KEY REFERENCES families (id) ON DELETE CASCADE,
    generation bigint NOT NULL,
    tag_key    text NOT NULL,
    retired    text NOT NULL
);

-- Failed logins per account (keyed by the throttle's hash of the email), so
-- a lockout earned on one instance holds on all.
CREATE TABLE account_lockouts (
    account      bytea PRIMARY KEY,
    failures     integer NOT NULL,
    window_start bigint NOT NULL,
    lockouts     integer NOT NULL,
    locked_until bigint
);
