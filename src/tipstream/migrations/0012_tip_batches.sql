-- Tips in batches: many tips in one transaction, each with its own outcome, and the balances of
-- a batch's transfers applied once per account instead of once per transfer.
--
-- * ledger_transfers.batched marks transfers inserted many at a time by ledger_post_tips. The
--   row trigger of 0003 skips them; a statement trigger applies them: every account's net
--   change over the statement in one UPDATE, after locking the accounts in the order a single
--   tip takes them (by kind, then id), so batches never deadlock each other or a single tip.
--   A batched transfer is posted and unforced (no two-phase, no frozen-account reversal), and
--   never credits a wallet (no lot to open); a debited wallet still spends its oldest lots.
-- * Hot credit sides rolled up: per tip only the viewer's debit is a transfer of its own (tokens
--   burned, checked and applied synchronously, spending the wallet's lots); the currency credits
--   of a batch are one performer-share transfer per performer and one platform-fee transfer,
--   each the exact sum of its tips' split, in the same transaction.
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
    wallets bigint[];
    frozen_id bigint;
    credited_wallet bigint;
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

    -- Lock order: the order in which a tip posted alone takes them (wallet, issuance, token
    -- liability, earnings, revenue), then account id; so batches never deadlock each other or
    -- a tip posted alone.
    WITH locked AS (
        SELECT a.id, a.kind, a.frozen_at FROM ledger_accounts a
         WHERE a.id = ANY (ids)
         ORDER BY CASE a.kind WHEN 'wallet' THEN 0 WHEN 'issuance' THEN 1
                              WHEN 'token_liability' THEN 2 WHEN 'earnings' THEN 3
                              WHEN 'revenue' THEN 4 ELSE 5 END, a.id
           FOR UPDATE
    )
    SELECT min(l.id) FILTER (WHERE n.debited AND l.frozen_at IS NOT NULL),
           min(l.id) FILTER (WHERE n.credits > 0 AND l.kind = 'wallet')
      INTO frozen_id, credited_wallet
      FROM locked l JOIN unnest(ids, debited, credits) n(id, debited, credits) ON n.id = l.id;
    IF frozen_id IS NOT NULL THEN
        RAISE EXCEPTION 'batched transfer: account % is frozen', frozen_id
            USING ERRCODE = 'TS001';
    END IF;
    IF credited_wallet IS NOT NULL THEN
        RAISE EXCEPTION 'batched transfer credits wallet %', credited_wallet
            USING ERRCODE = 'TS016';
    END IF;

    -- The balance limits (CHECK constraints) hold for the net change of the whole batch.
    WITH changed_rows AS (
        UPDATE ledger_accounts a
           SET debits_posted = a.debits_posted + n.debits,
               credits_posted = a.credits_posted + n.credits
          FROM unnest(ids, assets, debits, credits) n(id, asset, debits, credits)
         WHERE a.id = n.id AND a.asset = n.asset
        RETURNING a.id, a.kind, n.debits
    )
    SELECT count(*), array_agg(c.id) FILTER (WHERE c.kind = 'wallet' AND c.debits > 0)
      INTO changed, wallets
      FROM changed_rows c;
    IF changed <> accounts THEN
        RAISE EXCEPTION 'batched transfer: an account is missing or of another asset'
            USING ERRCODE = 'TS002';
    END IF;
    IF wallets IS NULL THEN
        RETURN NULL;
    END IF;

    -- Debited wallets spend their oldest open lots, as ledger_spend_lots does one transfer at a
    -- time: all at once when each wallet has one debit here (a tip batch), else in seq order.
    IF (SELECT count(*) FROM inserted i WHERE i.batched AND i.debit_account_id = ANY (wallets))
       = cardinality(wallets) THEN
        WITH spends AS (
            SELECT i.id AS transfer_id, i.debit_account_id AS account_id, i.amount
              FROM inserted i
             WHERE i.batched AND i.debit_account_id = ANY (wallets)
        ), open_lots AS (
            SELECT l.id, l.account_id, l.remaining,
                   sum(l.remaining) OVER (PARTITION BY l.account_id ORDER BY l.id)
                       - l.remaining AS before
              FROM token_lots l
             WHERE l.account_id = ANY (wallets) AND l.remaining > 0
        ), takes AS (
            SELECT o.id AS lot_id, s.transfer_id, least(o.remaining, s.amount - o.before) AS tokens
              FROM open_lots o JOIN spends s ON s.account_id = o.account_id
             WHERE o.before < s.amount
        ), spent AS (
            UPDATE token_lots l SET remaining = l.remaining - t.tokens
              FROM takes t
             WHERE l.id = t.lot_id
        )
        INSERT INTO lot_spends (transfer_id, lot_id, tokens)
        SELECT t.transfer_id, t.lot_id, t.tokens FROM takes t;
    ELSE
        FOR spend IN
            SELECT i.id, i.debit_account_id, i.amount
              FROM inserted i
             WHERE i.batched AND i.debit_account_id = ANY (wallets)
             ORDER BY i.seq
        LOOP
            PERFORM ledger_spend_lots(spend.debit_account_id, spend.id, spend.amount);
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER ledger_transfers_apply_batched
    AFTER INSERT ON ledger_transfers
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_transfers_apply_batched();

