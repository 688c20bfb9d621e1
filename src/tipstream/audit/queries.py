"""SQL for the audit log."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from tipstream.db import Conn

# Serializes appends so each row links to the one before it.
AUDIT_CHAIN_LOCK_KEY = 0x7469_7073_7472_6D02


@dataclass
class AuditRow:
    id: int
    at: datetime
    actor_id: int | None
    action: str
    target_type: str | None
    target_id: str | None
    ip: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str


async def lock_chain(conn: Conn) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_CHAIN_LOCK_KEY,))


async def last_hash(conn: Conn) -> str | None:
    cur = await conn.execute("SELECT hash FROM audit_logs ORDER BY id DESC LIMIT 1")
    row = await cur.fetchone()
    return None if row is None else str(row["hash"])


async def insert_entry(
    conn: Conn,
    *,
    at: datetime,
    actor_id: int | None,
    action: str,
    target_type: str | None,
    target_id: str | None,
    ip: str | None,
    details: dict[str, Any],
    prev_hash: str,
    hash: str,
) -> AuditRow:
    async with conn.cursor(row_factory=class_row(AuditRow)) as cur:
        await cur.execute(
            """
            INSERT INTO audit_logs
                (at, actor_id, action, target_type, target_id, ip, details, prev_hash, hash)
            VALUES
                (%(at)s, %(actor_id)s, %(action)s, %(target_type)s, %(target_id)s, %(ip)s,
                 %(details)s, %(prev_hash)s, %(hash)s)
            RETURNING *
            """,
            {
                "at": at,
                "actor_id": actor_id,
                "action": action,
                "target_type": target_type,
                "target_id": target_id,
                "ip": ip,
                "details": Jsonb(details),
                "prev_hash": prev_hash,
                "hash": hash,
            },
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def iter_entries(conn: Conn) -> AsyncGenerator[AuditRow, None]:
    """Every entry in chain order, streamed with a server-side cursor."""
    async with (
        conn.transaction(),
        conn.cursor(name="audit_verify", row_factory=class_row(AuditRow)) as cur,
    ):
        await cur.execute("SELECT * FROM audit_logs ORDER BY id")
        async for row in cur:
            yield row


async def recent_entries(
    conn: Conn, *, limit: int, actor_id: int | None = None, action: str | None = None
) -> list[AuditRow]:
    async with conn.cursor(row_factory=class_row(AuditRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM audit_logs
            WHERE (%(actor_id)s::bigint IS NULL OR actor_id = %(actor_id)s)
              AND (%(action)s::text IS NULL OR action = %(action)s)
            ORDER BY id DESC
            LIMIT %(limit)s
            """,
            {"actor_id": actor_id, "action": action, "limit": limit},
        )
        rows = await cur.fetchall()
    rows.reverse()
    return rows
