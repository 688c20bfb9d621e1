"""Earnings statements: what a performer earned, lost to chargebacks and was paid over a
period, reconciled from the ledger (opening + movements = closing)."""

from __future__ import annotations

from datetime import datetime

from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.errors import InvalidInput
from tipstream.ledger import queries, service
from tipstream.ledger.money import Rates
from tipstream.ledger.schemas import Statement

MOVES_SQL = """
SELECT
  coalesce(sum(CASE WHEN t.created_at < %(start)s
                    THEN CASE WHEN t.credit_account_id = ANY(%(ids)s) THEN t.amount
                              ELSE -t.amount END END), 0)::bigint AS opening,
  coalesce(sum(CASE WHEN t.created_at >= %(start)s AND t.created_at < %(end)s
                         AND t.kind = 'tip_share' THEN t.amount END), 0)::bigint AS tips,
  coalesce(sum(CASE WHEN t.created_at >= %(start)s AND t.created_at < %(end)s
                         AND t.kind = 'chargeback_clawback' THEN t.amount END), 0)::bigint
      AS chargebacks,
  coalesce(sum(CASE WHEN t.created_at >= %(start)s AND t.created_at < %(end)s
                         AND t.kind = 'payout' THEN t.amount END), 0)::bigint AS payouts,
  coalesce(sum(CASE WHEN t.created_at >= %(start)s AND t.created_at < %(end)s
                         AND t.kind = 'payout_returned' THEN t.amount END), 0)::bigint
      AS returned,
  coalesce(sum(CASE WHEN t.created_at < %(end)s
                    THEN CASE WHEN t.credit_account_id = ANY(%(ids)s) THEN t.amount
                              ELSE -t.amount END END), 0)::bigint AS closing
FROM ledger_transfers t
WHERE (t.debit_account_id = ANY(%(ids)s) OR t.credit_account_id = ANY(%(ids)s))
  AND t.phase IN ('posted', 'post_pending')
"""

TIPS_SQL = """
SELECT count(*)::bigint AS n, coalesce(sum(tokens), 0)::bigint AS tokens,
       coalesce(sum(gross_units), 0)::bigint AS gross,
       coalesce(sum(platform_units), 0)::bigint AS fees
FROM tips
WHERE performer_id = %(p)s AND currency = %(c)s
  AND created_at >= %(start)s AND created_at < %(end)s
"""


async def statement(
    conn: Conn, settings: Settings, *, performer_id: int, start: datetime, end: datetime
) -> Statement:
    if end <= start:
        raise InvalidInput("the period must end after it starts")
    rates = Rates.from_settings(settings)
    ids = [
        a.id
        for a in await queries.accounts_of(conn, performer_id)
        if a.kind == service.EARNINGS and a.asset == rates.currency
    ]
    params = {"ids": ids, "start": start, "end": end, "p": performer_id, "c": rates.currency}
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cur = await conn.execute(MOVES_SQL, params)
        moves = await cur.fetchone()
        cur = await conn.execute(TIPS_SQL, params)
        tipped = await cur.fetchone()
    assert moves is not None and tipped is not None
    fmt = rates.format_units
    return Statement(
        performer_id=performer_id,
        currency=rates.currency,
        start=start,
        end=end,
        opening_balance=fmt(int(moves["opening"])),
        tips=int(tipped["n"]),
        tokens=int(tipped["tokens"]),
        gross=fmt(int(tipped["gross"])),
        platform_fees=fmt(int(tipped["fees"])),
        tip_earnings=fmt(int(moves["tips"])),
        chargebacks=fmt(int(moves["chargebacks"])),
        payouts=fmt(int(moves["payouts"])),
        payouts_returned=fmt(int(moves["returned"])),
        closing_balance=fmt(int(moves["closing"])),
    )
