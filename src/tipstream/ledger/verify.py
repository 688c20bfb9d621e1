"""`tipctl ledger verify`: prove the books balance, from the transfers up.

Checks, each over the whole ledger:
- every asset sums to zero (posted and pending);
- every account's balance columns equal the sums of its transfers;
- no account with an overdraft flag is below zero unless frozen for review;
- every tip has its fee split: the arithmetic at its stored rate and fee, its three transfers
  with those amounts, and funding lots that add up to its tokens; a tip posted in a batch has
  its tokens transfer, and its batch one performer-share transfer per performer and one
  platform-fee transfer, each exactly the sum of its tips' split, to the right accounts;
- every wallet's open lots add up to its balance;
- every purchase has its processor event and its transfers (once the purchases table exists);
- the triggers that make transfers immutable and apply them to balances are in place.
Long checks run in chunks of accounts or tips and report progress.
"""

from __future__ import annotations

from collections.abc import Callable

from tipstream.db import Conn
from tipstream.ledger.schemas import VerifyCheck, VerifyReport

Progress = Callable[[str, int, int], None]
CHUNK = 5_000
MAX_LISTED = 20


def _noop(_task: str, _done: int, _total: int) -> None:
    return None


async def _scalar(conn: Conn, query: str, params: dict[str, object] | None = None) -> int:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    value = next(iter(row.values()))
    return 0 if value is None else int(value)


async def _id_range(conn: Conn, table: str) -> tuple[int, int]:
    cur = await conn.execute(
        f"SELECT coalesce(min(id), 0) AS lo, coalesce(max(id), -1) AS hi FROM {table}"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row["lo"]), int(row["hi"])


def _check(name: str, checked: int, problems: list[str]) -> VerifyCheck:
    listed = problems[:MAX_LISTED]
    if len(problems) > MAX_LISTED:
        listed.append(f"... and {len(problems) - MAX_LISTED} more")
    return VerifyCheck(name=name, ok=not problems, checked=checked, problems=listed)


async def check_asset_sums(conn: Conn) -> VerifyCheck:
    cur = await conn.execute(
        """
        SELECT asset,
               sum(credits_posted - debits_posted)::numeric AS posted,
               sum(credits_pending - debits_pending)::numeric AS pending
        FROM ledger_accounts GROUP BY asset ORDER BY asset
        """
    )
    rows = await cur.fetchall()
    problems = [
        f"{r['asset']}: posted sum {r['posted']}, pending sum {r['pending']} (both must be 0)"
        for r in rows
        if r["posted"] != 0 or r["pending"] != 0
    ]
    return _check("every asset sums to zero", len(rows), problems)


BALANCES_SQL = """
WITH moves AS (
    SELECT t.debit_account_id AS account_id,
           CASE WHEN t.phase IN ('posted', 'post_pending') THEN t.amount ELSE 0 END AS dpo,
           CASE WHEN t.phase = 'pending' AND r.id IS NULL THEN t.amount ELSE 0 END AS dpe,
           0 AS cpo, 0 AS cpe
    FROM ledger_transfers t LEFT JOIN ledger_transfers r ON r.pending_id = t.id
    WHERE t.debit_account_id BETWEEN %(lo)s AND %(hi)s
    UNION ALL
    SELECT t.credit_account_id,
           0, 0,
           CASE WHEN t.phase IN ('posted', 'post_pending') THEN t.amount ELSE 0 END,
           CASE WHEN t.phase = 'pending' AND r.id IS NULL THEN t.amount ELSE 0 END
    FROM ledger_transfers t LEFT JOIN ledger_transfers r ON r.pending_id = t.id
    WHERE t.credit_account_id BETWEEN %(lo)s AND %(hi)s
), sums AS (
    SELECT account_id, sum(dpo) AS dpo, sum(dpe) AS dpe, sum(cpo) AS cpo, sum(cpe) AS cpe
    FROM moves GROUP BY account_id
)
SELECT a.id, a.debits_posted, a.debits_pending, a.credits_posted, a.credits_pending,
       coalesce(s.dpo, 0) AS dpo, coalesce(s.dpe, 0) AS dpe,
       coalesce(s.cpo, 0) AS cpo, coalesce(s.cpe, 0) AS cpe
FROM ledger_accounts a LEFT JOIN sums s ON s.account_id = a.id
WHERE a.id BETWEEN %(lo)s AND %(hi)s
  AND (a.debits_posted <> coalesce(s.dpo, 0) OR a.debits_pending <> coalesce(s.dpe, 0)
       OR a.credits_posted <> coalesce(s.cpo, 0) OR a.credits_pending <> coalesce(s.cpe, 0))
"""


