-- Foundation: users, their sessions and API tokens, 2FA recovery codes, the audit log.

CREATE EXTENSION IF NOT EXISTS citext;

CREATE TYPE user_role AS ENUM ('viewer', 'performer', 'moderator', 'admin');

CREATE TABLE users (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email               citext NOT NULL UNIQUE CHECK (length(email) BETWEEN 3 AND 254),
    display_name        text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 64),
    password_hash       text NOT NULL,
    date_of_birth       date NOT NULL,
    role                user_role NOT NULL DEFAULT 'viewer',
    -- Extra permissions on top of the role, e.g. 'finance' for admins who approve payouts.
    permissions         text[] NOT NULL DEFAULT '{}',
    totp_secret         text,
    totp_enabled_at     timestamptz,
    -- The last TOTP time step accepted: a code for this step or an earlier one is a replay.
    totp_last_step      bigint NOT NULL DEFAULT 0,
    disabled_at         timestamptz,
    disabled_reason     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE totp_recovery_codes (
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash   text NOT NULL,
    used_at     timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- The index of browser sessions; the live session state is in Valkey.
CREATE TABLE sessions (
    id_hash     text PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    ip          inet,
    user_agent  text,
    revoked_at  timestamptz
);
CREATE INDEX sessions_user_idx ON sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE api_tokens (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    token_hash    text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);

-- Append-only and hash-chained: hash = sha256(prev_hash || canonical row), see audit/service.py.
CREATE TABLE audit_logs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL,
    actor_id     bigint,
    action       text NOT NULL,
    target_type  text,
    target_id    text,
    ip           text,
    details      jsonb NOT NULL DEFAULT '{}',
    prev_hash    text NOT NULL,
    hash         text NOT NULL UNIQUE
);
CREATE INDEX audit_logs_actor_idx ON audit_logs (actor_id, id);

CREATE FUNCTION audit_logs_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_logs_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();
CREATE TRIGGER audit_logs_no_truncate
    BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_append_only();
