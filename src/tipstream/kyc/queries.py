"""SQL for KYC: the per-user summary row (kyc) and the submissions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from tipstream.db import Conn
from tipstream.errors import NotFound


class SubmissionNotFound(NotFound):
    title = "KYC submission not found"


@dataclass
class KycRow:
    user_id: int
    status: str
    reviewed_by: int | None
    reviewed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    submission_id: int | None
    reason: str | None
    document_expires_on: date | None


@dataclass
class SubmissionRow:
    id: int
    user_id: int
    status: str
    country: str
    document_type: str
    document_expires_on: date
    document_index: str
    form_object: UUID | None
    front_object: UUID | None
    back_object: UUID | None
    selfie_object: UUID | None
    agreement_version: str
    agreement_accepted_at: datetime
    flags: list[str]
    checks: dict[str, Any]
    submitted_at: datetime
    decided_at: datetime | None
    decided_by: int | None
    decision_reason: str | None
    purged_at: datetime | None

    @property
    def image_objects(self) -> dict[str, UUID]:
        found = {"front": self.front_object, "back": self.back_object, "selfie": self.selfie_object}
        return {name: oid for name, oid in found.items() if oid is not None}

    @property
    def objects(self) -> list[UUID]:
        return [o for o in (self.form_object, *self.image_objects.values()) if o is not None]


async def kyc_of(conn: Conn, user_id: int, *, for_update: bool = False) -> KycRow | None:
    lock = " FOR UPDATE" if for_update else ""
    async with conn.cursor(row_factory=class_row(KycRow)) as cur:
        await cur.execute("SELECT * FROM kyc WHERE user_id = %(id)s" + lock, {"id": user_id})
        return await cur.fetchone()


async def ensure_kyc_row(conn: Conn, user_id: int) -> KycRow:
    """The user's kyc row, created as not_started if missing, locked for this transaction."""
    await conn.execute(
        "INSERT INTO kyc (user_id) VALUES (%(id)s) ON CONFLICT (user_id) DO NOTHING",
        {"id": user_id},
    )
    row = await kyc_of(conn, user_id, for_update=True)
    assert row is not None
    return row