async def check_balances(conn: Conn, progress: Progress) -> VerifyCheck:
    lo, hi = await _id_range(conn, "ledger_accounts")
    total = max(hi - lo + 1, 0)
    problems: list[str] = []
    start = lo
    while start <= hi:
        end = min(start + CHUNK - 1, hi)
        cur = await conn.execute(BALANCES_SQL, {"lo": start, "hi": end})
        for r in await cur.fetchall():
            problems.append(
                f"account {r['id']}: row says debits {r['debits_posted']}+{r['debits_pending']} "
                f"credits {r['credits_posted']}+{r['credits_pending']} (posted+pending); its "
                f"transfers say debits {r['dpo']}+{r['dpe']} credits {r['cpo']}+{r['cpe']}"
            )
        progress("balances", end - lo + 1, total)
        start = end + 1
    accounts = await _scalar(conn, "SELECT count(*) FROM ledger_accounts")
    return _check("every balance equals its transfers", accounts, problems)


async def check_negatives(conn: Conn) -> tuple[VerifyCheck, list[str]]:
    cur = await conn.execute(
        """
        SELECT id, owner_id, asset, kind, frozen_at IS NOT NULL AS frozen,
               credits_posted - debits_posted - debits_pending AS available
        FROM ledger_accounts
        WHERE (debits_must_not_exceed_credits
               AND debits_posted + debits_pending > credits_posted)
           OR (credits_must_not_exceed_debits
               AND credits_posted + credits_pending > debits_posted)
        ORDER BY id
        """
    )
    rows = await cur.fetchall()
    problems = [
        f"account {r['id']} ({r['kind']} {r['asset']} of user {r['owner_id']}) is at "
        f"{r['available']} and not frozen"
        for r in rows
        if not r["frozen"]
    ]
    notes = [
        f"account {r['id']} ({r['kind']} {r['asset']} of user {r['owner_id']}) is at "
        f"{r['available']}, frozen for review"
        for r in rows
        if r["frozen"]
    ]
    flagged = await _scalar(
        conn,
        "SELECT count(*) FROM ledger_accounts"
        " WHERE debits_must_not_exceed_credits OR credits_must_not_exceed_debits",
    )
    return _check("no forbidden negative balance", flagged, problems), notes


TIPS_SQL = """
SELECT t.id,
       t.gross_units <> t.tokens * t.units_per_token
       OR t.platform_units::numeric * 10000 <> t.gross_units::numeric * t.fee_bps
       OR t.performer_units + t.platform_units <> t.gross_units AS bad_split,
       tok.amount IS DISTINCT FROM t.tokens OR tok.asset <> 'TKN' AS bad_tokens,
       CASE WHEN t.batch_id IS NOT NULL THEN perf.id IS NOT NULL
            WHEN t.performer_units = 0 THEN perf.id IS NOT NULL
            ELSE perf.amount IS DISTINCT FROM t.performer_units
                 OR perf.asset <> t.currency END AS bad_performer,
       CASE WHEN t.batch_id IS NOT NULL THEN plat.id IS NOT NULL
            WHEN t.platform_units = 0 THEN plat.id IS NOT NULL
            ELSE plat.amount IS DISTINCT FROM t.platform_units
                 OR plat.asset <> t.currency END AS bad_platform,
       coalesce(f.tokens, 0) <> t.tokens AS bad_funding
FROM tips t
LEFT JOIN ledger_transfers tok ON tok.id = 'tip:' || t.id || ':tokens'
LEFT JOIN ledger_transfers perf ON perf.id = 'tip:' || t.id || ':performer'
LEFT JOIN ledger_transfers plat ON plat.id = 'tip:' || t.id || ':platform'
LEFT JOIN LATERAL (SELECT sum(s.tokens) AS tokens FROM lot_spends s
                    WHERE s.transfer_id = tok.id) f ON true
WHERE t.id BETWEEN %(lo)s AND %(hi)s
"""


