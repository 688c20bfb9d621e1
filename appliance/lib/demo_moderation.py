"""Demo data for the one-box runner: one item in the moderation queue, so a moderator's first
look at it is not empty — the demo viewer's report of the demo performer, made through the
moderation service as a real report is (its evidence sealed in the vault). Idempotent: once the
viewer has reported the performer, nothing more is added.

Usage: demo_moderation.py VIEWER_EMAIL PERFORMER_EMAIL  (TIPSTREAM_CONFIG names the config).
Exit 0 done, 3 nothing to do.
"""

from __future__ import annotations

import asyncio
import sys

from tipstream import db, kv
from tipstream.accounts import queries as account_queries
from tipstream.accounts import service as accounts
from tipstream.config import load_settings
from tipstream.moderation import service as moderation
from tipstream.moderation.schemas import ReportRequest

REASON = "Demo report: asks viewers for payment details in chat (seeded by appliance/up)"


async def main(viewer_email: str, performer_email: str) -> int:
    settings = load_settings()
    client = kv.create_client(settings)
    try:
        async with db.connect(settings) as conn:
            viewer = await accounts.find_user(conn, viewer_email)
            performer = await accounts.find_user(conn, performer_email)
            cur = await conn.execute(
                "SELECT 1 FROM moderation_cases WHERE reporter_id = %s AND subject_user_id = %s",
                (viewer.id, performer.id),
            )
            if await cur.fetchone() is not None:
                return 3
            reporter = await account_queries.user_by_id(conn, viewer.id)
            request = ReportRequest(target="user", reason=REASON, user_id=performer.id)
            await moderation.report(conn, client, settings, reporter, request, ip=None)
    finally:
        await client.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
