-- The ledger: double-entry accounts and transfers after TigerBeetle's model, kept in Postgres.
--
-- * An account has an owner (a user, or NULL for the platform), an asset, a kind, a code (e.g.
--   the processor of a clearing account) and a shard number (hot platform and performer accounts
--   are spread over several rows; their balance is the sum of the shards).
-- * A transfer moves a positive integer amount from a debit account to a credit account of the
--   same asset. Its id is the caller's idempotency key. Transfers are immutable: no UPDATE,
--   DELETE or TRUNCATE. Corrections are new transfers.
-- * Balances live on the account row (debits/credits, posted/pending) and are changed only by
--   the trigger that applies each inserted transfer, in the same transaction.
-- * Two-phase transfers: a 'pending' transfer reserves; a later 'post_pending' (amount up to the
--   reserved one) or 'void_pending' transfer names it in pending_id and resolves it, once.
-- * Flags: debits_must_not_exceed_credits (wallets, earnings) is a CHECK constraint on the row,
--   so no code path can overdraw such an account. A frozen account is the one exception: a
--   chargeback may drive a wallet negative, and the service freezes it first, in the same
--   transaction; the account cannot be unfrozen while it is negative.
--
-- Error codes raised here (SQLSTATE class 'TS'), mapped to problems in ledger/errors.py:
--   TS001 account frozen          TS002 account missing or of another asset
--   TS003 pending transfer not found, not pending, or resolved already
--   TS004 post/void does not match its pending transfer
--   TS005 immutable ledger row    TS006 balance changed outside a transfer
--   TS010 idempotency key reused with another body
--   TS011 stream not found        TS012 stream not live       TS013 tip to oneself
--   TS014 insufficient funds      TS015 fee split not exact

CREATE TABLE ledger_assets (
    code        text PRIMARY KEY CHECK (code ~ '^[A-Z]{3,5}$'),
    -- Amounts are integers of 1/10**scale of the asset (TKN: whole tokens).
    scale       smallint NOT NULL CHECK (scale BETWEEN 0 AND 9),
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ledger_assets (code, scale) VALUES ('TKN', 0);

CREATE TABLE ledger_accounts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id         bigint REFERENCES users (id),
    asset            text NOT NULL REFERENCES ledger_assets (code),
    kind             text NOT NULL CHECK (kind ~ '^[a-z][a-z_]{0,31}$'),
    code             text NOT NULL DEFAULT '' CHECK (length(code) <= 32),
    shard            smallint NOT NULL DEFAULT 0 CHECK (shard BETWEEN 0 AND 255),
    debits_must_not_exceed_credits boolean NOT NULL DEFAULT false,
    credits_must_not_exceed_debits boolean NOT NULL DEFAULT false,
    debits_pending   bigint NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    debits_posted    bigint NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_pending  bigint NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    credits_posted   bigint NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    frozen_at        timestamptz,
    frozen_reason    text CHECK (length(frozen_reason) <= 500),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_accounts_identity UNIQUE NULLS NOT DISTINCT (owner_id, asset, kind, code, shard),
    CONSTRAINT ledger_accounts_debit_limit CHECK (
        NOT debits_must_not_exceed_credits OR frozen_at IS NOT NULL
        OR debits_posted + debits_pending <= credits_posted),
    CONSTRAINT ledger_accounts_credit_limit CHECK (
        NOT credits_must_not_exceed_debits OR frozen_at IS NOT NULL
        OR credits_posted + credits_pending <= debits_posted)
);
CREATE INDEX ledger_accounts_owner_idx ON ledger_accounts (owner_id, asset, kind);

CREATE TYPE transfer_phase AS ENUM ('posted', 'pending', 'post_pending', 'void_pending');

