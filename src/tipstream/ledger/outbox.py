"""The transactional outbox: events are written in the transaction of the change they announce,
published to Valkey pub/sub right after commit, and republished by the relay when a crash left
them unpublished.

Delivery is at least once: a process killed between PUBLISH and marking the row published makes
the relay publish it again. Every event carries its id (tip_id), so subscribers can drop a
duplicate. The relay leaves rows younger than ``outbox_relay_grace_seconds`` to the request that
wrote them, so the two do not race in the normal case.
"""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from valkey.asyncio import Valkey

from tipstream.config import Settings
from tipstream.db import Conn
from tipstream.ledger import queries
from tipstream.ledger.schemas import TipEvent

log = structlog.get_logger("tipstream.ledger.outbox")

EVENT_TYPES: dict[str, type[msgspec.Struct]] = {"tip": TipEvent}


def encode_event(event_type: str, payload: dict[str, Any]) -> bytes:
    """The wire form: the event's Struct (validated), msgspec JSON."""
    struct_type = EVENT_TYPES.get(event_type)
    if struct_type is None:
        return msgspec.json.encode(payload)
    return msgspec.json.encode(msgspec.convert(payload, struct_type))


async def publish_now(
    conn: Conn,
    kv: Valkey,
    *,
    outbox_id: int,
    channel: str,
    event_type: str,
    payload: dict[str, Any],
) -> None:
    """Publish one freshly committed event and mark it. A failure is logged, not raised: the
    change is committed and the relay will publish the event."""
    try:
        await kv.publish(channel, encode_event(event_type, payload))
    except Exception as exc:  # Valkey down: the relay retries later
        log.warning("outbox_publish_failed", outbox_id=outbox_id, error=type(exc).__name__)
        return
    await queries.mark_published(conn, [outbox_id])


async def relay(
    conn: Conn,
    kv: Valkey,
    settings: Settings,
    *,
    batch: int = 500,
    grace_seconds: float | None = None,
    max_batches: int | None = None,
) -> int:
    """Publish every unpublished event older than the grace period; return how many."""
    grace = settings.ledger.outbox_relay_grace_seconds if grace_seconds is None else grace_seconds
    published = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        batches += 1
        async with conn.transaction():
            rows = await queries.claim_unpublished(conn, older_than_seconds=grace, limit=batch)
            if not rows:
                break
            for row in rows:
                await kv.publish(row.channel, encode_event(row.event_type, row.payload))
            await queries.mark_published(conn, [row.id for row in rows])
        published += len(rows)
        log.info("outbox_relayed", count=len(rows))
    return published
