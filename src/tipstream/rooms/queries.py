"""SQL for streams and room bans."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg.rows import class_row

from tipstream.db import Conn
from tipstream.errors import NotFound


class StreamNotFound(NotFound):
    title = "Stream not found"


@dataclass
class StreamRow:
    id: int
    performer_id: int
    performer_name: str
    title: str
    tags: list[str]
    adult: bool
    status: str
    janus_room_id: int | None
    janus_room_secret: str | None
    janus_room_pin: str | None
    scheduled_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    end_reason: str | None
    created_at: datetime


STREAM_COLUMNS = """
    s.id, s.performer_id, u.display_name AS performer_name, s.title, s.tags, s.adult,
    s.status::text AS status, s.janus_room_id, s.janus_room_secret, s.janus_room_pin,
    s.scheduled_at, s.started_at, s.ended_at, s.end_reason, s.created_at
"""


async def insert_stream(
    conn: Conn,
    *,
    performer_id: int,
    title: str,
    tags: list[str],
    adult: bool,
    scheduled_at: datetime | None,
) -> StreamRow:
    async with conn.cursor(row_factory=class_row(StreamRow)) as cur:
        await cur.execute(
            f"""
            WITH s AS (
                INSERT INTO streams (performer_id, title, tags, adult, scheduled_at)
                VALUES (%(performer_id)s, %(title)s, %(tags)s, %(adult)s, %(scheduled_at)s)
                RETURNING *
            )
            SELECT {STREAM_COLUMNS} FROM s JOIN users u ON u.id = s.performer_id
            """,
            {
                "performer_id": performer_id,
                "title": title,
                "tags": tags,
                "adult": adult,
                "scheduled_at": scheduled_at,
            },
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def get_stream(conn: Conn, stream_id: int, *, for_update: bool = False) -> StreamRow:
    lock = "FOR UPDATE OF s" if for_update else ""
    async with conn.cursor(row_factory=class_row(StreamRow)) as cur:
        await cur.execute(
            f"""
            SELECT {STREAM_COLUMNS}
            FROM streams s JOIN users u ON u.id = s.performer_id
            WHERE s.id = %(id)s
            {lock}
            """,
            {"id": stream_id},
        )
        row = await cur.fetchone()
    if row is None:
        raise StreamNotFound(f"no stream {stream_id}")
    return row


async def list_streams(
    conn: Conn,
    *,
    status: str | None = None,
    performer_id: int | None = None,
    limit: int = 50,
    before_id: int | None = None,
    listed_only: bool = False,
) -> list[StreamRow]:
    """Newest first: live ones by start time, others by id. listed_only leaves out streams
    moderation hid from the public listings (they stay live for those in the room)."""
    async with conn.cursor(row_factory=class_row(StreamRow)) as cur:
        await cur.execute(
            f"""
            SELECT {STREAM_COLUMNS}
            FROM streams s JOIN users u ON u.id = s.performer_id
            WHERE (%(status)s::stream_status IS NULL OR s.status = %(status)s::stream_status)
              AND (%(performer_id)s::bigint IS NULL OR s.performer_id = %(performer_id)s)
              AND (%(before_id)s::bigint IS NULL OR s.id < %(before_id)s)
              AND (NOT %(listed_only)s OR s.hidden_at IS NULL)
            ORDER BY s.started_at DESC NULLS LAST, s.id DESC
            LIMIT %(limit)s
            """,
            {
                "status": status,
                "performer_id": performer_id,
                "before_id": before_id,
                "limit": limit,
                "listed_only": listed_only,
            },
        )
        return await cur.fetchall()


async def mark_live(
    conn: Conn, stream_id: int, *, room_id: int, room_secret: str, room_pin: str
) -> bool:
    """scheduled → live; False when the stream was not scheduled any more."""
    cur = await conn.execute(
        """
        UPDATE streams
        SET status = 'live', started_at = now(), janus_room_id = %(room_id)s,
            janus_room_secret = %(secret)s, janus_room_pin = %(pin)s
        WHERE id = %(id)s AND status = 'scheduled'
        RETURNING id
        """,
        {"id": stream_id, "room_id": room_id, "secret": room_secret, "pin": room_pin},
    )
    return await cur.fetchone() is not None


async def mark_ended(conn: Conn, stream_id: int, *, reason: str) -> bool:
    """scheduled|live → ended; False when it had already ended."""
    cur = await conn.execute(
        """
        UPDATE streams
        SET status = 'ended', ended_at = now(), end_reason = %(reason)s
        WHERE id = %(id)s AND status <> 'ended'
        RETURNING id
        """,
        {"id": stream_id, "reason": reason},
    )
    return await cur.fetchone() is not None


async def upsert_ban(
    conn: Conn,
    *,
    performer_id: int,
    user_id: int,
    banned_by: int | None,
    reason: str | None,
    expires_at: datetime | None,
) -> None:
    await conn.execute(
        """
        INSERT INTO room_bans (performer_id, user_id, banned_by, reason, expires_at)
        VALUES (%(performer_id)s, %(user_id)s, %(banned_by)s, %(reason)s, %(expires_at)s)
        ON CONFLICT (performer_id, user_id) DO UPDATE
        SET banned_by = EXCLUDED.banned_by, reason = EXCLUDED.reason,
            expires_at = EXCLUDED.expires_at, created_at = now()
        """,
        {
            "performer_id": performer_id,
            "user_id": user_id,
            "banned_by": banned_by,
            "reason": reason,
            "expires_at": expires_at,
        },
    )


async def is_banned(conn: Conn, *, performer_id: int, user_id: int) -> bool:
    cur = await conn.execute(
        """
        SELECT 1 FROM room_bans
        WHERE performer_id = %(performer_id)s AND user_id = %(user_id)s
          AND (expires_at IS NULL OR expires_at > now())
        """,
        {"performer_id": performer_id, "user_id": user_id},
    )
    return await cur.fetchone() is not None


@dataclass
class TipMenuItemRow:
    position: int
    label: str
    tokens: int


async def tip_menu(conn: Conn, performer_id: int) -> list[TipMenuItemRow]:
    async with conn.cursor(row_factory=class_row(TipMenuItemRow)) as cur:
        await cur.execute(
            """
            SELECT position, label, tokens FROM tip_menu_items
            WHERE performer_id = %(performer_id)s
            ORDER BY position
            """,
            {"performer_id": performer_id},
        )
        return await cur.fetchall()


async def replace_tip_menu(
    conn: Conn, performer_id: int, items: list[tuple[str, int]]
) -> list[TipMenuItemRow]:
    """Swap the performer's whole menu for these (label, tokens) items, in this order."""
    await conn.execute(
        "DELETE FROM tip_menu_items WHERE performer_id = %(performer_id)s",
        {"performer_id": performer_id},
    )
    async with conn.cursor(row_factory=class_row(TipMenuItemRow)) as cur:
        await cur.execute(
            """
            INSERT INTO tip_menu_items (performer_id, position, label, tokens)
            SELECT %(performer_id)s, item.ord - 1, item.label, item.tokens
            FROM unnest(%(labels)s::text[], %(tokens)s::bigint[])
                 WITH ORDINALITY AS item (label, tokens, ord)
            RETURNING position, label, tokens
            """,
            {
                "performer_id": performer_id,
                "labels": [label for label, _ in items],
                "tokens": [tokens for _, tokens in items],
            },
        )
        rows = await cur.fetchall()
    return sorted(rows, key=lambda r: r.position)