-- The account columns carry no foreign key on purpose: a key check would take a share lock on
-- the hot shard rows for every transfer. The apply trigger finds both accounts (and raises TS002
-- when one is missing), and accounts are never deleted.
CREATE TABLE ledger_transfers (
    id                 text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    seq                bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    debit_account_id   bigint NOT NULL,
    credit_account_id  bigint NOT NULL,
    asset              text NOT NULL,
    amount             bigint NOT NULL CHECK (amount > 0),
    phase              transfer_phase NOT NULL DEFAULT 'posted',
    pending_id         text UNIQUE,
    kind               text NOT NULL CHECK (kind ~ '^[a-z][a-z_]{0,31}$'),
    reference          text CHECK (length(reference) <= 200),
    metadata           jsonb NOT NULL DEFAULT '{}',
    -- May debit a frozen account: only reversals (chargebacks, fraud refunds) set it.
    forced             boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (debit_account_id <> credit_account_id),
    CHECK ((phase IN ('post_pending', 'void_pending')) = (pending_id IS NOT NULL))
);
CREATE INDEX ledger_transfers_debit_idx ON ledger_transfers (debit_account_id, seq);
CREATE INDEX ledger_transfers_credit_idx ON ledger_transfers (credit_account_id, seq);
CREATE INDEX ledger_transfers_reference_idx ON ledger_transfers (reference);

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is immutable: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'TS005';
END
$$;

CREATE TRIGGER ledger_transfers_immutable
    BEFORE UPDATE OR DELETE ON ledger_transfers
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_transfers_no_truncate
    BEFORE TRUNCATE ON ledger_transfers
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_accounts_no_delete
    BEFORE DELETE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_accounts_no_truncate
    BEFORE TRUNCATE ON ledger_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Balance columns move only inside the transfer trigger; an UPDATE issued directly (trigger
-- depth 0, see the WHEN below, which also keeps this off the hot path) may change the frozen
-- state and nothing else.
CREATE FUNCTION ledger_accounts_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (
        NEW.debits_pending <> OLD.debits_pending OR NEW.debits_posted <> OLD.debits_posted
        OR NEW.credits_pending <> OLD.credits_pending OR NEW.credits_posted <> OLD.credits_posted
        OR NEW.owner_id IS DISTINCT FROM OLD.owner_id OR NEW.asset <> OLD.asset
        OR NEW.kind <> OLD.kind OR NEW.code <> OLD.code OR NEW.shard <> OLD.shard
        OR NEW.debits_must_not_exceed_credits <> OLD.debits_must_not_exceed_credits
        OR NEW.credits_must_not_exceed_debits <> OLD.credits_must_not_exceed_debits
    ) THEN
        RAISE EXCEPTION 'ledger account %: balances and identity change only through transfers',
            OLD.id USING ERRCODE = 'TS006';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER ledger_accounts_guard
    BEFORE UPDATE ON ledger_accounts
    FOR EACH ROW WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION ledger_accounts_guard();

