-- Tips in batches: many tips in one transaction, each with its own outcome, and the balances of
-- a batch's transfers applied once per account instead of once per transfer.
--
-- * ledger_transfers.batched marks transfers inserted many at a time by ledger_post_tips. The
--   row trigger of 0003 skips them; a statement trigger applies them: every account's net change
--   over the statement in one UPDATE, after locking the accounts in id order (so two batches
--   never deadlock on the hot shard rows). A batched transfer is posted and unforced (no
--   two-phase, no frozen-account reversal), and never credits a wallet (no lot to open); a
--   debited wallet still spends its oldest lots, one transfer at a time, as before.
-- * ledger_post_tips takes arrays (one element per tip, at most one tip per viewer) and answers
--   one row per tip: 'ok', 'replayed' or the SQLSTATE the single-tip function would have raised
--   (TS001 frozen, TS010 key reused, TS011/TS012 stream, TS013 self-tip, TS014 funds, TS015 fee
--   split). A failed tip writes nothing and does not stop the others.
--
-- New error code: TS016 a batch broke the batch rules (a caller bug, never a user's).

ALTER TABLE ledger_transfers ADD COLUMN batched boolean NOT NULL DEFAULT false;
ALTER TABLE ledger_transfers ADD CONSTRAINT ledger_transfers_batched_posted
    CHECK (NOT batched OR (phase = 'posted' AND NOT forced));

DROP TRIGGER ledger_transfers_apply ON ledger_transfers;
CREATE TRIGGER ledger_transfers_apply
    AFTER INSERT ON ledger_transfers
    FOR EACH ROW WHEN (NOT NEW.batched) EXECUTE FUNCTION ledger_transfers_apply();

CREATE FUNCTION ledger_transfers_apply_batched() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
    assets text[];
    debits bigint[];
    credits bigint[];
    debited boolean[];
    accounts int;
    changed int;
    bad bigint;
    spend record;
BEGIN
    SELECT array_agg(n.account_id ORDER BY n.account_id), array_agg(n.asset ORDER BY n.account_id),
           array_agg(n.debits ORDER BY n.account_id), array_agg(n.credits ORDER BY n.account_id),
           array_agg(n.debits > 0 ORDER BY n.account_id)
      INTO ids, assets, debits, credits, debited
      FROM (SELECT s.account_id, s.asset, sum(s.debit)::bigint AS debits,
                   sum(s.credit)::bigint AS credits
              FROM (SELECT debit_account_id AS account_id, asset, amount AS debit,
                           0::bigint AS credit
                      FROM inserted WHERE batched
                    UNION ALL
                    SELECT credit_account_id, asset, 0, amount FROM inserted WHERE batched) s
             GROUP BY s.account_id, s.asset) n;
    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    accounts := cardinality(ids);
    IF (SELECT count(DISTINCT x) FROM unnest(ids) x) <> accounts THEN
        RAISE EXCEPTION 'batched transfers name an account with two assets' USING ERRCODE = 'TS002';
    END IF;

    -- The lock order of every batch: account id.
    PERFORM 1 FROM ledger_accounts WHERE id = ANY (ids) ORDER BY id FOR UPDATE;

    SELECT a.id INTO bad
      FROM ledger_accounts a JOIN unnest(ids, debited) d(id, debited) ON d.id = a.id
     WHERE d.debited AND a.frozen_at IS NOT NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'batched transfer: account % is frozen', bad USING ERRCODE = 'TS001';
    END IF;
    SELECT a.id INTO bad
      FROM ledger_accounts a JOIN unnest(ids, credits) c(id, credits) ON c.id = a.id
     WHERE c.credits > 0 AND a.kind = 'wallet'
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'batched transfer credits wallet %', bad USING ERRCODE = 'TS016';
    END IF;

    -- The balance limits (CHECK constraints) hold for the net change of the whole batch.
    UPDATE ledger_accounts a
       SET debits_posted = a.debits_posted + n.debits,
           credits_posted = a.credits_posted + n.credits
      FROM unnest(ids, assets, debits, credits) n(id, asset, debits, credits)
     WHERE a.id = n.id AND a.asset = n.asset;
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed <> accounts THEN
        RAISE EXCEPTION 'batched transfer: an account is missing or of another asset'
            USING ERRCODE = 'TS002';
    END IF;

    FOR spend IN
        SELECT i.id, i.debit_account_id, i.amount
          FROM inserted i JOIN ledger_accounts a ON a.id = i.debit_account_id
         WHERE i.batched AND a.kind = 'wallet'
         ORDER BY i.seq
    LOOP
        PERFORM ledger_spend_lots(spend.debit_account_id, spend.id, spend.amount);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER ledger_transfers_apply_batched
    AFTER INSERT ON ledger_transfers
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_transfers_apply_batched();

-- One element of a tip batch, with what the checks found.
CREATE TYPE tip_batch_item AS (
    ord           integer,
    viewer_id     bigint,
    stream_id     bigint,
    performer_id  bigint,
    tokens        bigint,
    message       text,
    private       boolean,
    key           text,
    request_hash  text,
    channel       text,
    wallet_id     bigint,
    outcome       text
);

CREATE TYPE tip_batch_result AS (
    ord        integer,
    outcome    text,
    outbox_id  bigint,
    event      jsonb,
    tip        tips
);

-- Many tips in one transaction (the caller's). Each tip is checked as ledger_post_tip checks
-- one, in the same order; the tips that pass are written as ledger_post_tip writes one (tip row,
-- three transfers, outbox event), all on shard p_shard, their transfers batched.
-- Lock order: the viewers' wallets in id order, then (the statement trigger) every account the
-- transfers touch in id order.
CREATE FUNCTION ledger_post_tips(
    p_viewer_ids bigint[], p_stream_ids bigint[], p_tokens bigint[], p_messages text[],
    p_private boolean[], p_keys text[], p_request_hashes text[], p_channels text[],
    p_currency text, p_tokens_per_unit integer, p_units_per_token bigint, p_fee_bps integer,
    p_shard smallint
) RETURNS SETOF tip_batch_result LANGUAGE plpgsql AS $$
DECLARE
    items tip_batch_item[];
    performers bigint[];
    earnings bigint[];
    burn_account bigint;
    liability_account bigint;
    revenue_account bigint;
BEGIN
    IF (SELECT count(DISTINCT v) FROM unnest(p_viewer_ids) v) <> cardinality(p_viewer_ids)
       OR cardinality(p_viewer_ids) IS DISTINCT FROM cardinality(p_stream_ids)
       OR cardinality(p_viewer_ids) IS DISTINCT FROM cardinality(p_tokens)
       OR cardinality(p_viewer_ids) IS DISTINCT FROM cardinality(p_messages)
       OR cardinality(p_viewer_ids) IS DISTINCT FROM cardinality(p_private)
       OR cardinality(p_viewer_ids) IS DISTINCT FROM cardinality(p_keys)
       OR cardinality(p_viewer_ids) IS DISTINCT FROM cardinality(p_request_hashes)
       OR cardinality(p_viewer_ids) IS DISTINCT FROM cardinality(p_channels) THEN
        RAISE EXCEPTION 'a tip batch has one tip per viewer and arrays of one length'
            USING ERRCODE = 'TS016';
    END IF;

    -- Every tip of a viewer queues on the wallet row, so a retry waits for its original.
    PERFORM 1 FROM ledger_accounts
      WHERE owner_id = ANY (p_viewer_ids) AND asset = 'TKN' AND kind = 'wallet' AND code = ''
        AND shard = 0
      ORDER BY id
        FOR UPDATE;

    SELECT array_agg(ROW(
               r.ord::integer, r.viewer_id, r.stream_id, s.performer_id, r.tokens, r.message, r.private,
               r.key, r.request_hash, r.channel, w.id,
               CASE
                   WHEN t.id IS NOT NULL AND t.request_hash <> r.request_hash THEN 'TS010'
                   WHEN t.id IS NOT NULL THEN 'replayed'
                   WHEN s.id IS NULL THEN 'TS011'
                   WHEN s.status <> 'live' THEN 'TS012'
                   WHEN s.performer_id = r.viewer_id THEN 'TS013'
                   WHEN w.frozen_at IS NOT NULL THEN 'TS001'
                   WHEN w.id IS NULL
                        OR w.credits_posted - w.debits_posted - w.debits_pending < r.tokens
                       THEN 'TS014'
                   WHEN (r.tokens::numeric * p_units_per_token * p_fee_bps) % 10000 <> 0
                       THEN 'TS015'
                   ELSE 'ok'
               END)::tip_batch_item ORDER BY r.ord)
      INTO items
      FROM unnest(p_viewer_ids, p_stream_ids, p_tokens, p_messages, p_private, p_keys,
                  p_request_hashes, p_channels)
           WITH ORDINALITY r(viewer_id, stream_id, tokens, message, private, key, request_hash,
                             channel, ord)
      LEFT JOIN tips t ON t.viewer_id = r.viewer_id AND t.idempotency_key = r.key
      LEFT JOIN streams s ON s.id = r.stream_id
      LEFT JOIN ledger_accounts w
             ON w.owner_id = r.viewer_id AND w.asset = 'TKN' AND w.kind = 'wallet'
            AND w.code = '' AND w.shard = 0;

    IF EXISTS (SELECT 1 FROM unnest(items) i WHERE i.outcome = 'ok') THEN
        burn_account := ledger_account_id(NULL, 'TKN', 'issuance', '', p_shard, false);
        liability_account := ledger_account_id(NULL, p_currency, 'token_liability', '', p_shard,
                                               false);
        revenue_account := ledger_account_id(NULL, p_currency, 'revenue', 'tips', p_shard, false);
        SELECT array_agg(p.performer_id ORDER BY p.performer_id),
               array_agg(ledger_account_id(p.performer_id, p_currency, 'earnings', '', p_shard,
                                           true) ORDER BY p.performer_id)
          INTO performers, earnings
          FROM (SELECT DISTINCT i.performer_id FROM unnest(items) i WHERE i.outcome = 'ok') p;

        INSERT INTO tips (viewer_id, performer_id, stream_id, idempotency_key, request_hash,
                          tokens, currency, tokens_per_currency_unit, units_per_token, fee_bps,
                          gross_units, performer_units, platform_units, message,
                          message_private, shard)
        SELECT i.viewer_id, i.performer_id, i.stream_id, i.key, i.request_hash, i.tokens,
               p_currency, p_tokens_per_unit, p_units_per_token, p_fee_bps,
               i.tokens * p_units_per_token,
               i.tokens * p_units_per_token
                   - (i.tokens::numeric * p_units_per_token * p_fee_bps / 10000)::bigint,
               (i.tokens::numeric * p_units_per_token * p_fee_bps / 10000)::bigint,
               i.message, i.private, p_shard
          FROM unnest(items) i
         WHERE i.outcome = 'ok'
         ORDER BY i.ord;

        INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, asset, amount,
                                      kind, reference, batched)
        SELECT 'tip:' || t.id || ':' || x.part, x.debit, x.credit, x.asset, x.amount, x.kind,
               'tip:' || t.id, true
          FROM unnest(items) i
          JOIN tips t ON t.viewer_id = i.viewer_id AND t.idempotency_key = i.key
          JOIN unnest(performers, earnings) e(performer_id, account_id)
            ON e.performer_id = i.performer_id
         CROSS JOIN LATERAL (VALUES
               (1, 'tokens', i.wallet_id, burn_account, 'TKN', t.tokens, 'tip'),
               (2, 'performer', liability_account, e.account_id, p_currency, t.performer_units,
                'tip_share'),
               (3, 'platform', liability_account, revenue_account, p_currency, t.platform_units,
                'tip_fee')
           ) x(n, part, debit, credit, asset, amount, kind)
         WHERE i.outcome = 'ok' AND x.amount > 0
         ORDER BY t.id, x.n;
    END IF;

    RETURN QUERY
    WITH done AS (
        SELECT i.ord, i.outcome, i.channel, t AS tip, u.display_name
          FROM unnest(items) i
          LEFT JOIN tips t
                 ON i.outcome IN ('ok', 'replayed')
                AND t.viewer_id = i.viewer_id AND t.idempotency_key = i.key
          LEFT JOIN users u ON i.outcome = 'ok' AND u.id = i.viewer_id
    ), events AS (
        SELECT d.ord, d.channel, jsonb_build_object(
                   'type', 'tip',
                   'tip_id', (d.tip).id,
                   'stream_id', (d.tip).stream_id,
                   'performer_id', (d.tip).performer_id,
                   'viewer_id', (d.tip).viewer_id,
                   'viewer_name', d.display_name,
                   'tokens', (d.tip).tokens,
                   'message', CASE WHEN (d.tip).message_private THEN NULL
                                   ELSE (d.tip).message END,
                   'private_message', (d.tip).message_private AND (d.tip).message IS NOT NULL,
                   'at', (d.tip).created_at) AS payload
          FROM done d
         WHERE d.outcome = 'ok'
    ), published AS (
        INSERT INTO outbox (channel, event_type, payload)
        SELECT e.channel, 'tip', e.payload FROM events e ORDER BY e.ord
        RETURNING id, payload
    )
    SELECT d.ord::integer, d.outcome, p.id, p.payload, d.tip
      FROM done d
      LEFT JOIN published p
             ON d.outcome = 'ok' AND (p.payload ->> 'tip_id')::bigint = (d.tip).id
     ORDER BY d.ord;
END
$$;
