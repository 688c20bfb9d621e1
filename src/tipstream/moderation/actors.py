"""Moderation's background work: the Detoxify tier re-scores published chat messages.

Imported by `tipctl run worker` (after the broker is set up). With the tier configured, a
missing or unusable checkpoint or config stops the worker at start with the reason, rather
than failing every message later; the model itself loads in the background meanwhile, so the
first message does not wait for it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import dramatiq
import structlog

from tipstream import db, kv
from tipstream.moderation import chatpolicy, detox
from tipstream.workers import broker

log = structlog.get_logger("tipstream.moderation.actors")


async def _rescore(stream_id: int, message: dict[str, Any]) -> chatpolicy.Rescored:
    settings = broker.settings()
    client = kv.create_client(settings)
    try:
        async with db.connect(settings) as conn:
            return await chatpolicy.rescore(conn, client, settings, stream_id, message)
    finally:
        await client.aclose()


@dramatiq.actor(
    actor_name=chatpolicy.RESCORE_ACTOR,
    queue_name=chatpolicy.RESCORE_QUEUE,
    max_retries=3,
    time_limit=120_000,
)
def rescore_message(stream_id: int, message: dict[str, Any]) -> None:
    """Score one published chat message with Detoxify; apply the room's policy if toxic."""
    asyncio.run(_rescore(stream_id, message))


def _warm() -> None:
    try:
        detox.scorer(broker.settings())
        log.info("detoxify_loaded")
    except detox.DetoxifyUnavailable as exc:
        log.warning("detoxify_unavailable", error=str(exc))


_paths = detox.configured(broker.settings())
if _paths is not None:
    detox.check_files(_paths)
    detox.require_extra()
    threading.Thread(target=_warm, name="warm-detoxify", daemon=True).start()
