-- CCBill webhooks are unsigned: a sale they announce is a hint, confirmed with CCBill's Data Link
-- before any token is credited. The hints, and the reconciliation runs that confirm them.

-- One announced sale per purchase, keyed by CCBill's subscription id (which Data Link reports).
CREATE TABLE sale_hints (
    purchase_id      bigint PRIMARY KEY REFERENCES purchases (id),
    processor        text NOT NULL,
    subscription_id  text NOT NULL CHECK (subscription_id ~ '^[0-9]{1,32}$'),
    -- The webhook event that announced it, and the amount it said was paid.
    event_id         text NOT NULL,
    amount           text,
    hinted_at        timestamptz NOT NULL DEFAULT now(),
    -- pending → confirmed (credited) | flagged (not confirmed within the window) | closed
    -- (refunded, failed or otherwise settled before it was confirmed).
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'confirmed', 'flagged', 'closed')),
    resolved_at      timestamptz,
    UNIQUE (processor, subscription_id)
);
CREATE INDEX sale_hints_pending_idx ON sale_hints (processor, hinted_at) WHERE status = 'pending';

-- Every ask of a processor's transaction report: the window, what it did, or why it failed.
CREATE TABLE reconciliation_runs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    processor     text NOT NULL,
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL CHECK (window_end > window_start),
    trigger       text NOT NULL CHECK (trigger IN ('schedule', 'operator', 'webhook')),
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    status        text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'ok', 'failed')),
    records       integer NOT NULL DEFAULT 0,
    credited      integer NOT NULL DEFAULT 0,
    reversed      integer NOT NULL DEFAULT 0,
    duplicates    integer NOT NULL DEFAULT 0,
    unmatched     integer NOT NULL DEFAULT 0,
    skipped       integer NOT NULL DEFAULT 0,
    flagged       integer NOT NULL DEFAULT 0,
    error         text
);
CREATE INDEX reconciliation_runs_idx ON reconciliation_runs (processor, started_at);
