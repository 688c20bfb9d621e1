"""SQL for purchases and processor events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from tipstream.db import Conn
from tipstream.errors import NotFound


class PurchaseNotFound(NotFound):
    slug, title = "purchase-not-found", "Purchase not found"


@dataclass
class PurchaseRow:
    id: int
    user_id: int
    processor: str
    package_id: str
    tokens: int
    currency: str
    price_units: int
    status: str
    processor_ref: str | None
    created_at: datetime
    credited_at: datetime | None
    reversed_at: datetime | None


@dataclass
class FundedTip:
    """A tip paid (in part) from a purchase's lot: who it reached and how many of its tokens."""

    tip_id: int
    performer_id: int
    tokens: int
    units_per_token: int
    fee_bps: int


async def insert_purchase(
    conn: Conn,
    *,
    user_id: int,
    processor: str,
    package_id: str,
    tokens: int,
    currency: str,
    price_units: int,
) -> PurchaseRow:
    async with conn.cursor(row_factory=class_row(PurchaseRow)) as cur:
        await cur.execute(
            """
            INSERT INTO purchases (user_id, processor, package_id, tokens, currency, price_units)
            VALUES (%(user_id)s, %(processor)s, %(package_id)s, %(tokens)s, %(currency)s,
                    %(price_units)s)
            RETURNING *
            """,
            {
                "user_id": user_id,
                "processor": processor,
                "package_id": package_id,
                "tokens": tokens,
                "currency": currency,
                "price_units": price_units,
            },
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def set_processor_ref(conn: Conn, purchase_id: int, ref: str) -> None:
    await conn.execute(
        "UPDATE purchases SET processor_ref = %(ref)s WHERE id = %(id)s",
        {"id": purchase_id, "ref": ref},
    )


async def purchase(conn: Conn, purchase_id: int) -> PurchaseRow:
    async with conn.cursor(row_factory=class_row(PurchaseRow)) as cur:
        await cur.execute("SELECT * FROM purchases WHERE id = %(id)s", {"id": purchase_id})
        row = await cur.fetchone()
    if row is None:
        raise PurchaseNotFound
    return row


async def lock_purchase(
    conn: Conn, *, processor: str, purchase_id: int | None, processor_ref: str | None
) -> PurchaseRow | None:
    async with conn.cursor(row_factory=class_row(PurchaseRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM purchases
            WHERE processor = %(processor)s
              AND (id = %(id)s OR (%(id)s::bigint IS NULL AND processor_ref = %(ref)s))
            FOR UPDATE
            """,
            {"processor": processor, "id": purchase_id, "ref": processor_ref},
        )
        return await cur.fetchone()


async def set_status(conn: Conn, purchase_id: int, status: str) -> PurchaseRow:
    async with conn.cursor(row_factory=class_row(PurchaseRow)) as cur:
        await cur.execute(
            """
            UPDATE purchases
               SET status = %(status)s,
                   credited_at = CASE WHEN %(status)s = 'credited' THEN now()
                                      ELSE credited_at END,
                   reversed_at = CASE WHEN %(status)s IN ('refunded', 'charged_back') THEN now()
                                      ELSE reversed_at END
             WHERE id = %(id)s
            RETURNING *
            """,
            {"id": purchase_id, "status": status},
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def purchases_of(conn: Conn, user_id: int, *, limit: int) -> list[PurchaseRow]:
    async with conn.cursor(row_factory=class_row(PurchaseRow)) as cur:
        await cur.execute(
            "SELECT * FROM purchases WHERE user_id = %(u)s ORDER BY id DESC LIMIT %(limit)s",
            {"u": user_id, "limit": limit},
        )
        return await cur.fetchall()


async def event_seen(conn: Conn, processor: str, event_id: str) -> bool:
    cur = await conn.execute(
        "SELECT 1 FROM processor_events WHERE processor = %(p)s AND event_id = %(e)s",
        {"p": processor, "e": event_id},
    )
    return await cur.fetchone() is not None


async def insert_event(
    conn: Conn,
    *,
    processor: str,
    event_id: str,
    purchase_id: int | None,
    event_type: str,
    effect: str,
    payload: dict[str, Any],
) -> bool:
    """Record an event; False if this (processor, event id) was recorded already."""
    cur = await conn.execute(
        """
        INSERT INTO processor_events (processor, event_id, purchase_id, event_type, effect, payload)
        VALUES (%(p)s, %(e)s, %(purchase)s, %(type)s, %(effect)s, %(payload)s)
        ON CONFLICT (processor, event_id) DO NOTHING
        RETURNING event_id
        """,
        {
            "p": processor,
            "e": event_id,
            "purchase": purchase_id,
            "type": event_type,
            "effect": effect,
            "payload": Jsonb(payload),
        },
    )
    return await cur.fetchone() is not None


async def tips_funded_by(conn: Conn, lot_transfer_id: str) -> list[FundedTip]:
    """Tips that spent tokens of the lot opened by this transfer, newest first."""
    async with conn.cursor(row_factory=class_row(FundedTip)) as cur:
        await cur.execute(
            """
            SELECT t.id AS tip_id, t.performer_id, s.tokens, t.units_per_token, t.fee_bps
            FROM token_lots l
            JOIN lot_spends s ON s.lot_id = l.id
            JOIN tips t ON s.transfer_id = 'tip:' || t.id || ':tokens'
            WHERE l.transfer_id = %(transfer)s
            ORDER BY t.id DESC
            """,
            {"transfer": lot_transfer_id},
        )
        return await cur.fetchall()


# --------------------------------------------------------------------------- sale hints


@dataclass
class SaleHintRow:
    purchase_id: int
    processor: str
    subscription_id: str
    event_id: str
    amount: str | None
    hinted_at: datetime
    status: str
    resolved_at: datetime | None


@dataclass
class ReconciliationRunRow:
    id: int
    processor: str
    window_start: datetime
    window_end: datetime
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    records: int
    credited: int
    reversed: int
    duplicates: int
    unmatched: int
    skipped: int
    flagged: int
    error: str | None


async def purchase_by_ref(conn: Conn, processor: str, ref: str) -> PurchaseRow | None:
    async with conn.cursor(row_factory=class_row(PurchaseRow)) as cur:
        await cur.execute(
            "SELECT * FROM purchases WHERE processor = %(p)s AND processor_ref = %(ref)s",
            {"p": processor, "ref": ref},
        )
        return await cur.fetchone()


async def claim_processor_ref(conn: Conn, purchase_id: int, ref: str) -> bool:
    """Name the processor's id of a purchase once; True if it is (now) this one."""
    cur = await conn.execute(
        """
        UPDATE purchases SET processor_ref = %(ref)s
         WHERE id = %(id)s AND (processor_ref IS NULL OR processor_ref = %(ref)s)
        RETURNING id
        """,
        {"id": purchase_id, "ref": ref},
    )
    return await cur.fetchone() is not None


async def insert_hint(
    conn: Conn,
    *,
    purchase_id: int,
    processor: str,
    subscription_id: str,
    event_id: str,
    amount: str | None,
) -> SaleHintRow | None:
    """Record an announced sale; None if this purchase was announced already."""
    async with conn.cursor(row_factory=class_row(SaleHintRow)) as cur:
        await cur.execute(
            """
            INSERT INTO sale_hints (purchase_id, processor, subscription_id, event_id, amount)
            VALUES (%(purchase)s, %(p)s, %(sub)s, %(event)s, %(amount)s)
            ON CONFLICT DO NOTHING
            RETURNING *
            """,
            {
                "purchase": purchase_id,
                "p": processor,
                "sub": subscription_id,
                "event": event_id,
                "amount": amount,
            },
        )
        return await cur.fetchone()


async def hint(conn: Conn, purchase_id: int) -> SaleHintRow | None:
    async with conn.cursor(row_factory=class_row(SaleHintRow)) as cur:
        await cur.execute(
            "SELECT * FROM sale_hints WHERE purchase_id = %(id)s", {"id": purchase_id}
        )
        return await cur.fetchone()


async def hints(
    conn: Conn, processor: str, *, statuses: list[str], limit: int
) -> list[SaleHintRow]:
    async with conn.cursor(row_factory=class_row(SaleHintRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM sale_hints
            WHERE processor = %(p)s AND status = ANY(%(statuses)s)
            ORDER BY hinted_at, purchase_id
            LIMIT %(limit)s
            """,
            {"p": processor, "statuses": statuses, "limit": limit},
        )
        return await cur.fetchall()


async def confirm_hint(conn: Conn, purchase_id: int) -> None:
    await conn.execute(
        """
        UPDATE sale_hints SET status = 'confirmed', resolved_at = now()
         WHERE purchase_id = %(id)s AND status IN ('pending', 'flagged')
        """,
        {"id": purchase_id},
    )


async def close_settled_hints(conn: Conn, processor: str) -> int:
    """Hints whose purchase was settled another way (credited, refunded, failed)."""
    cur = await conn.execute(
        """
        UPDATE sale_hints h
           SET status = CASE WHEN p.status = 'credited' THEN 'confirmed' ELSE 'closed' END,
               resolved_at = now()
          FROM purchases p
         WHERE p.id = h.purchase_id AND h.processor = %(p)s
           AND h.status IN ('pending', 'flagged') AND p.status <> 'created'
        """,
        {"p": processor},
    )
    return cur.rowcount


async def flag_stale_hints(conn: Conn, processor: str, before: datetime) -> list[SaleHintRow]:
    async with conn.cursor(row_factory=class_row(SaleHintRow)) as cur:
        await cur.execute(
            """
            UPDATE sale_hints SET status = 'flagged', resolved_at = now()
             WHERE processor = %(p)s AND status = 'pending' AND hinted_at < %(before)s
            RETURNING *
            """,
            {"p": processor, "before": before},
        )
        return await cur.fetchall()


async def oldest_pending_hint(conn: Conn, processor: str) -> datetime | None:
    cur = await conn.execute(
        """
        SELECT min(hinted_at) AS at FROM sale_hints
        WHERE processor = %(p)s AND status = 'pending'
        """,
        {"p": processor},
    )
    row = await cur.fetchone()
    return row["at"] if row else None


# --------------------------------------------------------------------------- reconciliation runs


async def insert_run(
    conn: Conn, *, processor: str, window_start: datetime, window_end: datetime, trigger: str
) -> ReconciliationRunRow:
    async with conn.cursor(row_factory=class_row(ReconciliationRunRow)) as cur:
        await cur.execute(
            """
            INSERT INTO reconciliation_runs (processor, window_start, window_end, trigger)
            VALUES (%(p)s, %(start)s, %(end)s, %(trigger)s)
            RETURNING *
            """,
            {"p": processor, "start": window_start, "end": window_end, "trigger": trigger},
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def finish_run(
    conn: Conn, run_id: int, *, status: str, counts: dict[str, int], error: str | None
) -> None:
    await conn.execute(
        """
        UPDATE reconciliation_runs
           SET status = %(status)s, finished_at = now(), error = %(error)s,
               records = %(records)s, credited = %(credited)s, reversed = %(reversed)s,
               duplicates = %(duplicates)s, unmatched = %(unmatched)s, skipped = %(skipped)s,
               flagged = %(flagged)s
         WHERE id = %(id)s
        """,
        {"id": run_id, "status": status, "error": error, **counts},
    )


async def last_good_window_end(conn: Conn, processor: str) -> datetime | None:
    cur = await conn.execute(
        """
        SELECT max(window_end) AS at FROM reconciliation_runs
        WHERE processor = %(p)s AND status = 'ok'
        """,
        {"p": processor},
    )
    row = await cur.fetchone()
    return row["at"] if row else None


async def last_run_started(conn: Conn, processor: str) -> datetime | None:
    cur = await conn.execute(
        "SELECT max(started_at) AS at FROM reconciliation_runs WHERE processor = %(p)s",
        {"p": processor},
    )
    row = await cur.fetchone()
    return row["at"] if row else None


async def try_lock_reconciliation(conn: Conn, processor: str) -> bool:
    """One reconciliation per processor at a time, across processes and hosts."""
    cur = await conn.execute(
        "SELECT pg_try_advisory_lock(hashtext('tipstream.reconcile.' || %(p)s)) AS locked",
        {"p": processor},
    )
    row = await cur.fetchone()
    return bool(row and row["locked"])


async def unlock_reconciliation(conn: Conn, processor: str) -> None:
    await conn.execute(
        "SELECT pg_advisory_unlock(hashtext('tipstream.reconcile.' || %(p)s))", {"p": processor}
    )


async def last_run(conn: Conn, processor: str) -> ReconciliationRunRow | None:
    async with conn.cursor(row_factory=class_row(ReconciliationRunRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM reconciliation_runs WHERE processor = %(p)s
            ORDER BY started_at DESC, id DESC LIMIT 1
            """,
            {"p": processor},
        )
        return await cur.fetchone()


async def count_hints(conn: Conn, processor: str, status: str) -> int:
    cur = await conn.execute(
        "SELECT count(*) AS n FROM sale_hints WHERE processor = %(p)s AND status = %(s)s",
        {"p": processor, "s": status},
    )
    row = await cur.fetchone()
    return int(row["n"]) if row else 0