-- Tokens enter a wallet in lots: every posted credit of a wallet opens one (a purchase, a grant),
-- and every posted debit spends the oldest open lots first, recorded in lot_spends. So each tip
-- knows which purchases paid for it, and a chargeback can be traced to the performers it reached.
-- The apply trigger below keeps both tables; no caller writes them.
CREATE TABLE token_lots (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id    bigint NOT NULL REFERENCES ledger_accounts (id),
    -- The crediting transfer's kind ('purchase', 'grant', ...) and reference ('purchase:42').
    source_kind   text NOT NULL,
    source_id     text NOT NULL,
    transfer_id   text NOT NULL UNIQUE REFERENCES ledger_transfers (id),
    tokens        bigint NOT NULL CHECK (tokens > 0),
    -- Below tokens from the start when the credit only paid back a negative balance.
    remaining     bigint NOT NULL CHECK (remaining BETWEEN 0 AND tokens),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX token_lots_open_idx ON token_lots (account_id, id) WHERE remaining > 0;
CREATE INDEX token_lots_source_idx ON token_lots (source_id);

CREATE TABLE lot_spends (
    transfer_id  text NOT NULL REFERENCES ledger_transfers (id),
    lot_id       bigint NOT NULL REFERENCES token_lots (id),
    tokens       bigint NOT NULL CHECK (tokens > 0),
    PRIMARY KEY (transfer_id, lot_id)
);
CREATE INDEX lot_spends_lot_idx ON lot_spends (lot_id);

-- Spend a wallet's oldest open lots for a posted debit. A forced debit (chargeback) may exceed
-- them: the wallet goes negative and the shortfall has no lot.
CREATE FUNCTION ledger_spend_lots(p_account bigint, p_transfer text, p_amount bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    lot record;
    take bigint;
    left_to_spend bigint := p_amount;
BEGIN
    FOR lot IN
        SELECT id, remaining FROM token_lots
         WHERE account_id = p_account AND remaining > 0
         ORDER BY id
    LOOP
        EXIT WHEN left_to_spend = 0;
        take := least(lot.remaining, left_to_spend);
        UPDATE token_lots SET remaining = remaining - take WHERE id = lot.id;
        INSERT INTO lot_spends (transfer_id, lot_id, tokens) VALUES (p_transfer, lot.id, take);
        left_to_spend := left_to_spend - take;
    END LOOP;
END
$$;

-- Apply one inserted transfer to both accounts' balances.
CREATE FUNCTION ledger_transfers_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    pend ledger_transfers;
    d_pending bigint := 0;
    d_posted bigint := 0;
    is_frozen boolean;
    debit_kind text;
    credit_kind text;
    credit_balance bigint;
BEGIN
    IF NEW.phase = 'posted' THEN
        d_posted := NEW.amount;
    ELSIF NEW.phase = 'pending' THEN
        d_pending := NEW.amount;
    ELSE
        SELECT * INTO pend FROM ledger_transfers WHERE id = NEW.pending_id;
        IF NOT FOUND OR pend.phase <> 'pending' THEN
            RAISE EXCEPTION 'transfer %: no pending transfer %', NEW.id, NEW.pending_id
                USING ERRCODE = 'TS003';
        END IF;
        IF pend.debit_account_id <> NEW.debit_account_id
           OR pend.credit_account_id <> NEW.credit_account_id OR pend.asset <> NEW.asset
           OR NEW.amount > pend.amount
           OR (NEW.phase = 'void_pending' AND NEW.amount <> pend.amount) THEN
            RAISE EXCEPTION 'transfer %: does not match pending transfer %', NEW.id, pend.id
                USING ERRCODE = 'TS004';
        END IF;
        d_pending := -pend.amount;
        IF NEW.phase = 'post_pending' THEN
            d_posted := NEW.amount;
        END IF;
    END IF;

    UPDATE ledger_accounts
       SET debits_pending = debits_pending + d_pending, debits_posted = debits_posted + d_posted
     WHERE id = NEW.debit_account_id AND asset = NEW.asset
    RETURNING frozen_at IS NOT NULL, kind INTO is_frozen, debit_kind;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'transfer %: debit account % missing or not %', NEW.id,
            NEW.debit_account_id, NEW.asset USING ERRCODE = 'TS002';
    END IF;
    IF is_frozen AND NOT NEW.forced AND NEW.phase IN ('posted', 'pending', 'post_pending') THEN
        RAISE EXCEPTION 'transfer %: account % is frozen', NEW.id, NEW.debit_account_id
            USING ERRCODE = 'TS001';
    END IF;
    IF debit_kind = 'wallet' AND d_posted > 0 THEN
        PERFORM ledger_spend_lots(NEW.debit_account_id, NEW.id, d_posted);
    END IF;

    UPDATE ledger_accounts
       SET credits_pending = credits_pending + d_pending,
           credits_posted = credits_posted + d_posted
     WHERE id = NEW.credit_account_id AND asset = NEW.asset
    RETURNING kind, credits_posted - debits_posted INTO credit_kind, credit_balance;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'transfer %: credit account % missing or not %', NEW.id,
            NEW.credit_account_id, NEW.asset USING ERRCODE = 'TS002';
    END IF;
    IF credit_kind = 'wallet' AND d_posted > 0 THEN
        INSERT INTO token_lots (account_id, source_kind, source_id, transfer_id, tokens, remaining)
        VALUES (NEW.credit_account_id, NEW.kind, coalesce(NEW.reference, NEW.id), NEW.id,
                d_posted, greatest(0, least(d_posted, credit_balance)));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER ledger_transfers_apply
    AFTER INSERT ON ledger_transfers
    FOR EACH ROW EXECUTE FUNCTION ledger_transfers_apply();

-- The account for (owner, asset, kind, code, shard), created on first use. (Two lookups, not
-- "owner_id IS NOT DISTINCT FROM", which no index serves.)
CREATE FUNCTION ledger_find_account(
    p_owner bigint, p_asset text, p_kind text, p_code text, p_shard smallint
) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT id FROM ledger_accounts
     WHERE owner_id = p_owner AND asset = p_asset AND kind = p_kind AND code = p_code
       AND shard = p_shard AND p_owner IS NOT NULL
    UNION ALL
    SELECT id FROM ledger_accounts
     WHERE owner_id IS NULL AND asset = p_asset AND kind = p_kind AND code = p_code
       AND shard = p_shard AND p_owner IS NULL
$$;

CREATE FUNCTION ledger_account_id(
    p_owner bigint, p_asset text, p_kind text, p_code text, p_shard smallint,
    p_no_overdraft boolean
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    found_id bigint;
BEGIN
    -- Spelled out (not via ledger_find_account) so PL/pgSQL caches both plans: this runs four
    -- times per tip.
    FOR attempt IN 1..2 LOOP
        IF p_owner IS NULL THEN
            SELECT id INTO found_id FROM ledger_accounts
             WHERE owner_id IS NULL AND asset = p_asset AND kind = p_kind AND code = p_code
               AND shard = p_shard;
        ELSE
            SELECT id INTO found_id FROM ledger_accounts
             WHERE owner_id = p_owner AND asset = p_asset AND kind = p_kind AND code = p_code
               AND shard = p_shard;
        END IF;
        IF found_id IS NOT NULL OR attempt = 2 THEN
            RETURN found_id;
        END IF;
        INSERT INTO ledger_accounts
            (owner_id, asset, kind, code, shard, debits_must_not_exceed_credits)
        VALUES (p_owner, p_asset, p_kind, p_code, p_shard, p_no_overdraft)
        ON CONFLICT ON CONSTRAINT ledger_accounts_identity DO NOTHING
        RETURNING id INTO found_id;
        IF found_id IS NOT NULL THEN
            RETURN found_id;
        END IF;
    END LOOP;
    RETURN found_id;
END
$$;

-- A user's TKN wallet, in one row (its debits are checked synchronously, so it is not sharded).
CREATE VIEW wallets AS
SELECT a.owner_id AS user_id,
       a.id AS account_id,
       a.credits_posted - a.debits_posted AS balance,
       a.debits_pending AS reserved,
       a.credits_posted - a.debits_posted - a.debits_pending AS available,
       a.frozen_at,
       a.frozen_reason
  FROM ledger_accounts a
 WHERE a.asset = 'TKN' AND a.kind = 'wallet' AND a.code = '' AND a.shard = 0;

CREATE TABLE tips (
    id                        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    viewer_id                 bigint NOT NULL REFERENCES users (id),
    -- No foreign keys on these two: a key check would share-lock the hot performer's user row
    -- and the stream row for every tip. ledger_post_tip reads both from the stream row.
    performer_id              bigint NOT NULL,
    stream_id                 bigint NOT NULL,
    -- The client's Idempotency-Key and a hash of the request body: the same key with the same
    -- body answers the original tip; with another body it is refused (TS010).
    idempotency_key           text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    request_hash              text NOT NULL,
    tokens                    bigint NOT NULL CHECK (tokens > 0),
    -- The rate and fee in force when the tip was made.
    currency                  text NOT NULL,
    tokens_per_currency_unit  integer NOT NULL CHECK (tokens_per_currency_unit > 0),
    units_per_token           bigint NOT NULL CHECK (units_per_token > 0),
    fee_bps                   integer NOT NULL CHECK (fee_bps BETWEEN 0 AND 10000),
    gross_units               bigint NOT NULL,
    performer_units           bigint NOT NULL CHECK (performer_units >= 0),
    platform_units            bigint NOT NULL CHECK (platform_units >= 0),
    message                   text CHECK (length(message) <= 1000),
    message_private           boolean NOT NULL DEFAULT false,
    shard                     smallint NOT NULL,
    created_at                timestamptz NOT NULL DEFAULT now(),
    UNIQUE (viewer_id, idempotency_key),
    CHECK (viewer_id <> performer_id),
    CHECK (gross_units = tokens * units_per_token),
    CHECK (platform_units::numeric * 10000 = gross_units::numeric * fee_bps),
    CHECK (performer_units + platform_units = gross_units)
);
CREATE INDEX tips_performer_idx ON tips (performer_id, created_at);
CREATE INDEX tips_stream_idx ON tips (stream_id, id);

CREATE TRIGGER tips_immutable
    BEFORE UPDATE OR DELETE ON tips
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

-- Events written in the transaction of the change they announce; published to Valkey after
-- commit, and by the relay for any row a crash left unpublished.
CREATE TABLE outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel       text NOT NULL,
    event_type    text NOT NULL,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

-- KYC status per user: payouts (and going live) need 'approved'. The KYC domain adds the rest.
CREATE TABLE kyc (
    user_id      bigint PRIMARY KEY REFERENCES users (id),
    status       text NOT NULL DEFAULT 'not_started'
                 CHECK (status IN ('not_started', 'pending', 'approved', 'rejected', 'expired')),
    reviewed_by  bigint REFERENCES users (id),
    reviewed_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- One tip, in one transaction: the viewer's wallet is locked and checked; the tip row, its three
-- transfers (tokens burned, spending the wallet's oldest lots; the performer's share and the
-- platform's fee credited in currency from the token liability) and its outbox event.
-- Credit sides go to shard p_shard of each hot account. Lock order: the viewer's wallet, then
-- platform and performer shard rows in the fixed order of the transfers below.
CREATE FUNCTION ledger_post_tip(
    p_viewer_id bigint, p_stream_id bigint, p_tokens bigint, p_message text,
    p_private boolean, p_key text, p_request_hash text, p_currency text,
    p_tokens_per_unit integer, p_units_per_token bigint, p_fee_bps integer,
    p_shard smallint, p_channel text,
    OUT tip tips, OUT replayed boolean, OUT outbox_id bigint, OUT event jsonb
) LANGUAGE plpgsql AS $$
DECLARE
    wallet ledger_accounts;
    stream_row record;
    gross bigint;
    fee bigint;
    burn_account bigint;
    liability_account bigint;
    earnings_account bigint;
    revenue_account bigint;
    viewer_name text;
BEGIN
    replayed := false;
    -- Every tip of a viewer queues on the wallet row, so a retry waits for its original.
    SELECT * INTO wallet FROM ledger_accounts
     WHERE owner_id = p_viewer_id AND asset = 'TKN' AND kind = 'wallet' AND code = ''
       AND shard = 0
       FOR UPDATE;

    SELECT * INTO tip FROM tips WHERE viewer_id = p_viewer_id AND idempotency_key = p_key;
    IF FOUND THEN
        IF tip.request_hash <> p_request_hash THEN
            RAISE EXCEPTION 'idempotency key reused with a different request'
                USING ERRCODE = 'TS010';
        END IF;
        replayed := true;
        RETURN;
    END IF;

    SELECT s.performer_id, s.status INTO stream_row FROM streams s WHERE s.id = p_stream_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'stream % not found', p_stream_id USING ERRCODE = 'TS011';
    END IF;
    IF stream_row.status <> 'live' THEN
        RAISE EXCEPTION 'stream % is not live', p_stream_id USING ERRCODE = 'TS012';
    END IF;
    IF stream_row.performer_id = p_viewer_id THEN
        RAISE EXCEPTION 'performers cannot tip themselves' USING ERRCODE = 'TS013';
    END IF;
    IF wallet.frozen_at IS NOT NULL THEN
        RAISE EXCEPTION 'wallet % is frozen', wallet.id USING ERRCODE = 'TS001';
    END IF;
    IF wallet.id IS NULL
       OR wallet.credits_posted - wallet.debits_posted - wallet.debits_pending < p_tokens THEN
        RAISE EXCEPTION 'insufficient tokens' USING ERRCODE = 'TS014';
    END IF;

    gross := p_tokens * p_units_per_token;
    IF (gross::numeric * p_fee_bps) % 10000 <> 0 THEN
        RAISE EXCEPTION 'fee split of % units at % bps is not exact', gross, p_fee_bps
            USING ERRCODE = 'TS015';
    END IF;
    fee := (gross::numeric * p_fee_bps / 10000)::bigint;

    INSERT INTO tips (viewer_id, performer_id, stream_id, idempotency_key, request_hash, tokens,
                      currency, tokens_per_currency_unit, units_per_token, fee_bps, gross_units,
                      performer_units, platform_units, message, message_private, shard)
    VALUES (p_viewer_id, stream_row.performer_id, p_stream_id, p_key, p_request_hash, p_tokens,
            p_currency, p_tokens_per_unit, p_units_per_token, p_fee_bps, gross, gross - fee, fee,
            p_message, p_private, p_shard)
    RETURNING * INTO tip;

    burn_account := ledger_account_id(NULL, 'TKN', 'issuance', '', p_shard, false);
    liability_account := ledger_account_id(NULL, p_currency, 'token_liability', '', p_shard, false);
    earnings_account := ledger_account_id(stream_row.performer_id, p_currency, 'earnings', '',
                                          p_shard, true);
    revenue_account := ledger_account_id(NULL, p_currency, 'revenue', 'tips', p_shard, false);

    INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, asset, amount, kind,
                                  reference)
    VALUES ('tip:' || tip.id || ':tokens', wallet.id, burn_account, 'TKN', p_tokens, 'tip',
            'tip:' || tip.id);
    IF gross - fee > 0 THEN
        INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, asset, amount, kind,
                                      reference)
        VALUES ('tip:' || tip.id || ':performer', liability_account, earnings_account, p_currency,
                gross - fee, 'tip_share', 'tip:' || tip.id);
    END IF;
    IF fee > 0 THEN
        INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, asset, amount, kind,
                                      reference)
        VALUES ('tip:' || tip.id || ':platform', liability_account, revenue_account, p_currency,
                fee, 'tip_fee', 'tip:' || tip.id);
    END IF;

    SELECT display_name INTO viewer_name FROM users WHERE id = p_viewer_id;
    event := jsonb_build_object(
        'type', 'tip',
        'tip_id', tip.id,
        'stream_id', tip.stream_id,
        'performer_id', tip.performer_id,
        'viewer_id', tip.viewer_id,
        'viewer_name', viewer_name,
        'tokens', tip.tokens,
        'message', CASE WHEN tip.message_private THEN NULL ELSE tip.message END,
        'private_message', tip.message_private AND tip.message IS NOT NULL,
        'at', tip.created_at);
    INSERT INTO outbox (channel, event_type, payload) VALUES (p_channel, 'tip', event)
    RETURNING id INTO outbox_id;
END
$$;
