"""Chat screening: every message is scored before it is published to the room, and the room's
policy decides what happens to one scored toxic (at or above moderation.chat_threshold):

- allow: published unchanged (it still counts against its sender);
- mask:  published with its offending words starred (the whole text when no single word is);
- hold:  not published; kept, with evidence, in the review queue (a moderator may release it);
- block: not published.

A sender with offences_before_mute toxic messages within offence_window_seconds is muted in the
room for auto_mute_seconds (the room is told, and the review queue gets a case).

The optional Detoxify tier (moderation.detoxify_checkpoint) looks again, after the fact: each
published message is queued for a dramatiq worker, which scores it with the bigger model and,
at or above detoxify_threshold, applies the room's policy to what is already on screen:

- allow: the message stays; the review queue gets a case;
- mask, block: the message is deleted from the room (a "deleted" event, as a moderator's
  delete); the queue gets a case;
- hold: the message is deleted and held in the queue (a moderator may release it).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import structlog
from valkey.asyncio import Valkey

from tipstream import kv as kvmod
from tipstream.config import ChatPolicy, Settings
from tipstream.db import Conn, Pool
from tipstream.errors import Problem
from tipstream.moderation import classifier, detox, service
from tipstream.rooms import chat as room_chat
from tipstream.rooms import queries as rooms_queries
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


# --------------------------------------------------------------------------- the Detoxify tier

# The worker's actor (moderation/actors.py). The app enqueues by name, so it never imports the
# actor module, which loads the model in the worker.
RESCORE_QUEUE, RESCORE_ACTOR = "moderation", "rescore_message"
_broker_lock = threading.Lock()


def _send_rescore(settings: Settings, stream_id: int, message: dict[str, Any]) -> None:
    from dramatiq import Message

    from tipstream.workers import broker

    with _broker_lock:  # one broker per process, set up once
        the_broker = broker.setup(settings)
    the_broker.enqueue(
        Message(queue_name=RESCORE_QUEUE, actor_name=RESCORE_ACTOR, args=(stream_id, message),
                kwargs={}, options={})
    )  # fmt: skip


async def rescore_later(
    settings: Settings, stream_id: int, message_id: int, user_id: int, text: str
) -> None:
    """Queue a published message for the Detoxify tier, when it is configured. Chat never
    waits for (or fails with) the queue: a message that cannot be queued is logged."""
    if settings.moderation.detoxify_checkpoint is None:
        return
    message = {"id": message_id, "user_id": user_id, "text": text}
    try:
        await asyncio.to_thread(_send_rescore, settings, stream_id, message)
    except Exception as exc:
        log.warning("rescore_not_queued", stream=stream_id, message=message_id, error=str(exc))


@dataclass(frozen=True)
class Rescored:
    action: str  # "clean" or the policy applied
    label: str
    score: float
    scores: dict[str, float]
    case_id: int | None = None


async def rescore(
    conn: Conn, kv: Valkey, settings: Settings, stream_id: int, message: dict[str, Any]
) -> Rescored:
    """The Detoxify tier on one published message (the worker's actor calls this): score it
    and, at or above the threshold, apply the room's policy after the fact (module docstring)."""
    moderation = settings.moderation
    model = await asyncio.to_thread(detox.scorer, settings)
    [scores] = await asyncio.to_thread(model.score, [str(message["text"])])
    label, score = detox.top(scores, moderation.detoxify_labels)
    if score < moderation.detoxify_threshold:
        return Rescored("clean", label, score, scores)
    stream = await rooms_queries.get_stream(conn, stream_id)
    policy = policy_for(settings, stream)
    message_id = int(message["id"])
    if policy != "allow":
        await room_chat.mark_deleted(kv, settings, stream_id, message_id)
        await rooms.publish_room_event(
            kv, settings, stream_id, {"type": "deleted", "message_id": message_id}
        )
    # "held" is what lets a moderator release the message (service.act).
    reason = "held" if policy == "hold" else f"detoxify: {label} {score:.2f} ({policy})"
    case = await service.flag_chat(
        conn, kv, settings, stream, user_id=int(message["user_id"]), text=str(message["text"]),
        score=score, reason=reason, message_id=message_id,
        facts={"scorer": "detoxify", "policy": policy, "scores": scores},
    )  # fmt: skip
    log.info("detoxify_flag", stream=stream_id, message=message_id, label=label, score=score,
             policy=policy)  # fmt: skip
    return Rescored(policy, label, score, scores, case.id)
