-- TOTP secrets encrypted at rest with the vault's envelope scheme (see accounts/credentials.py):
-- a random data key per secret, wrapped by a vault key-encryption key (totp_kek_id names it), and
-- the secret sealed by that data key; both AES-256-GCM with the user id and purpose as associated
-- data, so a sealed secret copied to another user's row does not open.
-- The clear column stays for upgraded systems until the app seals what it holds (at start-up
-- and in `tipctl keys rotate`); a row never holds both.
ALTER TABLE users
    ADD COLUMN totp_kek_id        text CHECK (totp_kek_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    ADD COLUMN totp_wrapped_key   bytea,
    ADD COLUMN totp_secret_sealed bytea,
    ADD CONSTRAINT users_totp_sealed_complete CHECK (
        (totp_kek_id IS NULL) = (totp_wrapped_key IS NULL)
        AND (totp_wrapped_key IS NULL) = (totp_secret_sealed IS NULL)
    ),
    ADD CONSTRAINT users_totp_secret_once CHECK (totp_secret IS NULL OR totp_secret_sealed IS NULL);

-- Key rotation walks the secrets still wrapped by another key; sealing finds the clear ones.
CREATE INDEX users_totp_kek_idx ON users (totp_kek_id, id) WHERE totp_kek_id IS NOT NULL;
CREATE INDEX users_totp_clear_idx ON users (id) WHERE totp_secret IS NOT NULL;
