"""Tip goals: a performer's target for the live stream, with progress from the room's tips.

Every app process with sockets in the room sees each tip event; the first to run the Lua
script for a tip id counts it (a set of counted tip ids makes it idempotent), updates the
progress and publishes one ``goal`` event. So progress counts each tip once, however many
processes relay the room and however often the ledger's outbox delivers the tip.
"""

from __future__ import annotations

from typing import Any

import msgspec
from valkey.asyncio import Valkey

from tipstream import kv as kvmod
from tipstream.config import Settings
from tipstream.rooms.schemas import Goal

# KEYS: goal hash, counted tip ids, channel. ARGV: tip id, tokens.
COUNT_TIP = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('EXPIRE', KEYS[2], 86400)
local progress = redis.call('HINCRBY', KEYS[1], 'progress', tonumber(ARGV[2]))
local target = tonumber(redis.call('HGET', KEYS[1], 'target'))
local title = redis.call('HGET', KEYS[1], 'title')
redis.call('PUBLISH', KEYS[3], cjson.encode({type = 'goal', title = title, target = target,
    progress = progress, reached = progress >= target}))
return 1
"""


def _keys(settings: Settings, stream_id: int) -> tuple[str, str, str]:
    return (
        kvmod.key(settings, "room", stream_id, "goal"),
        kvmod.key(settings, "room", stream_id, "goal", "tips"),
        kvmod.key(settings, "room", stream_id),
    )


def goal_event(goal: Goal | None) -> dict[str, Any]:
    if goal is None:
        return {"type": "goal_cleared"}
    return {"type": "goal", **msgspec.to_builtins(goal)}


async def set_goal(kv: Valkey, settings: Settings, stream_id: int, title: str, tokens: int) -> Goal:
    goal_key, tips_key, channel = _keys(settings, stream_id)
    async with kv.pipeline(transaction=True) as pipe:
        pipe.delete(goal_key, tips_key)
        pipe.hset(goal_key, mapping={"title": title, "target": tokens, "progress": 0})
        pipe.expire(goal_key, 7 * 24 * 3600)
        await pipe.execute()
    goal = Goal(title=title, target=tokens, progress=0, reached=False)
    await kv.publish(channel, msgspec.json.encode(goal_event(goal)))
    return goal


async def clear_goal(kv: Valkey, settings: Settings, stream_id: int) -> None:
    goal_key, tips_key, channel = _keys(settings, stream_id)
    await kv.delete(goal_key, tips_key)
    await kv.publish(channel, msgspec.json.encode(goal_event(None)))


async def current_goal(kv: Valkey, settings: Settings, stream_id: int) -> Goal | None:
    goal_key, _, _ = _keys(settings, stream_id)
    raw = await kv.hgetall(goal_key)
    if not raw:
        return None
    values = {k.decode(): v.decode() for k, v in raw.items()}
    target, progress = int(values["target"]), int(values["progress"])
    return Goal(values["title"], target, progress, progress >= target)


async def count_tip(
    kv: Valkey, settings: Settings, stream_id: int, tip_id: int, tokens: int
) -> bool:
    """Count one tip toward the goal (once per tip id); True if this call counted it."""
    script = kv.register_script(COUNT_TIP)
    return bool(await script(keys=list(_keys(settings, stream_id)), args=[tip_id, tokens]))
