-- Streams: one row per broadcast; the Live rooms domain owns its lifecycle, the ledger
-- checks a stream is live before a tip.

CREATE TYPE stream_status AS ENUM ('scheduled', 'live', 'ended');

CREATE TABLE streams (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    performer_id   bigint NOT NULL REFERENCES users (id),
    title          text NOT NULL CHECK (length(title) BETWEEN 1 AND 140),
    tags           text[] NOT NULL DEFAULT '{}',
    -- Rooms not marked adult are held to the stricter moderation policy.
    adult          boolean NOT NULL DEFAULT true,
    status         stream_status NOT NULL DEFAULT 'scheduled',
    -- The Janus videoroom serving this stream while it is live (random, not guessable).
    janus_room_id  bigint UNIQUE,
    scheduled_at   timestamptz,
    started_at     timestamptz,
    ended_at       timestamptz,
    end_reason     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'live' OR started_at IS NOT NULL),
    CHECK (status <> 'ended' OR ended_at IS NOT NULL)
);

-- A performer broadcasts at most one stream at a time.
CREATE UNIQUE INDEX streams_one_live_per_performer ON streams (performer_id)
    WHERE status = 'live';
CREATE INDEX streams_live_idx ON streams (started_at DESC) WHERE status = 'live';