async def check_tips(conn: Conn, progress: Progress) -> VerifyCheck:
    lo, hi = await _id_range(conn, "tips")
    total = max(hi - lo + 1, 0)
    problems: list[str] = []
    checked = 0
    start = lo
    while start <= hi:
        end = min(start + CHUNK - 1, hi)
        cur = await conn.execute(TIPS_SQL, {"lo": start, "hi": end})
        for r in await cur.fetchall():
            checked += 1
            wrong = [
                what
                for what, bad in (
                    ("split arithmetic", r["bad_split"]),
                    ("token transfer", r["bad_tokens"]),
                    ("performer share transfer", r["bad_performer"]),
                    ("platform fee transfer", r["bad_platform"]),
                    ("funding lots", r["bad_funding"]),
                )
                if bad
            ]
            if wrong:
                problems.append(f"tip {r['id']}: wrong or missing {', '.join(wrong)}")
        progress("tips", end - lo + 1, total)
        start = end + 1
    return _check("every tip has its split", checked, problems)


# What each tip batch's rolled-up credits must be (from its tips), beside what they are.
TIP_BATCHES_SQL = """
WITH want AS (
    SELECT 'tipbatch:' || batch_id || ':performer:' || performer_id AS id, currency AS asset,
           sum(performer_units)::bigint AS amount, performer_id AS owner_id,
           'earnings' AS credit_kind
      FROM tips WHERE batch_id IS NOT NULL
     GROUP BY batch_id, performer_id, currency
    HAVING sum(performer_units) > 0
    UNION ALL
    SELECT 'tipbatch:' || batch_id || ':platform', currency, sum(platform_units)::bigint,
           NULL, 'revenue'
      FROM tips WHERE batch_id IS NOT NULL
     GROUP BY batch_id, currency
    HAVING sum(platform_units) > 0
), have AS (
    SELECT x.id, x.asset, x.amount, c.owner_id, c.kind AS credit_kind, d.kind AS debit_kind
      FROM ledger_transfers x
      JOIN ledger_accounts c ON c.id = x.credit_account_id
      JOIN ledger_accounts d ON d.id = x.debit_account_id
     WHERE x.reference LIKE 'tipbatch:%'
)
SELECT coalesce(w.id, h.id) AS id, w.amount AS want, h.amount AS have
  FROM want w FULL JOIN have h ON h.id = w.id
 WHERE w.amount IS DISTINCT FROM h.amount OR w.asset IS DISTINCT FROM h.asset
    OR w.owner_id IS DISTINCT FROM h.owner_id OR w.credit_kind IS DISTINCT FROM h.credit_kind
    OR h.debit_kind IS DISTINCT FROM 'token_liability'
"""


async def check_tip_batches(conn: Conn) -> VerifyCheck:
    cur = await conn.execute(TIP_BATCHES_SQL)
    problems = [
        f"tip batch transfer {r['id']}: its tips say {r['want']}, the ledger says {r['have']}"
        " (amount, or the accounts it moves between)"
        for r in await cur.fetchall()
    ]
    batches = await _scalar(conn, "SELECT count(DISTINCT batch_id) FROM tips")
    return _check("every tip batch's credits equal its tips' split", batches, problems)


async def check_lots(conn: Conn) -> VerifyCheck:
    cur = await conn.execute(
        """
        SELECT a.id, a.owner_id, a.credits_posted - a.debits_posted AS balance,
               coalesce(l.remaining, 0) AS remaining
        FROM ledger_accounts a
        LEFT JOIN (SELECT account_id, sum(remaining) AS remaining FROM token_lots
                    GROUP BY account_id) l ON l.account_id = a.id
        WHERE a.asset = 'TKN' AND a.kind = 'wallet'
          AND coalesce(l.remaining, 0) <> greatest(a.credits_posted - a.debits_posted, 0)
        """
    )
    problems = [
        f"wallet {r['id']} of user {r['owner_id']}: balance {r['balance']}, open lots "
        f"{r['remaining']}"
        for r in await cur.fetchall()
    ]
    wallets = await _scalar(
        conn, "SELECT count(*) FROM ledger_accounts WHERE asset = 'TKN' AND kind = 'wallet'"
    )
    return _check("every wallet's lots add up to its balance", wallets, problems)


