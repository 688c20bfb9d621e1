"""Chat and moderation in a room, on Valkey: rate limits, slow mode, mutes, history, and
publishing to the room channel with a per-room sequence number.

A message gets its id, joins the history and is published in one Lua script, so ids grow in
exactly the order every subscriber (on every process) receives the messages.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec
from valkey.asyncio import Valkey

from tipstream import kv as kvmod
from tipstream.config import Settings
from tipstream.errors import InvalidInput, TooManyRequests

# KEYS: sequence, history, channel. ARGV: JSON before the id, JSON after it, history size.
PUBLISH_WITH_ID = """
local id = redis.call('INCR', KEYS[1])
local message = ARGV[1] .. id .. ARGV[2]
redis.call('RPUSH', KEYS[2], message)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('PUBLISH', KEYS[3], message)
return id
"""

CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class Muted(TooManyRequests):
    status, slug, title = 403, "muted", "You are muted in this room"


class SlowMode(TooManyRequests):
    slug, title = "slow-mode", "Slow mode is on"


def _key(settings: Settings, stream_id: int, *parts: str | int) -> str:
    return kvmod.key(settings, "room", stream_id, *parts)


def clean_text(settings: Settings, text: str) -> str:
    text = CONTROL_CHARS.sub("", text).strip()
    if not text:
        raise InvalidInput("a chat message needs some text")
    if len(text) > settings.rooms.chat_max_length:
        raise InvalidInput(f"chat messages are at most {settings.rooms.chat_max_length} characters")
    for code, emote in settings.rooms.emotes.items():
        text = text.replace(code, emote)
    return text


async def check_may_chat(kv: Valkey, settings: Settings, stream_id: int, user_id: int) -> None:
    """Mute, slow mode and the per-user rate limit; raises the Problem that says which."""
    muted_ttl = await kv.ttl(_key(settings, stream_id, "muted", user_id))
    if muted_ttl and muted_ttl > 0:
        raise Muted(f"muted for {muted_ttl} more seconds", extra={"retry_after": muted_ttl})
    slow = await kv.get(_key(settings, stream_id, "slow"))
    if slow:
        seconds = int(slow)
        fresh = await kv.set(_key(settings, stream_id, "slow", user_id), 1, nx=True, ex=seconds)
        if not fresh:
            raise SlowMode(f"slow mode: one message every {seconds} s")
    rooms = settings.rooms
    window = int(time.time()) // rooms.chat_rate_window_seconds
    rate_key = _key(settings, stream_id, "rate", user_id, window)
    async with kv.pipeline(transaction=True) as pipe:
        pipe.incr(rate_key)
        pipe.expire(rate_key, rooms.chat_rate_window_seconds * 2)
        count, _ = await pipe.execute()
    if int(count) > rooms.chat_rate_messages:
        raise TooManyRequests(
            f"at most {rooms.chat_rate_messages} messages per {rooms.chat_rate_window_seconds} s"
        )


async def publish_sequenced(
    kv: Valkey, settings: Settings, stream_id: int, event: dict[str, Any]
) -> int:
    """Publish an event with the room's next id as "id" (first field) and keep it in the
    history; returns the id."""
    body = msgspec.json.encode(event).decode()
    before = '{"id":'
    after = "," + body[1:] if body != "{}" else "}"
    script = kv.register_script(PUBLISH_WITH_ID)
    keys = [
        _key(settings, stream_id, "seq"),
        _key(settings, stream_id, "history"),
        _key(settings, stream_id),
    ]
    return int(await script(keys=keys, args=[before, after, settings.rooms.chat_history]))


async def history(kv: Valkey, settings: Settings, stream_id: int) -> list[str]:
    """The last messages, oldest first, minus deleted ones (as the JSON they were sent as)."""
    raw = await kv.lrange(_key(settings, stream_id, "history"), 0, -1)
    deleted = {int(d) for d in await kv.smembers(_key(settings, stream_id, "deleted"))}
    messages = []
    for item in raw:
        text = item.decode() if isinstance(item, bytes) else str(item)
        if deleted:
            message_id = msgspec.json.decode(text, type=dict[str, Any]).get("id")
            if message_id in deleted:
                continue
        messages.append(text)
    return messages


async def mark_deleted(kv: Valkey, settings: Settings, stream_id: int, message_id: int) -> None:
    key = _key(settings, stream_id, "deleted")
    await kv.sadd(key, message_id)
    await kv.expire(key, 7 * 24 * 3600)


async def mute(kv: Valkey, settings: Settings, stream_id: int, user_id: int, seconds: int) -> None:
    await kv.set(_key(settings, stream_id, "muted", user_id), 1, ex=seconds)


async def set_slow_mode(kv: Valkey, settings: Settings, stream_id: int, seconds: int) -> None:
    key = _key(settings, stream_id, "slow")
    if seconds <= 0:
        await kv.delete(key)
    else:
        await kv.set(key, seconds, ex=7 * 24 * 3600)
