"""SQL for the review queue (cases), moderators' actions and notifications."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.rows import class_row

from tipstream.db import Conn
from tipstream.errors import NotFound


class CaseNotFound(NotFound):
    title = "Moderation case not found"


@dataclass
class CaseRow:
    id: int
    source: str
    target_type: str
    severity: int
    status: str
    stream_id: int | None
    message_id: int | None
    subject_user_id: int | None
    reporter_id: int | None
    reason: str
    score: float | None
    evidence_id: UUID | None
    evidence_sha256: bytes | None
    resolution: str | None
    resolved_by: int | None
    resolved_at: datetime | None
    created_at: datetime


@dataclass
class ActionRow:
    id: int
    case_id: int
    action: str
    actor_id: int | None
    note: str | None
    created_at: datetime


@dataclass
class NotificationRow:
    id: int
    user_id: int
    kind: str
    body: str
    case_id: int | None
    created_at: datetime
    read_at: datetime | None


CASE_COLUMNS = """
    id, source, target_type, severity, status, stream_id, message_id, subject_user_id,
    reporter_id, reason, score, evidence_id, evidence_sha256, resolution, resolved_by,
    resolved_at, created_at
"""


async def insert_case(conn: Conn, **fields: Any) -> CaseRow:
    """fields: source, target_type, severity, stream_id, message_id, subject_user_id,
    reporter_id, reason, score, evidence_id, evidence_sha256."""
    async with conn.cursor(row_factory=class_row(CaseRow)) as cur:
        await cur.execute(
            f"""
            INSERT INTO moderation_cases
                   (source, target_type, severity, stream_id, message_id, subject_user_id,
                    reporter_id, reason, score, evidence_id, evidence_sha256)
            VALUES (%(source)s, %(target_type)s, %(severity)s, %(stream_id)s, %(message_id)s,
                    %(subject_user_id)s, %(reporter_id)s, %(reason)s, %(score)s,
                    %(evidence_id)s, %(evidence_sha256)s)
            RETURNING {CASE_COLUMNS}
            """,
            fields,
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def get_case(conn: Conn, case_id: int, *, for_update: bool = False) -> CaseRow:
    lock = "FOR UPDATE" if for_update else ""
    async with conn.cursor(row_factory=class_row(CaseRow)) as cur:
        await cur.execute(
            f"SELECT {CASE_COLUMNS} FROM moderation_cases WHERE id = %(id)s {lock}",
            {"id": case_id},
        )
        row = await cur.fetchone()
    if row is None:
        raise CaseNotFound(f"no moderation case {case_id}")
    return row


async def queue(conn: Conn, *, statuses: list[str], limit: int) -> list[CaseRow]:
    """Cases in these statuses, most severe first, then oldest first."""
    async with conn.cursor(row_factory=class_row(CaseRow)) as cur:
        await cur.execute(
            f"""
            SELECT {CASE_COLUMNS} FROM moderation_cases
             WHERE status = ANY(%(statuses)s)
             ORDER BY severity DESC, created_at, id
             LIMIT %(limit)s
            """,
            {"statuses": statuses, "limit": limit},
        )
        return await cur.fetchall()


async def resolve_case(
    conn: Conn, case_id: int, *, status: str, resolution: str, resolved_by: int | None
) -> CaseRow:
    async with conn.cursor(row_factory=class_row(CaseRow)) as cur:
        await cur.execute(
            f"""
            UPDATE moderation_cases
               SET status = %(status)s, resolution = %(resolution)s,
                   resolved_by = %(resolved_by)s,
                   resolved_at = CASE WHEN %(status)s = 'closed' THEN now() END
             WHERE id = %(id)s
            RETURNING {CASE_COLUMNS}
            """,
            {"id": case_id, "status": status, "resolution": resolution, "resolved_by": resolved_by},
        )
        row = await cur.fetchone()
    if row is None:
        raise CaseNotFound(f"no moderation case {case_id}")
    return row


async def insert_action(
    conn: Conn, *, case_id: int, action: str, actor_id: int | None, note: str | None
) -> ActionRow:
    async with conn.cursor(row_factory=class_row(ActionRow)) as cur:
        await cur.execute(
            """
            INSERT INTO moderation_actions (case_id, action, actor_id, note)
            VALUES (%(case_id)s, %(action)s, %(actor_id)s, %(note)s)
            RETURNING id, case_id, action, actor_id, note, created_at
            """,
            {"case_id": case_id, "action": action, "actor_id": actor_id, "note": note},
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def actions_of(conn: Conn, case_id: int) -> list[ActionRow]:
    async with conn.cursor(row_factory=class_row(ActionRow)) as cur:
        await cur.execute(
            """
            SELECT id, case_id, action, actor_id, note, created_at
              FROM moderation_actions WHERE case_id = %(case_id)s ORDER BY id
            """,
            {"case_id": case_id},
        )
        return await cur.fetchall()


async def insert_notification(
    conn: Conn, *, user_id: int, kind: str, body: str, case_id: int | None
) -> NotificationRow:
    async with conn.cursor(row_factory=class_row(NotificationRow)) as cur:
        await cur.execute(
            """
            INSERT INTO notifications (user_id, kind, body, case_id)
            VALUES (%(user_id)s, %(kind)s, %(body)s, %(case_id)s)
            RETURNING id, user_id, kind, body, case_id, created_at, read_at
            """,
            {"user_id": user_id, "kind": kind, "body": body, "case_id": case_id},
        )
        row = await cur.fetchone()
    assert row is not None
    return row


async def notifications_of(conn: Conn, user_id: int, *, limit: int) -> list[NotificationRow]:
    async with conn.cursor(row_factory=class_row(NotificationRow)) as cur:
        await cur.execute(
            """
            SELECT id, user_id, kind, body, case_id, created_at, read_at
              FROM notifications WHERE user_id = %(user_id)s
             ORDER BY id DESC LIMIT %(limit)s
            """,
            {"user_id": user_id, "limit": limit},
        )
        return await cur.fetchall()


async def set_stream_hidden(conn: Conn, stream_id: int, *, reason: str | None) -> bool:
    """Hide a stream from the listings (reason given) or list it again (None); whether the
    stream exists. A stream hidden already keeps the time it was first hidden."""
    cur = await conn.execute(
        """
        UPDATE streams
           SET hidden_at = CASE WHEN %(reason)s::text IS NOT NULL
                                THEN coalesce(hidden_at, now()) END,
               hidden_reason = %(reason)s::text
         WHERE id = %(id)s
        RETURNING id
        """,
        {"id": stream_id, "reason": reason[:500] if reason else None},
    )
    return await cur.fetchone() is not None