PURCHASES_SQL = """
SELECT p.id, p.processor, p.status,
       NOT EXISTS (SELECT 1 FROM processor_events e
                    WHERE e.processor = p.processor AND e.purchase_id = p.id
                      AND e.effect = 'credit') AS no_event,
       NOT EXISTS (SELECT 1 FROM ledger_transfers x
                    WHERE x.id = 'purchase:' || p.id || ':tokens'
                      AND x.amount = p.tokens) AS no_transfer
FROM purchases p
WHERE p.credited_at IS NOT NULL
"""


async def check_purchases(conn: Conn) -> tuple[VerifyCheck | None, list[str]]:
    if await _scalar(conn, "SELECT count(*) FROM pg_class WHERE relname = 'purchases'") == 0:
        return None, ["no purchases table yet: purchase check skipped"]
    cur = await conn.execute(PURCHASES_SQL)
    rows = await cur.fetchall()
    problems = []
    for r in rows:
        if r["no_event"]:
            problems.append(f"purchase {r['id']} ({r['processor']}): credited with no event")
        if r["no_transfer"]:
            problems.append(f"purchase {r['id']} ({r['processor']}): no token transfer")
    cur = await conn.execute(
        """
        SELECT l.id, l.source_id FROM token_lots l
        WHERE l.source_kind = 'purchase'
          AND NOT EXISTS (SELECT 1 FROM purchases p
                           WHERE 'purchase:' || p.id = l.source_id
                             AND p.credited_at IS NOT NULL)
        """
    )
    for r in await cur.fetchall():
        problems.append(f"token lot {r['id']}: purchase {r['source_id']} not credited")
    return _check("every purchase has its processor event", len(rows), problems), []


REQUIRED_TRIGGERS = (
    ("ledger_transfers", "ledger_transfers_immutable"),
    ("ledger_transfers", "ledger_transfers_no_truncate"),
    ("ledger_transfers", "ledger_transfers_apply"),
    ("ledger_transfers", "ledger_transfers_apply_batched"),
    ("ledger_accounts", "ledger_accounts_guard"),
    ("ledger_accounts", "ledger_accounts_no_delete"),
    ("tips", "tips_immutable"),
)


async def check_triggers(conn: Conn) -> VerifyCheck:
    cur = await conn.execute(
        """
        SELECT c.relname, t.tgname, t.tgenabled
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE NOT t.tgisinternal
        """
    )
    enabled = {(r["relname"], r["tgname"]) for r in await cur.fetchall() if r["tgenabled"] != "D"}
    problems = [
        f"trigger {name} on {table} missing or disabled"
        for table, name in REQUIRED_TRIGGERS
        if (table, name) not in enabled
    ]
    return _check("immutability and balance triggers in place", len(REQUIRED_TRIGGERS), problems)


async def verify(conn: Conn, progress: Progress | None = None) -> VerifyReport:
    """Run every check in one repeatable-read snapshot, so concurrent traffic cannot make the
    books look unbalanced."""
    report = progress or _noop
    notes: list[str] = []
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        checks = [await check_asset_sums(conn)]
        checks.append(await check_balances(conn, report))
        negatives, negative_notes = await check_negatives(conn)
        checks.append(negatives)
        notes += negative_notes
        checks.append(await check_tips(conn, report))
        checks.append(await check_tip_batches(conn))
        checks.append(await check_lots(conn))
        purchases, purchase_notes = await check_purchases(conn)
        notes += purchase_notes
        if purchases is not None:
            checks.append(purchases)
        checks.append(await check_triggers(conn))
    return VerifyReport(ok=all(c.ok for c in checks), checks=checks, notes=notes)
