"""For other domains' tests: a performer whose identity is verified, as a reviewer's approval
leaves it (the kyc row 'approved'), without going through the document upload each time."""

from __future__ import annotations

from datetime import date

from tipstream import db as tsdb
from tipstream.config import Settings
from tipstream.db import Conn


async def approve_kyc(conn: Conn, user_id: int, *, expires: date | None = None) -> None:
    await conn.execute(
        """
        INSERT INTO kyc (user_id, status, reviewed_at, document_expires_on)
        VALUES (%(user)s, 'approved', now(), %(expires)s)
        ON CONFLICT (user_id) DO UPDATE
        SET status = 'approved', reviewed_at = now(), reason = NULL,
            document_expires_on = EXCLUDED.document_expires_on, updated_at = now()
        """,
        {"user": user_id, "expires": expires},
    )


async def approve_kyc_in(settings: Settings, user_id: int) -> None:
    """The same through a connection of its own (for helpers that hold no connection)."""
    async with tsdb.connect(settings) as conn:
        await approve_kyc(conn, user_id)
