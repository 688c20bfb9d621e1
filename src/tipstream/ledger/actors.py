"""The ledger's background work: the outbox relay, every few seconds on some worker."""

from __future__ import annotations

import asyncio

import dramatiq

from tipstream import db, kv
from tipstream.ledger import outbox
from tipstream.workers import broker

RELAY_EVERY_SECONDS = 5


async def _relay() -> int:
    settings = broker.settings()
    client = kv.create_client(settings)
    try:
        async with db.connect(settings) as conn:
            return await outbox.relay(conn, client, settings)
    finally:
        await client.aclose()


@dramatiq.actor(queue_name="ledger", max_retries=0, time_limit=60_000)
def relay_outbox() -> None:
    """Publish outbox events a crash left unpublished (older than the grace period)."""
    asyncio.run(_relay())


# Monday 06:00 UTC: the Unix epoch began on a Thursday, four days before a Monday.
PAYOUT_BATCH_EVERY_SECONDS = 7 * 24 * 3600
PAYOUT_BATCH_OFFSET_SECONDS = 4 * 24 * 3600 + 6 * 3600


async def _payout_batch() -> tuple[int | None, int]:
    from tipstream.ledger import payouts

    settings = broker.settings()
    async with db.connect(settings) as conn:
        return await payouts.create_batch(conn, actor_id=None)


@dramatiq.actor(queue_name="ledger", max_retries=3, time_limit=300_000)
def payout_batch() -> None:
    """The weekly payout batch: every open request goes to finance for approval."""
    asyncio.run(_payout_batch())