async def set_kyc_state(
    conn: Conn,
    user_id: int,
    *,
    status: str,
    submission_id: int | None,
    reason: str | None,
    reviewed_by: int | None,
    document_expires_on: date | None,
    reviewed: bool,
) -> KycRow:
    async with conn.cursor(row_factory=class_row(KycRow)) as cur:
        await cur.execute(
            """
            UPDATE kyc SET status = %(status)s, submission_id = %(sub)s, reason = %(reason)s,
                   reviewed_by = %(by)s,
                   reviewed_at = CASE WHEN %(reviewed)s THEN now() END,
                   document_expires_on = %(expires)s, updated_at = now()
            WHERE user_id = %(user)s
            RETURNING *
            """,
            {
                "status": status,
                "sub": submission_id,
                "reason": reason,
                "by": reviewed_by,
                "reviewed": reviewed,
                "expires": document_expires_on,
                "user": user_id,
            },
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def insert_submission(
    conn: Conn,
    *,
    user_id: int,
    status: str,
    country: str,
    document_type: str,
    document_expires_on: date,
    document_index: str,
    form_object: UUID | None,
    front_object: UUID | None,
    back_object: UUID | None,
    selfie_object: UUID | None,
    agreement_version: str,
    agreement_accepted_at: datetime,
    flags: list[str],
    checks: dict[str, Any],
    decision_reason: str | None,
) -> SubmissionRow:
    async with conn.cursor(row_factory=class_row(SubmissionRow)) as cur:
        await cur.execute(
            """
            INSERT INTO kyc_submissions (
                user_id, status, country, document_type, document_expires_on, document_index,
                form_object, front_object, back_object, selfie_object, agreement_version,
                agreement_accepted_at, flags, checks, decision_reason, decided_at)
            VALUES (
                %(user)s, %(status)s, %(country)s, %(type)s, %(expires)s, %(index)s,
                %(form)s, %(front)s, %(back)s, %(selfie)s, %(agreement)s,
                %(accepted)s, %(flags)s, %(checks)s, %(reason)s,
                CASE WHEN %(status)s <> 'submitted' THEN now() END)
            RETURNING *
            """,
            {
                "user": user_id,
                "status": status,
                "country": country,
                "type": document_type,
                "expires": document_expires_on,
                "index": document_index,
                "form": form_object,
                "front": front_object,
                "back": back_object,
                "selfie": selfie_object,
                "agreement": agreement_version,
                "accepted": agreement_accepted_at,
                "flags": flags,
                "checks": Jsonb(checks),
                "reason": decision_reason,
            },
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def get_submission(
    conn: Conn, submission_id: int, *, for_update: bool = False
) -> SubmissionRow:
    lock = " FOR UPDATE" if for_update else ""
    async with conn.cursor(row_factory=class_row(SubmissionRow)) as cur:
        await cur.execute(
            "SELECT * FROM kyc_submissions WHERE id = %(id)s" + lock, {"id": submission_id}
        )
        row = await cur.fetchone()
    if row is None:
        raise SubmissionNotFound(f"no KYC submission {submission_id}")
    return row


async def list_submissions(
    conn: Conn, *, status: str | None, user_id: int | None, limit: int, after_id: int
) -> list[SubmissionRow]:
    """Oldest first: the queue is worked in the order people applied."""
    async with conn.cursor(row_factory=class_row(SubmissionRow)) as cur:
        await cur.execute(
            """
            SELECT * FROM kyc_submissions
            WHERE (%(status)s::text IS NULL OR status = %(status)s)
              AND (%(user)s::bigint IS NULL OR user_id = %(user)s)
              AND id > %(after)s
            ORDER BY id
            LIMIT %(limit)s
            """,
            {"status": status, "user": user_id, "limit": limit, "after": after_id},
        )
        return await cur.fetchall()


async def users_with_document(conn: Conn, document_index: str, *, except_user: int) -> list[int]:
    cur = await conn.execute(
        """
        SELECT DISTINCT user_id FROM kyc_submissions
        WHERE document_index = %(index)s AND user_id <> %(user)s AND purged_at IS NULL
        ORDER BY user_id
        """,
        {"index": document_index, "user": except_user},
    )
    return [int(str(row["user_id"])) for row in await cur.fetchall()]


async def decide_submission(
    conn: Conn, submission_id: int, *, status: str, decided_by: int | None, reason: str | None
) -> SubmissionRow:
    async with conn.cursor(row_factory=class_row(SubmissionRow)) as cur:
        await cur.execute(
            """
            UPDATE kyc_submissions
            SET status = %(status)s, decided_by = %(by)s, decided_at = now(),
                decision_reason = %(reason)s
            WHERE id = %(id)s
            RETURNING *
            """,
            {"id": submission_id, "status": status, "by": decided_by, "reason": reason},
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def update_checks(
    conn: Conn, submission_id: int, *, flags: list[str], checks: dict[str, Any]
) -> None:
    await conn.execute(
        "UPDATE kyc_submissions SET flags = %(flags)s, checks = %(checks)s WHERE id = %(id)s",
        {"id": submission_id, "flags": flags, "checks": Jsonb(checks)},
    )


async def purgeable_submissions(
    conn: Conn, *, rejected_days: int, closed_days: int, limit: int
) -> list[SubmissionRow]:
    """Rejected (or sent back and superseded) submissions past their retention, and every
    submission of an account closed (disabled) longer than the closed-account retention."""
    async with conn.cursor(row_factory=class_row(SubmissionRow)) as cur:
        await cur.execute(
            """
            SELECT s.* FROM kyc_submissions s JOIN users u ON u.id = s.user_id
            WHERE s.purged_at IS NULL AND (
                (s.status IN ('rejected', 'needs_resubmission')
                 AND s.decided_at < now() - make_interval(days => %(rejected)s))
                OR (u.disabled_at IS NOT NULL
                    AND u.disabled_at < now() - make_interval(days => %(closed)s)))
            ORDER BY s.id
            LIMIT %(limit)s
            """,
            {"rejected": rejected_days, "closed": closed_days, "limit": limit},
        )
        return await cur.fetchall()


async def mark_purged(conn: Conn, submission_id: int) -> None:
    await conn.execute(
        """
        UPDATE kyc_submissions SET purged_at = now() WHERE id = %(id)s
        """,
        {"id": submission_id},
    )


async def user_email(conn: Conn, user_id: int) -> str:
    cur = await conn.execute("SELECT email FROM users WHERE id = %(id)s", {"id": user_id})
    row = await cur.fetchone()
    return "" if row is None else str(row["email"])


async def expire_documents(conn: Conn) -> list[int]:
    """Approved verifications whose document has expired become 'expired'; their user ids."""
    cur = await conn.execute(
        """
        UPDATE kyc SET status = 'expired', updated_at = now()
        WHERE status = 'approved' AND document_expires_on < current_date
        RETURNING user_id
        """
    )
    return [int(str(row["user_id"])) for row in await cur.fetchall()]


async def submissions_of_user(conn: Conn, user_id: int) -> list[SubmissionRow]:
    async with conn.cursor(row_factory=class_row(SubmissionRow)) as cur:
        await cur.execute(
            "SELECT * FROM kyc_submissions WHERE user_id = %(user)s ORDER BY id", {"user": user_id}
        )
        return await cur.fetchall()
