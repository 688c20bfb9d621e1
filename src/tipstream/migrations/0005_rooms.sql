-- Live rooms: what the app needs to run a stream's Janus videoroom from any worker or host,
-- and bans from a performer's room.

-- The videoroom's secret (needed to destroy it or kick from it) and its PIN (needed to join
-- it): both random, known only to the app, never sent to a browser.
ALTER TABLE streams
    ADD COLUMN janus_room_secret text,
    ADD COLUMN janus_room_pin    text,
    ADD CONSTRAINT streams_live_has_room
        CHECK (status <> 'live' OR (janus_room_id IS NOT NULL AND janus_room_secret IS NOT NULL
                                    AND janus_room_pin IS NOT NULL)),
    ADD CONSTRAINT streams_end_reason_when_ended
        CHECK (status <> 'ended' OR end_reason IS NOT NULL);

CREATE INDEX streams_performer_idx ON streams (performer_id, created_at DESC);

-- A ban keeps a user out of every stream of one performer (room = the performer's room).
CREATE TABLE room_bans (
    performer_id  bigint NOT NULL REFERENCES users (id),
    user_id       bigint NOT NULL REFERENCES users (id),
    banned_by     bigint REFERENCES users (id),
    reason        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    PRIMARY KEY (performer_id, user_id)
);