-- A batch's tips name it; its performer shares and platform fee are transfers
-- 'tipbatch:<batch>:performer:<performer id>' and 'tipbatch:<batch>:platform', each the sum of
-- the tips' split (checked by `tipctl ledger verify`). Tips posted one at a time have no batch
-- and their own three transfers, as before.
CREATE SEQUENCE tip_batches;
ALTER TABLE tips ADD COLUMN batch_id bigint;

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
-- one, in the same order; each tip that passes gets its row, its tokens transfer and its outbox
-- event, and the batch its rolled-up credits, all on shard p_shard.
-- Lock order: the viewers' wallets in id order, then (the statement trigger) every account the
-- transfers touch: issuance, token liability, earnings, revenue, each kind in id order.
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
    batch bigint;
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

    -- Point lookups (OFFSET 0 keeps each a per-tip index probe, whatever the statistics say).
    SELECT array_agg(ROW(
               r.ord::integer, r.viewer_id, r.stream_id, s.performer_id, r.tokens, r.message,
               r.private, r.key, r.request_hash, r.channel, w.id,
               CASE
                   WHEN t.id IS NOT NULL AND t.request_hash <> r.request_hash THEN 'TS010'
                   WHEN t.id IS NOT NULL THEN 'replayed'
                   WHEN s.id IS NULL THEN 'TS011'
                   WHEN s.status <> 'live' THEN 'TS012'
                   WHEN s.performer_id = r.viewer_id THEN 'TS013'
                   WHEN w.frozen_at IS NOT NULL THEN 'TS001'
                   WHEN w.id IS NULL OR w.available < r.tokens THEN 'TS014'
                   WHEN (r.tokens::numeric * p_units_per_token * p_fee_bps) % 10000 <> 0
                       THEN 'TS015'
                   ELSE 'ok'
               END)::tip_batch_item ORDER BY r.ord)
      INTO items
      FROM unnest(p_viewer_ids, p_stream_ids, p_tokens, p_messages, p_private, p_keys,
                  p_request_hashes, p_channels)
           WITH ORDINALITY r(viewer_id, stream_id, tokens, message, private, key, request_hash,
                             channel, ord)
      LEFT JOIN LATERAL (
          SELECT x.id, x.request_hash FROM tips x
           WHERE x.viewer_id = r.viewer_id AND x.idempotency_key = r.key
          OFFSET 0) t ON true
      LEFT JOIN LATERAL (
          SELECT x.id, x.performer_id, x.status FROM streams x WHERE x.id = r.stream_id
          OFFSET 0) s ON true
      LEFT JOIN LATERAL (
          SELECT x.id, x.frozen_at,
                 x.credits_posted - x.debits_posted - x.debits_pending AS available
            FROM ledger_accounts x
           WHERE x.owner_id = r.viewer_id AND x.asset = 'TKN' AND x.kind = 'wallet'
             AND x.code = '' AND x.shard = 0
          OFFSET 0) w ON true;

    IF EXISTS (SELECT 1 FROM unnest(items) i WHERE i.outcome = 'ok') THEN
        batch := nextval('tip_batches');
        burn_account := ledger_account_id(NULL, 'TKN', 'issuance', '', p_shard, false);
        liability_account := ledger_account_id(NULL, p_currency, 'token_liability', '', p_shard,
                                               false);
        revenue_account := ledger_account_id(NULL, p_currency, 'revenue', 'tips', p_shard, false);
        SELECT array_agg(p.performer_id ORDER BY p.performer_id),
               array_agg(ledger_account_id(p.performer_id, p_currency, 'earnings', '', p_shard,
                                           true) ORDER BY p.performer_id)
          INTO performers, earnings
          FROM (SELECT DISTINCT i.performer_id FROM unnest(items) i WHERE i.outcome = 'ok') p;
    END IF;

    -- One statement writes the tips, their transfers and their events (all of a CTE's writes
    -- happen whether or not the answer reads them) and answers every tip.
    RETURN QUERY
    WITH ok AS (
        SELECT * FROM unnest(items) i WHERE i.outcome = 'ok'
    ), new_tips AS (
        INSERT INTO tips (viewer_id, performer_id, stream_id, idempotency_key, request_hash,
                          tokens, currency, tokens_per_currency_unit, units_per_token, fee_bps,
                          gross_units, performer_units, platform_units, message,
                          message_private, shard, batch_id)
        SELECT ok.viewer_id, ok.performer_id, ok.stream_id, ok.key, ok.request_hash, ok.tokens,
               p_currency, p_tokens_per_unit, p_units_per_token, p_fee_bps,
               ok.tokens * p_units_per_token,
               ok.tokens * p_units_per_token
                   - (ok.tokens::numeric * p_units_per_token * p_fee_bps / 10000)::bigint,
               (ok.tokens::numeric * p_units_per_token * p_fee_bps / 10000)::bigint,
               ok.message, ok.private, p_shard, batch
          FROM ok
         ORDER BY ok.ord
        RETURNING *
    ), made AS (
        -- One tip per viewer in a batch, so the viewer names the tip.
        SELECT ok.ord, ok.channel, ok.wallet_id, ROW(t.*)::tips AS tip
          FROM new_tips t JOIN ok ON ok.viewer_id = t.viewer_id
    ), moved AS (
        -- Per tip, the viewer's tokens burned (the synchronous side); per batch, the credits:
        -- one performer share per performer and one platform fee, each the sum of its tips.
        INSERT INTO ledger_transfers (id, debit_account_id, credit_account_id, asset, amount,
                                      kind, reference, metadata, batched)
        SELECT 'tip:' || (m.tip).id || ':tokens', m.wallet_id, burn_account, 'TKN',
               (m.tip).tokens, 'tip', 'tip:' || (m.tip).id, '{}'::jsonb, true
          FROM made m
        UNION ALL
        SELECT 'tipbatch:' || batch || ':performer:' || p.performer_id, liability_account,
               e.account_id, p_currency, p.units, 'tip_share', 'tipbatch:' || batch,
               jsonb_build_object('tips', p.tips), true
          FROM (SELECT (m.tip).performer_id, sum((m.tip).performer_units)::bigint AS units,
                       count(*) AS tips
                  FROM made m GROUP BY (m.tip).performer_id) p
          JOIN unnest(performers, earnings) e(performer_id, account_id)
            ON e.performer_id = p.performer_id
         WHERE p.units > 0
        UNION ALL
        SELECT 'tipbatch:' || batch || ':platform', liability_account, revenue_account,
               p_currency, sum((m.tip).platform_units)::bigint, 'tip_fee', 'tipbatch:' || batch,
               jsonb_build_object('tips', count(*)), true
          FROM made m
        HAVING sum((m.tip).platform_units) > 0
    ), events AS (
        INSERT INTO outbox (channel, event_type, payload)
        SELECT m.channel, 'tip', jsonb_build_object(
                   'type', 'tip',
                   'tip_id', (m.tip).id,
                   'stream_id', (m.tip).stream_id,
                   'performer_id', (m.tip).performer_id,
                   'viewer_id', (m.tip).viewer_id,
                   'viewer_name', u.display_name,
                   'tokens', (m.tip).tokens,
                   'message', CASE WHEN (m.tip).message_private THEN NULL
                                   ELSE (m.tip).message END,
                   'private_message', (m.tip).message_private AND (m.tip).message IS NOT NULL,
                   'at', (m.tip).created_at)
          FROM made m JOIN users u ON u.id = (m.tip).viewer_id
         ORDER BY m.ord
        RETURNING id, payload
    )
    SELECT i.ord, i.outcome, e.id, e.payload, coalesce(m.tip, old.tip)
      FROM unnest(items) i
      LEFT JOIN made m ON m.ord = i.ord
      LEFT JOIN events e ON (e.payload ->> 'tip_id')::bigint = (m.tip).id
      LEFT JOIN LATERAL (
          SELECT x AS tip FROM tips x
           WHERE i.outcome = 'replayed' AND x.viewer_id = i.viewer_id
             AND x.idempotency_key = i.key
          OFFSET 0) old ON true
     ORDER BY i.ord;
END
$$;
