"""How well a live stream's media reaches Janus, from Janus's own ``slowlink`` events.

Janus sends ``slowlink`` on a handle when, within a second, more packets went missing than its
``slowlink_threshold`` (janus.jcfg): on the performer's (publisher's) handle with
``uplink: false`` it is not receiving all of the performer's packets — every viewer sees the
stream stutter. The socket holding that handle records each event here, in Valkey, so every
app process, the API's stream listing and ``tipctl streams`` see the same state: a stream is
``degraded`` while Janus reported a slow link within the last ``[rooms]
slowlink_window_seconds``, and ``good`` again once that long passes without one (the key
expires on its own; nothing needs to clear it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from valkey.asyncio import Valkey

from tipstream import kv as kvmod
from tipstream.config import Settings

Health = Literal["good", "degraded"]


@dataclass(frozen=True)
class LinkHealth:
    health: Health = "good"
    # Slow-link events and the packets Janus said were lost in them, within the window.
    slow_links: int = 0
    lost_packets: int = 0


GOOD = LinkHealth()


def link_key(settings: Settings, stream_id: int) -> str:
    """Hash: events, lost, last_at (unix seconds); expires a window after the last event."""
    return kvmod.key(settings, "room", stream_id, "link")


async def record_slowlink(kv: Valkey, settings: Settings, stream_id: int, *, lost: int) -> bool:
    """Count one slowlink of the publisher's media; True when it turned the stream degraded."""
    key = link_key(settings, stream_id)
    async with kv.pipeline(transaction=True) as pipe:
        pipe.hincrby(key, "events", 1)
        pipe.hincrby(key, "lost", max(lost, 0))
        pipe.hset(key, "last_at", round(time.time(), 3))
        pipe.expire(key, settings.rooms.slowlink_window_seconds)
        events, *_ = await pipe.execute()
    return int(events) == 1


async def link_health(
    kv: Valkey, settings: Settings, stream_ids: list[int]
) -> dict[int, LinkHealth]:
    """Each stream's link health (``good`` when Janus reported nothing lately)."""
    if not stream_ids:
        return {}
    async with kv.pipeline(transaction=False) as pipe:
        for stream_id in stream_ids:
            pipe.hmget(link_key(settings, stream_id), ["events", "lost"])
        replies = await pipe.execute()
    health: dict[int, LinkHealth] = {}
    for stream_id, (events, lost) in zip(stream_ids, replies, strict=True):
        if events is None:
            health[stream_id] = GOOD
        else:
            health[stream_id] = LinkHealth("degraded", int(events), int(lost or 0))
    return health
