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
