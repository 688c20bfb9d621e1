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
