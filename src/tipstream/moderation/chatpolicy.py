"""Chat screening: every message is scored before it is published to the room, and the room's
policy decides what happens to one scored toxic (at or above moderation.chat_threshold):

- allow: published unchanged (it still counts against its sender);
- mask:  published with its offending words starred (the whole text when no single word is);
- hold:  not published; kept, with evidence, in the review queue (a moderator may release it);
- block: not published.

A sender with offences_before_mute toxic messages within offence_window_seconds is muted in the
room for auto_mute_seconds (the room is told, and the review queue gets a case).
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from valkey.asyncio import Valkey

from tipstream import kv as kvmod
from tipstream.config import ChatPolicy, Settings
from tipstream.db import Pool
from tipstream.errors import Problem
from tipstream.moderation import classifier, service
from tipstream.rooms import chat as room_chat
from tipstream.rooms import service as rooms
from tipstream.rooms.queries import StreamRow

log = structlog.get_logger("tipstream.moderation.chat")


@dataclass(frozen=True)
class Verdict:
    """What to do with a message: publish `text` (None: publish nothing)."""

    action: str  # "clean" or the policy applied
    text: str | None
    score: float
    muted_seconds: int | None = None


def policy_for(settings: Settings, stream: StreamRow) -> ChatPolicy:
    moderation = settings.moderation
    return moderation.chat_policy_by_room.get(str(stream.performer_id), moderation.chat_policy)


async def _count_offence(kv: Valkey, settings: Settings, stream_id: int, user_id: int) -> int:
    key = kvmod.key(settings, "moderation", "offences", stream_id, user_id)
    async with kv.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, settings.moderation.offence_window_seconds, nx=True)
        count, _ = await pipe.execute()
    return int(count)


async def screen(
    pool: Pool, kv: Valkey, settings: Settings, stream: StreamRow, user_id: int, text: str
) -> Verdict:
    """Score a chat message and apply the room's policy (see the module docstring)."""
    moderation = settings.moderation
    score = await classifier.score(text)
    if score < moderation.chat_threshold:
        return Verdict("clean", text, score)
    policy = policy_for(settings, stream)
    published: str | None = None
    if policy == "allow":
        published = text
    elif policy == "mask":
        published = await classifier.mask(text, moderation.chat_threshold)
        if published == text:
            published = classifier.WORD.sub(lambda m: "*" * len(m.group()), text)
    elif policy == "hold":
        await _flag(pool, kv, settings, stream, user_id, text, score, "held")
    muted = None
    offences = await _count_offence(kv, settings, stream.id, user_id)
    if offences >= moderation.offences_before_mute:
        muted = moderation.auto_mute_seconds
        await room_chat.mute(kv, settings, stream.id, user_id, muted)
        await rooms.publish_room_event(
            kv, settings, stream.id, {"type": "muted", "user_id": user_id, "seconds": muted}
        )
        await kv.delete(kvmod.key(settings, "moderation", "offences", stream.id, user_id))
        reason = f"auto-muted after {offences} toxic messages"
        await _flag(pool, kv, settings, stream, user_id, text, score, reason)
    return Verdict(policy, published, score, muted)


async def _flag(
    pool: Pool,
    kv: Valkey,
    settings: Settings,
    stream: StreamRow,
    user_id: int,
    text: str,
    score: float,
    reason: str,
) -> None:
    try:
        async with pool.connection() as conn:
            await service.flag_chat(
                conn, kv, settings, stream, user_id=user_id, text=text, score=score, reason=reason
            )
    except Problem:
        # No vault keys: the policy still applies, the queue just misses this flag.
        log.warning("chat_flag_not_recorded", stream=stream.id, user=user_id, reason=reason)
