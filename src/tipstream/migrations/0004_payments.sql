-- Token purchases through payment processors, their webhook events, and performer payouts.

-- One checkout: a viewer buying a token package through one processor's hosted page.
CREATE TABLE purchases (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        bigint NOT NULL REFERENCES users (id),
    processor      text NOT NULL CHECK (processor ~ '^[a-z][a-z0-9_]{0,31}$'),
    package_id     text NOT NULL,
    tokens         bigint NOT NULL CHECK (tokens > 0),
    currency       text NOT NULL,
    price_units    bigint NOT NULL CHECK (price_units > 0),
    -- created → credited → refunded | charged_back; created → failed | cancelled.
    -- A refund or chargeback that arrives before the sale closes the purchase uncredited.
    status         text NOT NULL DEFAULT 'created'
                   CHECK (status IN ('created', 'credited', 'refunded', 'charged_back', 'failed',
                                     'cancelled')),
    -- The processor's id for the checkout or sale (session id, subscription id, sale id).
    processor_ref  text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    credited_at    timestamptz,
    reversed_at    timestamptz,
    UNIQUE (processor, processor_ref),
    CHECK (status <> 'credited' OR credited_at IS NOT NULL)
);
CREATE INDEX purchases_user_idx ON purchases (user_id, id);

-- Every webhook event once per (processor, event id), whatever the retries and their order.
CREATE TABLE processor_events (
    processor    text NOT NULL,
    event_id     text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 200),
    purchase_id  bigint REFERENCES purchases (id),
    event_type   text NOT NULL,
    -- What it did: credit | refund | chargeback | failed | ignored (a duplicate meaning, an
    -- event for a purchase already closed).
    effect       text NOT NULL
                 CHECK (effect IN ('credit', 'refund', 'chargeback', 'failed', 'ignored')),
    payload      jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (processor, event_id)
);
CREATE INDEX processor_events_purchase_idx ON processor_events (purchase_id);

CREATE TRIGGER processor_events_immutable
    BEFORE UPDATE OR DELETE ON processor_events
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

-- Payouts: a performer asks for a withdrawal; the weekly batch collects requests; finance
-- approves (a second admin above a threshold); the money moves earnings → payout clearing; the
-- batch is exported for the bank; each payout is marked paid or failed (money returned).
CREATE TABLE payout_batches (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    bigint REFERENCES users (id),
    exported_at   timestamptz,
    exported_by   bigint REFERENCES users (id)
);

CREATE TABLE payouts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    performer_id     bigint NOT NULL REFERENCES users (id),
    currency         text NOT NULL,
    amount_units     bigint NOT NULL CHECK (amount_units > 0),
    status           text NOT NULL DEFAULT 'requested'
                     CHECK (status IN ('requested', 'approved', 'paid', 'failed', 'rejected',
                                       'cancelled')),
    -- Where the money goes (SEPA credit transfer), as given with the request.
    account_holder   text NOT NULL CHECK (length(account_holder) BETWEEN 1 AND 70),
    iban             text NOT NULL CHECK (iban ~ '^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$'),
    bic              text CHECK (bic ~ '^[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?$'),
    idempotency_key  text NOT NULL,
    batch_id         bigint REFERENCES payout_batches (id),
    requested_at     timestamptz NOT NULL DEFAULT now(),
    approved_at      timestamptz,
    paid_at          timestamptz,
    failed_at        timestamptz,
    failure_reason   text,
    UNIQUE (performer_id, idempotency_key)
);
CREATE INDEX payouts_status_idx ON payouts (status, id);
CREATE INDEX payouts_performer_idx ON payouts (performer_id, id);

CREATE TABLE payout_approvals (
    payout_id    bigint NOT NULL REFERENCES payouts (id),
    admin_id     bigint NOT NULL REFERENCES users (id),
    approved_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (payout_id, admin_id)
);

-- Hot path: transfers.seq is an identity column nobody assigns by hand, so its unique index
-- only cost every transfer (three a tip) one more index insert. Paging goes through the
-- (account, seq) indexes.
ALTER TABLE ledger_transfers DROP CONSTRAINT ledger_transfers_seq_key;
