"""KYC's background work: once a day, expire verifications whose document has expired and
purge (crypto-shred) what is past its retention period."""

from __future__ import annotations

import asyncio

import dramatiq
import structlog

from tipstream import db
from tipstream.kyc import service
from tipstream.workers import broker

log = structlog.get_logger("tipstream.kyc")

RETENTION_EVERY_SECONDS = 24 * 3600
# 03:30 UTC, out of the busy hours.
RETENTION_OFFSET_SECONDS = 3 * 3600 + 30 * 60


async def _retention() -> tuple[int, int]:
    settings = broker.settings()
    async with db.connect(settings) as conn:
        expired = await service.expire_documents(conn)
        purged = await service.purge(conn, settings)
    log.info(
        "kyc_retention",
        expired=len(expired),
        purged=len(purged.submissions),
        shredded=purged.objects_shredded,
        failed=purged.failed,
    )
    return len(expired), len(purged.submissions)


@dramatiq.actor(queue_name="kyc", max_retries=3, time_limit=3_600_000)
def retention() -> None:
    """Expire lapsed verifications and purge KYC records past their retention."""
    asyncio.run(_retention())
