-- Moderation: the review queue (automated flags and user reports in one table, "cases"), what
-- moderators did about them, and the notes that tell a user what happened to them.

CREATE TABLE moderation_cases (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Who raised it: the chat classifier, a viewer's report, the video sampler, a hash list.
    source           text NOT NULL CHECK (source IN ('chat', 'report', 'video', 'hash')),
    target_type      text NOT NULL CHECK (target_type IN ('stream', 'message', 'user')),
    -- 1 (lowest) .. 5 (a hash-list match); the queue is ordered by severity, then age.
    severity         smallint NOT NULL CHECK (severity BETWEEN 1 AND 5),
    status           text NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'escalated', 'closed')),
    stream_id        bigint REFERENCES streams (id),
    message_id       bigint CHECK (message_id > 0),
    subject_user_id  bigint REFERENCES users (id),
    reporter_id      bigint REFERENCES users (id),
    reason           text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    score            real,
    -- The evidence: a JSON document encrypted in the vault, and the SHA-256 of its plaintext,
    -- so anyone can check that what is shown later is what was captured.
    evidence_id      uuid REFERENCES vault_objects (id),
    evidence_sha256  bytea CHECK (octet_length(evidence_sha256) = 32),
    resolution       text,
    resolved_by      bigint REFERENCES users (id),
    resolved_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((evidence_id IS NULL) = (evidence_sha256 IS NULL)),
    CHECK ((status = 'closed') = (resolved_at IS NOT NULL))
);
CREATE INDEX moderation_cases_queue_idx
    ON moderation_cases (severity DESC, created_at) WHERE status <> 'closed';
CREATE INDEX moderation_cases_subject_idx ON moderation_cases (subject_user_id, created_at);

CREATE TABLE moderation_actions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id     bigint NOT NULL REFERENCES moderation_cases (id),
    action      text NOT NULL CHECK (action ~ '^[a-z_]{1,32}$'),
    actor_id    bigint REFERENCES users (id),
    note        text CHECK (length(note) <= 500),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX moderation_actions_case_idx ON moderation_actions (case_id, id);

-- What the platform tells a user (a warning, a mute, a suspension ...); read with
-- GET /api/notifications.
CREATE TABLE notifications (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id),
    kind        text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.]{0,63}$'),
    body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 1000),
    case_id     bigint REFERENCES moderation_cases (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    read_at     timestamptz
);
CREATE INDEX notifications_user_idx ON notifications (user_id, id DESC);
