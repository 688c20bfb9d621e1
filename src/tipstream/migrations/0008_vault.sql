-- The encrypted document vault (KYC documents, moderation evidence): one row per object.
-- The ciphertext lives in the storage backend (files under vault.dir); the row holds the
-- object's data key wrapped by a key-encryption key (kek_id names which). Destroying the wrapped
-- key crypto-shreds the object: no copy of the ciphertext (backups included) can be read again.
CREATE TABLE vault_objects (
    id            uuid PRIMARY KEY,
    owner_id      bigint REFERENCES users (id),
    kind          text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.]{0,63}$'),
    content_type  text NOT NULL CHECK (length(content_type) BETWEEN 1 AND 100),
    -- Plaintext size in bytes.
    size          bigint NOT NULL CHECK (size >= 0),
    kek_id        text CHECK (kek_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    wrapped_key   bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    rewrapped_at  timestamptz,
    shredded_at   timestamptz,
    CHECK ((shredded_at IS NULL) = (wrapped_key IS NOT NULL)),
    CHECK ((kek_id IS NULL) = (wrapped_key IS NULL))
);
CREATE INDEX vault_objects_owner_idx ON vault_objects (owner_id, kind);
-- Key rotation walks the objects still wrapped by another key.
CREATE INDEX vault_objects_kek_idx ON vault_objects (kek_id, id) WHERE wrapped_key IS NOT NULL;
