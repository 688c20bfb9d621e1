-- Moderation can hide a stream from the room listings (API and web) while it stays live for
-- those already in it: a softer action than ending it, set by a moderator or by the video
-- policy, and undone by a moderator ("unhide").
ALTER TABLE streams
    ADD COLUMN hidden_at     timestamptz,
    ADD COLUMN hidden_reason text CHECK (length(hidden_reason) BETWEEN 1 AND 500),
    ADD CONSTRAINT streams_hidden_has_reason CHECK ((hidden_at IS NULL) = (hidden_reason IS NULL));
