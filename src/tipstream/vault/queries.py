"""SQL for the vault's object rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from psycopg.rows import class_row

from tipstream.db import Conn


class ObjectNotFound(Exception):
    """No vault object with this id."""


@dataclass
class ObjectRow:
    id: UUID
    owner_id: int | None
    kind: str
    content_type: str
    size: int
    kek_id: str | None
    wrapped_key: bytes | None
    created_at: datetime
    rewrapped_at: datetime | None
    shredded_at: datetime | None


async def insert_object(
    conn: Conn,
    *,
    object_id: UUID,
    owner_id: int | None,
    kind: str,
    content_type: str,
    size: int,
    kek_id: str,
    wrapped_key: bytes,
) -> ObjectRow:
    async with conn.cursor(row_factory=class_row(ObjectRow)) as cur:
        await cur.execute(
            """
            INSERT INTO vault_objects (id, owner_id, kind, content_type, size, kek_id, wrapped_key)
            VALUES (%(id)s, %(owner)s, %(kind)s, %(ct)s, %(size)s, %(kek)s, %(wrapped)s)
            RETURNING *
            """,
            {
                "id": object_id,
                "owner": owner_id,
                "kind": kind,
                "ct": content_type,
                "size": size,
                "kek": kek_id,
                "wrapped": wrapped_key,
            },
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def get_object(conn: Conn, object_id: UUID, *, for_update: bool = False) -> ObjectRow:
    lock = " FOR UPDATE" if for_update else ""
    async with conn.cursor(row_factory=class_row(ObjectRow)) as cur:
        await cur.execute("SELECT * FROM vault_objects WHERE id = %(id)s" + lock, {"id": object_id})
        row = await cur.fetchone()
    if row is None:
        raise ObjectNotFound(str(object_id))
    return row


async def shred_object(conn: Conn, object_id: UUID) -> ObjectRow | None:
    """Destroy the wrapped data key; None when it was already shredded."""
    async with conn.cursor(row_factory=class_row(ObjectRow)) as cur:
        await cur.execute(
            """
            UPDATE vault_objects SET wrapped_key = NULL, kek_id = NULL, shredded_at = now()
            WHERE id = %(id)s AND wrapped_key IS NOT NULL
            RETURNING *
            """,
            {"id": object_id},
        )
        return await cur.fetchone()


async def objects_not_wrapped_by(conn: Conn, kek_id: str, *, limit: int) -> list[ObjectRow]:
    """A batch of live objects wrapped by another key, locked; others' locked rows are skipped
    so two rotations never fight over one row."""
    async with conn.cursor(row_factory=class_row(ObjectRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM vault_objects
            WHERE wrapped_key IS NOT NULL AND kek_id <> %(kek)s
            ORDER BY id
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
            """,
            {"kek": kek_id, "limit": limit},
        )
        return await cur.fetchall()


async def count_by_key(conn: Conn) -> dict[str, int]:
    cur = await conn.execute(
        """
        SELECT kek_id, count(*) AS n FROM vault_objects
        WHERE wrapped_key IS NOT NULL GROUP BY kek_id
        """
    )
    return {str(row["kek_id"]): int(str(row["n"])) for row in await cur.fetchall()}


async def set_wrapped_key(conn: Conn, object_id: UUID, kek_id: str, wrapped_key: bytes) -> None:
    await conn.execute(
        """
        UPDATE vault_objects SET kek_id = %(kek)s, wrapped_key = %(wrapped)s, rewrapped_at = now()
        WHERE id = %(id)s AND wrapped_key IS NOT NULL
        """,
        {"id": object_id, "kek": kek_id, "wrapped": wrapped_key},
    )
