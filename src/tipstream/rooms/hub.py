"""Room fan-out for one process: one Valkey subscription per room, each event relayed to the
room's sockets as the bytes it was published as (serialized once, by its publisher).

Every app process (granian worker, host) has one ``RoomHub``. A room's channel is subscribed
while at least one of the process's sockets is in the room. Each socket has a bounded outbox:
a socket whose outbox is full is too slow to keep up and is dropped with close code 4408, so a
stalled viewer never makes the process buffer without bound nor delays the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import structlog
from valkey.asyncio import Valkey
from valkey.asyncio.client import PubSub

from tipstream import kv as kvmod
from tipstream.config import Settings
from tipstream.rooms import goals
from tipstream.rooms.service import PRESENCE_REFRESH, PRESENCE_TTL, presence_key, viewer_counts

log = structlog.get_logger("tipstream.rooms.hub")

CLOSE_SLOW_CONSUMER = 4408


class _Peek(msgspec.Struct):
    """The fields of a room event the hub itself acts on; the rest is passed through."""

    type: str = ""
    user_id: int | None = None
    tip_id: int | None = None
    tokens: int | None = None
    private_message: bool = False


# Tip ids remembered per room: the ledger's outbox delivers at least once, viewers see once.
RECENT_TIPS = 2048


@dataclass(eq=False)
class Member:
    """One socket in a room: its outbox and who is behind it."""

    user_id: int
    is_performer: bool
    outbox: asyncio.Queue[str | None]
    # The socket's presence entry in Valkey (refreshed by the hub while it is here).
    connection_id: str = ""
    # Set when the hub wants the socket closed (slow, banned, stream ended): the close code.
    close_code: int | None = None
    close_reason: str = ""

    def deliver(self, text: str) -> bool:
        if self.close_code is not None:
            return False
        try:
            self.outbox.put_nowait(text)
        except asyncio.QueueFull:
            self.close(CLOSE_SLOW_CONSUMER, "too slow: events were piling up", drop_backlog=True)
            return False
        return True

    def close(self, code: int, reason: str, *, drop_backlog: bool = False) -> None:
        """Ask the writer to close the socket after what is queued (or at once, dropping the
        backlog, for a client that can't keep up)."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            while (drop_backlog and not self.outbox.empty()) or self.outbox.full():
                self.outbox.get_nowait()
            self.outbox.put_nowait(None)


# Called with the room's stream id and the decoded event for events the process acts on.
EventHook = Callable[[int, _Peek, "Room"], Awaitable[None] | None]


@dataclass(eq=False)
class Room:
    stream_id: int
    channel: str
    members: set[Member] = field(default_factory=set)
    delivered: int = 0
    recent_tips: dict[int, None] = field(default_factory=dict)
    # Membership changed since the last viewer count went out.
    changed: bool = True
    # Whether the stream has a tip goal (tips are counted toward it only then); kept current by
    # the goal / goal_cleared events that pass through.
    has_goal: bool = False

    def first_time(self, tip_id: int) -> bool:
        if tip_id in self.recent_tips:
            return False
        self.recent_tips[tip_id] = None
        if len(self.recent_tips) > RECENT_TIPS:
            del self.recent_tips[next(iter(self.recent_tips))]
        return True


class RoomHub:
    def __init__(self, settings: Settings, kv: Valkey) -> None:
        self.settings = settings
        self.kv = kv
        self.rooms: dict[str, Room] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def channel(self, stream_id: int) -> str:
        return kvmod.key(self.settings, "room", stream_id)

    async def join(self, stream_id: int, user_id: int, *, is_performer: bool) -> Member:
        member = Member(
            user_id, is_performer, asyncio.Queue(maxsize=self.settings.rooms.client_queue_size)
        )
        channel = self.channel(stream_id)
        async with self._lock:
            room = self.rooms.get(channel)
            if room is None:
                room = self.rooms[channel] = Room(stream_id, channel)
                room.has_goal = (
                    await goals.current_goal(self.kv, self.settings, stream_id) is not None
                )
                if self._pubsub is None:
                    self._pubsub = self.kv.pubsub(ignore_subscribe_messages=True)
                await self._pubsub.subscribe(channel)
                if self._reader is None or self._reader.done():
                    self._reader = asyncio.create_task(self._read(), name="room-hub")
                if self._ticker is None or self._ticker.done():
                    self._ticker = asyncio.create_task(self._count_viewers(), name="room-count")
            room.members.add(member)
            room.changed = True
        return member

    async def leave(self, stream_id: int, member: Member) -> None:
        channel = self.channel(stream_id)
        async with self._lock:
            room = self.rooms.get(channel)
            if room is None:
                return
            room.members.discard(member)
            room.changed = True
            if not room.members:
                del self.rooms[channel]
                if self._pubsub is not None:
                    await self._pubsub.unsubscribe(channel)

    async def _count_viewers(self) -> None:
        """Every few seconds, each room whose membership changed here gets its viewer count
        (from the presence hash all processes share) published once."""
        interval = self.settings.rooms.viewer_count_interval_seconds
        last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            refresh = time.monotonic() - last_refresh >= PRESENCE_REFRESH
            if refresh:
                last_refresh = time.monotonic()
            for room in list(self.rooms.values()):
                try:
                    if refresh:
                        await self._refresh_presence(room)
                    if not room.changed and not refresh:
                        continue
                    room.changed = False
                    counts = await viewer_counts(self.kv, self.settings, [room.stream_id])
                    await self.kv.publish(
                        room.channel,
                        msgspec.json.encode({"type": "viewers", "count": counts[room.stream_id]}),
                    )
                except Exception as exc:
                    log.warning("viewer_count_failed", error=type(exc).__name__)

    async def _refresh_presence(self, room: Room) -> None:
        """Heartbeat this process's sockets in the room; forget entries nobody refreshed."""
        key = presence_key(self.settings, room.stream_id)
        now = time.time()
        fresh = {m.connection_id: now for m in room.members if m.connection_id}
        async with self.kv.pipeline(transaction=False) as pipe:
            if fresh:
                pipe.zadd(key, fresh, xx=True)
            pipe.zremrangebyscore(key, "-inf", now - PRESENCE_TTL)
            pipe.expire(key, 24 * 3600)
            await pipe.execute()

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            await self._pubsub.aclose()
        for room in self.rooms.values():
            for member in room.members:
                member.close(1001, "server shutting down")

    async def _read(self) -> None:
        assert self._pubsub is not None
        pubsub = self._pubsub
        while True:
            try:
                message = await pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("room_hub_read_failed", error=type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                if not pubsub.subscribed:
                    await asyncio.sleep(0.05)
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else str(channel)
            room = self.rooms.get(channel)
            if room is not None:
                self.dispatch(room, message["data"])

    def dispatch(self, room: Room, data: bytes | str) -> None:
        """Relay one published event to every member: decoded once, the same text for all."""
        text = data.decode() if isinstance(data, bytes) else data
        try:
            peek = msgspec.json.decode(text, type=_Peek)
        except msgspec.DecodeError:
            log.warning("room_event_not_json", stream=room.stream_id)
            return
        if peek.type == "tip" and peek.tip_id is not None:
            if not room.first_time(peek.tip_id):
                return
            if peek.tokens and room.has_goal:
                self._count_toward_goal(room.stream_id, peek.tip_id, peek.tokens)
        elif peek.type in ("goal", "goal_cleared"):
            room.has_goal = peek.type == "goal"
        public_text = text
        if peek.type == "tip" and peek.private_message:
            # A private tip message is for the performer's eyes only: one stripped copy for all.
            event = msgspec.json.decode(text, type=dict[str, object])
            event["message"] = None
            public_text = msgspec.json.encode(event).decode()
        for member in list(room.members):
            if public_text is not text and not member.is_performer:
                if member.deliver(public_text):
                    room.delivered += 1
                continue
            if peek.type == "stream_ended":
                member.deliver(text)
                member.close(4409, "the stream has ended")
                continue
            if peek.type == "banned" and peek.user_id == member.user_id:
                member.deliver(text)
                member.close(4403, "banned from this room")
                continue
            if member.deliver(text):
                room.delivered += 1

    def _count_toward_goal(self, stream_id: int, tip_id: int, tokens: int) -> None:
        async def count() -> None:
            try:
                await goals.count_tip(self.kv, self.settings, stream_id, tip_id, tokens)
            except Exception as exc:
                log.warning("goal_count_failed", stream=stream_id, error=type(exc).__name__)

        task = asyncio.create_task(count())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stats(self) -> dict[int, int]:
        return {room.stream_id: len(room.members) for room in self.rooms.values()}
